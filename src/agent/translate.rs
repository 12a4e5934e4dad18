//! From an instance's pod spec to the [`ContainerSpec`] the helper runs: image, command,
//! env, working dir, cpu and memory to cgroups, volumes to bind mounts, hostname = the
//! instance name. Pure apart from the paths it is given; every refusal names the field.
//!
//! Volumes: `emptyDir` is a directory under the node's data dir that lives and dies with
//! the instance; `hostPath` is the host's path; `persistentVolumeClaim` is a directory
//! per namespace and claim that outlives instances (a StatefulSet's per-replica claim is
//! `<template>-<instance>`). ConfigMap and Secret volumes are directories beside the
//! emptyDirs that [`super::configs`] fills (always mounted read-only), and the
//! environment comes resolved from there too (`valueFrom`, `envFrom`).
//!
//! `command` and `args` expand `$(VAR)` from the container's environment as Kubernetes
//! does ([`expand`]): an undefined name stays as written, `$$` is a literal `$`.

use std::path::{Path, PathBuf};

use crate::container::{BindMount, ContainerSpec, EnvVar, Network, Resources};
use crate::model::instance::InstanceSpec;
use crate::model::workload::Container;

/// Where one instance's files live on this node.
#[derive(Clone, Debug)]
pub struct Paths {
    pub images: PathBuf,
    pub log: PathBuf,
    /// emptyDir volumes: `<this>/<volume>`.
    pub scratch: PathBuf,
    /// Claims: `<this>/<claim>`.
    pub claims: PathBuf,
}

/// An instance spec this agent cannot run as written: the field and why.
#[derive(Debug, thiserror::Error)]
pub enum TranslateError {
    #[error("{field}: {message}")]
    Field { field: String, message: String },
    /// The container spec it became was refused (the container module's words).
    #[error(transparent)]
    Spec(Box<crate::container::ContainerError>),
}

fn field(field: impl Into<String>, message: impl Into<String>) -> TranslateError {
    TranslateError::Field {
        field: field.into(),
        message: message.into(),
    }
}

/// What the instance's `/etc/resolv.conf` says, by `spec.pod.dnsPolicy`: ClusterFirst (the
/// default; ClusterFirstWithHostNet alike, as no pod shares the host network) names the
/// cluster DNS server on this node's bridge gateway with the namespace's search path;
/// Default is the node's own `host` file. None when the container mounts its own file (or
/// all of /etc) over it.
pub fn resolv_conf(
    spec: &InstanceSpec,
    namespace: &str,
    gateway: std::net::Ipv4Addr,
    domain: &str,
    host: &str,
) -> Result<Option<String>, TranslateError> {
    if spec.pod.containers.is_empty() {
        return Err(field("spec.pod.containers", "no container"));
    }
    if spec.pod.containers.iter().all(own_resolv_conf) {
        return Ok(None);
    }
    match spec.pod.dns_policy.as_deref() {
        None | Some("ClusterFirst" | "ClusterFirstWithHostNet") => Ok(Some(
            crate::net::dns_records::resolv_conf(gateway, namespace, domain),
        )),
        Some("Default") => Ok(Some(host.to_string())),
        Some(other) => Err(field(
            "spec.pod.dnsPolicy",
            format!("\"{other}\" is not ClusterFirst, ClusterFirstWithHostNet or Default"),
        )),
    }
}

/// Whether the container mounts its own /etc/resolv.conf (or all of /etc).
pub fn own_resolv_conf(c: &Container) -> bool {
    c.volume_mounts.iter().flatten().any(|m| {
        let p = m.mount_path.trim_end_matches('/');
        p == "/etc" || p == "/etc/resolv.conf"
    })
}

/// Whether the instance runs as a pod: several containers sharing a sandbox's network
/// namespace, or init containers before its container ([`super::pod`]).
pub fn is_pod(spec: &InstanceSpec) -> bool {
    spec.pod.containers.len() > 1
        || spec
            .pod
            .init_containers
            .as_ref()
            .is_some_and(|i| !i.is_empty())
}

/// The one container of a single-container instance (a pod, [`is_pod`], goes through
/// [`member_spec`] per container instead).
pub fn main_container(spec: &InstanceSpec) -> Result<&Container, TranslateError> {
    match spec.pod.containers.as_slice() {
        [one] => Ok(one),
        [] => Err(field("spec.pod.containers", "no container")),
        [_, extra, ..] => Err(field(
            format!("spec.pod.containers[1] ({})", extra.name),
            "this agent runs one container per instance",
        )),
    }
}

/// Refuses a privileged container on a node that does not allow them, naming the field;
/// lists the securityContext fields given but not acted on (for warnings).
pub fn check_security(
    spec: &InstanceSpec,
    allow_privileged: bool,
) -> Result<Vec<String>, TranslateError> {
    let mut ignored = Vec::new();
    for (path, c) in spec.pod.containers_with_paths("spec.pod") {
        let sec = crate::model::security::effective("spec.pod", &spec.pod, &path, c)
            .map_err(|e| field(e.field, e.message))?;
        if sec.privileged && !allow_privileged {
            return Err(field(
                format!("{path}.securityContext.privileged"),
                "privileged containers are not allowed on this node ([agent] allow_privileged = false)",
            ));
        }
        for f in sec.ignored {
            if !ignored.contains(&f) {
                ignored.push(f);
            }
        }
    }
    Ok(ignored)
}

/// The container's declared ports by name, for probes that name a port.
pub fn named_ports(c: &Container) -> Vec<(String, u16)> {
    c.ports
        .iter()
        .flatten()
        .filter_map(|p| Some((p.name.clone()?, u16::try_from(p.container_port).ok()?)))
        .collect()
}

/// `env`: the container's environment, resolved by [`super::configs::env`].
pub fn container_spec(
    id: &str,
    instance: &str,
    spec: &InstanceSpec,
    paths: &Paths,
    network: Network,
    env: Vec<EnvVar>,
) -> Result<ContainerSpec, TranslateError> {
    let c = main_container(spec)?;
    member_spec(
        c,
        "spec.pod.containers[0]",
        id,
        instance,
        spec,
        paths,
        network,
        env,
    )
}

/// One container `c` of the instance (`path` names it in errors, e.g.
/// `spec.pod.initContainers[1]`), writing to `paths.log`.
#[allow(clippy::too_many_arguments)]
pub fn member_spec(
    c: &Container,
    path: &str,
    id: &str,
    instance: &str,
    spec: &InstanceSpec,
    paths: &Paths,
    network: Network,
    env: Vec<EnvVar>,
) -> Result<ContainerSpec, TranslateError> {
    let mut out = ContainerSpec::new(id, &paths.images, c.image.trim(), &paths.log);
    let sec = crate::model::security::effective("spec.pod", &spec.pod, path, c)
        .map_err(|e| field(e.field, e.message))?;
    out.security = crate::container::spec::Security {
        uid: sec.run_as_user,
        gid: sec.run_as_group,
        read_only_rootfs: sec.read_only_root_filesystem,
        cap_add: sec.add,
        cap_drop: sec.drop,
        privileged: sec.privileged,
    };
    let expand_all = |words: &Option<Vec<String>>| {
        words
            .as_ref()
            .map(|w| w.iter().map(|s| expand(s, &env)).collect::<Vec<_>>())
    };
    out.command = expand_all(&c.command);
    out.args = expand_all(&c.args);
    out.working_dir = c.working_dir.clone();
    out.hostname = Some(instance.to_string());
    out.network = network;
    out.env = env;
    if let Some(r) = &c.resources {
        let limits = r.limits.clone().unwrap_or_default();
        let requests = r.requests.clone().unwrap_or_default();
        out.resources = Resources {
            cpu_limit_millis: limits.cpu.as_ref().map(|q| q.millis()),
            cpu_request_millis: requests.cpu.or(limits.cpu).map(|q| q.millis()),
            memory_limit_bytes: limits.memory.map(|q| q.bytes()),
        };
    }
    for (i, m) in c.volume_mounts.iter().flatten().enumerate() {
        let field = format!("{path}.volumeMounts[{i}]");
        let Some(v) = spec.pod.volumes.iter().flatten().find(|v| v.name == m.name) else {
            return Err(self::field(
                format!("{field}.name"),
                format!("no volume named \"{}\" in spec.pod.volumes", m.name),
            ));
        };
        let config = v.config_map.is_some() || v.secret.is_some();
        let host_path = if v.empty_dir.is_some() || config {
            paths.scratch.join(&v.name)
        } else if let Some(h) = &v.host_path {
            PathBuf::from(&h.path)
        } else if let Some(claim) = &v.persistent_volume_claim {
            paths.claims.join(&claim.claim_name)
        } else {
            return Err(self::field(
                format!("spec.pod.volumes ({})", v.name),
                "no volume source (emptyDir, hostPath, persistentVolumeClaim, configMap, secret)",
            ));
        };
        let host_path = match &m.sub_path {
            Some(sub) if !sub.is_empty() => {
                if Path::new(sub).is_absolute() || sub.split('/').any(|p| p == "..") {
                    return Err(self::field(
                        format!("{field}.subPath"),
                        "must be a relative path without ..",
                    ));
                }
                host_path.join(sub)
            }
            _ => host_path,
        };
        out.mounts.push(BindMount {
            host_path,
            container_path: m.mount_path.clone(),
            read_only: config || m.read_only.unwrap_or(false),
        });
    }
    out.validate()
        .map_err(|e| TranslateError::Spec(Box::new(e)))?;
    Ok(out)
}

/// `word` with each `$(NAME)` replaced by NAME's value in `env` (the last definition
/// wins), as Kubernetes expands `command` and `args`: `$(NAME)` of an undefined name and
/// an unclosed `$(` stay as written, `$$` becomes `$` (so `$$(NAME)` is the literal
/// `$(NAME)`), a `$` before anything else stays.
pub fn expand(word: &str, env: &[EnvVar]) -> String {
    let mut out = String::with_capacity(word.len());
    let mut rest = word;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some((name, tail)) = after
            .strip_prefix('(')
            .and_then(|inner| inner.split_once(')'))
        {
            match env.iter().rev().find(|e| e.name == name) {
                Some(e) => out.push_str(&e.value),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = tail;
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(pod: serde_json::Value) -> InstanceSpec {
        serde_json::from_value(serde_json::json!({ "pod": pod })).unwrap()
    }

    fn paths() -> Paths {
        Paths {
            images: "/d/images".into(),
            log: "/d/logs/web-0.log".into(),
            scratch: "/d/volumes/default/web-0".into(),
            claims: "/d/claims/default".into(),
        }
    }

    #[test]
    fn the_pod_spec_maps_onto_the_container() {
        let spec = instance(serde_json::json!({
            "containers": [{
                "name": "web", "image": "toolbox", "command": ["omnicloud"],
                "args": ["workload", "http"], "workingDir": "/tmp",
                "env": [{"name": "A", "value": "1"}],
                "resources": {"requests": {"cpu": "250m"}, "limits": {"cpu": "1", "memory": "64Mi"}},
                "volumeMounts": [{"name": "cache", "mountPath": "/cache"},
                                 {"name": "data", "mountPath": "/data", "readOnly": true}]
            }],
            "volumes": [{"name": "cache", "emptyDir": {}},
                        {"name": "data", "persistentVolumeClaim": {"claimName": "data-web-0"}}]
        }));
        let c = container_spec(
            "default.web-0.1234",
            "web-0",
            &spec,
            &paths(),
            Network::None,
            vec![EnvVar {
                name: "A".into(),
                value: "1".into(),
            }],
        )
        .unwrap();
        assert_eq!(c.env[0].value, "1");
        assert_eq!(c.hostname.as_deref(), Some("web-0"));
        assert_eq!(c.image.name, "toolbox");
        assert_eq!(c.args.as_ref().unwrap(), &["workload", "http"]);
        assert_eq!(c.resources.cpu_request_millis, Some(250));
        assert_eq!(c.resources.cpu_limit_millis, Some(1000));
        assert_eq!(c.resources.memory_limit_bytes, Some(64 << 20));
        assert_eq!(
            c.mounts[0].host_path,
            Path::new("/d/volumes/default/web-0/cache")
        );
        assert_eq!(
            c.mounts[1].host_path,
            Path::new("/d/claims/default/data-web-0")
        );
        assert!(c.mounts[1].read_only);
    }

    #[test]
    fn resolv_conf_follows_the_dns_policy() {
        let gw = std::net::Ipv4Addr::new(10, 88, 3, 1);
        let pod = |extra: serde_json::Value| {
            let mut p = serde_json::json!({"containers": [{"name": "a", "image": "x"}]});
            p.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            instance(p)
        };
        let cluster = resolv_conf(
            &pod(serde_json::json!({})),
            "shop",
            gw,
            "cluster.local",
            "host",
        )
        .unwrap()
        .unwrap();
        assert!(cluster.contains("nameserver 10.88.3.1"), "{cluster}");
        assert!(
            cluster.contains("search shop.svc.cluster.local "),
            "{cluster}"
        );
        let host = resolv_conf(
            &pod(serde_json::json!({"dnsPolicy": "Default"})),
            "shop",
            gw,
            "cluster.local",
            "nameserver 192.0.2.53\n",
        );
        assert_eq!(host.unwrap().as_deref(), Some("nameserver 192.0.2.53\n"));
        let e = resolv_conf(
            &pod(serde_json::json!({"dnsPolicy": "Sometimes"})),
            "shop",
            gw,
            "cluster.local",
            "",
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("spec.pod.dnsPolicy"), "{e}");
        let own = instance(serde_json::json!({
            "containers": [{"name": "a", "image": "x",
                            "volumeMounts": [{"name": "v", "mountPath": "/etc/resolv.conf"}]}],
            "volumes": [{"name": "v", "emptyDir": {}}]
        }));
        assert_eq!(
            resolv_conf(&own, "shop", gw, "cluster.local", "").unwrap(),
            None,
            "a container that mounts its own resolv.conf keeps it"
        );
    }

    #[test]
    fn unsupported_input_is_refused_by_field() {
        let two = instance(serde_json::json!({
            "containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]
        }));
        assert!(
            container_spec("i", "i", &two, &paths(), Network::None, vec![])
                .unwrap_err()
                .to_string()
                .starts_with("spec.pod.containers[1]")
        );
        let missing = instance(serde_json::json!({
            "containers": [{"name": "a", "image": "x",
                            "volumeMounts": [{"name": "nope", "mountPath": "/n"}]}]
        }));
        let e = container_spec("i", "i", &missing, &paths(), Network::None, vec![])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("volumeMounts[0].name") && e.contains("nope"),
            "{e}"
        );
        let escape = instance(serde_json::json!({
            "containers": [{"name": "a", "image": "x",
                            "volumeMounts": [{"name": "v", "mountPath": "/n", "subPath": "../../etc"}]}],
            "volumes": [{"name": "v", "emptyDir": {}}]
        }));
        let e = container_spec("i", "i", &escape, &paths(), Network::None, vec![])
            .unwrap_err()
            .to_string();
        assert!(e.contains("subPath"), "{e}");
    }

    #[test]
    fn command_and_args_expand_env_references_as_kubernetes_does() {
        let env = |pairs: &[(&str, &str)]| -> Vec<EnvVar> {
            (pairs.iter())
                .map(|(n, v)| EnvVar {
                    name: n.to_string(),
                    value: v.to_string(),
                })
                .collect()
        };
        let e = env(&[("PW", "s3cret"), ("PORT", "6379"), ("PW", "last")]);
        assert_eq!(expand("--requirepass=$(PW)", &e), "--requirepass=last");
        assert_eq!(expand("$(PORT)$(PORT)", &e), "63796379");
        assert_eq!(expand("$(NOPE) stays", &e), "$(NOPE) stays");
        assert_eq!(expand("$$(PW) and $$", &e), "$(PW) and $");
        assert_eq!(expand("$HOME $ end$", &e), "$HOME $ end$");
        assert_eq!(expand("x $(unclosed", &e), "x $(unclosed");
        assert_eq!(expand("$(cat /f)", &e), "$(cat /f)");

        let spec = instance(serde_json::json!({"containers": [{
            "name": "db", "image": "redis", "command": ["redis-server"],
            "args": ["--requirepass", "$(PW)", "--port", "$(PORT)"],
        }]}));
        let c = container_spec("i", "db-0", &spec, &paths(), Network::None, e).unwrap();
        assert_eq!(c.command.unwrap(), ["redis-server"]);
        assert_eq!(c.args.unwrap(), ["--requirepass", "last", "--port", "6379"]);
    }
}
