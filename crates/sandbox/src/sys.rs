//! Process and file-system plumbing shared by both sandboxes: which account a server runs as,
//! directories it can use, running commands with a deadline, signals, free ports, log tails.
//!
//! Commands run with a cleared environment so a developer's `PGHOST`, `~/.my.cnf`, locale or
//! `PGPASSWORD` can never point a sandbox client at the wrong server or change its output.

use std::collections::BTreeSet;
use std::fs::{self, Permissions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::error::{io_err, SandboxError};

/// `PATH` given to every command; the install scripts look up helpers through it.
const SAFE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The system servers' ports on this machine; a sandbox must never take them.
const RESERVED_PORTS: [u16; 2] = [5432, 3306];

/// Ports handed out by this process. A stopped sandbox keeps its port for `start_again`, so we
/// must not give it to a second sandbox even though the kernel considers it free.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// The unprivileged account a server runs as when we are root.
#[derive(Debug, Clone)]
pub(crate) struct Account {
    pub(crate) name: String,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

#[allow(unsafe_code)]
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Sends `signal` to `pid` (a negative pid addresses a process group). Returns whether it was
/// delivered; failure (already gone) is not an error for our callers.
#[allow(unsafe_code)]
pub(crate) fn send_signal(pid: i32, signal: i32) -> bool {
    // SAFETY: kill(2) only reads its integer arguments.
    unsafe { libc::kill(pid, signal) == 0 }
}

/// State and parent pid from `/proc/<pid>/stat`, or `None` if there is no such process.
fn proc_stat(pid: u32) -> Option<std::io::Result<(char, u32)>> {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The fields follow the parenthesised command name, which may itself contain ')'.
        Ok(stat) => {
            let rest = stat.get(stat.rfind(')')? + 1..)?;
            let mut fields = rest.split_whitespace();
            let state = fields.next()?.chars().next()?;
            let ppid = fields.next()?.parse().ok()?;
            Some(Ok((state, ppid)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => Some(Err(e)),
    }
}

/// Whether `pid` is a live process. A zombie counts as dead: servers started through `pg_ctl` are
/// reparented to pid 1, which may reap them late, and a zombie holds no port or memory.
pub(crate) fn is_alive(pid: u32) -> bool {
    match proc_stat(pid) {
        None => false,
        Some(Ok((state, _))) => !matches!(state, 'Z' | 'X'),
        // No readable /proc: fall back to asking the kernel (a zombie then counts as alive).
        Some(Err(_)) => i32::try_from(pid).is_ok_and(|pid| send_signal(pid, 0)),
    }
}

/// Live processes whose parent is `pid`.
pub(crate) fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&child| matches!(proc_stat(child), Some(Ok((state, ppid))) if ppid == pid && !matches!(state, 'Z' | 'X')))
        .collect()
}

/// Polls until `pid` is gone or `timeout` passes; returns whether it is gone.
pub(crate) fn wait_until_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while is_alive(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
    true
}

/// `None` when we are not root (servers run as ourselves); otherwise `preferred` if it exists in
/// /etc/passwd, else `nobody`.
pub(crate) fn server_account(
    server: &'static str,
    preferred: &str,
) -> Result<Option<Account>, SandboxError> {
    if !is_root() {
        return Ok(None);
    }
    let passwd = fs::read_to_string("/etc/passwd").map_err(io_err("reading /etc/passwd"))?;
    for name in [preferred, "nobody"] {
        if let Some(account) = lookup_account(&passwd, name) {
            return Ok(Some(account));
        }
    }
    Err(SandboxError::NoUnprivilegedAccount {
        server,
        tried: format!("{preferred}, nobody"),
    })
}

fn lookup_account(passwd: &str, name: &str) -> Option<Account> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        let uid: u32 = fields.nth(1)?.parse().ok()?;
        let gid: u32 = fields.next()?.parse().ok()?;
        // A uid-0 alias would defeat the purpose.
        (uid != 0).then(|| Account {
            name: name.to_owned(),
            uid,
            gid,
        })
    })
}

/// A command with a clean environment, run from `home`, as `account` if given.
pub(crate) fn command(program: &Path, home: &Path, account: Option<&Account>) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("PATH", SAFE_PATH)
        .env("LC_ALL", "C")
        .env("LANG", "C")
        .env("HOME", home)
        .current_dir(home);
    if let Some(account) = account {
        // std clears the supplementary groups too, so root's groups do not leak.
        cmd.uid(account.uid).gid(account.gid);
        cmd.env("USER", &account.name).env("LOGNAME", &account.name);
    }
    cmd
}

/// Creates the sandbox's top directory under the system temp dir, mode 0755 so that the server
/// account can traverse it even though root owns it.
pub(crate) fn sandbox_root(
    prefix: &str,
    account: Option<&Account>,
) -> Result<TempDir, SandboxError> {
    let base = std::env::temp_dir();
    if let Some(account) = account {
        check_traversable(&base, account)?;
    }
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&base)
        .map_err(io_err(format!(
            "creating a temporary directory in {}",
            base.display()
        )))?;
    fs::set_permissions(dir.path(), Permissions::from_mode(0o755))
        .map_err(io_err(format!("chmod 0755 {}", dir.path().display())))?;
    Ok(dir)
}

/// The server account must be able to reach its directory through every ancestor of the temp
/// dir; catching this here gives a clear message instead of a cryptic initdb failure.
fn check_traversable(base: &Path, account: &Account) -> Result<(), SandboxError> {
    let base = base
        .canonicalize()
        .map_err(io_err(format!("resolving {}", base.display())))?;
    for dir in base.ancestors() {
        let meta = fs::metadata(dir).map_err(io_err(format!("stat {}", dir.display())))?;
        let mode = meta.mode();
        let ok = mode & 0o001 != 0
            || (meta.uid() == account.uid && mode & 0o100 != 0)
            || (meta.gid() == account.gid && mode & 0o010 != 0);
        if !ok {
            return Err(SandboxError::InvalidInput {
                what: "temporary directory",
                value: dir.display().to_string(),
                reason:
                    "not traversable by the unprivileged server account; set TMPDIR to e.g. /tmp",
            });
        }
    }
    Ok(())
}

/// Creates `path` with `mode`, owned by `account` (or by us).
pub(crate) fn owned_dir(
    path: &Path,
    mode: u32,
    account: Option<&Account>,
) -> Result<(), SandboxError> {
    fs::DirBuilder::new()
        .mode(mode)
        .create(path)
        .map_err(io_err(format!("creating {}", path.display())))?;
    // The umask may have masked bits off; the servers check the exact mode of their data dir.
    fs::set_permissions(path, Permissions::from_mode(mode))
        .map_err(io_err(format!("chmod {mode:o} {}", path.display())))?;
    chown(path, account)
}

/// Writes (truncating) a file with `mode`, owned by `account` (or by us).
pub(crate) fn write_owned(
    path: &Path,
    contents: impl AsRef<[u8]>,
    mode: u32,
    account: Option<&Account>,
) -> Result<(), SandboxError> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(io_err(format!("opening {}", path.display())))?;
    file.write_all(contents.as_ref())
        .map_err(io_err(format!("writing {}", path.display())))?;
    chown(path, account)
}

pub(crate) fn chown(path: &Path, account: Option<&Account>) -> Result<(), SandboxError> {
    match account {
        Some(a) => std::os::unix::fs::chown(path, Some(a.uid), Some(a.gid))
            .map_err(io_err(format!("chown {} {}", a.name, path.display()))),
        None => Ok(()),
    }
}

/// A port on 127.0.0.1 that was free a moment ago and that this process has not handed out before.
/// Another process may still grab it before the server binds; callers retry on "address in use".
pub(crate) fn free_port() -> Result<u16, SandboxError> {
    for _ in 0..50 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(io_err("binding 127.0.0.1:0 to find a free port"))?;
        let port = listener
            .local_addr()
            .map_err(io_err("reading the address of a bound socket"))?
            .port();
        if RESERVED_PORTS.contains(&port) {
            continue;
        }
        // A poisoned lock only means another test panicked while holding it; the set is still valid.
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if handed_out.insert(port) {
            return Ok(port);
        }
    }
    Err(SandboxError::Io {
        context: "finding a free port on 127.0.0.1".into(),
        source: std::io::Error::new(std::io::ErrorKind::AddrInUse, "no new port after 50 tries"),
    })
}

/// Current length of a file (0 if missing); used to read only what a start attempt logged.
pub(crate) fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The file's contents from `offset` on (lossy UTF-8, empty if unreadable).
pub(crate) fn read_from(path: &Path, offset: u64) -> String {
    let mut buf = Vec::new();
    if let Ok(mut file) = fs::File::open(path) {
        if file.seek(SeekFrom::Start(offset)).is_ok() {
            let _ = file.read_to_end(&mut buf);
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// The last `lines` lines of a log file, for error messages.
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    // Only the end of a long log matters; reading 64 KiB bounds the cost.
    let text = read_from(path, file_len(path).saturating_sub(64 * 1024));
    if text.is_empty() {
        return format!("(log {} is empty or unreadable)", path.display());
    }
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A random alphanumeric password: no quoting issues in SQL, URLs or config files.
pub(crate) fn random_password() -> Result<String, SandboxError> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 24];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(io_err("reading /dev/urandom"))?;
    Ok(bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect())
}

/// Percent-encodes a URL userinfo or path component (everything but RFC 3986 unreserved bytes).
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Rejects strings that cannot be passed safely into SQL, config files or argv.
pub(crate) fn check_name(what: &'static str, value: &str) -> Result<(), SandboxError> {
    let reason = if value.is_empty() {
        "must not be empty"
    } else if value.contains(['\0', '\n', '\r']) {
        "must not contain NUL or line breaks"
    } else {
        return Ok(());
    };
    Err(SandboxError::InvalidInput {
        what,
        value: value.to_owned(),
        reason,
    })
}

/// What a finished command printed.
pub(crate) struct Output {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// `program arg arg ...` for messages. Secrets never travel in argv (we use env vars and files).
pub(crate) fn describe(cmd: &Command) -> String {
    let mut text = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Runs `cmd` to completion, feeding `stdin`, killing it after `timeout`.
pub(crate) fn run(
    cmd: &mut Command,
    stdin: Option<&str>,
    timeout: Duration,
) -> Result<Output, SandboxError> {
    let display = describe(cmd);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(io_err(format!("could not run `{display}`")))?;

    // Feed and drain on threads: a child blocked on a full pipe would otherwise never exit.
    if let Some(mut pipe) = child.stdin.take() {
        let input = stdin.unwrap_or_default().to_owned();
        thread::spawn(move || {
            // A child that exits without reading its input is not our error to report.
            let _ = pipe.write_all(input.as_bytes());
        });
    }
    let stdout = child.stdout.take().map(drain);
    let stderr = child.stderr.take().map(drain);

    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(2);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => {
                thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(SandboxError::Timeout {
                    command: display,
                    timeout,
                });
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io_err(format!("waiting for `{display}`"))(e));
            }
        }
    };
    let collect =
        |h: Option<thread::JoinHandle<String>>| h.and_then(|h| h.join().ok()).unwrap_or_default();
    Ok(Output {
        status,
        stdout: collect(stdout),
        stderr: collect(stderr),
    })
}

fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Runs `cmd` and returns its trimmed stdout, or `CommandFailed` carrying its stderr.
pub(crate) fn run_ok(
    cmd: &mut Command,
    stdin: Option<&str>,
    timeout: Duration,
) -> Result<String, SandboxError> {
    let out = run(cmd, stdin, timeout)?;
    if out.status.success() {
        return Ok(out.stdout.trim().to_owned());
    }
    // Some tools (pg_ctl, the install scripts) explain themselves on stdout.
    let mut detail = out.stderr.trim().to_owned();
    if detail.is_empty() {
        detail = out.stdout.trim().to_owned();
    }
    Err(SandboxError::CommandFailed {
        command: describe(cmd),
        status: out.status,
        stderr: last_chars(&detail, 4000),
    })
}

fn last_chars(s: &str, n: usize) -> String {
    let count = s.chars().count();
    if count <= n {
        return s.to_owned();
    }
    let tail: String = s.chars().skip(count - n).collect();
    format!("...{tail}")
}

/// Looks for `name` in `dirs` and then along the caller's `PATH`.
pub(crate) fn find_binary(name: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    let from_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    dirs.iter()
        .chain(from_path.iter())
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_passwd_lines() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      postgres:x:101:104:PostgreSQL,,,:/var/lib/postgresql:/bin/bash\n\
                      toor:x:0:0::/:/bin/sh\n";
        let pg = lookup_account(passwd, "postgres").unwrap();
        assert_eq!((pg.uid, pg.gid), (101, 104));
        assert!(
            lookup_account(passwd, "toor").is_none(),
            "uid 0 aliases are refused"
        );
        assert!(lookup_account(passwd, "mysql").is_none());
    }

    #[test]
    fn encodes_url_components() {
        assert_eq!(percent_encode("a-b_c.d~9"), "a-b_c.d~9");
        assert_eq!(percent_encode("p@ss:w/rd"), "p%40ss%3Aw%2Frd");
    }

    #[test]
    fn ports_are_not_reused_within_a_process() {
        let a = free_port().unwrap();
        let b = free_port().unwrap();
        assert_ne!(a, b);
        assert!(!RESERVED_PORTS.contains(&a));
    }

    #[test]
    fn run_reports_failure_and_timeout() {
        let tmp = std::env::temp_dir();
        let err = run_ok(
            command(Path::new("/bin/sh"), &tmp, None).args(["-c", "echo boom >&2; exit 3"]),
            None,
            Duration::from_secs(10),
        )
        .unwrap_err();
        assert!(err.to_string().contains("boom"), "{err}");
        let out = run_ok(
            &mut command(Path::new("/bin/cat"), &tmp, None),
            Some("hello\n"),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(out, "hello");
        let err = run(
            command(Path::new("/bin/sleep"), &tmp, None).arg("5"),
            None,
            Duration::from_millis(100),
        )
        .err()
        .unwrap();
        assert!(matches!(err, SandboxError::Timeout { .. }), "{err}");
    }
}
