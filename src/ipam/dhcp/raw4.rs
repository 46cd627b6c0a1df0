//! The DHCPv4 client's packet socket on its interface (`AF_PACKET`, below the IP layer), as
//! the reference's client has one: the client's broadcasts go out on it and the server's replies
//! are read from it.
//!
//! Broadcasts are built here with their IPv4 and UDP headers ([`ipv4_udp`]), so the IP source is
//! the message's own `ciaddr`: 0.0.0.0 before the client holds an address (DISCOVER, REQUEST
//! while selecting, the re-acquisition after an expiry: RFC 2131 §4.1), the leased address while
//! it holds one (REBIND, and a RENEW or RELEASE broadcast because the address is not on the
//! interface). A UDP socket cannot send from 0.0.0.0: the kernel gives the datagram an address
//! of the interface or of any other interface of the netns (another pod interface's), and DHCP
//! snooping and anti-spoofing filters drop a request from an address its client does not hold.
//!
//! Replies: a reply reaches the client whatever the IP layer of the container netns would do
//! with it. While the interface has no address, reverse-path filtering (`rp_filter` 1 or 2,
//! which systemd sets on nodes and a new netns inherits) drops the server's OFFER and ACK; and a
//! RENEW answered by unicast to a leased address that is not on the interface (the dhcp IPAM
//! used alone, the address living elsewhere) is not for this host at all. A UDP socket sees
//! neither; the packet socket sees both.
//!
//! The kernel runs [`FILTER`] on each IPv4 packet of the interface, so the socket only queues
//! UDP datagrams to port 68; [`dhcp_payload`] then checks the IPv4 and UDP headers (lengths,
//! fragments, both checksums) in user space and gives the DHCP message.

use super::client::{Inbox, CLIENT_PORT, SERVER_PORT};
use crate::sys::packet::{BpfInsn, PacketSocket, PACKET_OUTGOING};
use std::net::Ipv4Addr;
use std::time::Duration;

const ETH_P_IP: u16 = 0x0800;
const IPPROTO_UDP: u8 = 17;
const UDP_HEADER: usize = 8;
const IPV4_HEADER: usize = 20;
/// the IPv4 "don't fragment" flag
const DONT_FRAGMENT: u16 = 0x4000;
const TTL: u8 = 64;
const BROADCAST_MAC: [u8; 6] = [0xff; 6];
/// the IPv4 "more fragments" flag and the fragment offset
const FRAGMENT_BITS: u16 = 0x3fff;

// classic BPF opcodes (linux/filter.h)
const LD_B_ABS: u16 = 0x30; // BPF_LD | BPF_B | BPF_ABS
const LD_H_ABS: u16 = 0x28; // BPF_LD | BPF_H | BPF_ABS
const LDX_B_MSH: u16 = 0xb1; // BPF_LDX | BPF_B | BPF_MSH: X = 4 * (P[k] & 0xf)
const LD_H_IND: u16 = 0x48; // BPF_LD | BPF_H | BPF_IND
const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JSET_K: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const RET_K: u16 = 0x06; // BPF_RET | BPF_K

const fn insn(code: u16, jt: u8, jf: u8, k: u32) -> BpfInsn {
    BpfInsn { code, jt, jf, k }
}

/// A socket filter that accepts an unfragmented UDP datagram to `port`. A `SOCK_DGRAM` packet
/// socket runs it on the packet from its IPv4 header on; jumps count from the next instruction.
pub const fn udp_to(port: u16) -> [BpfInsn; 9] {
    [
        insn(LD_B_ABS, 0, 0, 9),                  // 0: A = protocol
        insn(JEQ_K, 0, 5, IPPROTO_UDP as u32),    // 1: UDP? else drop (7)
        insn(LD_H_ABS, 0, 0, 6),                  // 2: A = flags and fragment offset
        insn(JSET_K, 3, 0, FRAGMENT_BITS as u32), // 3: a fragment: drop (7)
        insn(LDX_B_MSH, 0, 0, 0),                 // 4: X = IPv4 header length
        insn(LD_H_IND, 0, 0, 2),                  // 5: A = UDP destination port
        insn(JEQ_K, 1, 0, port as u32),           // 6: the port: accept (8)
        insn(RET_K, 0, 0, 0),                     // 7: drop
        insn(RET_K, 0, 0, u16::MAX as u32),       // 8: accept (the whole packet)
    ]
}

/// The client's socket filter: an unfragmented UDP datagram to port 68.
pub const FILTER: [BpfInsn; 9] = udp_to(CLIENT_PORT);

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// The one's-complement sum of `parts` read as big-endian 16-bit words (RFC 1071); every part
/// but the last has an even length.
fn ones_sum(parts: &[&[u8]]) -> u16 {
    let mut sum: u64 = 0;
    for p in parts {
        let mut words = p.chunks_exact(2);
        for w in words.by_ref() {
            sum += u64::from(u16::from_be_bytes([w.first().copied().unwrap_or(0), w.get(1).copied().unwrap_or(0)]));
        }
        if let Some(&last) = words.remainder().first() {
            sum += u64::from(u16::from_be_bytes([last, 0]));
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The DHCP message in `pkt` (an IPv4 packet, its header first, maybe followed by link-layer
/// padding) when it is a whole UDP datagram to port 68 with good checksums; `None` for anything
/// else. `udp_csum_not_ready`: the kernel says the UDP checksum was left to offload (a veth peer
/// in this host), so it cannot be checked; a UDP checksum of 0 means "none" (RFC 768).
pub fn dhcp_payload(pkt: &[u8], udp_csum_not_ready: bool) -> Option<&[u8]> {
    let first = *pkt.first()?;
    let ihl = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || ihl < 20 {
        return None;
    }
    let header = pkt.get(..ihl)?;
    let total = usize::from(be16(header, 2)?);
    if total < ihl + UDP_HEADER || total > pkt.len() {
        return None;
    }
    if be16(header, 6)? & FRAGMENT_BITS != 0 || header.get(9) != Some(&IPPROTO_UDP) || ones_sum(&[header]) != 0xffff {
        return None;
    }
    let udp = pkt.get(ihl..total)?;
    let udp_len = usize::from(be16(udp, 4)?);
    if udp_len < UDP_HEADER || be16(udp, 2)? != CLIENT_PORT {
        return None;
    }
    let udp = udp.get(..udp_len)?;
    if be16(udp, 6)? != 0 && !udp_csum_not_ready && ones_sum(&[&pseudo_header(header, udp_len), udp]) != 0xffff {
        return None;
    }
    udp.get(UDP_HEADER..)
}

/// The UDP checksum's pseudo header of a datagram of `udp_len` bytes in the IPv4 packet whose
/// header is `ipv4` (its source and destination), RFC 768: source, destination, zero, protocol,
/// UDP length.
fn pseudo_header(ipv4: &[u8], udp_len: usize) -> [u8; 12] {
    let mut pseudo = [0u8; 12];
    if let (Some(d), Some(addrs)) = (pseudo.get_mut(..8), ipv4.get(12..20)) {
        d.copy_from_slice(addrs);
    }
    if let Some(d) = pseudo.get_mut(9..12) {
        d.copy_from_slice(&[IPPROTO_UDP, (udp_len >> 8) as u8, udp_len as u8]);
    }
    pseudo
}

/// An IPv4 packet (a 20-byte header: no options, don't fragment, TTL 64) carrying one UDP
/// datagram from `src`:`sport` to `dst`:`dport` with `payload`, both checksums filled in.
/// `None` when the payload does not fit in one IPv4 packet.
pub fn ipv4_udp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Option<Vec<u8>> {
    let udp_len = u16::try_from(UDP_HEADER + payload.len()).ok()?;
    let total = u16::try_from(IPV4_HEADER + usize::from(udp_len)).ok()?;
    let mut p = Vec::with_capacity(usize::from(total));
    p.extend_from_slice(&[0x45, 0]); // version 4, header length 5 words; TOS 0
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0, 0]); // identification (an atomic datagram, RFC 6864)
    p.extend_from_slice(&DONT_FRAGMENT.to_be_bytes());
    p.extend_from_slice(&[TTL, IPPROTO_UDP, 0, 0]); // header checksum below
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let header_sum = !ones_sum(&[&p]);
    if let Some(c) = p.get_mut(10..12) {
        c.copy_from_slice(&header_sum.to_be_bytes());
    }
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&udp_len.to_be_bytes());
    p.extend_from_slice(&[0, 0]); // UDP checksum below
    p.extend_from_slice(payload);
    // a computed 0 is sent as 0xffff: 0 means "no checksum" (RFC 768)
    let pseudo = pseudo_header(&p, usize::from(udp_len));
    let udp_sum = match !ones_sum(&[&pseudo, p.get(IPV4_HEADER..).unwrap_or(&[])]) {
        0 => 0xffff,
        c => c,
    };
    if let Some(c) = p.get_mut(IPV4_HEADER + 6..IPV4_HEADER + 8) {
        c.copy_from_slice(&udp_sum.to_be_bytes());
    }
    Some(p)
}

/// The DHCPv4 client's packet socket on its interface, opened in the calling thread's netns:
/// it broadcasts the client's messages and yields the DHCP messages of well-formed replies.
#[derive(Debug)]
pub struct Packet4 {
    sock: PacketSocket,
}

impl Packet4 {
    pub fn open(ifindex: u32) -> std::io::Result<Packet4> {
        Ok(Packet4 { sock: PacketSocket::open(ifindex, ETH_P_IP, &FILTER)? })
    }

    /// Broadcast the DHCP message `message` (link layer and IP) from `src`, port 68, to the
    /// servers' port 67.
    pub fn broadcast(&self, src: Ipv4Addr, message: &[u8]) -> std::io::Result<()> {
        let packet = ipv4_udp(src, CLIENT_PORT, Ipv4Addr::BROADCAST, SERVER_PORT, message)
            .ok_or_else(|| std::io::Error::from_raw_os_error(nix::libc::EMSGSIZE))?;
        self.sock.send_to(&packet, BROADCAST_MAC)
    }
}

impl Inbox for Packet4 {
    fn recv<'b>(&self, buf: &'b mut [u8], wait: Duration) -> std::io::Result<Option<&'b [u8]>> {
        let Some(r) = self.sock.recv(buf, wait)? else { return Ok(None) };
        // (a reply unicast to another MAC is kept: behind a bridge port the address may live on
        // another device, and the message itself names its client by xid and chaddr)
        if r.truncated || r.pkttype == PACKET_OUTGOING {
            return Ok(None);
        }
        Ok(buf.get(..r.len).and_then(|p| dhcp_payload(p, r.csum_not_ready)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4/UDP packet from 198.19.0.1:67 to `dst`:`port` carrying `payload`, checksums
    /// filled in.
    fn packet(dst: [u8; 4], port: u16, payload: &[u8]) -> Vec<u8> {
        packet_from(Ipv4Addr::new(198, 19, 0, 1), 67, dst, port, payload, 0, 1)
    }

    /// An IPv4/UDP packet with the IPv4 flags `flags` and identification `id`, checksums
    /// filled in (written apart from [`ipv4_udp`], to check it).
    fn packet_from(src: Ipv4Addr, sport: u16, dst: [u8; 4], port: u16, payload: &[u8], flags: u16, id: u16) -> Vec<u8> {
        let udp_len = 8 + payload.len();
        let total = 20 + udp_len;
        let mut p = vec![0x45, 0, (total >> 8) as u8, total as u8];
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&flags.to_be_bytes());
        p.extend_from_slice(&[64, 17, 0, 0]);
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&dst);
        let hc = !ones_sum(&[&p]);
        p[10..12].copy_from_slice(&hc.to_be_bytes());
        let mut udp = vec![
            (sport >> 8) as u8,
            sport as u8,
            (port >> 8) as u8,
            port as u8,
            (udp_len >> 8) as u8,
            udp_len as u8,
            0,
            0,
        ];
        udp.extend_from_slice(payload);
        let mut pseudo = [0u8; 12];
        pseudo[..8].copy_from_slice(&p[12..20]);
        pseudo[9] = 17;
        pseudo[10..12].copy_from_slice(&(udp_len as u16).to_be_bytes());
        let uc = match !ones_sum(&[&pseudo, &udp]) {
            0 => 0xffff,
            c => c,
        };
        udp[6..8].copy_from_slice(&uc.to_be_bytes());
        p.extend_from_slice(&udp);
        p
    }

    /// Classic BPF, just the instructions [`FILTER`] uses: what the kernel would return.
    fn run_filter(prog: &[BpfInsn], pkt: &[u8]) -> u32 {
        let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
        let byte = |i: usize| pkt.get(i).copied().map(u32::from);
        let half = |i: usize| Some((byte(i)? << 8) | byte(i + 1)?);
        loop {
            let i = prog[pc];
            pc += 1;
            let k = i.k as usize;
            match i.code {
                LD_B_ABS => match byte(k) {
                    Some(v) => a = v,
                    None => return 0,
                },
                LD_H_ABS => match half(k) {
                    Some(v) => a = v,
                    None => return 0,
                },
                LD_H_IND => match half(x as usize + k) {
                    Some(v) => a = v,
                    None => return 0,
                },
                LDX_B_MSH => match byte(k) {
                    Some(v) => x = 4 * (v & 0xf),
                    None => return 0,
                },
                JEQ_K => pc += usize::from(if a == i.k { i.jt } else { i.jf }),
                JSET_K => pc += usize::from(if a & i.k != 0 { i.jt } else { i.jf }),
                RET_K => return i.k,
                other => panic!("opcode {other:#x} not in the test interpreter"),
            }
        }
    }

    #[test]
    fn filter_passes_only_unfragmented_udp_to_port_68() {
        let reply = packet([255; 4], 68, b"dhcp");
        assert_eq!(run_filter(&FILTER, &reply), 0xffff);
        // with IPv4 options (a 24-byte header) the port is found behind them
        let mut opts = reply.clone();
        opts[0] = 0x46;
        opts.splice(20..20, [1, 1, 1, 1]);
        assert_eq!(run_filter(&FILTER, &opts), 0xffff);
        // our own DISCOVER (to port 67), TCP, a fragment, the first of several fragments: dropped
        assert_eq!(run_filter(&FILTER, &packet([255; 4], 67, b"dhcp")), 0);
        let mut tcp = reply.clone();
        tcp[9] = 6;
        assert_eq!(run_filter(&FILTER, &tcp), 0);
        let mut frag = reply.clone();
        frag[7] = 1;
        assert_eq!(run_filter(&FILTER, &frag), 0);
        let mut first_frag = reply.clone();
        first_frag[6] = 0x20;
        assert_eq!(run_filter(&FILTER, &first_frag), 0);
        assert_eq!(run_filter(&FILTER, &reply[..10]), 0, "a runt");
    }

    #[test]
    fn ipv4_udp_builds_what_a_receiver_checks() {
        let zero = Ipv4Addr::UNSPECIFIED;
        // the byte-for-byte header of a DISCOVER broadcast from 0.0.0.0:68, 300 bytes of DHCP
        let p = ipv4_udp(zero, 68, Ipv4Addr::BROADCAST, 67, &[7; 300]).unwrap();
        assert_eq!(p.len(), 328);
        assert_eq!(p[..12], [0x45, 0, 0x01, 0x48, 0, 0, 0x40, 0, 64, 17, 0x39, 0xa6]);
        assert_eq!(p[12..28], [0, 0, 0, 0, 255, 255, 255, 255, 0, 68, 0, 67, 0x01, 0x34, 0xde, 0xe1]);
        assert_eq!(ones_sum(&[&p[..20]]), 0xffff, "header checksum");
        assert_eq!(run_filter(&udp_to(67), &p), 0xffff, "a server's filter takes it");
        assert_eq!(run_filter(&FILTER, &p), 0, "the client's own filter does not");
        // the checksums are the ones the receiving side verifies (here sent to port 68)
        for (src, payload) in [(zero, &b"a dhcp message"[..]), (Ipv4Addr::new(198, 19, 0, 20), b"odd")] {
            let p = ipv4_udp(src, 67, Ipv4Addr::BROADCAST, 68, payload).unwrap();
            assert_eq!(dhcp_payload(&p, false), Some(payload), "{src}");
            assert_eq!(p, packet_from(src, 67, [255; 4], 68, payload, 0x4000, 0), "{src}");
        }
        assert!(ipv4_udp(zero, 68, Ipv4Addr::BROADCAST, 67, &vec![0; 65_536]).is_none(), "too big");
    }

    #[test]
    fn payload_of_a_well_formed_reply_only() {
        let p = packet([198, 19, 0, 20], 68, b"a dhcp message");
        assert_eq!(dhcp_payload(&p, false), Some(&b"a dhcp message"[..]));
        // link-layer padding after the IPv4 packet is not part of it
        let mut padded = p.clone();
        padded.extend_from_slice(&[0; 6]);
        assert_eq!(dhcp_payload(&padded, false), Some(&b"a dhcp message"[..]));
        // an odd-length payload checks out too
        assert_eq!(dhcp_payload(&packet([255; 4], 68, b"odd"), false), Some(&b"odd"[..]));

        let broken = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut q = p.clone();
            f(&mut q);
            dhcp_payload(&q, false).is_none()
        };
        assert!(broken(&|q| q[19] ^= 1), "IPv4 header checksum");
        assert!(broken(&|q| q[30] ^= 1), "UDP checksum");
        assert!(broken(&|q| q[0] = 0x65), "IPv6 version nibble");
        assert!(broken(&|q| q[0] = 0x44), "header length below 20");
        assert!(broken(&|q| q.truncate(40)), "shorter than its total length");
        assert!(broken(&|q| q[23] = 67), "to port 67");
        assert!(broken(&|q| q[25] = 4), "UDP length below its header");
        assert!(broken(&|q| q[24] = 0xff), "UDP length beyond the packet");
        assert!(dhcp_payload(&[], false).is_none() && dhcp_payload(&[0x45], false).is_none());
        // the kernel says the sender left the checksum to offload: not checked
        let mut partial = p.clone();
        partial[26..28].copy_from_slice(&[0x12, 0x34]);
        assert!(dhcp_payload(&partial, false).is_none());
        assert_eq!(dhcp_payload(&partial, true), Some(&b"a dhcp message"[..]));
        // checksum 0: the sender computed none
        partial[26..28].copy_from_slice(&[0, 0]);
        assert_eq!(dhcp_payload(&partial, false), Some(&b"a dhcp message"[..]));
    }
}
