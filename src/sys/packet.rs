//! Packet sockets (packet(7)): a `SOCK_DGRAM` AF_PACKET socket that receives the network-layer
//! packets of one ethertype arriving on one interface, before the IP layer looks at them (so
//! before reverse-path filtering and the "is this address mine" check), through a classic BPF
//! filter that the kernel runs on each packet; and sends network-layer packets built by the
//! caller on that interface (the kernel adds only the link-layer header), so their IP header is
//! whatever the caller wrote (an IPv4 source of 0.0.0.0, which no IP socket can send from).
//!
//! The socket is made with protocol 0, which receives nothing; the filter and PACKET_AUXDATA are
//! set, and only then is it bound to the interface and ethertype. So no packet the filter would
//! refuse is ever queued on it.

use nix::libc;
use nix::sys::socket::{
    recvmsg, setsockopt, socket, sockopt, AddressFamily, ControlMessageOwned, LinkAddr, MsgFlags, SockFlag, SockType,
};
use std::io::{self, IoSliceMut};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

// linux/if_packet.h, asm-generic/socket.h (stable ABI; not exported by libc on every target)
const SOL_PACKET: libc::c_int = 263;
const PACKET_AUXDATA: libc::c_int = 8;
const SO_ATTACH_FILTER: libc::c_int = 26;
const TP_STATUS_CSUMNOTREADY: u32 = 1 << 3;
/// `sll_pkttype` of a packet this host sends (packet sockets see those too)
pub const PACKET_OUTGOING: u8 = 4;

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BpfInsn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// What the kernel says about one received packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// bytes of the packet in the buffer (the network-layer header first)
    pub len: usize,
    /// the packet was longer than the buffer (`len` bytes of it were kept)
    pub truncated: bool,
    /// `sll_pkttype`: PACKET_HOST, PACKET_BROADCAST, PACKET_OTHERHOST, PACKET_OUTGOING, …
    pub pkttype: u8,
    /// TP_STATUS_CSUMNOTREADY: the transport checksum is not filled in yet (a packet from a
    /// veth peer or from this host, whose sender left the checksum to offload)
    pub csum_not_ready: bool,
}

/// A packet socket bound to one interface and one ethertype, with a filter.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: libc::c_int,
    ethertype: u16,
}

impl PacketSocket {
    /// Open a packet socket in the calling thread's network namespace, receiving the packets of
    /// `ethertype` on interface `ifindex` that `filter` accepts.
    pub fn open(ifindex: u32, ethertype: u16, filter: &[BpfInsn]) -> io::Result<PacketSocket> {
        // protocol 0: nothing is received before bind
        let fd = socket(AddressFamily::Packet, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)?;
        attach_filter(&fd, filter)?;
        super::sockopt::set(&fd, SOL_PACKET, PACKET_AUXDATA, &1 as &libc::c_int)?;
        let ifindex = libc::c_int::try_from(ifindex).map_err(|_| io::Error::from_raw_os_error(libc::ENODEV))?;
        // SAFETY: sockaddr_ll is a plain C struct for which all-zero bytes are a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as libc::c_ushort;
        sll.sll_protocol = ethertype.to_be();
        sll.sll_ifindex = ifindex;
        // SAFETY: bind reads `size_of::<sockaddr_ll>()` bytes from `&sll`, a live, initialized
        // sockaddr_ll on this stack frame; the fd is owned by this function.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                std::ptr::addr_of!(sll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PacketSocket { fd, ifindex, ethertype })
    }

    /// Send `packet` (a network-layer packet of the socket's ethertype, its header first) on the
    /// socket's interface to the link-layer address `dest` (6 bytes: Ethernet).
    pub fn send_to(&self, packet: &[u8], dest: [u8; 6]) -> io::Result<()> {
        // SAFETY: sockaddr_ll is a plain C struct for which all-zero bytes are a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as libc::c_ushort;
        sll.sll_protocol = self.ethertype.to_be();
        sll.sll_ifindex = self.ifindex;
        sll.sll_halen = dest.len() as u8;
        for (d, s) in sll.sll_addr.iter_mut().zip(dest) {
            *d = s;
        }
        // SAFETY: sendto reads `packet.len()` bytes from `packet`, a live slice, and
        // `size_of::<sockaddr_ll>()` bytes from `&sll`, a live, initialized sockaddr_ll on this
        // stack frame; the fd is owned by `self`.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                std::ptr::addr_of!(sll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        match usize::try_from(n) {
            Ok(sent) if sent == packet.len() => Ok(()),
            Ok(sent) => Err(io::Error::other(format!("sent {sent} of {} bytes", packet.len()))),
            Err(_) => Err(io::Error::last_os_error()),
        }
    }

    /// Wait up to `wait` for the next packet; `Ok(None)` when none came (or a signal
    /// interrupted the wait).
    pub fn recv(&self, buf: &mut [u8], wait: Duration) -> io::Result<Option<Received>> {
        // (a zero timeout would mean "wait forever")
        let micros = wait.as_micros().clamp(1, i32::MAX as u128 * 1_000_000);
        let tv = nix::sys::time::TimeVal::new((micros / 1_000_000) as _, (micros % 1_000_000) as _);
        setsockopt(&self.fd, sockopt::ReceiveTimeout, &tv)?;
        // room for one struct tpacket_auxdata (20 bytes: five 32-bit words' worth)
        let mut cmsg = nix::cmsg_space!([u32; 5]);
        let kept = buf.len();
        let mut iov = [IoSliceMut::new(buf)];
        let msg = match recvmsg::<LinkAddr>(self.fd.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::MSG_TRUNC) {
            Ok(m) => m,
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut csum_not_ready = false;
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::Unknown(u) = c {
                if u.cmsg_header.cmsg_level == SOL_PACKET && u.cmsg_header.cmsg_type == PACKET_AUXDATA {
                    // struct tpacket_auxdata starts with `__u32 tp_status`
                    let status =
                        u.data_bytes.get(..4).and_then(|b| <[u8; 4]>::try_from(b).ok()).map(u32::from_ne_bytes);
                    csum_not_ready = status.is_some_and(|s| s & TP_STATUS_CSUMNOTREADY != 0);
                }
            }
        }
        // with MSG_TRUNC, recvmsg returns the packet's real length
        Ok(Some(Received {
            len: msg.bytes.min(kept),
            truncated: msg.bytes > kept,
            pkttype: msg.address.map(|a| a.pkttype()).unwrap_or(0),
            csum_not_ready,
        }))
    }
}

/// SO_ATTACH_FILTER: the kernel copies the program, so `filter` need not outlive the call.
fn attach_filter(fd: &OwnedFd, filter: &[BpfInsn]) -> io::Result<()> {
    let mut insns: Vec<libc::sock_filter> =
        filter.iter().map(|i| libc::sock_filter { code: i.code, jt: i.jt, jf: i.jf, k: i.k }).collect();
    let prog = libc::sock_fprog {
        len: u16::try_from(insns.len()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?,
        filter: insns.as_mut_ptr(),
    };
    // the kernel copies `prog.len` instructions from `insns`, alive until the call returns
    super::sockopt::set(fd, libc::SOL_SOCKET, SO_ATTACH_FILTER, &prog)
}
