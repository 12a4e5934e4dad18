//! `omnicloud create secret generic|docker-registry` and `omnicloud create configmap`, as
//! kubectl users type them: `--from-literal=KEY=VALUE`, `--from-file=[KEY=]PATH`, and the
//! registry credentials of a `kubernetes.io/dockerconfigjson` Secret. The object is built
//! here (pure: [`secret_generic`], [`docker_registry`], [`config_map`]) and created
//! through the API; nothing prints a value.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use clap::Subcommand;
use serde_json::{json, Value};

use super::output::{self, Format};
use super::Conn;
use crate::client::ClientError;
use crate::model::config::{DOCKER_CONFIG_JSON, DOCKER_CONFIG_JSON_KEY};

#[derive(Debug, Subcommand)]
pub enum CreateCommand {
    /// Create a Secret.
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Create a ConfigMap from literals and files.
    #[command(name = "configmap", alias = "cm")]
    ConfigMap {
        #[command(flatten)]
        conn: Conn,
        name: String,
        #[command(flatten)]
        from: From,
        #[arg(short, long)]
        namespace: Option<String>,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// A Secret from literals and files (type Opaque unless --type).
    Generic {
        #[command(flatten)]
        conn: Conn,
        name: String,
        #[command(flatten)]
        from: From,
        #[arg(long = "type")]
        secret_type: Option<String>,
        #[arg(short, long)]
        namespace: Option<String>,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// A kubernetes.io/dockerconfigjson Secret for imagePullSecrets.
    #[command(name = "docker-registry")]
    DockerRegistry {
        #[command(flatten)]
        conn: Conn,
        name: String,
        #[arg(long, default_value = "https://index.docker.io/v1/")]
        docker_server: String,
        #[arg(long)]
        docker_username: String,
        #[arg(long)]
        docker_password: String,
        #[arg(long)]
        docker_email: Option<String>,
        #[arg(short, long)]
        namespace: Option<String>,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
}

#[derive(Debug, Clone, Default, clap::Args)]
pub struct From {
    /// KEY=VALUE (repeatable).
    #[arg(long = "from-literal")]
    pub literals: Vec<String>,
    /// [KEY=]PATH (repeatable): the file's bytes under KEY, or under the file's name.
    #[arg(long = "from-file")]
    pub files: Vec<String>,
}

fn bad(message: String) -> ClientError {
    ClientError::Other(message)
}

/// Every key and its bytes from the literals and files; a key given twice is refused.
pub fn gather(from: &From) -> Result<BTreeMap<String, Vec<u8>>, ClientError> {
    let mut out = BTreeMap::new();
    let mut add = |key: String, bytes: Vec<u8>, flag: &str| -> Result<(), ClientError> {
        crate::model::config::validate_key(flag, &key).map_err(|e| bad(e.to_string()))?;
        if out.insert(key.clone(), bytes).is_some() {
            return Err(bad(format!("{flag}: key \"{key}\" is given twice")));
        }
        Ok(())
    };
    for l in &from.literals {
        let Some((k, v)) = l.split_once('=') else {
            return Err(bad("--from-literal: expected KEY=VALUE".into()));
        };
        add(k.to_string(), v.as_bytes().to_vec(), "--from-literal")?;
    }
    for f in &from.files {
        let (key, path) = match f.split_once('=') {
            Some((k, p)) => (k.to_string(), p.to_string()),
            None => {
                let name = std::path::Path::new(f)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                (name, f.clone())
            }
        };
        let bytes =
            std::fs::read(&path).map_err(|e| bad(format!("--from-file: reading {path}: {e}")))?;
        add(key, bytes, "--from-file")?;
    }
    Ok(out)
}

fn metadata(name: &str, namespace: &str) -> Value {
    json!({"name": name, "namespace": namespace})
}

pub fn secret_generic(
    name: &str,
    namespace: &str,
    data: &BTreeMap<String, Vec<u8>>,
    secret_type: Option<&str>,
) -> Value {
    let data: BTreeMap<&String, String> =
        data.iter().map(|(k, v)| (k, STANDARD.encode(v))).collect();
    json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": metadata(name, namespace),
        "type": secret_type.unwrap_or("Opaque"), "data": data,
    })
}

/// ConfigMap: UTF-8 values in `data`, anything else in `binaryData`, as kubectl does.
pub fn config_map(name: &str, namespace: &str, data: &BTreeMap<String, Vec<u8>>) -> Value {
    let (mut text, mut binary) = (BTreeMap::new(), BTreeMap::new());
    for (k, v) in data {
        match std::str::from_utf8(v) {
            Ok(s) => text.insert(k, Value::String(s.to_string())),
            Err(_) => binary.insert(k, Value::String(STANDARD.encode(v))),
        };
    }
    let mut o =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata(name, namespace)});
    if !text.is_empty() {
        o["data"] = json!(text);
    }
    if !binary.is_empty() {
        o["binaryData"] = json!(binary);
    }
    o
}

pub fn docker_registry(
    name: &str,
    namespace: &str,
    server: &str,
    username: &str,
    password: &str,
    email: Option<&str>,
) -> Value {
    let mut entry = json!({
        "username": username, "password": password,
        "auth": STANDARD.encode(format!("{username}:{password}")),
    });
    if let Some(e) = email {
        entry["email"] = json!(e);
    }
    let config = json!({"auths": {server: entry}}).to_string();
    let data = BTreeMap::from([(DOCKER_CONFIG_JSON_KEY.to_string(), config.into_bytes())]);
    secret_generic(name, namespace, &data, Some(DOCKER_CONFIG_JSON))
}

fn create(conn: &Conn, object: &Value, output: Format) -> Result<(), ClientError> {
    let ns = object["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default");
    let kind = object["kind"].as_str().unwrap_or_default();
    let plural = if kind == "Secret" {
        "secrets"
    } else {
        "configmaps"
    };
    let path = format!("/v1/namespaces/{ns}/{plural}");
    let created = conn
        .client()
        .send("POST", &path, "application/json", &object.to_string())?;
    match output {
        Format::Json => output::print_json(&created),
        Format::Yaml => output::print_yaml(&created),
        _ => println!(
            "{}/{} created",
            kind.to_lowercase(),
            created["metadata"]["name"].as_str().unwrap_or("?")
        ),
    }
    Ok(())
}

pub fn run(cmd: CreateCommand) -> Result<(), ClientError> {
    let ns = |n: Option<String>| n.unwrap_or_else(|| "default".into());
    match cmd {
        CreateCommand::ConfigMap {
            conn,
            name,
            from,
            namespace,
            output,
        } => create(
            &conn,
            &config_map(&name, &ns(namespace), &gather(&from)?),
            output,
        ),
        CreateCommand::Secret(SecretCommand::Generic {
            conn,
            name,
            from,
            secret_type,
            namespace,
            output,
        }) => {
            let data = gather(&from)?;
            let o = secret_generic(&name, &ns(namespace), &data, secret_type.as_deref());
            create(&conn, &o, output)
        }
        CreateCommand::Secret(SecretCommand::DockerRegistry {
            conn,
            name,
            docker_server,
            docker_username,
            docker_password,
            docker_email,
            namespace,
            output,
        }) => {
            let o = docker_registry(
                &name,
                &ns(namespace),
                &docker_server,
                &docker_username,
                &docker_password,
                docker_email.as_deref(),
            );
            create(&conn, &o, output)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Resource, Spec};

    #[test]
    fn built_objects_pass_the_model() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("app.conf");
        std::fs::write(&file, "x=1\n").unwrap();
        let from = From {
            literals: vec!["user=admin".into(), "pw=a=b".into()],
            files: vec![
                file.display().to_string(),
                format!("bin={}", file.display()),
            ],
        };
        let data = gather(&from).unwrap();
        assert_eq!(data["pw"], b"a=b");
        assert_eq!(data["app.conf"], b"x=1\n");
        let s = Resource::from_value(secret_generic("s", "default", &data, None)).unwrap();
        let Some(Spec::Secret(spec)) = &s.spec else {
            panic!()
        };
        assert_eq!(spec.entries().unwrap()["user"], b"admin");
        let c = Resource::from_value(config_map("c", "default", &data)).unwrap();
        assert_eq!(c.to_value()["data"]["app.conf"], "x=1\n");
        let d = docker_registry("r", "default", "reg.example:5000", "u", "p", None);
        let d = Resource::from_value(d).unwrap();
        let Some(Spec::Secret(spec)) = &d.spec else {
            panic!()
        };
        let auths = crate::model::config::parse_docker_config(
            &spec.entries().unwrap()[DOCKER_CONFIG_JSON_KEY],
        )
        .unwrap();
        assert_eq!(auths["reg.example:5000"].password, "p");
    }

    #[test]
    fn bad_flags_are_named() {
        let dup = From {
            literals: vec!["a=1".into(), "a=2".into()],
            ..Default::default()
        };
        assert!(gather(&dup).unwrap_err().to_string().contains("twice"));
        let no_eq = From {
            literals: vec!["a".into()],
            ..Default::default()
        };
        assert!(gather(&no_eq)
            .unwrap_err()
            .to_string()
            .contains("--from-literal"));
    }
}
