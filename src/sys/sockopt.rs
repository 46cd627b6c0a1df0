//! Socket options that neli and nix do not wrap.

use std::io;
use std::os::fd::AsRawFd;

// linux/netlink.h (stable ABI; not exported by libc on every target)
const SOL_NETLINK: nix::libc::c_int = 270;
const NETLINK_CAP_ACK: nix::libc::c_int = 10;

/// NETLINK_CAP_ACK: error replies echo only the failed request's header (not its payload), so a
/// reply to a change always fits a small receive buffer.
pub fn netlink_cap_ack(sock: &impl AsRawFd) -> io::Result<()> {
    set(sock, SOL_NETLINK, NETLINK_CAP_ACK, &1 as &nix::libc::c_int)
}

/// setsockopt(level, name) with the bytes of `value` (a c_int, a struct the kernel copies).
/// The kernel reads what `value` points to with copy_from_user, so a bad pointer inside it is
/// an error (EFAULT), never a read of memory we do not own.
pub fn set<T>(sock: &impl AsRawFd, level: nix::libc::c_int, name: nix::libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: setsockopt reads `size_of::<T>()` bytes from `value`, a live reference for the
    // duration of the call; the fd is borrowed from a socket that outlives the call.
    let r = unsafe {
        nix::libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(value).cast(),
            std::mem::size_of::<T>() as nix::libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
