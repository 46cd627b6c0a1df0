//! Running a filter tool (`iptables-restore`) without paying its socket's last close.
//!
//! `iptables-restore` (the nft variant) commits each table when it reads `COMMIT`, reads stdin
//! to its end, and only then closes its NETLINK_NETFILTER socket. After a commit that deleted
//! something, that last close waits for an RCU grace period (20-60 ms here, measured with
//! `strace -T`: `close(3) <0.056>`), and the plugin, which waits for the tool's exit status,
//! waits with it.
//!
//! [`run_feeding`] spawns the tool with its stdin held open and empty: it starts, opens its
//! socket and blocks reading stdin. We then take our own reference to each of its sockets
//! (`pidfd_getfd(2)`), write the input and close stdin. The tool commits, reads EOF, closes its
//! socket (no longer the last reference, so at once) and exits with a real exit status, which
//! we wait for as before. Our copies are parked with [`super::detach::close_after_exit`]: the
//! kernel makes the last close later, outside the time the runtime waits for the plugin. The
//! commit itself has been ACKed to the tool before it exits, so nothing about the ruleset is
//! deferred.
//!
//! When a step is not possible (no `/proc/<pid>/syscall`, no pidfd syscalls, a tool that reads
//! stdin before opening its socket, like iptables-legacy), the run is the plain one: same input,
//! same exit status, only without the parking.

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long to wait for the tool to block on stdin before feeding it anyway (iptables-nft gets
/// there in 1-3 ms; a tool that never does costs at most this).
const SETTLE: Duration = Duration::from_millis(200);

/// What a run produced.
#[derive(Debug)]
pub struct Fed {
    pub status: ExitStatus,
    pub stderr: Vec<u8>,
    /// sockets of the tool whose last close was parked (0 when it ran the plain way)
    pub parked: usize,
}

/// Spawn `cmd` (its stdout discarded, stderr captured), feed it `input` on stdin, wait for it.
pub fn run_feeding(cmd: &mut Command, input: &[u8]) -> std::io::Result<Fed> {
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn()?;
    let grabbed = stdin_reader(&mut child).map(grab_sockets).unwrap_or_default();
    let fed = child.stdin.take().map_or(Ok(()), |mut stdin| stdin.write_all(input));
    let mut stderr = Vec::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_end(&mut stderr);
    }
    let status = child.wait()?;
    let parked = grabbed.len();
    for fd in grabbed {
        let raw = fd.into_raw_fd();
        // SAFETY: `raw` came from into_raw_fd just above; this is its only owner
        let own = unsafe { OwnedFd::from_raw_fd(raw) };
        super::detach::close_after_exit(raw, move || drop(own));
    }
    // a tool that failed early may have closed stdin before reading it: its status says why
    if let Err(e) = fed {
        if status.success() {
            return Err(e);
        }
    }
    Ok(Fed { status, stderr, parked })
}

/// Poll until the process that will read the input blocks in `read(0, …)` (the first field of
/// `/proc/<pid>/syscall` is the syscall number, 0, the second its first argument, fd 0), and
/// return its pid: the child itself, or, when the child is a wrapper waiting for its own child
/// (a shell script that runs the real tool, as some distributions install), that child, one
/// level at a time. None if the child exits first, the file is unreadable, or SETTLE passes.
fn stdin_reader(child: &mut Child) -> Option<u32> {
    let deadline = Instant::now() + SETTLE;
    let mut target = child.id();
    loop {
        let s = std::fs::read_to_string(format!("/proc/{target}/syscall")).ok()?;
        if blocked_reading_stdin(&s) {
            return Some(target);
        }
        if waiting_for_a_child(&s) {
            // wait4/waitid: follow its only child (the tool it started)
            let kids = std::fs::read_to_string(format!("/proc/{target}/task/{target}/children")).ok()?;
            if let [only] = kids.split_whitespace().collect::<Vec<_>>()[..] {
                target = only.parse().ok()?;
                continue;
            }
        }
        if !matches!(child.try_wait(), Ok(None)) || Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_micros(50));
    }
}

/// wait4 (61) or waitid (247) on x86_64.
fn waiting_for_a_child(syscall: &str) -> bool {
    matches!(syscall.split_whitespace().next(), Some("61" | "247"))
}

fn blocked_reading_stdin(syscall: &str) -> bool {
    let mut f = syscall.split_whitespace();
    f.next() == Some("0") && f.next() == Some("0x0")
}

/// Our own references to every socket the process holds (none if pidfds are unavailable).
fn grab_sockets(pid: u32) -> Vec<OwnedFd> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return Vec::new() };
    let socket_fds: Vec<RawFd> = dir
        .flatten()
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:")))
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    if socket_fds.is_empty() {
        return Vec::new();
    }
    let Some(pidfd) = pidfd_open(pid) else { return Vec::new() };
    socket_fds.into_iter().filter_map(|fd| pidfd_getfd(&pidfd, fd)).collect()
}

fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    let pid = nix::libc::pid_t::try_from(pid).ok()?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1; no memory
    // is passed
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid, 0) };
    let fd = RawFd::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn pidfd_getfd(pidfd: &OwnedFd, target: RawFd) -> Option<OwnedFd> {
    use std::os::fd::AsRawFd;
    // SAFETY: pidfd_getfd takes a pidfd, a descriptor number in that process and flags, and
    // returns a new descriptor (close-on-exec) or -1; no memory is passed
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), target, 0) };
    let fd = RawFd::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_blocked_syscall_line() {
        assert!(blocked_reading_stdin("0 0x0 0x55d0c0a8f2a0 0x1000 0x0 0x0 0x0 0x7ffd 0x7f12\n"));
        assert!(!blocked_reading_stdin("0 0x3 0x55d0c0a8f2a0 0x1000 0x0 0x0 0x0 0x7ffd 0x7f12\n"));
        assert!(!blocked_reading_stdin("running\n"));
        assert!(!blocked_reading_stdin("7 0x7ffd 0x1 0xffffffff 0x0 0x0 0x0 0x7ffd 0x7f12\n"));
        assert!(!blocked_reading_stdin(""));
    }

    #[test]
    fn feeds_stdin_and_reports_the_exit_status_and_stderr() {
        // sh holds no socket: the plain way, with the same status and stderr
        let fed = run_feeding(Command::new("sh").args(["-c", "read a; echo \"got $a\" >&2; exit 3"]), b"x\n").unwrap();
        assert_eq!(fed.status.code(), Some(3));
        assert_eq!(fed.stderr, b"got x\n");
        assert_eq!(fed.parked, 0);
    }

    #[test]
    fn the_reader_behind_a_wrapper_script_is_found() {
        // a wrapper that runs the real reader as its child, as iptables wrapper scripts do
        let mut child = Command::new("sh")
            .args(["-c", "cat >/dev/null; exit 0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let reader = stdin_reader(&mut child).expect("no process blocked on stdin");
        assert_ne!(reader, child.id(), "the wrapper itself does not read");
        assert_eq!(std::fs::read_to_string(format!("/proc/{reader}/comm")).unwrap().trim(), "cat");
        drop(child.stdin.take());
        assert!(child.wait().unwrap().success());
    }

    #[test]
    fn the_sockets_of_a_process_are_found_and_duplicated() {
        // our own process stands for the tool (the iptables-restore run is in tests/firewall.rs)
        let (a, b) = nix::sys::socket::socketpair(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::Stream,
            None,
            nix::sys::socket::SockFlag::empty(),
        )
        .unwrap();
        let ino = |fd: &OwnedFd| nix::sys::stat::fstat(fd).unwrap().st_ino;
        let grabbed: Vec<_> = grab_sockets(std::process::id()).iter().map(ino).collect();
        assert!(grabbed.contains(&ino(&a)) && grabbed.contains(&ino(&b)), "{grabbed:?}");
        drop((a, b));
    }
}
