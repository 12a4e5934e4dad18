//! `Role`: what a node does in the cluster (`roles` in its config, announced by gossip).
//! Written and read in its string form (`auto`, `orchestrator`, `director`, `agent`) in
//! config files, flags, gossip and the API; code compares the enum.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Role {
    /// Orchestrator by election, agent and director where the host can.
    Auto,
    /// A Raft voter; the leader runs the control loops.
    Orchestrator,
    /// Runs VirtualMachine instances and worker VMs.
    Director,
    /// Runs container instances.
    Agent,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Auto, Role::Orchestrator, Role::Director, Role::Agent];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Auto => "auto",
            Role::Orchestrator => "orchestrator",
            Role::Director => "director",
            Role::Agent => "agent",
        }
    }
}

/// An unknown role name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role \"{0}\"; expected auto, orchestrator, director or agent")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Role, UnknownRole> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_string()))
    }
}

impl TryFrom<String> for Role {
    type Error = UnknownRole;

    fn try_from(s: String) -> Result<Role, UnknownRole> {
        s.parse()
    }
}

impl From<Role> for String {
    fn from(r: Role) -> String {
        r.as_str().to_string()
    }
}

string_form!(Role);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_keep_their_string_form() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
        let err = "captain".parse::<Role>().unwrap_err().to_string();
        assert!(
            err.contains("\"captain\"") && err.contains("agent"),
            "{err}"
        );
        assert!(serde_json::from_str::<Role>("\"Agent\"").is_err());
    }
}
