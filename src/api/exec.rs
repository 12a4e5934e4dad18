//! `GET /v1/namespaces/{ns}/instances/{name}/exec?command=sh&command=-c&...&container=C
//! &stdin=true&tty=true&cols=W&rows=H`, upgraded to a WebSocket: a command running in one
//! of the instance's containers, its stdin, stdout and stderr streamed.
//!
//! The frames are those of Kubernetes' `v5.channel.k8s.io` (kubectl's protocol, so a
//! later kubectl-compatible endpoint can reuse them): binary messages whose first byte is
//! the channel: 0 stdin, 1 stdout, 2 stderr, 3 the exit status (a `metav1.Status` as
//! JSON, [`status_json`]), 4 a terminal resize (`{"Width":W,"Height":H}`), and 255
//! closing a channel (`[255, 0]`: stdin ends). The server sends channel 3 last, then
//! closes.
//!
//! Any node answers. The node that runs the instance looks up its running container
//! ([`crate::agent::exec::running_container`]) and starts the `__container exec` helper;
//! another node opens the same WebSocket to that node (its API address from gossip, the
//! cluster's admin token, marked as forwarded) and relays frames both ways. What is
//! missing (instance, container, a running container) is an HTTP error before the
//! upgrade, so the client gets a status and a message.

use actix_web::web::{self, Bytes, Data, Path};
use actix_web::{HttpRequest, HttpResponse};
use actix_ws::{Message, MessageStream, Session};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite;

use super::error::ApiError;
use super::logs::{owner_api, placed, FORWARDED};
use super::ApiState;
use crate::agent::exec as agent_exec;
use crate::container::exec::Input;

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const STATUS: u8 = 3;
pub const RESIZE: u8 = 4;
pub const CLOSE: u8 = 255;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/namespaces/{ns}/instances/{name}/exec",
        web::get().to(exec),
    );
}

/// What an exec asks for, from its query string.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecQuery {
    pub command: Vec<String>,
    pub container: Option<String>,
    pub stdin: bool,
    pub tty: bool,
    /// The terminal's initial size (columns, rows), with `tty`.
    pub size: Option<(u16, u16)>,
}

impl ExecQuery {
    /// The query string ([`ExecQuery::parse`] reads it back).
    pub fn to_query(&self) -> String {
        let mut pairs: Vec<(&str, String)> = Vec::new();
        for c in &self.command {
            pairs.push(("command", c.clone()));
        }
        if let Some(c) = &self.container {
            pairs.push(("container", c.clone()));
        }
        pairs.push(("stdin", self.stdin.to_string()));
        pairs.push(("tty", self.tty.to_string()));
        if let Some((cols, rows)) = self.size {
            pairs.push(("cols", cols.to_string()));
            pairs.push(("rows", rows.to_string()));
        }
        serde_urlencoded::to_string(pairs).expect("strings encode")
    }

    /// `command` repeats, one argument each (as Kubernetes'); unknown keys are refused.
    pub fn parse(query: &str) -> Result<ExecQuery, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
            .map_err(|e| ApiError::bad_request(format!("query string: {e}")))?;
        let mut q = ExecQuery::default();
        let (mut cols, mut rows) = (None, None);
        let flag = |k: &str, v: &str| -> Result<bool, ApiError> {
            match v {
                "true" | "1" => Ok(true),
                "false" | "0" | "" => Ok(false),
                _ => Err(ApiError::invalid(
                    k,
                    format!("expected true or false, got {v:?}"),
                )),
            }
        };
        let size = |k: &str, v: &str| -> Result<Option<u16>, ApiError> {
            v.parse()
                .map(Some)
                .map_err(|_| ApiError::invalid(k, format!("expected 0..65535, got {v:?}")))
        };
        for (k, v) in pairs {
            match k.as_str() {
                "command" => q.command.push(v),
                "container" if !v.is_empty() => q.container = Some(v),
                "container" => {}
                "stdin" => q.stdin = flag(&k, &v)?,
                "tty" => q.tty = flag(&k, &v)?,
                // kubectl sends these; stdout and stderr are always streamed.
                "stdout" | "stderr" => {}
                "cols" => cols = size(&k, &v)?,
                "rows" => rows = size(&k, &v)?,
                other => {
                    return Err(ApiError::invalid(
                        other,
                        "unknown parameter: expected command, container, stdin, tty, cols, rows",
                    ))
                }
            }
        }
        if q.command.is_empty() {
            return Err(ApiError::invalid(
                "command",
                "no command: give one or more command= parameters",
            ));
        }
        q.size = cols.zip(rows);
        Ok(q)
    }
}

/// Channel 3's message for an exit code, as the kubelet writes it.
pub fn status_json(code: i32) -> Vec<u8> {
    let v = if code == 0 {
        serde_json::json!({"metadata": {}, "status": "Success"})
    } else {
        serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        })
    };
    serde_json::to_vec(&v).expect("json")
}

/// The exit code in channel 3's message; Err(message) for a failure without one.
pub fn exit_code(status: &[u8]) -> Result<i32, String> {
    let v: serde_json::Value =
        serde_json::from_slice(status).map_err(|e| format!("exit status: {e}"))?;
    if v["status"] == "Success" {
        return Ok(0);
    }
    v["details"]["causes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["reason"] == "ExitCode")
        .and_then(|c| c["message"].as_str()?.parse().ok())
        .ok_or_else(|| v["message"].as_str().unwrap_or("exec failed").to_string())
}

/// A client frame as helper input; None for frames that carry nothing for it (stdin
/// when the exec did not ask for stdin, an unknown channel).
pub fn input(frame: &[u8], stdin: bool) -> Option<Input> {
    let (&channel, data) = frame.split_first()?;
    match channel {
        STDIN if stdin => Some(Input::Stdin(data.to_vec())),
        RESIZE => {
            let v: serde_json::Value = serde_json::from_slice(data).ok()?;
            Some(Input::Resize {
                cols: u16::try_from(v["Width"].as_u64()?).ok()?,
                rows: u16::try_from(v["Height"].as_u64()?).ok()?,
            })
        }
        CLOSE if data.first() == Some(&STDIN) => Some(Input::CloseStdin),
        _ => None,
    }
}

/// A frame on `channel`.
pub fn frame(channel: u8, data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(data.len() + 1);
    out.push(channel);
    out.extend_from_slice(data);
    Bytes::from(out)
}

async fn exec(
    state: Data<ApiState>,
    path: Path<(String, String)>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (ns, name) = path.into_inner();
    let q = ExecQuery::parse(req.query_string())?;
    let (object, node) = placed(&state, &ns, &name, "nothing to exec into")?;
    if node != state.node_name {
        let api_addr = owner_api(&state, &req, &node, &ns, &name).await?;
        let url = format!(
            "{}/v1/namespaces/{ns}/instances/{name}/exec?{}",
            crate::cluster::pki::peer_api_url(&api_addr).replacen("http", "ws", 1),
            q.to_query()
        );
        let upstream = connect(&url, &state.node_token, &node).await?;
        let (response, session, msgs) = upgrade(&req, body)?;
        actix_web::rt::spawn(relay(upstream, session, msgs));
        return Ok(response);
    }
    let exe = std::env::current_exe().map_err(|e| ApiError::internal(e.to_string()))?;
    let dirs = crate::agent::Dirs::under(&state.data_dir);
    let containers = crate::agent::containers::Containers::new(exe.clone(), &dirs.containers);
    let target = agent_exec::running_container(&containers, &object, q.container.as_deref())
        .await
        .map_err(|e| {
            let status = if e.is_not_found() {
                actix_web::http::StatusCode::NOT_FOUND
            } else {
                actix_web::http::StatusCode::CONFLICT
            };
            ApiError::new(status, "ExecTarget", e.to_string())
        })?;
    let size = q.tty.then(|| q.size.unwrap_or((80, 24)));
    let child = agent_exec::spawn(&exe, &target, size, &q.command)
        .map_err(|e| ApiError::internal(crate::error_chain(&e)))?;
    let (response, session, msgs) = upgrade(&req, body)?;
    actix_web::rt::spawn(local(child, session, msgs, q.stdin));
    Ok(response)
}

fn upgrade(
    req: &HttpRequest,
    body: web::Payload,
) -> Result<(HttpResponse, Session, MessageStream), ApiError> {
    let (response, session, msgs) = actix_ws::handle(req, body).map_err(|e| {
        ApiError::bad_request(format!("exec needs a WebSocket upgrade request: {e}"))
    })?;
    Ok((response, session, msgs.max_frame_size(1 << 20)))
}

/// Runs one session on this node: client frames to the helper's stdin, its stdout and
/// stderr to the client, then its exit code.
async fn local(
    mut child: tokio::process::Child,
    mut session: Session,
    mut msgs: MessageStream,
    stdin: bool,
) {
    let mut helper_in = child.stdin.take();
    let out = actix_web::rt::spawn(pump(
        child.stdout.take().expect("piped"),
        STDOUT,
        session.clone(),
    ));
    let err = actix_web::rt::spawn(pump(
        child.stderr.take().expect("piped"),
        STDERR,
        session.clone(),
    ));
    let mut client_open = true;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            msg = msgs.next(), if client_open => match msg {
                Some(Ok(Message::Binary(b))) => {
                    let Some(frame) = input(&b, stdin) else { continue };
                    let sent = match helper_in.as_mut() {
                        Some(pipe) => pipe.write_all(&frame.encode()).await.is_ok(),
                        None => false,
                    };
                    if !sent {
                        helper_in = None;
                    }
                }
                Some(Ok(Message::Ping(p))) => {
                    let _ = session.pong(&p).await;
                }
                Some(Ok(_)) => {}
                // The client went away: the helper's stdin ends (a terminal hangs up).
                Some(Err(_)) | None => {
                    client_open = false;
                    helper_in = None;
                }
            },
        }
    };
    let _ = out.await;
    let _ = err.await;
    let code = match status {
        Ok(s) => {
            use std::os::unix::process::ExitStatusExt;
            s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))
        }
        Err(_) => crate::container::exec::SETUP_FAILED,
    };
    let _ = session.binary(frame(STATUS, &status_json(code))).await;
    let _ = session.close(None).await;
}

/// Copies one of the helper's outputs to the client on `channel` until it ends (and
/// keeps reading after the client has gone, so the helper never blocks on it).
async fn pump(mut from: impl AsyncRead + Unpin, channel: u8, mut session: Session) {
    let mut buf = vec![0u8; 32 * 1024];
    let mut open = true;
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) if open => open = session.binary(frame(channel, &buf[..n])).await.is_ok(),
            Ok(_) => {}
        }
    }
}

type Upstream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens the exec on the owner node; its HTTP error (a missing container, ...) becomes
/// ours.
async fn connect(url: &str, token: &str, node: &str) -> Result<Upstream, ApiError> {
    use tungstenite::client::IntoClientRequest;
    let mut request = url
        .into_client_request()
        .map_err(|e| ApiError::internal(format!("exec forward url: {e}")))?;
    let headers = request.headers_mut();
    let bearer = format!("Bearer {token}").parse().expect("ascii token");
    headers.insert("authorization", bearer);
    headers.insert(FORWARDED, "1".parse().expect("ascii"));
    let unavailable = |e: &dyn std::fmt::Display| {
        ApiError::new(
            actix_web::http::StatusCode::BAD_GATEWAY,
            "Unavailable",
            format!("node {node} did not answer: {e}"),
        )
    };
    let connector = crate::cluster::pki::peer_api_tls().map(tokio_tungstenite::Connector::Rustls);
    match tokio_tungstenite::connect_async_tls_with_config(request, None, false, connector).await {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(response)) => {
            let body: serde_json::Value = response
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or_default();
            let msg = body["message"].as_str().unwrap_or("").to_string();
            let status = actix_web::http::StatusCode::from_u16(response.status().as_u16())
                .unwrap_or(actix_web::http::StatusCode::BAD_GATEWAY);
            Err(ApiError::new(status, "Forwarded", msg))
        }
        Err(e) => Err(unavailable(&e)),
    }
}

/// Relays frames between the client and the owner node until the owner closes.
async fn relay(upstream: Upstream, mut session: Session, mut msgs: MessageStream) {
    let (mut up_tx, mut up_rx) = upstream.split();
    let mut client_open = true;
    loop {
        tokio::select! {
            msg = msgs.next(), if client_open => match msg {
                Some(Ok(Message::Binary(b))) => {
                    if up_tx.send(tungstenite::Message::Binary(b)).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Ping(p))) => {
                    let _ = session.pong(&p).await;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    client_open = false;
                    let _ = up_tx.send(tungstenite::Message::Close(None)).await;
                }
            },
            msg = up_rx.next() => match msg {
                Some(Ok(tungstenite::Message::Binary(b))) => {
                    if session.binary(b).await.is_err() && !client_open {
                        break;
                    }
                }
                Some(Ok(tungstenite::Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = session.close(None).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_round_trip_and_bad_ones_name_the_parameter() {
        let q = ExecQuery {
            command: vec!["sh".into(), "-c".into(), "echo a&b=c; exit 3".into()],
            container: Some("db".into()),
            stdin: true,
            tty: true,
            size: Some((120, 40)),
        };
        assert_eq!(ExecQuery::parse(&q.to_query()).unwrap(), q);
        let kubectl = "command=ls&command=-l&container=&stdin=true&stdout=true&stderr=true";
        let k = ExecQuery::parse(kubectl).unwrap();
        assert_eq!((k.command.len(), k.container, k.stdin), (2, None, true));
        let e = ExecQuery::parse("stdin=true").unwrap_err();
        assert!(e.to_string().contains("command"), "{e}");
        let e = ExecQuery::parse("command=ls&tty=maybe").unwrap_err();
        assert!(e.to_string().contains("maybe"), "{e}");
        let e = ExecQuery::parse("command=ls&colour=red").unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
    }

    #[test]
    fn statuses_carry_exit_codes_both_ways() {
        for code in [0, 1, 3, 126, 127, 137] {
            assert_eq!(exit_code(&status_json(code)), Ok(code));
        }
        let other = br#"{"status":"Failure","message":"container not found"}"#;
        assert_eq!(exit_code(other), Err("container not found".into()));
    }

    #[test]
    fn client_frames_become_helper_input() {
        assert_eq!(
            input(&frame(STDIN, b"hi"), true),
            Some(Input::Stdin(b"hi".to_vec()))
        );
        assert_eq!(
            input(&frame(STDIN, b"hi"), false),
            None,
            "stdin not asked for"
        );
        assert_eq!(
            input(&frame(RESIZE, br#"{"Width":100,"Height":30}"#), false),
            Some(Input::Resize {
                cols: 100,
                rows: 30
            })
        );
        assert_eq!(input(&[CLOSE, STDIN], true), Some(Input::CloseStdin));
        assert_eq!(input(&[9, 1, 2], true), None);
        assert_eq!(input(&[], true), None);
    }
}
