//! `omnicloud usb prepare OUT`: what the config partitions of a cluster's USB sticks need
//! so every stick knows the cluster before any of them boots.
//!
//! The cluster CA is made here, up front (the seed would otherwise make it at its first
//! boot, and a joiner's token must pin its hash). Written to `OUT`:
//!
//! | path                      | copy onto                   | what                              |
//! |---------------------------|-----------------------------|-----------------------------------|
//! | `seed/tls/ca.crt`, `ca.key` | the seed stick's OMNICONFIG | the CA and its key (0600): the key issues every node's certificate, so keep it like a password |
//! | `seed/omnicloud.conf`     | the seed stick's OMNICONFIG | `token=K10<CA hash>::<secret>`     |
//! | `join/tls/ca.crt`         | every other stick's         | the CA certificate only           |
//! | `join/omnicloud.conf`     | every other stick's         | the same token, and `join=` (`--join`, or a placeholder to set) |
//! | `join.token`              | (kept by the user, 0600)    | the token, for `omnicloud install --join` and others |
//!
//! init copies a stick's `tls/` into the node's data dir before it starts the node
//! ([`super::init::Step::ClusterCa`]); the node keeps a CA it finds there.

use std::path::Path;

use crate::cluster::pki::{self, JoinToken, TlsDir};

use super::ApplianceError;

/// The sub-folder of `OUT` for the seed stick.
pub const SEED: &str = "seed";
/// The sub-folder of `OUT` for every other stick.
pub const JOIN: &str = "join";

fn pki_error(what: String) -> impl FnOnce(pki::PkiError) -> ApplianceError {
    move |e| ApplianceError::Io {
        action: what,
        source: std::io::Error::other(crate::error_chain(&e)),
    }
}

/// The `omnicloud.conf` a stick gets: the token, and for a joiner (`join`: Some) a `join=`
/// line (the seed's address, or a placeholder to fill in).
pub fn conf_text(token: &JoinToken, join: Option<&str>) -> String {
    let mut text = String::from(
        "# omnicloud node settings (see the image's own omnicloud.conf for every key).\n\
         # Written by `omnicloud usb prepare`: the token pins this cluster's CA (tls/ca.crt).\n\
         #name=rack-1\n#ip=192.168.1.10/24\n#gw=192.168.1.1\n",
    );
    match join {
        Some("") => text.push_str("# The seed stick's address (set it):\njoin=SEED-IP:7946\n"),
        Some(addr) => text.push_str(&format!("join={addr}\n")),
        None => {}
    }
    text.push_str(&format!("token={token}\n"));
    text
}

/// Makes a new cluster CA and the files for its sticks in `out` (which must not hold a
/// CA already: a second run would make another cluster). `secret`: the token's secret
/// (default: 24 random bytes, hex); `join`: the seed's `HOST:PORT` for the joiners' file
/// (default: a placeholder to fill in). Returns the token.
pub fn prepare(
    out: &Path,
    secret: Option<&str>,
    join: Option<&str>,
) -> Result<JoinToken, ApplianceError> {
    if let Some(addr) = join {
        let port_ok = addr
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok || addr.contains(char::is_whitespace) || addr.contains(',') {
            return Err(ApplianceError::invalid(
                "--join",
                format!("\"{addr}\" is not HOST:PORT (the seed's gossip address, e.g. 192.168.1.10:7946)"),
            ));
        }
    }
    let seed = TlsDir(out.join(SEED).join("tls"));
    if seed.ca_crt().exists() || seed.ca_key().exists() {
        return Err(ApplianceError::invalid(
            "OUT",
            format!(
                "{} holds a cluster CA already; prepare a new cluster in an empty folder",
                seed.0.display()
            ),
        ));
    }
    let secret = match secret.map(str::trim) {
        Some("") => {
            return Err(ApplianceError::invalid(
                "--secret",
                "expected a non-empty secret",
            ))
        }
        Some(s) if s.contains(char::is_whitespace) => {
            return Err(ApplianceError::invalid("--secret", "expected no spaces"))
        }
        Some(s) => s.to_string(),
        None => {
            let bytes: [u8; 24] = rand::random();
            bytes.iter().map(|b| format!("{b:02x}")).collect()
        }
    };
    pki::ensure_ca(&seed).map_err(pki_error(format!("making the CA in {}", seed.0.display())))?;
    let ca = seed
        .read(&seed.ca_crt())
        .map_err(pki_error("reading the new CA".into()))?;
    let token = JoinToken {
        ca_hash: pki::ca_hash(&ca).map_err(pki_error("hashing the new CA".into()))?,
        secret,
    };
    let joiners = TlsDir(out.join(JOIN).join("tls"));
    let write = |path: &Path, body: &str, mode: u32| {
        pki::write_file(path, body, mode).map_err(pki_error(format!("writing {}", path.display())))
    };
    write(&joiners.ca_crt(), &ca, 0o644)?;
    write(
        &out.join(SEED).join(super::init::CONFIG_FILE),
        &conf_text(&token, None),
        0o600,
    )?;
    write(
        &out.join(JOIN).join(super::init::CONFIG_FILE),
        &conf_text(&token, Some(join.unwrap_or(""))),
        0o600,
    )?;
    write(&out.join("join.token"), &format!("{token}\n"), 0o600)?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_gets_the_ca_key_joiners_the_certificate_and_all_the_pinning_token() {
        let dir = tempfile::tempdir().unwrap();
        let token = prepare(dir.path(), Some("s3cret"), Some("10.0.0.1:7946")).unwrap();
        assert_eq!(token.secret, "s3cret");
        let seed = TlsDir(dir.path().join("seed/tls"));
        token.check_ca(&seed).unwrap();
        assert!(seed.ca_key().exists());
        let join = TlsDir(dir.path().join("join/tls"));
        token.check_ca(&join).unwrap();
        assert!(!join.ca_key().exists(), "the CA key only on the seed stick");
        for (stick, join_line) in [("seed", false), ("join", true)] {
            let conf =
                std::fs::read_to_string(dir.path().join(stick).join("omnicloud.conf")).unwrap();
            // The file init reads parses, and carries the token.
            let plan = super::super::init::plan_from("", Some(&conf), "n", &[]);
            let plan = plan.unwrap();
            assert_eq!(plan.token, Some(token.to_string()));
            let want: &[&str] = if join_line { &["10.0.0.1:7946"] } else { &[] };
            assert_eq!(plan.join, want, "{conf}");
            assert!(conf.contains(&format!("token={token}")), "{conf}");
        }
        let e = prepare(dir.path(), None, None).unwrap_err().to_string();
        assert!(e.contains("holds a cluster CA already"), "{e}");
        let empty = tempfile::tempdir().unwrap();
        let e = prepare(empty.path(), Some(" "), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--secret"), "{e}");
        let e = prepare(empty.path(), None, Some("10.0.0.1"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--join") && e.contains("HOST:PORT"), "{e}");
        assert!(
            !empty.path().join("seed").exists(),
            "nothing written on bad input"
        );
        let random = prepare(empty.path(), None, None).unwrap();
        assert_eq!(random.secret.len(), 48);
        let conf = std::fs::read_to_string(empty.path().join("join/omnicloud.conf")).unwrap();
        assert!(
            conf.contains("join=SEED-IP:7946"),
            "a placeholder to fill in: {conf}"
        );
    }
}
