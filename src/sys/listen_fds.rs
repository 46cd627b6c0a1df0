//! systemd socket activation (`LISTEN_FDS`/`LISTEN_PID`): take ownership of fd 3.

use anyhow::bail;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;

const SD_LISTEN_FDS_START: i32 = 3;

/// The one unix listening socket systemd passed us, if any. `LISTEN_PID` must name this
/// process when set. The variables are removed so children do not inherit them.
pub fn take_unix_listener() -> anyhow::Result<Option<UnixListener>> {
    let fds = std::env::var("LISTEN_FDS").ok();
    let pid = std::env::var("LISTEN_PID").ok();
    let Some(fds) = fds else { return Ok(None) };
    if let Some(p) = &pid {
        if p.trim() != std::process::id().to_string() {
            return Ok(None);
        }
    }
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDNAMES");
    match fds.trim() {
        "0" => return Ok(None),
        "1" => {}
        n => bail!("LISTEN_FDS={n}: expected exactly one socket"),
    }
    // refuse anything that is not an open socket before taking ownership
    let link = std::fs::read_link(format!("/proc/self/fd/{SD_LISTEN_FDS_START}"));
    if !link.is_ok_and(|l| l.to_string_lossy().starts_with("socket:")) {
        bail!("LISTEN_FDS: fd {SD_LISTEN_FDS_START} is not an open socket");
    }
    // SAFETY: systemd hands fd 3 to this process (LISTEN_PID checked above), /proc shows it is
    // an open socket, and this is the only place that takes it; the env vars are removed first,
    // so it is never taken twice.
    let fd = unsafe { OwnedFd::from_raw_fd(SD_LISTEN_FDS_START) };
    let _ = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC));
    Ok(Some(UnixListener::from(fd)))
}
