//! Demo workloads compiled into the binary, so the `toolbox` image needs nothing else:
//! `omnicloud workload http --port 8080` serves
//!
//! - `GET /health`  200 "ok" (or 503 after `POST /health/fail`, for probe tests)
//! - `GET /`        who answered: hostname, pid, request count
//! - `GET /peer`    the client's address as seen here (shows whether source NAT happened)
//! - `GET /burn?ms=N` burns one core for N ms (autoscaling load), capped at 10 s
//! - `GET /metrics` `http_requests_total` and `http_requests_per_second` (Prometheus text)
//!
//! Plain std networking, one thread per connection: no runtime, tiny RSS.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    unhealthy: AtomicBool,
    /// Requests in the current and previous one-second windows, for a per-second rate.
    window: std::sync::Mutex<(u64, u64, Option<Instant>)>,
}

impl Counters {
    fn tick(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut w = self.window.lock().unwrap();
        let now = Instant::now();
        match w.2 {
            Some(start) if now.duration_since(start) < Duration::from_secs(1) => w.0 += 1,
            Some(start) if now.duration_since(start) < Duration::from_secs(2) => {
                *w = (1, w.0, Some(now))
            }
            _ => *w = (1, 0, Some(now)),
        }
    }

    fn rate(&self) -> u64 {
        let w = self.window.lock().unwrap();
        match w.2 {
            Some(start) if start.elapsed() < Duration::from_secs(2) => w.1.max(w.0),
            _ => 0,
        }
    }
}

extern "C" fn exit_now(_: libc::c_int) {
    // SAFETY: _exit is async-signal-safe and ends the process without running anything.
    unsafe { libc::_exit(0) }
}

/// As a container's init (pid 1 of its namespace) the process ignores signals it has no
/// handler for, so a polite stop would always wait out the grace period.
fn exit_on_sigterm() {
    // SAFETY: installs a handler that only calls _exit.
    unsafe {
        libc::signal(libc::SIGTERM, exit_now as *const () as libc::sighandler_t);
    }
}

/// Serves until the process is killed (SIGTERM ends it at once).
pub fn serve_http(port: u16) -> std::io::Result<()> {
    exit_on_sigterm();
    let listener = TcpListener::bind(("0.0.0.0", port))?;
    eprintln!("workload http listening on {}", listener.local_addr()?);
    serve_on(listener)
}

/// Serves on a bound listener (tests bind port 0 and keep their signal handlers).
pub fn serve_on(listener: TcpListener) -> std::io::Result<()> {
    let counters = Arc::new(Counters::default());
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let counters = counters.clone();
        std::thread::spawn(move || {
            let _ = handle(stream, &counters);
        });
    }
    Ok(())
}

fn handle(stream: TcpStream, counters: &Counters) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let mut keep_alive = true;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 || header == "\r\n" || header == "\n" {
                break;
            }
            if header.to_ascii_lowercase().starts_with("connection: close") {
                keep_alive = false;
            }
        }
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or("");
        let target = parts.next().unwrap_or("/");
        counters.tick();
        let (status, body) = match (method, target) {
            // The client's address as this instance sees it (source NAT shows here).
            ("GET", "/peer") => ("200 OK", format!("{}\n", writer.peer_addr()?.ip())),
            _ => route(method, target, counters),
        };
        write!(
            writer,
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n{body}",
            body.len(),
            if keep_alive {
                ""
            } else {
                "Connection: close\r\n"
            }
        )?;
        writer.flush()?;
        if !keep_alive {
            return Ok(());
        }
    }
}

fn route(method: &str, target: &str, counters: &Counters) -> (&'static str, String) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    match (method, path) {
        ("GET", "/health") if counters.unhealthy.load(Ordering::Relaxed) => {
            ("503 Service Unavailable", "failing\n".into())
        }
        ("GET", "/health") => ("200 OK", "ok\n".into()),
        ("POST", "/health/fail") => {
            counters.unhealthy.store(true, Ordering::Relaxed);
            ("200 OK", "health now fails\n".into())
        }
        ("GET", "/burn") => {
            let ms: u64 = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("ms="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(100)
                .min(10_000);
            let start = Instant::now();
            let mut x: u64 = 1;
            while start.elapsed() < Duration::from_millis(ms) {
                for _ in 0..10_000 {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                }
            }
            ("200 OK", format!("burned {ms} ms ({})\n", x % 10))
        }
        ("GET", "/metrics") => (
            "200 OK",
            format!(
                "# TYPE http_requests_total counter\nhttp_requests_total {}\n# TYPE http_requests_per_second gauge\nhttp_requests_per_second {}\n",
                counters.requests.load(Ordering::Relaxed),
                counters.rate()
            ),
        ),
        ("GET", "/") => (
            "200 OK",
            format!(
                "hello from {} (pid {}), request {}\n",
                crate::config::hostname(),
                std::process::id(),
                counters.requests.load(Ordering::Relaxed)
            ),
        ),
        _ => ("404 Not Found", "not found\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let c = Counters::default();
        assert_eq!(route("GET", "/health", &c).0, "200 OK");
        route("POST", "/health/fail", &c);
        assert_eq!(route("GET", "/health", &c).0, "503 Service Unavailable");
        let t = Instant::now();
        assert!(route("GET", "/burn?ms=30", &c)
            .1
            .starts_with("burned 30 ms"));
        assert!(t.elapsed() >= Duration::from_millis(30));
        c.tick();
        assert!(route("GET", "/metrics", &c)
            .1
            .contains("http_requests_total 1"));
        assert_eq!(route("GET", "/nope", &c).0, "404 Not Found");
    }
}
