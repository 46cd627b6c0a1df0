//! DHCPv4 client: message encoding/decoding (RFC 2131/2132, RFC 3442 classless routes,
//! RFC 3396 long options) and the exchanges the daemon needs (DORA, renew, rebind, release) on
//! one interface of the container netns: broadcasts go out on a packet socket on the interface
//! with the message's ciaddr as IP source (0.0.0.0 until the client holds an address), unicasts
//! to the server on a UDP socket bound to port 68 on it, and the replies are read from the
//! packet socket (`raw4`).

use anyhow::{anyhow, bail, Context};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;
const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
const BOOTREQUEST: u8 = 1;
const BOOTREPLY: u8 = 2;
const FLAG_BROADCAST: u16 = 0x8000;
/// BOOTP minimum message size; some servers drop shorter requests
const MIN_MESSAGE: usize = 300;
const FIXED_HEADER: usize = 236;

/// DHCP option codes used here.
pub mod opt {
    pub const PAD: u8 = 0;
    pub const SUBNET_MASK: u8 = 1;
    pub const ROUTERS: u8 = 3;
    pub const DNS_SERVERS: u8 = 6;
    pub const HOST_NAME: u8 = 12;
    pub const DOMAIN_NAME: u8 = 15;
    pub const STATIC_ROUTES: u8 = 33;
    pub const REQUESTED_IP: u8 = 50;
    pub const LEASE_TIME: u8 = 51;
    pub const OVERLOAD: u8 = 52;
    pub const MESSAGE_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const PARAMETER_LIST: u8 = 55;
    pub const MESSAGE: u8 = 56;
    pub const MAX_MESSAGE_SIZE: u8 = 57;
    pub const RENEWAL_TIME: u8 = 58;
    pub const REBINDING_TIME: u8 = 59;
    pub const VENDOR_CLASS: u8 = 60;
    pub const CLIENT_ID: u8 = 61;
    pub const USER_CLASS: u8 = 77;
    pub const DOMAIN_SEARCH: u8 = 119;
    pub const CLASSLESS_ROUTES: u8 = 121;
    pub const END: u8 = 255;
}

/// DHCP message types (option 53).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsgType {
    Discover = 1,
    Offer = 2,
    Request = 3,
    Decline = 4,
    Ack = 5,
    Nak = 6,
    Release = 7,
    Inform = 8,
}

impl MsgType {
    fn from_u8(v: u8) -> Option<MsgType> {
        Some(match v {
            1 => MsgType::Discover,
            2 => MsgType::Offer,
            3 => MsgType::Request,
            4 => MsgType::Decline,
            5 => MsgType::Ack,
            6 => MsgType::Nak,
            7 => MsgType::Release,
            8 => MsgType::Inform,
            _ => return None,
        })
    }
}

/// One DHCP message (BOOTP header + options). Options keep their order; a code that
/// appears more than once on the wire is concatenated (RFC 3396).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub op: u8,
    pub xid: u32,
    pub secs: u16,
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    pub siaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub chaddr: [u8; 16],
    pub options: Vec<(u8, Vec<u8>)>,
}

impl Message {
    /// A client request with an Ethernet hardware address.
    pub fn request(kind: MsgType, xid: u32, mac: [u8; 6]) -> Message {
        let mut chaddr = [0u8; 16];
        for (d, s) in chaddr.iter_mut().zip(mac.iter()) {
            *d = *s;
        }
        Message {
            op: BOOTREQUEST,
            xid,
            secs: 0,
            flags: 0,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr,
            options: vec![(opt::MESSAGE_TYPE, vec![kind as u8])],
        }
    }

    /// Set (replace) an option.
    pub fn set(&mut self, code: u8, value: Vec<u8>) {
        if let Some(slot) = self.options.iter_mut().find(|(c, _)| *c == code) {
            slot.1 = value;
        } else {
            self.options.push((code, value));
        }
    }

    pub fn get(&self, code: u8) -> Option<&[u8]> {
        self.options.iter().find(|(c, _)| *c == code).map(|(_, v)| v.as_slice())
    }

    pub fn msg_type(&self) -> Option<MsgType> {
        self.get(opt::MESSAGE_TYPE).and_then(|v| v.first()).and_then(|b| MsgType::from_u8(*b))
    }

    pub fn get_addr(&self, code: u8) -> Option<Ipv4Addr> {
        self.get(code).and_then(addr_at0)
    }

    pub fn get_u32(&self, code: u8) -> Option<u32> {
        let v = self.get(code)?;
        let b: [u8; 4] = v.get(0..4)?.try_into().ok()?;
        Some(u32::from_be_bytes(b))
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(MIN_MESSAGE + 64);
        b.extend_from_slice(&[self.op, 1, 6, 0]);
        b.extend_from_slice(&self.xid.to_be_bytes());
        b.extend_from_slice(&self.secs.to_be_bytes());
        b.extend_from_slice(&self.flags.to_be_bytes());
        for a in [self.ciaddr, self.yiaddr, self.siaddr, self.giaddr] {
            b.extend_from_slice(&a.octets());
        }
        b.extend_from_slice(&self.chaddr);
        b.extend_from_slice(&[0u8; 64 + 128]); // sname, file
        b.extend_from_slice(&MAGIC_COOKIE);
        for (code, value) in &self.options {
            if *code == opt::PAD || *code == opt::END {
                continue;
            }
            if value.is_empty() {
                b.extend_from_slice(&[*code, 0]);
            }
            // RFC 3396: a value longer than 255 bytes is split into consecutive instances
            for chunk in value.chunks(255) {
                b.push(*code);
                b.push(chunk.len() as u8);
                b.extend_from_slice(chunk);
            }
        }
        b.push(opt::END);
        if b.len() < MIN_MESSAGE {
            b.resize(MIN_MESSAGE, 0);
        }
        b
    }

    pub fn decode(buf: &[u8]) -> anyhow::Result<Message> {
        if buf.len() < FIXED_HEADER + 4 {
            bail!("DHCP message too short ({} bytes)", buf.len());
        }
        let byte = |i: usize| buf.get(i).copied().unwrap_or(0);
        let u16_at = |i: usize| u16::from_be_bytes([byte(i), byte(i + 1)]);
        let addr = |i: usize| Ipv4Addr::new(byte(i), byte(i + 1), byte(i + 2), byte(i + 3));
        let mut chaddr = [0u8; 16];
        for (k, d) in chaddr.iter_mut().enumerate() {
            *d = byte(28 + k);
        }
        if buf.get(FIXED_HEADER..FIXED_HEADER + 4) != Some(&MAGIC_COOKIE[..]) {
            bail!("DHCP message without magic cookie");
        }
        let mut m = Message {
            op: byte(0),
            xid: u32::from_be_bytes([byte(4), byte(5), byte(6), byte(7)]),
            secs: u16_at(8),
            flags: u16_at(10),
            ciaddr: addr(12),
            yiaddr: addr(16),
            siaddr: addr(20),
            giaddr: addr(24),
            chaddr,
            options: Vec::new(),
        };
        let opts = buf.get(FIXED_HEADER + 4..).unwrap_or(&[]);
        parse_options(opts, &mut m.options)?;
        // option overload (52): options continue in the file (1), sname (2) or both (3) fields
        if let Some(ov) = m.get(opt::OVERLOAD).and_then(|v| v.first()).copied() {
            if ov & 1 != 0 {
                parse_options(buf.get(108..236).unwrap_or(&[]), &mut m.options)?;
            }
            if ov & 2 != 0 {
                parse_options(buf.get(44..108).unwrap_or(&[]), &mut m.options)?;
            }
        }
        Ok(m)
    }
}

fn parse_options(mut rest: &[u8], out: &mut Vec<(u8, Vec<u8>)>) -> anyhow::Result<()> {
    while let Some((&code, tail)) = rest.split_first() {
        if code == opt::END {
            break;
        }
        if code == opt::PAD {
            rest = tail;
            continue;
        }
        let (&len, tail) = tail.split_first().ok_or_else(|| anyhow!("truncated DHCP option {code}"))?;
        let value = tail.get(..len as usize).ok_or_else(|| anyhow!("truncated DHCP option {code}"))?;
        match out.iter_mut().find(|(c, _)| *c == code) {
            Some(slot) => slot.1.extend_from_slice(value),
            None => out.push((code, value.to_vec())),
        }
        rest = tail.get(len as usize..).unwrap_or(&[]);
    }
    Ok(())
}

fn addr_at0(v: &[u8]) -> Option<Ipv4Addr> {
    let b: [u8; 4] = v.get(0..4)?.try_into().ok()?;
    Some(Ipv4Addr::from(b))
}

/// What the client sends besides the protocol's own options: option 61, the
/// parameter request list (55) and the `provide`d options.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientOptions {
    /// option 61 payload (type byte included)
    pub client_id: Vec<u8>,
    /// option codes for the parameter request list
    pub request: Vec<u8>,
    /// extra options sent verbatim in DISCOVER/REQUEST
    pub provide: Vec<(u8, Vec<u8>)>,
}

impl ClientOptions {
    /// The reference's client id: `<containerID>/<networkName>/<ifname>`, at most 254 bytes,
    /// sent with a leading type byte 0.
    pub fn client_id_for(key: &str) -> Vec<u8> {
        let mut v = vec![0u8];
        v.extend(key.as_bytes().iter().take(254));
        v
    }

    fn apply(&self, m: &mut Message) {
        m.set(opt::CLIENT_ID, self.client_id.clone());
        if !self.request.is_empty() {
            m.set(opt::PARAMETER_LIST, self.request.clone());
        }
        m.set(opt::MAX_MESSAGE_SIZE, 1500u16.to_be_bytes().to_vec());
        for (code, value) in &self.provide {
            m.set(*code, value.clone());
        }
    }
}

/// A route learned from the lease; `gw` is `None` for an on-link route (option 121 with
/// next hop 0.0.0.0), which the result gives scope link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRoute {
    pub dst: Ipv4Net,
    pub gw: Option<Ipv4Addr>,
}

/// A bound lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub router: Option<Ipv4Addr>,
    pub server_id: Ipv4Addr,
    pub lease_secs: u32,
    pub t1_secs: u32,
    pub t2_secs: u32,
    /// wall-clock time the ACK arrived (unix seconds), so a restarted daemon can resume
    pub acquired_unix: u64,
    pub routes: Vec<LeaseRoute>,
    /// option 6
    #[serde(default)]
    pub dns: Vec<Ipv4Addr>,
    /// option 15
    #[serde(default)]
    pub domain: Option<String>,
    /// option 119
    #[serde(default)]
    pub search: Vec<String>,
}

pub fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Lease {
    /// Build a lease from an ACK. The subnet mask is required, like the reference.
    pub fn from_ack(ack: &Message, fallback_server: Ipv4Addr) -> anyhow::Result<Lease> {
        let mask = ack.get_addr(opt::SUBNET_MASK).ok_or_else(|| anyhow!("DHCP ACK has no subnet mask option"))?;
        let prefix_len = ipnet::ipv4_mask_to_prefix(mask).map_err(|_| anyhow!("invalid subnet mask {mask}"))?;
        if ack.yiaddr.is_unspecified() {
            bail!("DHCP ACK without an address");
        }
        let router = ack.get(opt::ROUTERS).and_then(addr_at0).filter(|a| !a.is_unspecified());
        let server_id = ack.get_addr(opt::SERVER_ID).unwrap_or(fallback_server);
        // RFC 2131: default lease is the server's business; the reference assumes an hour
        let lease_secs = ack.get_u32(opt::LEASE_TIME).unwrap_or(3600);
        let t1 = ack.get_u32(opt::RENEWAL_TIME).unwrap_or(lease_secs / 2);
        let t2 = ack.get_u32(opt::REBINDING_TIME).unwrap_or((lease_secs as u64 * 7 / 8) as u32);
        let (t1, t2) = sane_timers(lease_secs, t1, t2);
        // RFC 3442: option 121, when there is one, replaces option 33 and the router's default
        // route. One that does not parse (or is empty) is ignored, as the reference's parser
        // ignores it: the lease keeps option 33 and the default route via the router.
        let classless = match ack.get(opt::CLASSLESS_ROUTES).map(parse_classless_routes) {
            Some(Ok(r)) => r,
            Some(Err(e)) => {
                tracing::warn!(address = %ack.yiaddr, "ignoring the malformed classless static routes (option 121): {e:#}");
                vec![]
            }
            None => vec![],
        };
        let routes = if classless.is_empty() {
            let mut r = ack.get(opt::STATIC_ROUTES).map(parse_static_routes).unwrap_or_default();
            if let Some(gw) = router {
                r.push(LeaseRoute { dst: Ipv4Net::default(), gw: Some(gw) });
            }
            r
        } else {
            classless
        };
        let dns = ack
            .get(opt::DNS_SERVERS)
            .map(|v| v.chunks_exact(4).filter_map(addr_at0).filter(|a| !a.is_unspecified()).collect())
            .unwrap_or_default();
        let domain = ack
            .get(opt::DOMAIN_NAME)
            .map(|v| String::from_utf8_lossy(v).trim_end_matches('\0').trim().to_string())
            .filter(|d| !d.is_empty());
        // a broken search list loses the search list, not the lease
        let search = ack.get(opt::DOMAIN_SEARCH).and_then(|v| super::dns::decode_names(v).ok()).unwrap_or_default();
        Ok(Lease {
            address: ack.yiaddr,
            prefix_len,
            router,
            server_id,
            lease_secs,
            t1_secs: t1,
            t2_secs: t2,
            acquired_unix: now_unix(),
            routes,
            dns,
            domain,
            search,
        })
    }

    pub fn t1_at(&self) -> u64 {
        self.acquired_unix.saturating_add(self.t1_secs as u64)
    }
    pub fn t2_at(&self) -> u64 {
        self.acquired_unix.saturating_add(self.t2_secs as u64)
    }
    pub fn expiry_at(&self) -> u64 {
        if self.lease_secs == u32::MAX {
            return u64::MAX; // infinite lease
        }
        self.acquired_unix.saturating_add(self.lease_secs as u64)
    }
    pub fn net(&self) -> Option<Ipv4Net> {
        Ipv4Net::new(self.address, self.prefix_len).ok()
    }
}

fn sane_timers(lease: u32, t1: u32, t2: u32) -> (u32, u32) {
    let t2 = if t2 == 0 || t2 > lease { (lease as u64 * 7 / 8) as u32 } else { t2 };
    let t1 = if t1 == 0 || t1 > t2 { t2 / 2 } else { t1 };
    (t1, t2)
}

/// RFC 3442: width byte, significant octets of the destination, 4-byte router.
pub fn parse_classless_routes(mut v: &[u8]) -> anyhow::Result<Vec<LeaseRoute>> {
    let mut out = Vec::new();
    while let Some((&width, rest)) = v.split_first() {
        if width > 32 {
            bail!("invalid classless route prefix length {width}");
        }
        let n = (width as usize).div_ceil(8);
        let dst_bytes = rest.get(..n).context("truncated classless static route")?;
        let mut d = [0u8; 4];
        for (o, s) in d.iter_mut().zip(dst_bytes) {
            *o = *s;
        }
        let gw = rest.get(n..n + 4).and_then(addr_at0).context("truncated classless static route")?;
        let dst = Ipv4Net::new(Ipv4Addr::from(d), width).map_err(|e| anyhow!("{e}"))?.trunc();
        out.push(LeaseRoute { dst, gw: if gw.is_unspecified() { None } else { Some(gw) } });
        v = rest.get(n + 4..).unwrap_or(&[]);
    }
    Ok(out)
}

/// Option 33: (destination, router) pairs with classful destinations.
fn parse_static_routes(v: &[u8]) -> Vec<LeaseRoute> {
    v.chunks_exact(8)
        .filter_map(|c| {
            let dst = addr_at0(c)?;
            let gw = addr_at0(c.get(4..)?)?;
            let first = dst.octets().first().copied().unwrap_or(0);
            let plen = match first {
                0..=127 => 8,
                128..=191 => 16,
                _ => 24,
            };
            // a host route when the destination has bits beyond its class
            let plen = if u32::from(dst) & !u32::MAX.checked_shl(32 - plen).unwrap_or(0) != 0 { 32 } else { plen };
            Some(LeaseRoute { dst: Ipv4Net::new(dst, plen as u8).ok()?, gw: Some(gw) })
        })
        .collect()
}

/// 4 random bytes for transaction ids.
pub use crate::sys::random::u32 as random_u32;

/// `base + d` without overflow (an absurd flag value just means "about a year").
pub fn at(base: Instant, d: Duration) -> Instant {
    base.checked_add(d).or_else(|| base.checked_add(Duration::from_secs(365 * 86400))).unwrap_or(base)
}

/// `now + d` without overflow.
pub fn deadline_in(d: Duration) -> Instant {
    at(Instant::now(), d)
}

/// The pause before the `attempt`-th new start after a server refused what it had offered (a
/// NAK, an unusable ACK or REPLY): 1 s, then doubling, never past `deadline`. Without it a server
/// that offers and then refuses at once has the client exchange thousands of messages a second.
pub fn pause_before_retry(attempt: u32, deadline: Instant) {
    let wait = Duration::from_secs(1u64 << attempt.min(6));
    std::thread::sleep(wait.min(deadline.saturating_duration_since(Instant::now())));
}

/// Outcome of a renew/rebind, for either family.
#[derive(Debug)]
pub enum Renewal<L> {
    /// the server extended the lease (with whatever it changed)
    Bound(L),
    /// the server refused (a DHCPv4 NAK, a DHCPv6 reply without our binding), and why
    Refused(String),
    /// the server withdrew the address (DHCPv6: a valid lifetime of 0, RFC 8415 §18.2.10.1):
    /// the lease as it stands now, ending at once
    Withdrawn(L),
    NoReply,
}

/// Outcome of re-acquiring the address of a lease (after its expiry or a refused renewal), for
/// either family.
#[derive(Debug)]
pub enum Reacquired<L> {
    /// the server gave the same address back
    Same(L),
    /// the server has another address for us, which was not taken (or was released at once)
    Other(IpAddr),
    /// the server refused (a DHCPv4 NAK, a DHCPv6 reply we cannot use), and why
    Refused(String),
    NoAnswer,
}

/// Retransmission settings: first retry after `initial`, doubling up to `max`, each with
/// ±1 s jitter (RFC 2131 §4.1), the whole exchange bounded by the caller's deadline.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { initial: Duration::from_secs(2), max: Duration::from_secs(62) }
    }
}

impl Backoff {
    /// DHCPv4's waits between transmissions (RFC 2131 §4.1): `initial`, doubling up to `max`,
    /// each randomized by ±1 s.
    pub fn waits_v4(self) -> impl FnMut() -> Duration {
        let mut interval = self.initial;
        move || {
            let wait = interval
                .saturating_add(Duration::from_millis((random_u32() % 2000) as u64))
                .saturating_sub(Duration::from_secs(1));
            interval = interval.saturating_mul(2).min(self.max.max(Duration::from_secs(1)));
            wait
        }
    }
}

/// Where a client reads its server's replies: the DHCPv4 client a packet socket on its
/// interface ([`super::raw4::Packet4`]), the DHCPv6 client its UDP socket.
pub trait Inbox {
    /// Wait up to `wait` for the next reply and give the DHCP message it carries; `Ok(None)`
    /// when nothing came in time (or what came was no well-formed reply).
    fn recv<'b>(&self, buf: &'b mut [u8], wait: Duration) -> std::io::Result<Option<&'b [u8]>>;
}

impl Inbox for UdpSocket {
    fn recv<'b>(&self, buf: &'b mut [u8], wait: Duration) -> std::io::Result<Option<&'b [u8]>> {
        self.set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
        match self.recv_from(buf) {
            Ok((n, _)) => Ok(buf.get(..n)),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// A DHCP client on one interface: both sockets were opened inside the container netns and
/// stay bound there. Broadcasts go out on the packet socket, from the message's ciaddr (0.0.0.0
/// before the client holds an address, RFC 2131 §4.1; no other interface's address), unicasts to
/// the server on the UDP socket (port 68 on the interface, from the leased address on it);
/// replies are read from the packet socket, which sees them whatever the IP layer of the netns
/// would do with them (see [`super::raw4`]).
pub struct Client<'a> {
    /// for unicasts to the server
    pub sock: UdpSocket,
    /// for broadcasts and the replies
    pub raw: super::raw4::Packet4,
    pub mac: [u8; 6],
    /// IPv4 addresses on the interface (unicast is only possible from the leased one)
    pub local_addrs: Vec<Ipv4Addr>,
    pub ifname: String,
    pub opts: &'a ClientOptions,
    pub backoff: Backoff,
    /// polled while waiting; returning true aborts the exchange
    pub cancel: &'a (dyn Fn() -> bool + Sync),
}

const POLL: Duration = Duration::from_millis(200);

/// The request/reply loop both families' clients run: `send` puts the request on the wire
/// (again at each retransmission), `take` is offered every message `inbox` yields and returns
/// true once it kept the answer. After each transmission the loop waits what `waits` says
/// (each family's retransmission schedule) before sending again. Returns at the answer or at
/// `deadline`; `check` is polled while waiting (every 200 ms at most), and its error ends the
/// exchange (a stop request, a link that vanished). At each retransmission time `settle` is asked
/// first: true ends the exchange there (a DHCPv6 Solicit that collected Advertise messages for
/// its first RT, RFC 8415 §18.2.1). `resume_at`: the exchange carries on a transaction that
/// transmitted before (a DHCPv6 Solicit from one attempt to the next): it listens until then,
/// and that transmission is a retransmission (`settle` asked first); `None`: a new one,
/// transmitted at once.
#[allow(clippy::too_many_arguments)]
pub fn exchange(
    inbox: &dyn Inbox,
    ifname: &str,
    waits: &mut dyn FnMut() -> Duration,
    check: &dyn Fn() -> anyhow::Result<()>,
    deadline: Instant,
    resume_at: Option<Instant>,
    send: &mut dyn FnMut() -> anyhow::Result<()>,
    take: &mut dyn FnMut(&[u8]) -> bool,
    settle: &mut dyn FnMut() -> bool,
) -> anyhow::Result<()> {
    let mut buf = vec![0u8; 4096];
    let (mut sent, mut send_at) = match resume_at {
        Some(t) => (true, t),
        None => (false, Instant::now()),
    };
    loop {
        // listen until the next transmission is due
        let until = send_at.min(deadline);
        while Instant::now() < until {
            check()?;
            let wait = until.saturating_duration_since(Instant::now()).min(POLL);
            match inbox.recv(&mut buf, wait) {
                Ok(Some(message)) if take(message) => return Ok(()),
                Ok(_) => {}
                Err(e) => bail!("receiving on {ifname}: {e}"),
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(());
        }
        if sent && settle() {
            return Ok(());
        }
        sent = true;
        send()?;
        send_at = at(now, waits());
    }
}

impl Client<'_> {
    /// Put the encoded message `bytes`, whose ciaddr is `ciaddr`, on the wire to the servers'
    /// port at `dest`. A broadcast goes out on the packet socket with `ciaddr` as its IP source:
    /// 0.0.0.0 while the client holds no address (RFC 2131 §4.1: DISCOVER, REQUEST while
    /// selecting, the re-acquisition after an expiry), the leased address while it holds one
    /// (REBIND, a RENEW or RELEASE broadcast because the address is not on the interface),
    /// whatever addresses the netns has. A unicast to the server goes out on the UDP socket, from
    /// the leased address on the interface.
    fn send(&self, bytes: &[u8], ciaddr: Ipv4Addr, dest: Ipv4Addr) -> std::io::Result<()> {
        if dest == Ipv4Addr::BROADCAST {
            self.raw.broadcast(ciaddr, bytes)
        } else {
            self.sock.send_to(bytes, SocketAddrV4::new(dest, SERVER_PORT)).map(|_| ())
        }
    }

    /// Send `req` to `dest` and wait for a reply that `accept` takes, retransmitting with
    /// backoff until `deadline`. Returns `None` on timeout.
    fn transact(
        &self,
        req: &Message,
        dest: Ipv4Addr,
        deadline: Instant,
        accept: &dyn Fn(&Message) -> bool,
    ) -> anyhow::Result<Option<Message>> {
        let bytes = req.encode();
        let mut reply = None;
        let mut send = || match self.send(&bytes, req.ciaddr, dest) {
            Ok(()) => Ok(()),
            Err(e) => {
                bail!("sending DHCP {:?} on {} to {dest}: {e}", req.msg_type().unwrap_or(MsgType::Inform), self.ifname)
            }
        };
        let mut take = |data: &[u8]| match Message::decode(data) {
            Ok(m)
                if m.op == BOOTREPLY && m.xid == req.xid && m.chaddr.get(..6) == Some(&self.mac[..]) && accept(&m) =>
            {
                reply = Some(m);
                true
            }
            _ => false,
        };
        let mut waits = self.backoff.waits_v4();
        let check = || if (self.cancel)() { bail!("cancelled") } else { Ok(()) };
        let (inbox, settle) = (&self.raw, &mut || false);
        exchange(inbox, &self.ifname, &mut waits, &check, deadline, None, &mut send, &mut take, settle)?;
        Ok(reply)
    }

    /// DISCOVER (asking for `prefer`, option 50, when given) and wait for an OFFER that `take`
    /// accepts: the OFFER and its server. The BROADCAST flag is always set: the interface has no
    /// address yet, and a broadcast reply needs no ARP entry at the server for an address nobody
    /// answers ARP for. `Ok(None)`: none in time.
    fn discover(
        &self,
        xid: u32,
        prefer: Option<Ipv4Addr>,
        deadline: Instant,
        take: &dyn Fn(&Message) -> bool,
    ) -> anyhow::Result<Option<(Message, Ipv4Addr)>> {
        let mut disc = Message::request(MsgType::Discover, xid, self.mac);
        disc.flags = FLAG_BROADCAST;
        self.opts.apply(&mut disc);
        if let Some(ip) = prefer {
            disc.set(opt::REQUESTED_IP, ip.octets().to_vec());
        }
        let offer =
            self.transact(&disc, Ipv4Addr::BROADCAST, deadline, &|m| m.msg_type() == Some(MsgType::Offer) && take(m))?;
        Ok(offer.map(|o| {
            let server = o.get_addr(opt::SERVER_ID).unwrap_or(o.siaddr);
            tracing::debug!(ifname = %self.ifname, offer = %o.yiaddr, %server, "DHCP offer");
            (o, server)
        }))
    }

    /// REQUEST the address of `offer` from `server` (SELECTING): its ACK or NAK, `Ok(None)` when
    /// neither came in time.
    fn request_offer(
        &self,
        xid: u32,
        offer: &Message,
        server: Ipv4Addr,
        deadline: Instant,
    ) -> anyhow::Result<Option<Message>> {
        let mut req = Message::request(MsgType::Request, xid, self.mac);
        req.flags = FLAG_BROADCAST;
        self.opts.apply(&mut req);
        req.set(opt::REQUESTED_IP, offer.yiaddr.octets().to_vec());
        req.set(opt::SERVER_ID, server.octets().to_vec());
        self.transact(&req, Ipv4Addr::BROADCAST, deadline, &|m| {
            matches!(m.msg_type(), Some(MsgType::Ack | MsgType::Nak))
                && m.get_addr(opt::SERVER_ID).is_none_or(|s| s == server)
        })
    }

    /// The lease of an ACK from `server`; one that cannot be used is released first (the server
    /// has bound the address to us: give it back, as the reference's Allocate does, `l.Stop()`).
    fn lease_of(&self, ack: &Message, server: Ipv4Addr) -> anyhow::Result<Lease> {
        Lease::from_ack(ack, server).inspect_err(|_| self.release_unusable(ack, server))
    }

    /// INIT: DISCOVER → OFFER → REQUEST → ACK, discovering afresh after a NAK. `Ok(None)` = no
    /// server answered in time.
    pub fn acquire(&self, deadline: Instant) -> anyhow::Result<Option<Lease>> {
        let mut attempt = 0;
        while Instant::now() < deadline {
            if attempt > 0 {
                pause_before_retry(attempt - 1, deadline);
            }
            attempt += 1;
            let xid = random_u32();
            let Some((offer, server)) = self.discover(xid, None, deadline, &|_| true)? else { return Ok(None) };
            match self.request_offer(xid, &offer, server, deadline)? {
                None => return Ok(None),
                Some(m) if m.msg_type() == Some(MsgType::Ack) => return self.lease_of(&m, server).map(Some),
                Some(m) => {
                    let why = nak_message(&m);
                    tracing::info!(ifname = %self.ifname, %why, "DHCP NAK, restarting discovery");
                }
            }
        }
        Ok(None)
    }

    /// Get `address` back (after the lease expired or a renewal was refused): DISCOVER asking for
    /// it (option 50) and REQUEST only an OFFER of it. An OFFER of another address is never
    /// requested (so nothing is bound to us at the server): [`Reacquired::Other`] once no OFFER
    /// of `address` came by `deadline`. An ACK of another address is released.
    pub fn reacquire(&self, address: Ipv4Addr, deadline: Instant) -> anyhow::Result<Reacquired<Lease>> {
        let xid = random_u32();
        let other = std::cell::Cell::new(None);
        let ours = |m: &Message| {
            if m.yiaddr != address {
                other.set(Some(m.yiaddr));
            }
            m.yiaddr == address
        };
        let Some((offer, server)) = self.discover(xid, Some(address), deadline, &ours)? else {
            return Ok(other.get().map_or(Reacquired::NoAnswer, |a| Reacquired::Other(IpAddr::V4(a))));
        };
        Ok(match self.request_offer(xid, &offer, server, deadline)? {
            None => Reacquired::NoAnswer,
            Some(m) if m.msg_type() == Some(MsgType::Ack) => {
                let lease = self.lease_of(&m, server)?;
                if lease.address == address {
                    Reacquired::Same(lease)
                } else {
                    self.release(&lease)?;
                    Reacquired::Other(IpAddr::V4(lease.address))
                }
            }
            Some(m) => Reacquired::Refused(format!("NAK {}", nak_message(&m))),
        })
    }

    /// RENEWING (unicast to the server) or REBINDING (broadcast) for `lease`.
    pub fn renew(&self, lease: &Lease, rebind: bool, deadline: Instant) -> anyhow::Result<Renewal<Lease>> {
        let xid = random_u32();
        let mut req = Message::request(MsgType::Request, xid, self.mac);
        req.ciaddr = lease.address;
        self.opts.apply(&mut req);
        // unicast needs the leased address on the interface; without it only broadcast can work
        let dest =
            if rebind || !self.local_addrs.contains(&lease.address) { Ipv4Addr::BROADCAST } else { lease.server_id };
        let reply =
            self.transact(&req, dest, deadline, &|m| matches!(m.msg_type(), Some(MsgType::Ack | MsgType::Nak)))?;
        Ok(match reply {
            None => Renewal::NoReply,
            Some(m) if m.msg_type() == Some(MsgType::Ack) => {
                // (an ACK of another address is the daemon's to refuse: see Daemon::step)
                let mut l = Lease::from_ack(&m, lease.server_id)?;
                if m.get(opt::CLASSLESS_ROUTES).is_none() && m.get(opt::ROUTERS).is_none() {
                    // a server may omit options on renew; keep what we had
                    l.routes = lease.routes.clone();
                    l.router = lease.router;
                }
                Renewal::Bound(l)
            }
            Some(m) => Renewal::Refused(format!("NAK {}", nak_message(&m))),
        })
    }

    /// DHCPRELEASE (broadcast: the interface has no address yet; from the released address, its
    /// ciaddr, as every release) of what `ack` bound to us, for an ACK whose lease cannot be
    /// used (no subnet mask, …), so the server does not keep the address bound to an attachment
    /// that never got it. Best effort: a failure is logged.
    fn release_unusable(&self, ack: &Message, server: Ipv4Addr) {
        if ack.yiaddr.is_unspecified() {
            return;
        }
        let server_id = ack.get_addr(opt::SERVER_ID).unwrap_or(server);
        let bytes = release_message_for(ack.yiaddr, server_id, self.mac, &self.opts.client_id);
        match self.send(&bytes, ack.yiaddr, Ipv4Addr::BROADCAST) {
            Ok(()) => tracing::info!(ifname = %self.ifname, address = %ack.yiaddr, "unusable DHCP ACK: released"),
            Err(e) => {
                tracing::warn!(ifname = %self.ifname, address = %ack.yiaddr, "unusable DHCP ACK not released: {e}")
            }
        }
    }

    /// DHCPRELEASE from the container interface: unicast to the server from the leased address
    /// when it is on the interface, else broadcast (from the leased address too).
    pub fn release(&self, lease: &Lease) -> anyhow::Result<()> {
        let bytes = release_message(lease, self.mac, &self.opts.client_id);
        if self.local_addrs.contains(&lease.address) && self.send(&bytes, lease.address, lease.server_id).is_ok() {
            return Ok(());
        }
        self.send(&bytes, lease.address, Ipv4Addr::BROADCAST)
            .with_context(|| format!("sending DHCPRELEASE on {}", self.ifname))?;
        Ok(())
    }
}

/// The text a NAK gives (option 56), or "".
fn nak_message(m: &Message) -> String {
    m.get(opt::MESSAGE).map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default()
}

/// A DHCPRELEASE for `lease`: ciaddr, server identifier and client identifier are what a
/// server matches the lease by, wherever the message comes from.
pub fn release_message(lease: &Lease, mac: [u8; 6], client_id: &[u8]) -> Vec<u8> {
    release_message_for(lease.address, lease.server_id, mac, client_id)
}

/// A DHCPRELEASE of `address`, bound by `server_id` to `client_id`.
fn release_message_for(address: Ipv4Addr, server_id: Ipv4Addr, mac: [u8; 6], client_id: &[u8]) -> Vec<u8> {
    let mut m = Message::request(MsgType::Release, random_u32(), mac);
    m.ciaddr = address;
    m.set(opt::SERVER_ID, server_id.octets().to_vec());
    m.set(opt::CLIENT_ID, client_id.to_vec());
    m.encode()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_roundtrip() {
        let mut m = Message::request(MsgType::Discover, 0x1234_5678, [2, 0, 0, 0, 0, 1]);
        m.flags = FLAG_BROADCAST;
        m.set(opt::CLIENT_ID, ClientOptions::client_id_for("c1/net/eth0"));
        m.set(opt::HOST_NAME, vec![b'x'; 300]);
        let b = m.encode();
        assert_eq!(b.first(), Some(&1));
        assert_eq!(b.get(10..12), Some(&[0x80, 0][..]));
        assert_eq!(b.get(236..240), Some(&MAGIC_COOKIE[..]));
        assert_eq!(b.get(240..243), Some(&[53, 1, 1][..]));
        let d = Message::decode(&b).unwrap();
        assert_eq!(d, m);
        assert_eq!(d.get(opt::CLIENT_ID).unwrap(), b"\0c1/net/eth0");
        assert_eq!(d.msg_type(), Some(MsgType::Discover));
    }

    #[test]
    fn decode_rejects_garbage() {
        assert!(Message::decode(&[1, 2, 3]).is_err());
        let mut b = Message::request(MsgType::Ack, 1, [0; 6]).encode();
        b.truncate(243);
        b.push(61);
        b.push(9); // length beyond the end
        assert!(Message::decode(&b).is_err());
        if let Some(c) = b.get_mut(236) {
            *c = 0;
        }
        assert!(Message::decode(&b).is_err());
    }

    #[test]
    fn client_id_is_truncated_like_reference() {
        let long = "a".repeat(400);
        let id = ClientOptions::client_id_for(&long);
        assert_eq!(id.len(), 255);
        assert_eq!(id.first(), Some(&0));
    }

    #[test]
    fn classless_routes() {
        // 0/0 via 198.19.0.1, 198.18.0.0/15 via 198.19.0.254, 10.1.2.0/24 on-link
        let v = [0, 198, 19, 0, 1, 15, 198, 18, 198, 19, 0, 254, 24, 10, 1, 2, 0, 0, 0, 0];
        let r = parse_classless_routes(&v).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r[0], LeaseRoute { dst: "0.0.0.0/0".parse().unwrap(), gw: Some("198.19.0.1".parse().unwrap()) });
        assert_eq!(r[1].dst, "198.18.0.0/15".parse::<Ipv4Net>().unwrap());
        assert_eq!(r[2], LeaseRoute { dst: "10.1.2.0/24".parse().unwrap(), gw: None });
        assert!(parse_classless_routes(&[33, 1, 2, 3, 4, 5, 6, 7, 8]).is_err());
        assert!(parse_classless_routes(&[24, 10, 1]).is_err());
    }

    #[test]
    fn static_routes_with_host_bits_are_host_routes() {
        // option 33 destinations are classful; one with bits beyond its class is a host
        // (the reference makes 10.1.2.3/8, which the kernel refuses: host bits set)
        let v = [
            10, 0, 0, 0, 198, 19, 0, 2, 10, 1, 2, 3, 198, 19, 0, 2, 172, 16, 0, 0, 198, 19, 0, 3, 192, 0, 2, 7, 198,
            19, 0, 4,
        ];
        let dsts: Vec<String> = parse_static_routes(&v).iter().map(|r| r.dst.to_string()).collect();
        assert_eq!(dsts, ["10.0.0.0/8", "10.1.2.3/32", "172.16.0.0/16", "192.0.2.7/32"]);
    }

    #[test]
    fn lease_from_ack_prefers_classless_routes() {
        let mut ack = Message::request(MsgType::Ack, 7, [0; 6]);
        ack.op = BOOTREPLY;
        ack.yiaddr = "198.19.0.20".parse().unwrap();
        ack.set(opt::SUBNET_MASK, vec![255, 255, 255, 0]);
        ack.set(opt::ROUTERS, vec![198, 19, 0, 1]);
        ack.set(opt::LEASE_TIME, 120u32.to_be_bytes().to_vec());
        ack.set(opt::STATIC_ROUTES, vec![10, 0, 0, 0, 198, 19, 0, 2]);
        let l = Lease::from_ack(&ack, "198.19.0.1".parse().unwrap()).unwrap();
        assert_eq!(l.prefix_len, 24);
        // T2 defaults to 7/8 of the lease (RFC 2131 4.4.5; the reference takes 85%: 102)
        assert_eq!((l.t1_secs, l.t2_secs), (60, 105));
        assert_eq!(l.routes.len(), 2);
        assert_eq!(l.routes[0].dst, "10.0.0.0/8".parse::<Ipv4Net>().unwrap());
        assert_eq!(l.routes[1].dst, Ipv4Net::default());
        ack.set(opt::CLASSLESS_ROUTES, vec![16, 198, 18, 198, 19, 0, 3]);
        let l = Lease::from_ack(&ack, "198.19.0.1".parse().unwrap()).unwrap();
        assert_eq!(l.routes, vec![LeaseRoute { dst: "198.18.0.0/16".parse().unwrap(), gw: "198.19.0.3".parse().ok() }]);
        // an option 121 that does not parse (a prefix length of 33, a truncated entry) or is
        // empty is ignored, as the reference's parser ignores it: option 33 and the default
        // route via the router (the ADD failed until 2026-12-07)
        let fallback = vec![
            LeaseRoute { dst: "10.0.0.0/8".parse().unwrap(), gw: "198.19.0.2".parse().ok() },
            LeaseRoute { dst: Ipv4Net::default(), gw: "198.19.0.1".parse().ok() },
        ];
        for bad in [vec![33, 198, 18, 21, 198, 19], vec![24, 198, 18, 21, 198, 19], vec![]] {
            ack.set(opt::CLASSLESS_ROUTES, bad.clone());
            let l = Lease::from_ack(&ack, "198.19.0.1".parse().unwrap()).unwrap_or_else(|e| panic!("{bad:?}: {e:#}"));
            assert_eq!(l.routes, fallback, "{bad:?}");
        }
        ack.options.retain(|(c, _)| *c != opt::SUBNET_MASK);
        assert!(Lease::from_ack(&ack, "198.19.0.1".parse().unwrap()).is_err());
    }

    /// An inbox that yields `msgs` in order, one per `recv`, then nothing (waiting out the wait).
    struct Script(std::cell::RefCell<Vec<Vec<u8>>>);

    impl Inbox for Script {
        fn recv<'b>(&self, buf: &'b mut [u8], wait: Duration) -> std::io::Result<Option<&'b [u8]>> {
            let mut q = self.0.borrow_mut();
            if q.is_empty() {
                std::thread::sleep(wait);
                return Ok(None);
            }
            let m = q.remove(0);
            buf[..m.len()].copy_from_slice(&m);
            Ok(buf.get(..m.len()))
        }
    }

    #[test]
    fn exchange_asks_settle_at_each_retransmission_and_stops_on_true() {
        let run = |settle_after: usize, msgs: Vec<Vec<u8>>| {
            let inbox = Script(std::cell::RefCell::new(msgs));
            let (mut sent, mut asked, mut seen) = (0, 0, 0);
            let deadline = Instant::now() + Duration::from_millis(300);
            exchange(
                &inbox,
                "eth0",
                &mut || Duration::from_millis(20),
                &|| Ok(()),
                deadline,
                None,
                &mut || {
                    sent += 1;
                    Ok(())
                },
                &mut |_| {
                    seen += 1;
                    false
                },
                &mut || {
                    asked += 1;
                    asked >= settle_after
                },
            )
            .unwrap();
            (sent, asked, seen)
        };
        // the answers seen during the first wait are kept by the caller; at the first
        // retransmission time it settles: one transmission only
        assert_eq!(run(1, vec![vec![1], vec![2]]), (1, 1, 2));
        // settled at the third retransmission time: three transmissions
        assert_eq!(run(3, vec![]), (3, 3, 0));
        // never settled: transmissions until the deadline, settle asked before each resend
        let (sent, asked, _) = run(usize::MAX, vec![]);
        assert!(sent > 5 && asked == sent - 1, "sent {sent}, asked {asked}");
    }

    /// An exchange carried on (a DHCPv6 Solicit from one attempt to the next) listens until its
    /// next transmission is due, and that one is a retransmission (`settle` asked first); the
    /// error of `check` ends an exchange with it.
    #[test]
    fn exchange_resumed_waits_for_its_next_transmission_and_check_ends_it() {
        let inbox = Script(std::cell::RefCell::new(vec![]));
        let start = Instant::now();
        let (first_send, asked) = (std::cell::Cell::new(None), std::cell::Cell::new(0));
        let resume_at = start + Duration::from_millis(150);
        exchange(
            &inbox,
            "eth0",
            &mut || Duration::from_secs(5),
            &|| Ok(()),
            start + Duration::from_millis(300),
            Some(resume_at),
            &mut || {
                first_send.set(first_send.get().or(Some(Instant::now())));
                Ok(())
            },
            &mut |_| false,
            &mut || {
                asked.set(asked.get() + 1);
                false
            },
        )
        .unwrap();
        let sent_at = first_send.get().expect("a transmission at the time it was due");
        assert!(sent_at >= resume_at, "sent {:?} early", resume_at - sent_at);
        assert_eq!(asked.get(), 1, "settle asked before the carried-on transmission");

        let calls = std::cell::Cell::new(0);
        let e = exchange(
            &inbox,
            "eth0",
            &mut || Duration::from_secs(5),
            &|| {
                calls.set(calls.get() + 1);
                if calls.get() > 2 {
                    bail!("interface eth0 vanished")
                }
                Ok(())
            },
            start + Duration::from_secs(10),
            None,
            &mut || Ok(()),
            &mut |_| false,
            &mut || false,
        )
        .unwrap_err();
        assert_eq!(format!("{e}"), "interface eth0 vanished");
        assert!(start.elapsed() < Duration::from_secs(2), "the exchange went on: {:?}", start.elapsed());
    }
}
