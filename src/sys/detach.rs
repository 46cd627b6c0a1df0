//! Closing a descriptor after the process has answered: the last close of a NETLINK_NETFILTER
//! socket that committed a deleting nftables batch waits for an RCU grace period (see
//! `firewall::nft::sock`).
//!
//! [`close_after_exit`] parks the descriptor in the kernel instead of closing it: it is sent
//! (SCM_RIGHTS) on a unix socket pair together with the receiving socket itself, which makes an
//! unreachable reference cycle once the process closes its descriptors. The kernel's unix socket
//! garbage collector, which runs from a workqueue (Linux ≥ 6.9, [`collector_in_a_worker`]),
//! frees the cycle and with it makes the last close of the parked socket — in a kernel worker,
//! not in the plugin. No process is created (so
//! no zombie, whatever the runtime's init or subreaper does) and no descriptor of the runtime
//! (stdin/stdout/stderr pipes) is held: only the two sockets of the pair and the parked one.

use nix::sys::socket::{sendmsg, socketpair, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType};
use std::io::IoSlice;
use std::os::fd::{AsRawFd, RawFd};

/// Park descriptor `fd` for the kernel's unix garbage collector to close, then run `close_own`,
/// which must close the caller's own copy (not the last reference then, so it costs nothing).
/// Returns false if it could not be parked (`close_own` has run anyway: the close may wait).
pub fn close_after_exit(fd: RawFd, close_own: impl FnOnce()) -> bool {
    let Ok((a, b)) = socketpair(AddressFamily::Unix, SockType::Datagram, None, SockFlag::SOCK_CLOEXEC) else {
        close_own();
        return false;
    };
    let fds = [fd, b.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let sent = sendmsg::<()>(a.as_raw_fd(), &[IoSlice::new(&[0u8])], &cmsg, MsgFlags::MSG_DONTWAIT, None);
    // Our copy goes first, while the pair still holds the cycle open: the collector, which may
    // run as soon as a socket of the pair is closed, then always makes the last close.
    close_own();
    drop(a);
    // b lives on only through its own receive queue (the cycle)
    drop(b);
    sent.is_ok()
}

/// Linux >= 6.9 runs the unix socket garbage collector from a workqueue ("af_unix: Run GC on
/// only one CPU"), so a parked descriptor's last close is never the caller's. Before it, the
/// collector ran in the closing process: parking works there but saves nothing.
pub fn collector_in_a_worker() -> bool {
    super::kernel_at_least(6, 9)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};

    #[test]
    fn parked_descriptor_is_closed_by_the_kernel() {
        // the write end of a pipe stands for the netlink socket: the reader sees EOF only once
        // the last reference (the parked one) is closed
        let (r, w) = nix::unistd::pipe().unwrap();
        let raw = w.into_raw_fd();
        // SAFETY: (test) `raw` came from into_raw_fd above and is owned by nothing else
        let own = unsafe { OwnedFd::from_raw_fd(raw) };
        assert!(close_after_exit(raw, move || drop(own)));
        let mut reader = std::fs::File::from(r);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            tx.send(reader.read_to_end(&mut buf).map(|_| buf.len())).unwrap();
        });
        let got = rx.recv_timeout(std::time::Duration::from_secs(20)).expect("the parked descriptor was never closed");
        assert_eq!(got.unwrap(), 0);
    }
}
