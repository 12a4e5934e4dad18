//! `omnicloud __container exec --pid PID [--tty] -- CMD...`: runs a command inside a running
//! container, for `omnicloud exec` and for exec probes alike (one implementation).
//!
//! Steps, in this single-threaded helper process (`setns` into a mount namespace refuses a
//! multi-threaded caller, so the node never does this itself):
//! 1. read the container's environment (its bundle's config.json, else
//!    `/proc/PID/environ`) and its init's user (`/proc/PID/status`);
//! 2. join its cgroups: this process's pid into the `cgroup.procs` of every hierarchy
//!    listed in `/proc/PID/cgroup`, found through `/proc/self/mountinfo`
//!    ([`cgroup_dirs`]), so the command is counted and limited with the container;
//! 3. open its namespaces (cgroup, ipc, uts, net, pid, mnt), root and working directory,
//!    then `setns` into each, `chroot` to its root and `chdir` to its working directory;
//! 4. with `--tty`, open a pty *inside* the container (its own devpts instance, so `tty`
//!    there prints `/dev/pts/N`), made the command's controlling terminal;
//! 5. fork and exec the command (the fork puts it in the container's pid namespace) with
//!    the container's environment, as its user; relay [`Input`] frames from our stdin;
//!    exit with the command's exit code (128+N for signal N); the command dies with the
//!    helper (`PR_SET_PDEATHSIG`), so a timed-out exec probe ends it. An executable that is not
//!    there exits 127, one that cannot be run 126, as a shell does.
//!
//! Why `setns` here rather than libcontainer's tenant builder (`youki exec`): the tenant
//! builder re-applies the container's whole process spec, which is stronger isolation
//! (capabilities, seccomp) but reports a missing executable only as a generic failure of
//! its init channel, needs a console socket dance for a terminal, and loads the
//! container's state from the runtime root, which an exec probe does not otherwise need.
//! Plain `setns` gives kubectl's 126/127 and a pty opened in the container's devpts
//! directly. What it does not do yet: drop capabilities to the container's bounding set.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Why the helper could not start the command (it exits [`SETUP_FAILED`] then).
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("the container's process {pid} is gone")]
    Gone { pid: i32 },
    #[error("reading {path}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("joining cgroup {dir}")]
    Cgroup {
        dir: String,
        #[source]
        source: io::Error,
    },
    #[error("entering the container's {ns} namespace")]
    Setns {
        ns: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("changing to the container's root")]
    Root(#[source] nix::Error),
    #[error("opening a terminal in the container")]
    Pty(#[source] nix::Error),
    #[error("duplicating a descriptor")]
    Dup(#[source] io::Error),
}

/// The exit code when the command could not be started for a reason other than its file.
pub const SETUP_FAILED: i32 = 126;
/// The exit code for an executable that does not exist (as a shell's).
pub const NOT_FOUND: i32 = 127;

/// One message on the helper's stdin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    Stdin(Vec<u8>),
    /// The command's stdin ends (with a tty: ignored; the end of the frames hangs up).
    CloseStdin,
    Resize {
        cols: u16,
        rows: u16,
    },
}

const STDIN: u8 = 0;
const CLOSE: u8 = 1;
const RESIZE: u8 = 4;

impl Input {
    /// `[kind][len: u32 big-endian][payload]`.
    pub fn encode(&self) -> Vec<u8> {
        let (kind, payload) = match self {
            Input::Stdin(d) => (STDIN, d.clone()),
            Input::CloseStdin => (CLOSE, Vec::new()),
            Input::Resize { cols, rows } => {
                let mut p = cols.to_be_bytes().to_vec();
                p.extend(rows.to_be_bytes());
                (RESIZE, p)
            }
        };
        let mut out = vec![kind];
        out.extend((payload.len() as u32).to_be_bytes());
        out.extend(payload);
        out
    }

    /// Takes the first whole frame off the front of `buf` (None: not a whole one yet; a
    /// frame that does not parse is dropped).
    pub fn take(buf: &mut Vec<u8>) -> Option<Input> {
        loop {
            if buf.len() < 5 {
                return None;
            }
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if buf.len() < 5 + len {
                return None;
            }
            let frame: Vec<u8> = buf.drain(..5 + len).collect();
            if let Some(input) = Input::read(&mut &frame[..]) {
                return Some(input);
            }
        }
    }

    /// The next frame; None at the end of the stream (or on a frame that does not parse).
    pub fn read(r: &mut impl Read) -> Option<Input> {
        let mut head = [0u8; 5];
        r.read_exact(&mut head).ok()?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if len > 1 << 20 {
            return None;
        }
        let mut payload = vec![0u8; len];
        r.read_exact(&mut payload).ok()?;
        match (head[0], payload.len()) {
            (STDIN, _) => Some(Input::Stdin(payload)),
            (CLOSE, _) => Some(Input::CloseStdin),
            (RESIZE, 4) => Some(Input::Resize {
                cols: u16::from_be_bytes([payload[0], payload[1]]),
                rows: u16::from_be_bytes([payload[2], payload[3]]),
            }),
            _ => None,
        }
    }
}

/// The cgroup directories (host paths) of a process: one per hierarchy of its
/// `/proc/PID/cgroup` that `mountinfo` shows mounted, with whether joining it matters
/// (a hierarchy with controllers; the controller-less ones are joined when possible).
pub fn cgroup_dirs(proc_cgroup: &str, mountinfo: &str) -> Vec<(PathBuf, bool)> {
    // (mount point, root inside the hierarchy, super options or None for cgroup2)
    let mut mounts: Vec<(String, String, Option<Vec<String>>)> = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if l.len() < 5 || r.len() < 3 {
            continue;
        }
        match r[0] {
            "cgroup" => mounts.push((
                l[4].into(),
                l[3].into(),
                Some(r[2].split(',').map(String::from).collect()),
            )),
            "cgroup2" => mounts.push((l[4].into(), l[3].into(), None)),
            _ => {}
        }
    }
    let v1 = proc_cgroup.lines().any(|l| !l.starts_with("0::"));
    let mut out = Vec::new();
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let mount = if controllers.is_empty() {
            mounts.iter().find(|m| m.2.is_none())
        } else {
            let wanted: Vec<&str> = controllers.split(',').collect();
            mounts.iter().find(|m| {
                m.2.as_ref()
                    .is_some_and(|opts| wanted.iter().all(|w| opts.iter().any(|o| o == w)))
            })
        };
        let Some((point, root, _)) = mount else {
            continue;
        };
        let rel = path.strip_prefix(root.as_str()).unwrap_or(path);
        let dir = Path::new(point).join(rel.trim_start_matches('/'));
        let matters = if controllers.is_empty() {
            !v1
        } else {
            !controllers.starts_with("name=")
        };
        out.push((dir, matters));
    }
    out
}

/// What the command inherits from the container's init process.
struct Entered {
    env: BTreeMap<String, String>,
    uid: u32,
    gid: u32,
}

fn read_proc(pid: i32, file: &str) -> Result<Vec<u8>, ExecError> {
    let path = format!("/proc/{pid}/{file}");
    std::fs::read(&path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => ExecError::Gone { pid },
        _ => ExecError::Read { path, source },
    })
}

/// `K=V` strings as a map (the first `=` splits).
fn env_map<'a>(vars: impl Iterator<Item = std::borrow::Cow<'a, str>>) -> BTreeMap<String, String> {
    vars.filter_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        Some((k.to_string(), v.to_string()))
    })
    .collect()
}

/// The environment the container was started with: its bundle's config.json when given
/// and readable, else the init process's (which programs such as nginx overwrite with
/// their process title).
fn container_env(pid: i32, bundle: Option<&Path>) -> Result<BTreeMap<String, String>, ExecError> {
    let from_bundle = bundle
        .and_then(|b| oci_spec::runtime::Spec::load(b.join("config.json")).ok())
        .and_then(|spec| spec.process().as_ref()?.env().clone());
    if let Some(env) = from_bundle {
        return Ok(env_map(env.iter().map(|s| s.as_str().into())));
    }
    let environ = read_proc(pid, "environ")?;
    Ok(env_map(
        environ.split(|b| *b == 0).map(String::from_utf8_lossy),
    ))
}

/// Steps 1-3 of the module doc.
fn enter(pid: i32, bundle: Option<&Path>) -> Result<Entered, ExecError> {
    let env = container_env(pid, bundle)?;
    let status = String::from_utf8_lossy(&read_proc(pid, "status")?).into_owned();
    let id = |key: &str| -> u32 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let (uid, gid) = (id("Uid:"), id("Gid:"));
    let cgroups = String::from_utf8_lossy(&read_proc(pid, "cgroup")?).into_owned();
    let mountinfo =
        String::from_utf8_lossy(&read_proc(std::process::id() as i32, "mountinfo")?).into_owned();
    let me = std::process::id().to_string();
    for (dir, matters) in cgroup_dirs(&cgroups, &mountinfo) {
        let written = std::fs::write(dir.join("cgroup.procs"), &me);
        if let (Err(source), true) = (written, matters) {
            let dir = dir.display().to_string();
            return Err(ExecError::Cgroup { dir, source });
        }
    }
    let open = |what: &str| -> Result<Option<File>, ExecError> {
        let path = format!("/proc/{pid}/{what}");
        match File::open(&path) {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == io::ErrorKind::NotFound && what.starts_with("ns/") => Ok(None),
            Err(source) => Err(ExecError::Read { path, source }),
        }
    };
    use nix::sched::CloneFlags as F;
    let kinds: [(&'static str, F); 6] = [
        ("cgroup", F::CLONE_NEWCGROUP),
        ("ipc", F::CLONE_NEWIPC),
        ("uts", F::CLONE_NEWUTS),
        ("net", F::CLONE_NEWNET),
        ("pid", F::CLONE_NEWPID),
        ("mnt", F::CLONE_NEWNS),
    ];
    let mut namespaces = Vec::new();
    for (ns, flag) in kinds {
        if let Some(f) = open(&format!("ns/{ns}"))? {
            namespaces.push((ns, flag, f));
        }
    }
    let root = open("root")?.ok_or(ExecError::Gone { pid })?;
    let cwd = open("cwd")?.ok_or(ExecError::Gone { pid })?;
    for (ns, flag, f) in &namespaces {
        nix::sched::setns(f, *flag).map_err(|source| ExecError::Setns { ns, source })?;
    }
    nix::unistd::fchdir(root.as_raw_fd()).map_err(ExecError::Root)?;
    nix::unistd::chroot(".").map_err(ExecError::Root)?;
    nix::unistd::fchdir(cwd.as_raw_fd()).map_err(ExecError::Root)?;
    Ok(Entered { env, uid, gid })
}

/// The exit code and message for a command that could not be started.
pub fn spawn_failure(program: &str, e: &io::Error) -> (i32, String) {
    match (e.kind(), e.raw_os_error()) {
        (io::ErrorKind::NotFound, _) => (
            NOT_FOUND,
            format!("exec: {program:?}: executable file not found in $PATH"),
        ),
        (io::ErrorKind::PermissionDenied, _) => (
            SETUP_FAILED,
            format!("exec: {program:?}: permission denied"),
        ),
        (_, Some(libc::ENOEXEC)) => (
            SETUP_FAILED,
            format!("exec: {program:?}: exec format error"),
        ),
        _ => (SETUP_FAILED, format!("exec: {program:?}: {e}")),
    }
}

/// The helper's whole job: the exit code to leave with (messages already on stderr).
pub fn run(
    pid: i32,
    bundle: Option<&Path>,
    tty: bool,
    size: Option<(u16, u16)>,
    command: &[String],
) -> i32 {
    let fail = |e: &dyn std::error::Error| {
        eprintln!("omnicloud exec: {}", crate::error_chain(e));
        SETUP_FAILED
    };
    let Some(program) = command.first() else {
        eprintln!("omnicloud exec: no command given");
        return SETUP_FAILED;
    };
    let entered = match enter(pid, bundle) {
        Ok(e) => e,
        Err(e) => return fail(&e),
    };
    let mut cmd = Command::new(program);
    cmd.args(&command[1..])
        .env_clear()
        .envs(&entered.env)
        .uid(entered.uid)
        .gid(entered.gid);
    let result = if tty {
        if !entered.env.contains_key("TERM") {
            cmd.env("TERM", "xterm");
        }
        run_tty(cmd, size)
    } else {
        run_pipes(cmd)
    };
    match result {
        Ok(Ok(status)) => status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
        Ok(Err(e)) => {
            let (code, message) = spawn_failure(program, &e);
            eprintln!("omnicloud exec: {message}");
            code
        }
        Err(e) => fail(&e),
    }
}

type Spawned = Result<io::Result<std::process::ExitStatus>, ExecError>;

fn run_pipes(mut cmd: Command) -> Spawned {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    // SAFETY: between fork and exec the closure makes one system call (prctl), which is
    // async-signal-safe; it allocates nothing and takes no locks.
    unsafe {
        cmd.pre_exec(|| {
            die_with_parent()?;
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Ok(Err(e)),
    };
    let stdin = child.stdin.take();
    Ok(relay(
        &mut child,
        stdin.map(|s| File::from(OwnedFd::from(s))),
        None,
    ))
}

fn run_tty(mut cmd: Command, size: Option<(u16, u16)>) -> Spawned {
    let (cols, rows) = size.unwrap_or((80, 24));
    let winsize = nix::pty::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&winsize), None).map_err(ExecError::Pty)?;
    let slave = |fd: &OwnedFd| fd.try_clone().map(Stdio::from).map_err(ExecError::Dup);
    cmd.stdin(slave(&pty.slave)?)
        .stdout(slave(&pty.slave)?)
        .stderr(slave(&pty.slave)?);
    // SAFETY: between fork and exec the closure only makes system calls (setsid, ioctl,
    // prctl), all async-signal-safe; it allocates nothing and takes no locks.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            die_with_parent()
        });
    }
    let spawned = cmd.spawn();
    drop(cmd);
    drop(pty.slave);
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => return Ok(Err(e)),
    };
    let master = File::from(pty.master);
    let writer = master.try_clone().map_err(ExecError::Dup)?;
    Ok(relay(&mut child, Some(writer), Some(master)))
}

/// The command is killed when this helper dies (an exec probe that timed out kills the
/// helper, and so the command, as the kubelet does). Called between fork and exec.
fn die_with_parent() -> io::Result<()> {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Relays until the command ends, in this one thread (after `setns` into a pid namespace
/// the kernel refuses to create threads): frames from our stdin to `input` (the
/// command's stdin pipe, or the pty master), and with a tty the master's output to our
/// stdout. The end of our stdin closes the command's stdin, or hangs up its terminal.
fn relay(
    child: &mut std::process::Child,
    mut input: Option<File>,
    mut master: Option<File>,
) -> io::Result<std::process::ExitStatus> {
    use nix::poll::{poll, PollFd, PollFlags};
    use std::os::fd::AsFd;
    let tty = master.is_some();
    let stdin = io::stdin();
    let mut stdin_open = true;
    let mut pending = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        if let Some(status) = child.try_wait()? {
            if let Some(m) = master.as_mut() {
                drain(m);
            }
            return Ok(status);
        }
        let (in_ready, out_ready) = {
            let mut fds = Vec::new();
            if stdin_open {
                fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            }
            if let Some(m) = &master {
                fds.push(PollFd::new(m.as_fd(), PollFlags::POLLIN));
            }
            if poll(&mut fds, 50u16).is_err() {
                continue;
            }
            let ready =
                |fd: Option<&PollFd>| fd.and_then(|f| f.revents()).is_some_and(|r| !r.is_empty());
            let in_ready = stdin_open && ready(fds.first());
            let out_ready = master.is_some() && ready(fds.get(usize::from(stdin_open)));
            (in_ready, out_ready)
        };
        if in_ready {
            match nix::unistd::read(stdin.as_raw_fd(), &mut chunk) {
                Ok(0) | Err(_) => {
                    stdin_open = false;
                    if tty {
                        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
                        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP);
                    } else {
                        input = None;
                    }
                }
                Ok(n) => pending.extend_from_slice(&chunk[..n]),
            }
            while let Some(frame) = Input::take(&mut pending) {
                match frame {
                    Input::Stdin(data) => {
                        if input.as_mut().is_some_and(|i| i.write_all(&data).is_err()) {
                            input = None;
                        }
                    }
                    Input::CloseStdin if !tty => input = None,
                    Input::CloseStdin => {}
                    Input::Resize { cols, rows } => {
                        if let Some(m) = &master {
                            set_window_size(m, cols, rows);
                        }
                    }
                }
            }
        }
        if out_ready {
            let m = master.as_mut().expect("polled");
            match m.read(&mut chunk) {
                Ok(n) if n > 0 => write_out(&chunk[..n]),
                // EIO: every holder of the slave side closed it.
                _ => master = None,
            }
        }
    }
}

/// What the command wrote to its terminal just before it ended (unless a child of it
/// keeps the terminal open: then what arrives within a moment).
fn drain(master: &mut File) {
    use nix::poll::{poll, PollFd, PollFlags};
    use std::os::fd::AsFd;
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let mut fds = [PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, 200u16) {
            Ok(n) if n > 0 => {}
            _ => return,
        }
        match master.read(&mut chunk) {
            Ok(n) if n > 0 => write_out(&chunk[..n]),
            _ => return,
        }
    }
}

fn write_out(data: &[u8]) {
    let mut out = io::stdout().lock();
    let _ = out.write_all(data).and_then(|_| out.flush());
}

/// TIOCSWINSZ on a terminal (the pty master, or the client's own terminal).
pub fn set_window_size(fd: &impl AsRawFd, cols: u16, rows: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which outlives the call;
    // a descriptor that is not a terminal makes it fail with ENOTTY, ignored.
    unsafe {
        libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws);
    }
}

/// TIOCGWINSZ: (columns, rows) of a terminal, None when it is not one.
pub fn window_size(fd: &impl AsRawFd) -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` through the pointer, which is valid and
    // exclusively borrowed for the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_col > 0).then_some((ws.ws_col, ws.ws_row))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let frames = [
            Input::Stdin(b"hello\n".to_vec()),
            Input::Resize {
                cols: 120,
                rows: 40,
            },
            Input::Stdin(Vec::new()),
            Input::CloseStdin,
        ];
        let bytes: Vec<u8> = frames.iter().flat_map(Input::encode).collect();
        let mut r = &bytes[..];
        for f in &frames {
            assert_eq!(Input::read(&mut r).as_ref(), Some(f));
        }
        assert_eq!(Input::read(&mut r), None, "the end of the stream");
        assert_eq!(
            Input::read(&mut &[9u8, 0, 0, 0, 0][..]),
            None,
            "unknown kind"
        );
        let mut buf = bytes[..bytes.len() - 3].to_vec();
        assert_eq!(Input::take(&mut buf), Some(frames[0].clone()));
        assert_eq!(Input::take(&mut buf), Some(frames[1].clone()));
        assert_eq!(Input::take(&mut buf), Some(frames[2].clone()));
        assert_eq!(Input::take(&mut buf), None, "a partial frame waits");
        buf.extend(&bytes[bytes.len() - 3..]);
        assert_eq!(Input::take(&mut buf), Some(Input::CloseStdin));
    }

    #[test]
    fn cgroup_dirs_of_a_hybrid_host() {
        let mountinfo = "\
25 20 0:23 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
27 25 0:25 / /sys/fs/cgroup/systemd rw,nosuid - cgroup cgroup rw,xattr,name=systemd
30 25 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:12 - cgroup cgroup rw,cpu,cpuacct
31 25 0:29 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
";
        let cgroup = "\
4:memory:/omnicloud/a.b.c
3:cpu,cpuacct:/omnicloud/a.b.c
1:name=systemd:/user.slice
0::/user.slice
";
        let dirs = cgroup_dirs(cgroup, mountinfo);
        let want: Vec<(PathBuf, bool)> = vec![
            ("/sys/fs/cgroup/memory/omnicloud/a.b.c".into(), true),
            ("/sys/fs/cgroup/cpu,cpuacct/omnicloud/a.b.c".into(), true),
            ("/sys/fs/cgroup/systemd/user.slice".into(), false),
            ("/sys/fs/cgroup/unified/user.slice".into(), false),
        ];
        assert_eq!(dirs, want);
    }

    #[test]
    fn cgroup_dirs_of_a_v2_host_and_a_namespaced_root() {
        let mountinfo = "40 30 0:26 /kube /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let dirs = cgroup_dirs("0::/kube/omnicloud/x\n", mountinfo);
        assert_eq!(dirs, vec![("/sys/fs/cgroup/omnicloud/x".into(), true)]);
    }

    #[test]
    fn missing_and_unrunnable_executables_map_to_shell_codes() {
        let nf = io::Error::from(io::ErrorKind::NotFound);
        let (code, msg) = spawn_failure("nosuch", &nf);
        assert_eq!(code, 127);
        assert!(
            msg.contains("\"nosuch\": executable file not found"),
            "{msg}"
        );
        let denied = io::Error::from_raw_os_error(libc::EACCES);
        assert_eq!(spawn_failure("/etc/passwd", &denied).0, 126);
        let format = io::Error::from_raw_os_error(libc::ENOEXEC);
        assert_eq!(spawn_failure("x", &format).0, 126);
    }
}
