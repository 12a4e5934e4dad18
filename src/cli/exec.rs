//! `omnicloud exec [-i] [-t] INSTANCE [-c CONTAINER] -- CMD...`: runs a command in an
//! instance's container through any node's API (a WebSocket, frames of
//! [`crate::api::exec`]), with stdin passed on (`-i`) and a terminal (`-t`: the local one in
//! raw mode, its size sent when it changes). Exits with the command's exit code.

use std::io::{Read, Write};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use clap::Args;
use tungstenite::client::IntoClientRequest;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::Message;

use super::Conn;
use crate::api::exec::{self as proto, ExecQuery};
use crate::client::urlencode;

#[derive(Debug, Args)]
pub struct ExecArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// Instance name (e.g. web-0), or instance/NAME.
    pub instance: String,
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// The container (default: the instance's first).
    #[arg(short, long)]
    pub container: Option<String>,
    /// Pass stdin to the command.
    #[arg(short = 'i', long)]
    pub stdin: bool,
    /// A terminal for the command.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// How often the terminal's size is looked at (a change is sent to the command).
const RESIZE_POLL: Duration = Duration::from_millis(250);
/// How long a read of the socket waits before outgoing frames get their turn.
const READ_SLICE: Duration = Duration::from_millis(20);

pub fn run(args: ExecArgs) -> ExitCode {
    match session(&args) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The WebSocket URL of an exec on `server` (`http` becomes `ws`, `https` `wss`).
pub fn exec_url(server: &str, ns: &str, name: &str, q: &ExecQuery) -> String {
    let server = server.trim_end_matches('/');
    let ws = if let Some(rest) = server.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = server.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        format!("ws://{server}")
    };
    format!(
        "{ws}/v1/namespaces/{}/instances/{}/exec?{}",
        urlencode(ns),
        urlencode(name),
        q.to_query()
    )
}

/// Puts the terminal on stdin in raw mode until dropped.
struct RawMode(Option<nix::sys::termios::Termios>);

impl RawMode {
    fn enter() -> RawMode {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        let Ok(saved) = tcgetattr(&stdin) else {
            return RawMode(None);
        };
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &raw);
        RawMode(Some(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                saved,
            );
        }
    }
}

fn terminal_size() -> Option<(u16, u16)> {
    crate::container::exec::window_size(&std::io::stdout())
        .or_else(|| crate::container::exec::window_size(&std::io::stdin()))
}

type Socket = tungstenite::WebSocket<MaybeTlsStream<std::net::TcpStream>>;

/// Opens the exec WebSocket: `wss` trusting only the cluster CA `ca`, or plain `ws`.
fn connect(
    request: tungstenite::handshake::client::Request,
    ca: Option<&str>,
    server: &str,
) -> Result<(Socket, tungstenite::handshake::client::Response), String> {
    let uri = request.uri().clone();
    let tls = uri.scheme_str() == Some("wss");
    let host = uri.host().unwrap_or("127.0.0.1").trim_matches(['[', ']']);
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let stream = std::net::TcpStream::connect((host, port))
        .map_err(|e| format!("cannot reach {server}: {e}"))?;
    let connector = match (tls, ca) {
        (false, _) => None,
        (true, Some(pem)) => {
            let config = crate::cluster::pki::client_config(pem, None)
                .map_err(|e| crate::error_chain(&e))?;
            Some(tungstenite::Connector::Rustls(std::sync::Arc::new(config)))
        }
        (true, None) => {
            return Err(format!(
                "no cluster CA to trust {server}: pass --ca FILE, run `omnicloud login`, or \
                 --data-dir of a local node"
            ))
        }
    };
    tungstenite::client_tls_with_config(request, stream, None, connector).map_err(|e| match e {
        tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r)) => {
            let body: serde_json::Value = r
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or_default();
            match body["message"].as_str() {
                Some(m) if !m.is_empty() => m.to_string(),
                _ => format!("HTTP {}", r.status()),
            }
        }
        e => format!("cannot reach {server}: {e}"),
    })
}

/// One exec: the command's exit code, or why there is none.
fn session(args: &ExecArgs) -> Result<i32, String> {
    let name = args
        .instance
        .strip_prefix("instance/")
        .unwrap_or(&args.instance);
    let ns = args.namespace.as_deref().unwrap_or("default");
    let q = ExecQuery {
        command: args.command.clone(),
        container: args.container.clone(),
        stdin: args.stdin,
        tty: args.tty,
        size: if args.tty { terminal_size() } else { None },
    };
    let (server, token, ca) = args.conn.resolve();
    let url = exec_url(&server, ns, name, &q);
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| format!("server URL {server}: {e}"))?;
    if let Some(t) = token {
        let value = format!("Bearer {t}")
            .parse()
            .map_err(|_| "the token is not valid in a header".to_string())?;
        request.headers_mut().insert("authorization", value);
    }
    let (mut ws, _) = connect(request, ca.as_deref(), &server)?;
    match ws.get_mut() {
        MaybeTlsStream::Plain(s) => s.set_read_timeout(Some(READ_SLICE)),
        MaybeTlsStream::Rustls(s) => s.sock.set_read_timeout(Some(READ_SLICE)),
        _ => Ok(()),
    }
    .map_err(|e| format!("socket: {e}"))?;

    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    if args.stdin {
        let tx = tx.clone();
        std::thread::spawn(move || forward_stdin(tx));
    }
    if args.tty {
        let tx = tx.clone();
        std::thread::spawn(move || forward_resizes(tx, q.size));
    }
    drop(tx);
    let _raw = (args.tty && args.stdin).then(RawMode::enter);
    let mut status = None;
    loop {
        while let Ok(frame) = rx.try_recv() {
            ws.send(Message::Binary(frame.into()))
                .map_err(|e| format!("sending to the server: {e}"))?;
        }
        match ws.read() {
            Ok(Message::Binary(b)) => match b.split_first() {
                Some((&proto::STDOUT, data)) => write_all(&mut std::io::stdout(), data),
                Some((&proto::STDERR, data)) => write_all(&mut std::io::stderr(), data),
                Some((&proto::STATUS, data)) => status = Some(proto::exit_code(data)),
                _ => {}
            },
            Ok(Message::Close(_)) => break,
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => break,
            Err(e) if status.is_some() => {
                let _ = e;
                break;
            }
            Err(e) => return Err(format!("the connection failed: {e}")),
        }
        if status.is_some() {
            break;
        }
    }
    drop(_raw);
    match status {
        Some(result) => result,
        None => Err("the connection ended before the command's exit status came".into()),
    }
}

fn write_all(out: &mut impl Write, data: &[u8]) {
    let _ = out.write_all(data);
    let _ = out.flush();
}

fn forward_stdin(tx: mpsc::Sender<Vec<u8>>) {
    let mut stdin = std::io::stdin().lock();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match stdin.read(&mut buf) {
            Ok(0) | Err(_) => {
                let _ = tx.send(vec![proto::CLOSE, proto::STDIN]);
                return;
            }
            Ok(n) => {
                if tx
                    .send(proto::frame(proto::STDIN, &buf[..n]).to_vec())
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

fn forward_resizes(tx: mpsc::Sender<Vec<u8>>, mut last: Option<(u16, u16)>) {
    loop {
        std::thread::sleep(RESIZE_POLL);
        let now = terminal_size();
        if let Some((w, h)) = now.filter(|_| now != last) {
            let json = serde_json::json!({"Width": w, "Height": h}).to_string();
            if tx
                .send(proto::frame(proto::RESIZE, json.as_bytes()).to_vec())
                .is_err()
            {
                return;
            }
            last = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_follow_the_server_scheme() {
        let q = ExecQuery {
            command: vec!["ls".into()],
            ..Default::default()
        };
        assert_eq!(
            exec_url("http://10.0.0.1:7070/", "default", "web-0", &q),
            "ws://10.0.0.1:7070/v1/namespaces/default/instances/web-0/exec?command=ls&stdin=false&tty=false"
        );
        assert!(exec_url("https://h:1", "a", "b", &q).starts_with("wss://h:1/"));
    }
}
