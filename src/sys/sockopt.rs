//! Socket options that neli does not wrap.

use std::io;
use std::os::fd::AsRawFd;

// linux/netlink.h (stable ABI; not exported by libc on every target)
const SOL_NETLINK: nix::libc::c_int = 270;
const NETLINK_CAP_ACK: nix::libc::c_int = 10;

/// NETLINK_CAP_ACK: error replies echo only the failed request's header (not its payload), so a
/// reply to a change always fits a small receive buffer.
pub fn netlink_cap_ack(sock: &impl AsRawFd) -> io::Result<()> {
    let on: nix::libc::c_int = 1;
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from `&on`, a live c_int on this
    // stack frame; the fd is borrowed from a socket that outlives the call.
    let r = unsafe {
        nix::libc::setsockopt(
            sock.as_raw_fd(),
            SOL_NETLINK,
            NETLINK_CAP_ACK,
            std::ptr::addr_of!(on).cast(),
            std::mem::size_of::<nix::libc::c_int>() as nix::libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
