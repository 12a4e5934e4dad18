//! Bearer credentials and the identities they name.
//!
//! - The cluster's admin token (`<data-dir>/admin.token`, derived from the join token):
//!   user `admin` in group `system:masters` (bound to `cluster-admin`).
//! - A node's credential, `node_<name>_<hmac>`: the HMAC of the node's name under a key
//!   derived from the join token, so every node can check any node's credential without a
//!   store read, and a node cannot speak as another. User `system:node:<name>`, group
//!   `system:nodes`.
//! - A user token, `oct_<id>_<secret>`: 48 random bits of id and 256 random bits of
//!   secret. Only the SHA-256 of the secret is stored (a `Token` object named `<id>`).
//!   A fast hash is right here: the secret is uniformly random with 256 bits of entropy, so
//!   there is no dictionary to try and no brute force that a slow password hash (argon2,
//!   bcrypt) would slow down further; it would only add its cost to every request.
//!
//! The admin token and node credentials are in the system class (not rate limited as
//! users are, see `limit`); user tokens are in the user class.

use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};

use super::AuthError;
use crate::model::rbac::TokenSpec;

type HmacSha256 = hmac::Hmac<Sha256>;

pub const ADMIN_USER: &str = "admin";
pub const MASTERS_GROUP: &str = "system:masters";
pub const NODES_GROUP: &str = "system:nodes";
pub const NODE_USER_PREFIX: &str = "system:node:";
const USER_TOKEN_PREFIX: &str = "oct_";
const NODE_TOKEN_PREFIX: &str = "node_";

/// Which traffic class a caller is in: user buckets never hold back the system class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Nodes and the cluster's own admin credential (controllers, forwarding, operators).
    System,
    User,
}

/// Who made a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub groups: Vec<String>,
    pub class: Class,
}

impl Identity {
    /// The node this caller is, if it is a node.
    pub fn node_name(&self) -> Option<&str> {
        self.user.strip_prefix(NODE_USER_PREFIX)
    }
}

/// What a node needs to check any bearer token.
#[derive(Clone)]
pub struct Credentials {
    pub admin_token: String,
    /// Derived from the join token; signs node credentials.
    pub node_key: [u8; 32],
}

impl Credentials {
    /// `lookup(id)` reads the stored Token object with that id (None: no such token).
    pub fn authenticate(
        &self,
        bearer: &str,
        now_ms: u64,
        lookup: impl FnOnce(&str) -> Result<Option<TokenSpec>, AuthError>,
    ) -> Result<Identity, AuthError> {
        if bearer.is_empty() {
            return Err(AuthError::Missing);
        }
        if constant_time_eq(bearer.as_bytes(), self.admin_token.as_bytes()) {
            return Ok(Identity {
                user: ADMIN_USER.into(),
                groups: vec![MASTERS_GROUP.into()],
                class: Class::System,
            });
        }
        if let Some(rest) = bearer.strip_prefix(NODE_TOKEN_PREFIX) {
            let (name, _) = rest.rsplit_once('_').ok_or(AuthError::Unknown)?;
            if constant_time_eq(bearer.as_bytes(), self.node_credential(name).as_bytes()) {
                return Ok(Identity {
                    user: format!("{NODE_USER_PREFIX}{name}"),
                    groups: vec![NODES_GROUP.into()],
                    class: Class::System,
                });
            }
            return Err(AuthError::Unknown);
        }
        let rest = bearer
            .strip_prefix(USER_TOKEN_PREFIX)
            .ok_or(AuthError::Unknown)?;
        let (id, secret) = rest.split_once('_').ok_or(AuthError::Unknown)?;
        let spec = lookup(id)?.ok_or(AuthError::Unknown)?;
        if !constant_time_eq(hash_secret(secret).as_bytes(), spec.sha256.as_bytes()) {
            return Err(AuthError::Unknown);
        }
        if spec.expires_ms.is_some_and(|e| now_ms >= e) {
            return Err(AuthError::Expired {
                id: id.into(),
                user: spec.user,
            });
        }
        Ok(Identity {
            user: spec.user,
            groups: Vec::new(),
            class: Class::User,
        })
    }

    /// The credential node `name` presents to other nodes' APIs.
    pub fn node_credential(&self, name: &str) -> String {
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&self.node_key)
            .expect("HMAC takes keys of any length");
        mac.update(name.as_bytes());
        let tag: [u8; 32] = mac.finalize().into_bytes().into();
        format!("{NODE_TOKEN_PREFIX}{name}_{}", hex(&tag))
    }
}

/// How the audit log names a caller that did not authenticate: the token's id when it is
/// shaped as a user token (never any of its secret).
pub fn describe_unauthenticated(bearer: &str) -> String {
    if bearer.is_empty() {
        return "anonymous".into();
    }
    match bearer
        .strip_prefix(USER_TOKEN_PREFIX)
        .and_then(|r| r.split_once('_'))
    {
        Some((id, _)) if id.len() <= 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) => {
            format!("token:{id}")
        }
        _ => "unknown-token".into(),
    }
}

/// A new user token: what to give the user once, and the id and hash to store.
pub struct NewToken {
    pub token: String,
    pub id: String,
    pub sha256: String,
}

pub fn generate() -> NewToken {
    let id: [u8; 6] = rand::random();
    let secret: [u8; 32] = rand::random();
    let (id, secret) = (hex(&id), hex(&secret));
    NewToken {
        token: format!("{USER_TOKEN_PREFIX}{id}_{secret}"),
        sha256: hash_secret(&secret),
        id,
    }
}

pub fn hash_secret(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> Credentials {
        Credentials {
            admin_token: "a".repeat(64),
            node_key: [7; 32],
        }
    }

    fn stored(t: &NewToken, expires_ms: Option<u64>) -> TokenSpec {
        TokenSpec {
            user: "alice".into(),
            sha256: t.sha256.clone(),
            created_ms: 1,
            expires_ms,
        }
    }

    #[test]
    fn user_tokens_match_only_their_hash_and_expire() {
        let c = creds();
        let t = generate();
        assert!(!t.token.contains(&t.sha256), "the hash is not the secret");
        let who = c
            .authenticate(&t.token, 10, |id| {
                assert_eq!(id, t.id);
                Ok(Some(stored(&t, None)))
            })
            .unwrap();
        assert_eq!(who.user, "alice");
        assert_eq!(who.class, Class::User);
        let other = generate();
        let wrong = format!("oct_{}_{}", t.id, other.token.rsplit('_').next().unwrap());
        assert!(matches!(
            c.authenticate(&wrong, 10, |_| Ok(Some(stored(&t, None)))),
            Err(AuthError::Unknown)
        ));
        assert!(matches!(
            c.authenticate(&t.token, 10, |_| Ok(None)),
            Err(AuthError::Unknown)
        ));
        assert!(matches!(
            c.authenticate(&t.token, 10, |_| Ok(Some(stored(&t, Some(10))))),
            Err(AuthError::Expired { .. })
        ));
    }

    #[test]
    fn node_credentials_name_their_node_and_cannot_be_forged() {
        let c = creds();
        let n1 = c.node_credential("n1");
        let who = c.authenticate(&n1, 0, |_| Ok(None)).unwrap();
        assert_eq!(who.node_name(), Some("n1"));
        assert_eq!(who.class, Class::System);
        let forged = n1.replacen("node_n1_", "node_n2_", 1);
        assert!(c.authenticate(&forged, 0, |_| Ok(None)).is_err());
        let other_key = Credentials {
            node_key: [8; 32],
            ..creds()
        };
        assert!(other_key.authenticate(&n1, 0, |_| Ok(None)).is_err());
        let admin = c.authenticate(&"a".repeat(64), 0, |_| Ok(None)).unwrap();
        assert_eq!(admin.groups, vec![MASTERS_GROUP.to_string()]);
    }
}
