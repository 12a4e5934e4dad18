//! Health checks and restart backoff for instances, with Kubernetes probe semantics (the
//! seed's Volant health_check maps onto the same fields): a probe runs every
//! `periodSeconds` after `initialDelaySeconds`, each attempt times out after
//! `timeoutSeconds`; `failureThreshold` consecutive failures make it fail, and
//! `successThreshold` consecutive successes make it pass again.
//!
//! `ProbeTracker` is the pure state machine (tested with no I/O); `check` performs one real
//! attempt: http or tcp against the instance address, exec inside the container (its
//! namespaces, cgroups, root, working directory and environment, through the same
//! `__container exec` helper as `omnicloud exec`: [`crate::container::exec`]), where exit
//! status 0 passes.
//! Restarts back off as the kubelet's do: the first at once, then 10s, 20s, 40s ... 5m
//! (CrashLoopBackOff), and the backoff resets after an instance has run cleanly for 10
//! minutes.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::model::workload::Probe;
use crate::model::IntOrString;

/// What a probe checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    Http { path: String, port: u16 },
    Tcp { port: u16 },
    Exec { command: Vec<String> },
}

/// Why a probe could not be set up, or why one attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("port {0} is out of range")]
    PortOutOfRange(i64),
    #[error("no container port is named \"{0}\"")]
    NoNamedPort(String),
    #[error("the probe has no handler")]
    NoHandler,
    #[error("exec probe has an empty command")]
    EmptyCommand,
    #[error("starting the exec helper")]
    Helper(#[source] std::io::Error),
    #[error("{command:?} exited with {status}")]
    Exited {
        command: String,
        status: std::process::ExitStatus,
    },
    #[error("{command:?} timed out after {timeout:?}")]
    TimedOut { command: String, timeout: Duration },
    #[error("not an HTTP response: {0:?}")]
    NotHttp(String),
    #[error("HTTP {0}")]
    HttpStatus(u16),
    /// Connecting, writing or reading (the OS's words, as a probe failure).
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeSettings {
    pub check: Check,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub failure_threshold: u32,
    pub success_threshold: u32,
}

/// Resolves a named port (`http`) through the container's declared ports.
pub fn settings(probe: &Probe, named_ports: &[(String, u16)]) -> Result<ProbeSettings, ProbeError> {
    let port = |p: &IntOrString| -> Result<u16, ProbeError> {
        match p {
            IntOrString::Int(n) => u16::try_from(*n).map_err(|_| ProbeError::PortOutOfRange(*n)),
            IntOrString::Str(name) => named_ports
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, p)| *p)
                .ok_or_else(|| ProbeError::NoNamedPort(name.clone())),
        }
    };
    let check = match (&probe.http_get, &probe.tcp_socket, &probe.exec) {
        (Some(h), _, _) => Check::Http {
            path: h.path.clone().unwrap_or_else(|| "/".into()),
            port: port(&h.port)?,
        },
        (_, Some(t), _) => Check::Tcp {
            port: port(&t.port)?,
        },
        (_, _, Some(e)) => Check::Exec {
            command: e.command.clone(),
        },
        _ => return Err(ProbeError::NoHandler),
    };
    let secs =
        |v: Option<i64>, default: i64| Duration::from_secs(v.unwrap_or(default).max(0) as u64);
    Ok(ProbeSettings {
        check,
        initial_delay: secs(probe.initial_delay_seconds, 0),
        period: secs(probe.period_seconds, 10).max(Duration::from_secs(1)),
        timeout: secs(probe.timeout_seconds, 1).max(Duration::from_secs(1)),
        failure_threshold: probe.failure_threshold.unwrap_or(3).max(1) as u32,
        success_threshold: probe.success_threshold.unwrap_or(1).max(1) as u32,
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// No verdict yet (before the first threshold is reached).
    Unknown,
    Passing,
    Failing,
}

/// Consecutive-result counting, the way the kubelet does it.
#[derive(Clone, Debug)]
pub struct ProbeTracker {
    failure_threshold: u32,
    success_threshold: u32,
    successes: u32,
    failures: u32,
    health: Health,
}

impl ProbeTracker {
    pub fn new(s: &ProbeSettings) -> Self {
        ProbeTracker {
            failure_threshold: s.failure_threshold,
            success_threshold: s.success_threshold,
            successes: 0,
            failures: 0,
            health: Health::Unknown,
        }
    }

    /// Records one attempt; returns the health after it.
    pub fn record(&mut self, ok: bool) -> Health {
        if ok {
            self.successes += 1;
            self.failures = 0;
            if self.successes >= self.success_threshold {
                self.health = Health::Passing;
            }
        } else {
            self.failures += 1;
            self.successes = 0;
            if self.failures >= self.failure_threshold {
                self.health = Health::Failing;
            }
        }
        self.health
    }

    pub fn health(&self) -> Health {
        self.health
    }
}

/// What a probe runs against: the instance's address and its init process.
#[derive(Clone, Debug)]
pub struct Target {
    pub ip: IpAddr,
    pub pid: i32,
    /// This executable (`exe __container exec` runs exec probes).
    pub exe: PathBuf,
    /// The container's bundle (the exec's environment comes from it).
    pub bundle: Option<PathBuf>,
}

/// One attempt. Ok(()) passes; Err says why it failed.
pub fn check(target: &Target, s: &ProbeSettings) -> Result<(), ProbeError> {
    let ip = target.ip;
    match &s.check {
        Check::Tcp { port } => {
            TcpStream::connect_timeout(&SocketAddr::new(ip, *port), s.timeout)?;
            Ok(())
        }
        Check::Http { path, port } => http_get(SocketAddr::new(ip, *port), path, s.timeout),
        Check::Exec { command } => exec(target, command, s.timeout),
    }
}

fn exec(target: &Target, command: &[String], timeout: Duration) -> Result<(), ProbeError> {
    if command.is_empty() {
        return Err(ProbeError::EmptyCommand);
    }
    let mut child = crate::container::exec_command(
        &target.exe,
        target.pid,
        target.bundle.as_deref(),
        None,
        command,
    )
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .map_err(ProbeError::Helper)?;
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                let command = command[0].clone();
                return Err(ProbeError::Exited { command, status });
            }
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                let command = command[0].clone();
                return Err(ProbeError::TimedOut { command, timeout });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(e.into()),
        }
    }
}

/// A status in 200..400 passes, as in Kubernetes.
fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(), ProbeError> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: omnicloud-probe\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    // The status line may arrive in pieces: read until its end.
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 64];
    while !head.contains(&b'\n') && head.len() < 1024 {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ProbeError::NotHttp(line.lines().next().unwrap_or("").to_string()))?;
    if (200..400).contains(&status) {
        Ok(())
    } else {
        Err(ProbeError::HttpStatus(status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, TcpListener};

    fn settings_for(check: Check, failure: u32, success: u32) -> ProbeSettings {
        ProbeSettings {
            check,
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            failure_threshold: failure,
            success_threshold: success,
        }
    }

    #[test]
    fn thresholds_as_kubelet() {
        let mut t = ProbeTracker::new(&settings_for(Check::Tcp { port: 1 }, 3, 2));
        assert_eq!(t.record(true), Health::Unknown, "one success of two");
        assert_eq!(t.record(true), Health::Passing);
        assert_eq!(t.record(false), Health::Passing);
        assert_eq!(t.record(false), Health::Passing);
        assert_eq!(
            t.record(true),
            Health::Passing,
            "a success resets the failure count"
        );
        for _ in 0..2 {
            t.record(false);
        }
        assert_eq!(t.record(false), Health::Failing, "three in a row");
        assert_eq!(t.record(true), Health::Failing);
        assert_eq!(t.record(true), Health::Passing);
    }

    #[test]
    fn settings_resolve_named_ports_and_defaults() {
        let probe: Probe = serde_json::from_value(
            serde_json::json!({"httpGet": {"path": "/health", "port": "http"}}),
        )
        .unwrap();
        let s = settings(&probe, &[("http".into(), 8080)]).unwrap();
        assert_eq!(
            s.check,
            Check::Http {
                path: "/health".into(),
                port: 8080
            }
        );
        assert_eq!(
            (
                s.period,
                s.timeout,
                s.failure_threshold,
                s.success_threshold
            ),
            (Duration::from_secs(10), Duration::from_secs(1), 3, 1)
        );
        assert!(settings(&probe, &[])
            .unwrap_err()
            .to_string()
            .contains("named \"http\""));
    }

    #[test]
    fn real_tcp_and_http_checks() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for (i, stream) in listener.incoming().enumerate() {
                let mut s = stream.unwrap();
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf);
                let status = if i < 2 {
                    "200 OK"
                } else {
                    "503 Service Unavailable"
                };
                let _ = s.write_all(
                    format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes(),
                );
            }
        });
        let ip = &Target {
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            pid: std::process::id() as i32,
            exe: PathBuf::new(),
            bundle: None,
        };
        assert!(check(ip, &settings_for(Check::Tcp { port }, 1, 1)).is_ok());
        assert!(check(
            ip,
            &settings_for(
                Check::Http {
                    path: "/health".into(),
                    port
                },
                1,
                1
            )
        )
        .is_ok());
        let err = check(
            ip,
            &settings_for(
                Check::Http {
                    path: "/health".into(),
                    port,
                },
                1,
                1,
            ),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "HTTP 503");
        let closed = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        assert!(check(ip, &settings_for(Check::Tcp { port: closed }, 1, 1)).is_err());
    }
    // Exec probes run the `__container exec` helper, a binary: tests/exec.rs.
}
