//! DHCPv6 client, stateful addresses only (RFC 8415, IA_NA): SOLICIT → ADVERTISE → REQUEST →
//! REPLY, RENEW and REBIND, RELEASE; DNS servers (option 23), the search list (option 24,
//! RFC 1035 names) and SOL_MAX_RT (option 82) asked for in the ORO. Each exchange is one
//! transaction retransmitted as RFC 8415 §15 says, to its end (MRC, MRD: the caller's deadline).
//! Messages go to All_DHCP_Relay_Agents_and_Servers
//! (ff02::1:2) from the link-local address of one interface of the container netns.
//!
//! DHCPv6 carries no prefix length: the lease is a single address, reported as /128 (what a
//! stock client configures). The on-link prefix and the default route come from router
//! advertisements, which the container's kernel accepts by itself.

use super::client::{deadline_in, exchange, now_unix, random_u32, Backoff, Reacquired, Renewal};
use super::dns;
use anyhow::{anyhow, bail};
use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use std::net::{IpAddr, Ipv6Addr, SocketAddrV6, UdpSocket};
use std::time::{Duration, Instant};

pub const CLIENT_PORT: u16 = 546;
pub const SERVER_PORT: u16 = 547;
pub const ALL_SERVERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);

/// Message types.
pub mod msg {
    pub const SOLICIT: u8 = 1;
    pub const ADVERTISE: u8 = 2;
    pub const REQUEST: u8 = 3;
    pub const RENEW: u8 = 5;
    pub const REBIND: u8 = 6;
    pub const REPLY: u8 = 7;
    pub const RELEASE: u8 = 8;
}

/// Option codes.
pub mod opt {
    pub const CLIENTID: u16 = 1;
    pub const SERVERID: u16 = 2;
    pub const IA_NA: u16 = 3;
    pub const IAADDR: u16 = 5;
    pub const ORO: u16 = 6;
    pub const PREFERENCE: u16 = 7;
    pub const ELAPSED_TIME: u16 = 8;
    pub const STATUS_CODE: u16 = 13;
    pub const DNS_SERVERS: u16 = 23;
    pub const DOMAIN_LIST: u16 = 24;
    pub const SOL_MAX_RT: u16 = 82;
}

/// Status codes (option 13).
pub mod status {
    pub const SUCCESS: u16 = 0;
    pub const NO_ADDRS_AVAIL: u16 = 2;
    pub const NO_BINDING: u16 = 3;
}

/// One DHCPv6 client/server message: type, 24-bit transaction id, options in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub ty: u8,
    pub xid: u32,
    pub options: Vec<(u16, Vec<u8>)>,
}

fn put_opt(b: &mut Vec<u8>, code: u16, value: &[u8]) {
    b.extend_from_slice(&code.to_be_bytes());
    b.extend_from_slice(&(value.len().min(u16::MAX as usize) as u16).to_be_bytes());
    b.extend_from_slice(value.get(..value.len().min(u16::MAX as usize)).unwrap_or(&[]));
}

/// Split an option area into (code, value) pairs.
pub fn parse_options(mut rest: &[u8]) -> anyhow::Result<Vec<(u16, Vec<u8>)>> {
    let mut out = Vec::new();
    while !rest.is_empty() {
        let hdr = rest.get(..4).ok_or_else(|| anyhow!("truncated DHCPv6 option header"))?;
        let code = u16::from_be_bytes([hdr[0], hdr[1]]);
        let len = u16::from_be_bytes([hdr[2], hdr[3]]) as usize;
        let value = rest.get(4..4 + len).ok_or_else(|| anyhow!("truncated DHCPv6 option {code}"))?;
        out.push((code, value.to_vec()));
        rest = rest.get(4 + len..).unwrap_or(&[]);
    }
    Ok(out)
}

fn be32(v: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(v.get(at..at + 4)?.try_into().ok()?))
}

impl Message {
    pub fn new(ty: u8, xid: u32) -> Message {
        Message { ty, xid: xid & 0x00ff_ffff, options: Vec::new() }
    }

    pub fn get(&self, code: u16) -> Option<&[u8]> {
        self.options.iter().find(|(c, _)| *c == code).map(|(_, v)| v.as_slice())
    }

    pub fn push(&mut self, code: u16, value: Vec<u8>) {
        self.options.push((code, value));
    }

    pub fn encode(&self) -> Vec<u8> {
        let x = self.xid.to_be_bytes();
        let mut b = vec![self.ty, x[1], x[2], x[3]];
        for (c, v) in &self.options {
            put_opt(&mut b, *c, v);
        }
        b
    }

    pub fn decode(buf: &[u8]) -> anyhow::Result<Message> {
        let hdr = buf.get(..4).ok_or_else(|| anyhow!("DHCPv6 message too short"))?;
        Ok(Message {
            ty: hdr[0],
            xid: u32::from_be_bytes([0, hdr[1], hdr[2], hdr[3]]),
            options: parse_options(buf.get(4..).unwrap_or(&[]))?,
        })
    }

    /// The message-level status code (success when absent).
    pub fn status(&self) -> (u16, String) {
        self.get(opt::STATUS_CODE).map(parse_status).unwrap_or((status::SUCCESS, String::new()))
    }
}

fn parse_status(v: &[u8]) -> (u16, String) {
    let code = v.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]])).unwrap_or(status::SUCCESS);
    (code, String::from_utf8_lossy(v.get(2..).unwrap_or(&[])).into_owned())
}

/// An IA_NA as carried in a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IaNa {
    pub iaid: u32,
    pub t1: u32,
    pub t2: u32,
    /// (address, preferred lifetime, valid lifetime)
    pub addrs: Vec<(Ipv6Addr, u32, u32)>,
    pub status: u16,
    pub status_msg: String,
}

impl IaNa {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(40);
        b.extend_from_slice(&self.iaid.to_be_bytes());
        b.extend_from_slice(&self.t1.to_be_bytes());
        b.extend_from_slice(&self.t2.to_be_bytes());
        for (a, p, v) in &self.addrs {
            let mut ia = a.octets().to_vec();
            ia.extend_from_slice(&p.to_be_bytes());
            ia.extend_from_slice(&v.to_be_bytes());
            put_opt(&mut b, opt::IAADDR, &ia);
        }
        b
    }

    pub fn decode(v: &[u8]) -> anyhow::Result<IaNa> {
        let (iaid, t1, t2) = match (be32(v, 0), be32(v, 4), be32(v, 8)) {
            (Some(a), Some(b), Some(c)) => (a, b, c),
            _ => bail!("truncated IA_NA"),
        };
        let mut ia = IaNa { iaid, t1, t2, addrs: vec![], status: status::SUCCESS, status_msg: String::new() };
        for (code, val) in parse_options(v.get(12..).unwrap_or(&[]))? {
            match code {
                opt::IAADDR => {
                    let a: [u8; 16] =
                        val.get(..16).and_then(|s| s.try_into().ok()).ok_or_else(|| anyhow!("bad IAADDR"))?;
                    let (p, l) = (be32(&val, 16).unwrap_or(0), be32(&val, 20).unwrap_or(0));
                    // an address with its own failure status is not given to us
                    let st = parse_options(val.get(24..).unwrap_or(&[]))
                        .ok()
                        .and_then(|o| o.into_iter().find(|(c, _)| *c == opt::STATUS_CODE))
                        .map(|(_, s)| parse_status(&s).0)
                        .unwrap_or(status::SUCCESS);
                    if st == status::SUCCESS {
                        ia.addrs.push((Ipv6Addr::from(a), p, l));
                    }
                }
                opt::STATUS_CODE => {
                    (ia.status, ia.status_msg) = parse_status(&val);
                }
                _ => {}
            }
        }
        Ok(ia)
    }
}

/// A bound DHCPv6 lease (one IA_NA address).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease6 {
    pub address: Ipv6Addr,
    /// the server's DUID (option 2), needed for RENEW and RELEASE
    pub server_id: Vec<u8>,
    pub iaid: u32,
    pub t1_secs: u32,
    pub t2_secs: u32,
    pub preferred_secs: u32,
    pub valid_secs: u32,
    /// wall-clock time the REPLY arrived (unix seconds)
    pub acquired_unix: u64,
    #[serde(default)]
    pub dns: Vec<Ipv6Addr>,
    #[serde(default)]
    pub search: Vec<String>,
    /// the SOL_MAX_RT the server sent last (RFC 8415 §21.24): the MRT of the Solicit that gets
    /// the address back
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sol_max_rt: Option<u32>,
}

const INFINITY: u32 = u32::MAX;

/// The SOL_MAX_RT option of a message (RFC 8415 §21.24), in seconds: ignored (`None`) unless it
/// is 4 bytes from 60 to 86400.
fn sol_max_rt_of(m: &Message) -> Option<u32> {
    let v = m.get(opt::SOL_MAX_RT)?;
    let secs = u32::from_be_bytes(v.try_into().ok()?);
    (60..=86400).contains(&secs).then_some(secs)
}

/// Our IA_NA in a message: the first with our IAID that RFC 8415 §21.4 does not discard.
fn our_ia(m: &Message, iaid: u32) -> Option<IaNa> {
    m.options
        .iter()
        .filter(|(c, _)| *c == opt::IA_NA)
        .filter_map(|(_, v)| IaNa::decode(v).ok())
        .filter(|ia| ia.iaid == iaid)
        .find(ia_times_valid)
}

/// Whether a Reply withdraws `address` (RFC 8415 §18.2.10.1): our IA_NA, the message and the
/// IA_NA saying success, lists it with a valid lifetime of 0 (and a preferred one of 0: an
/// address whose preferred lifetime exceeds its valid one is discarded, §21.6).
fn withdraws(m: &Message, iaid: u32, address: Ipv6Addr) -> bool {
    m.status().0 == status::SUCCESS
        && our_ia(m, iaid).is_some_and(|ia| ia.status == status::SUCCESS && ia.addrs.contains(&(address, 0, 0)))
}

/// RFC 8415 §21.4: an IA_NA whose T1 is greater than its T2, both non-zero, is discarded (the
/// message is processed as if it did not hold it).
fn ia_times_valid(ia: &IaNa) -> bool {
    !(ia.t1 > 0 && ia.t2 > 0 && ia.t1 > ia.t2)
}

/// RFC 8415 §21.6: an address whose preferred lifetime is greater than its valid lifetime is
/// discarded; so is one whose valid lifetime is 0 (it is being withdrawn).
fn iaaddr_valid(&(_, preferred, valid): &(Ipv6Addr, u32, u32)) -> bool {
    valid > 0 && preferred <= valid
}

impl Lease6 {
    /// Build a lease from a REPLY (or ADVERTISE) holding an address in our IA_NA.
    pub fn from_reply(m: &Message, iaid: u32) -> anyhow::Result<Lease6> {
        Lease6::from_reply_for(m, iaid, None)
    }

    /// [`Lease6::from_reply`] of the address `ours` when our IA_NA holds it with valid
    /// lifetimes (a renewal: its lifetimes extend our lease, whatever else the server added),
    /// else of the first valid address.
    pub fn from_reply_for(m: &Message, iaid: u32, ours: Option<Ipv6Addr>) -> anyhow::Result<Lease6> {
        let (code, why) = m.status();
        if code != status::SUCCESS {
            bail!("DHCPv6 server said status {code}: {why}");
        }
        let server_id = m.get(opt::SERVERID).ok_or_else(|| anyhow!("DHCPv6 reply without server id"))?.to_vec();
        let ia = our_ia(m, iaid).ok_or_else(|| anyhow!("DHCPv6 reply without our IA_NA (or only with T1 > T2)"))?;
        if ia.status != status::SUCCESS {
            bail!("DHCPv6 IA_NA status {}: {}", ia.status, ia.status_msg);
        }
        let valid_addrs = || ia.addrs.iter().filter(|a| iaaddr_valid(a));
        let &(address, preferred, valid) = valid_addrs()
            .find(|a| Some(a.0) == ours)
            .or_else(|| valid_addrs().next())
            .ok_or_else(|| anyhow!("DHCPv6 reply without a valid address"))?;
        // RFC 8415 §21.4: T1/T2 of 0 leave the times to the client (0.5 and 0.8 of preferred);
        // a T1 beyond the preferred lifetime comes down to half of it
        let base = if preferred == 0 { valid } else { preferred };
        let t2 = if ia.t2 == 0 { (base as u64 * 4 / 5) as u32 } else { ia.t2 };
        let t1 = if ia.t1 == 0 || ia.t1 > base && base != INFINITY { (base / 2).min(t2) } else { ia.t1 };
        // (a T2 of our own is no earlier than the server's T1)
        let t2 = if ia.t2 == 0 { t2.max(t1) } else { t2 };
        let dns = m
            .get(opt::DNS_SERVERS)
            .map(|v| v.chunks_exact(16).filter_map(|c| <[u8; 16]>::try_from(c).ok()).map(Ipv6Addr::from).collect())
            .unwrap_or_default();
        let search = m.get(opt::DOMAIN_LIST).map(dns::decode_names).transpose()?.unwrap_or_default();
        Ok(Lease6 {
            address,
            server_id,
            iaid,
            t1_secs: t1,
            t2_secs: t2,
            preferred_secs: preferred,
            valid_secs: valid,
            acquired_unix: now_unix(),
            dns,
            search,
            sol_max_rt: sol_max_rt_of(m),
        })
    }

    /// This lease ending now (its address withdrawn by the server): acquired now, every time 0.
    pub fn ended(&self) -> Lease6 {
        Lease6 { acquired_unix: now_unix(), t1_secs: 0, t2_secs: 0, preferred_secs: 0, valid_secs: 0, ..self.clone() }
    }

    pub fn t1_at(&self) -> u64 {
        if self.t1_secs == INFINITY {
            return u64::MAX;
        }
        self.acquired_unix.saturating_add(self.t1_secs as u64)
    }
    pub fn t2_at(&self) -> u64 {
        if self.t2_secs == INFINITY {
            return u64::MAX;
        }
        self.acquired_unix.saturating_add(self.t2_secs as u64)
    }
    pub fn expiry_at(&self) -> u64 {
        if self.valid_secs == INFINITY {
            return u64::MAX;
        }
        self.acquired_unix.saturating_add(self.valid_secs as u64)
    }
}

/// RFC 8415 §7.6 retransmission parameters of one message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retransmit {
    /// IRT: the first wait
    pub initial: Duration,
    /// MRT: the longest wait (before its ±10 %); `None`: no maximum
    pub max: Option<Duration>,
    /// the first wait is strictly longer than IRT (Solicit, §18.2.1)
    pub first_longer: bool,
    /// MRC: the most transmissions; `None`: no limit (MRD, the exchange's deadline, ends it)
    pub max_count: Option<u32>,
}

const fn rt(initial: u64, max: Option<u64>, first_longer: bool, max_count: Option<u32>) -> Retransmit {
    let max = match max {
        Some(m) => Some(Duration::from_secs(m)),
        None => None,
    };
    Retransmit { initial: Duration::from_secs(initial), max, first_longer, max_count }
}

/// SOL_TIMEOUT, SOL_MAX_RT (see [`solicit_rt`] for the one a server sets)
pub const SOLICIT_RT: Retransmit = rt(1, Some(3600), true, None);
/// REQ_TIMEOUT, REQ_MAX_RT, REQ_MAX_RC
pub const REQUEST_RT: Retransmit = rt(1, Some(30), false, Some(10));
/// REN_TIMEOUT, REN_MAX_RT (MRD: until T2)
pub const RENEW_RT: Retransmit = rt(10, Some(600), false, None);
/// REB_TIMEOUT, REB_MAX_RT (MRD: until the valid lifetime ends)
pub const REBIND_RT: Retransmit = rt(10, Some(600), false, None);
/// REL_TIMEOUT (no MRT)
pub const RELEASE_RT: Retransmit = rt(1, None, false, None);

/// Solicit's schedule with the SOL_MAX_RT a server sent (RFC 8415 §21.24) as its MRT.
pub fn solicit_rt(sol_max_rt: Option<u32>) -> Retransmit {
    Retransmit { max: sol_max_rt.map(|s| Duration::from_secs(s.into())).or(SOLICIT_RT.max), ..SOLICIT_RT }
}

/// `base` plus `permille` thousandths of `of` (a negative share is taken off).
fn add_share(base: Duration, of: Duration, permille: i32) -> Duration {
    let delta = (of / 1000).checked_mul(permille.unsigned_abs()).unwrap_or(of);
    if permille >= 0 {
        base.saturating_add(delta)
    } else {
        base.saturating_sub(delta)
    }
}

impl Retransmit {
    /// The wait after a transmission (RFC 8415 §15) whose previous wait was `prev`: RT = IRT +
    /// RAND·IRT for the first, RT = 2·RTprev + RAND·RTprev after it, and MRT + RAND·MRT once
    /// that would pass MRT, with RAND uniform in [-0.1, +0.1] (for Solicit's first wait in
    /// (0, +0.1]). `r` is RAND in thousandths (-100..=100). `cap` (the daemon's `-resendmax`)
    /// lowers MRT, never below IRT.
    pub fn next(self, prev: Option<Duration>, cap: Duration, r: i32) -> Duration {
        let mrt = self.max.unwrap_or(Duration::MAX).min(cap).max(self.initial);
        let r = r.clamp(-100, 100);
        let rt = match prev {
            None if self.first_longer => add_share(self.initial, self.initial, r.abs().max(1)),
            None => add_share(self.initial, self.initial, r),
            Some(p) => add_share(p.saturating_mul(2), p, r),
        };
        if rt > mrt {
            add_share(mrt, mrt, r)
        } else {
            rt
        }
    }
}

/// RAND of RFC 8415 §15 in thousandths: uniform in -100..=100.
fn rand_permille() -> i32 {
    (random_u32() % 201) as i32 - 100
}

/// The client DUID: DUID-UUID (type 4, RFC 6355) whose UUID is a version-8 (RFC 9562) UUID
/// made of the 128-bit FNV-1a hash of the lease key `<containerID>/<network>/<ifname>` —
/// stable for an attachment, different for every attachment, like the v4 client id.
pub fn duid_for(key: &str) -> Vec<u8> {
    let mut h: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for b in key.bytes() {
        h ^= b as u128;
        h = h.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
    }
    let mut u = h.to_be_bytes();
    u[6] = (u[6] & 0x0f) | 0x80; // version 8
    u[8] = (u[8] & 0x3f) | 0x80; // variant 10
    let mut d = vec![0, 4];
    d.extend_from_slice(&u);
    d
}

/// The IAID: 32 bits of FNV-1a of the key (one IA per DUID, so any stable value works).
pub fn iaid_for(key: &str) -> u32 {
    key.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ b as u32).wrapping_mul(0x0100_0193))
}

/// The server preference an Advertise carries (option 7, RFC 8415 §21.8): 0 without one (or
/// with one of another length than 1).
fn preference(m: &Message) -> u8 {
    match m.get(opt::PREFERENCE) {
        Some(&[p]) => p,
        _ => 0,
    }
}

/// Which Advertise a Solicit ends with (RFC 8415 §18.2.1, §18.2.9). Until the first
/// retransmission time (the first RT) the client collects the valid Advertise messages and keeps
/// the one of highest preference, the first of equals; one of preference 255 ends the wait at
/// once. Once the first RT has passed, the best so far is taken, or else the first valid one
/// that comes.
#[derive(Debug, Default)]
struct AdvertiseChoice {
    best: Option<(u8, Lease6)>,
    /// the first RT has passed
    late: bool,
    /// a preference of 255 came
    top: bool,
}

impl AdvertiseChoice {
    /// A valid Advertise (one with an address for us) of preference `pref`.
    fn offer(&mut self, pref: u8, lease: Lease6) {
        if self.best.as_ref().is_none_or(|(p, _)| pref > *p) {
            self.best = Some((pref, lease));
        }
        self.top |= pref == 255;
    }

    /// Whether the choice is made: asked after each offer, and at each retransmission time
    /// (`rt_passed`; the first one is the end of the first RT).
    fn done(&mut self, rt_passed: bool) -> bool {
        self.late |= rt_passed;
        self.top || (self.late && self.best.is_some())
    }

    fn chosen(self) -> Option<Lease6> {
        self.best.map(|(_, l)| l)
    }
}

/// What a REPLY bound to our IA_NA as the server sees it, whether or not we can use it: the
/// server's id and an address of our IA_NA with a valid lifetime, when neither the message nor
/// the IA_NA says failure. A reply we refuse for something else (T1 > T2, preferred > valid,
/// a broken search list) leaves that address bound at the server until it is released.
fn bound_address(m: &Message, iaid: u32) -> Option<(Vec<u8>, Ipv6Addr)> {
    if m.status().0 != status::SUCCESS {
        return None;
    }
    let server_id = m.get(opt::SERVERID)?.to_vec();
    let address = m
        .options
        .iter()
        .filter(|(c, _)| *c == opt::IA_NA)
        .filter_map(|(_, v)| IaNa::decode(v).ok())
        .filter(|ia| ia.iaid == iaid && ia.status == status::SUCCESS)
        .find_map(|ia| ia.addrs.iter().find(|(_, _, valid)| *valid > 0).map(|(a, _, _)| *a))?;
    Some((server_id, address))
}

/// A DHCPv6 client on one interface (socket bound to [::]:546 on it, in the container netns).
pub struct Client6<'a> {
    pub sock: UdpSocket,
    /// the interface's MAC (recorded with the lease)
    pub mac: [u8; 6],
    pub ifindex: u32,
    pub ifname: String,
    pub duid: Vec<u8>,
    pub iaid: u32,
    pub backoff: Backoff,
    pub cancel: &'a (dyn Fn() -> bool + Sync),
}

/// How one exchange retransmits and when it ends (RFC 8415 §15).
pub struct Plan<'p> {
    /// the schedule (its MRT may change during the exchange: a Solicit's SOL_MAX_RT)
    rt: Box<dyn Fn() -> Retransmit + 'p>,
    /// MRD: the end of the exchange (or of this attempt at it)
    deadline: Instant,
    /// polled while waiting (every 200 ms at most): its error ends the exchange (a link that
    /// vanished)
    watch: &'p dyn Fn() -> anyhow::Result<()>,
}

impl<'p> Plan<'p> {
    fn new(rt: Retransmit, deadline: Instant, watch: &'p dyn Fn() -> anyhow::Result<()>) -> Plan<'p> {
        Plan { rt: Box::new(move || rt), deadline, watch }
    }
}

/// A watch that never stops an exchange.
pub fn unwatched() -> anyhow::Result<()> {
    Ok(())
}

/// One transaction (RFC 8415 §15, §16.1): its id (the same in every retransmission), when it
/// began (the elapsed time counts from there, §21.9), how many transmissions it made, the last
/// wait and when the next transmission is due.
#[derive(Debug, Clone, Copy)]
struct Txn {
    xid: u32,
    started: Instant,
    sent: u32,
    prev_rt: Option<Duration>,
    next_at: Instant,
}

impl Txn {
    fn new() -> Txn {
        let now = Instant::now();
        Txn { xid: random_u32() & 0x00ff_ffff, started: now, sent: 0, prev_rt: None, next_at: now }
    }
}

/// A Solicit (RFC 8415 §18.2.1) that can outlive one attempt: after a lease's expiry the daemon
/// solicits its address back in one transaction without end, each attempt (the link up for it)
/// sending the transmissions due in it and collecting the Advertise messages; the next attempt
/// carries it on.
#[derive(Debug)]
pub struct Soliciting {
    txn: Txn,
    /// the MRT: the SOL_MAX_RT of the lease, then the last one an Advertise carried (§18.2.9)
    sol_max_rt: Option<u32>,
    choice: AdvertiseChoice,
    /// the address another Advertise offered (a Solicit for one address)
    other: Option<Ipv6Addr>,
}

impl Soliciting {
    pub fn new(sol_max_rt: Option<u32>) -> Soliciting {
        Soliciting { txn: Txn::new(), sol_max_rt, choice: AdvertiseChoice::default(), other: None }
    }

    /// When the next transmission is due.
    pub fn next_at(&self) -> Instant {
        self.txn.next_at
    }

    /// The Advertise chosen, with the SOL_MAX_RT in force at the end.
    fn chosen(self) -> Option<Lease6> {
        let sol_max_rt = self.sol_max_rt;
        self.choice.chosen().map(|l| Lease6 { sol_max_rt: l.sol_max_rt.or(sol_max_rt), ..l })
    }
}

impl Client6<'_> {
    fn base(&self, ty: u8) -> Message {
        let mut m = Message::new(ty, 0);
        m.push(opt::CLIENTID, self.duid.clone());
        m.push(opt::ELAPSED_TIME, vec![0, 0]);
        // RFC 8415 §18.2.1, §18.2.2, §18.2.4, §18.2.5: SOL_MAX_RT is asked for in every one
        let oro = [opt::DNS_SERVERS, opt::DOMAIN_LIST, opt::SOL_MAX_RT];
        m.push(opt::ORO, oro.iter().flat_map(|c| c.to_be_bytes()).collect());
        m
    }

    fn ia(&self, addr: Option<Ipv6Addr>) -> Vec<u8> {
        IaNa {
            iaid: self.iaid,
            t1: 0,
            t2: 0,
            addrs: addr.map(|a| vec![(a, 0, 0)]).unwrap_or_default(),
            status: 0,
            status_msg: String::new(),
        }
        .encode()
    }

    /// Multicast `req` and wait for a reply of type `want` for it: a new transaction,
    /// retransmitted as `plan` says.
    fn transact(&self, req: &mut Message, want: u8, plan: Plan<'_>) -> anyhow::Result<Option<Message>> {
        let reply = RefCell::new(None);
        let mut txn = Txn::new();
        let (offer, done) = (&mut |m| *reply.borrow_mut() = Some(m), &mut |_| reply.borrow().is_some());
        self.exchange(req, want, &mut txn, plan, offer, done)?;
        Ok(reply.into_inner())
    }

    /// The exchange under [`Client6::transact`]: the transaction `txn` (a new one, or one
    /// carried on from an earlier attempt), its transaction id in every transmission and the
    /// elapsed time counted from its start (RFC 8415 §15, §16.1, §21.9), each wait as `plan`'s
    /// schedule says (its MRT lowered by `-resendmax`), up to its MRC. Every message of type
    /// `want` for `req` (its transaction id and our client id) goes to `offer`; `done` says when
    /// to stop, asked after each offer (with false) and at each retransmission time (with true).
    /// A stop request (`cancel`) and `plan.watch` are polled while waiting. `txn` is left as the
    /// exchange leaves it (when it ended at `plan.deadline`: when the next transmission is due).
    fn exchange(
        &self,
        req: &mut Message,
        want: u8,
        txn: &mut Txn,
        plan: Plan<'_>,
        offer: &mut dyn FnMut(Message),
        done: &mut dyn FnMut(bool) -> bool,
    ) -> anyhow::Result<()> {
        let to = SocketAddrV6::new(ALL_SERVERS, SERVER_PORT, 0, self.ifindex);
        let xid = txn.xid;
        req.xid = xid;
        let resume_at = (txn.sent > 0).then_some(txn.next_at);
        let state = Cell::new(*txn);
        let offer_and_done = RefCell::new((offer, done));
        let mut send = || {
            let mut t = state.get();
            let cs = (t.started.elapsed().as_millis() / 10).min(0xffff) as u16;
            if let Some(slot) = req.options.iter_mut().find(|(c, _)| *c == opt::ELAPSED_TIME) {
                slot.1 = cs.to_be_bytes().to_vec();
            }
            t.sent = t.sent.saturating_add(1);
            state.set(t);
            match self.sock.send_to(&req.encode(), to) {
                Ok(_) => Ok(()),
                Err(e) => bail!("sending DHCPv6 message {} on {}: {e}", req.ty, self.ifname),
            }
        };
        let cap = self.backoff.max;
        let mut waits = || {
            let mut t = state.get();
            let rt = (plan.rt)().next(t.prev_rt, cap, rand_permille());
            (t.prev_rt, t.next_at) = (Some(rt), super::client::deadline_in(rt));
            state.set(t);
            rt
        };
        let mut take = |data: &[u8]| match Message::decode(data) {
            Ok(m) if m.ty == want && m.xid == xid && m.get(opt::CLIENTID) == Some(&self.duid[..]) => {
                let (offer, done) = &mut *offer_and_done.borrow_mut();
                offer(m);
                done(false)
            }
            _ => false,
        };
        let mut settle = || {
            let (_, done) = &mut *offer_and_done.borrow_mut();
            done(true) || (plan.rt)().max_count.is_some_and(|n| state.get().sent >= n)
        };
        let watch = plan.watch;
        let check = || {
            if (self.cancel)() {
                bail!("cancelled");
            }
            watch()
        };
        let (sock, ifname) = (&self.sock, &self.ifname);
        let res =
            exchange(sock, ifname, &mut waits, &check, plan.deadline, resume_at, &mut send, &mut take, &mut settle);
        *txn = state.get();
        res
    }

    /// Go on with the Solicit `st` (with `prefer` as the hint in our IA_NA) until `deadline`,
    /// choosing an Advertise as RFC 8415 §18.2.1 says ([`AdvertiseChoice`]); its MRT is the
    /// SOL_MAX_RT in force, which an Advertise may change (§18.2.9, even one without an address
    /// for us). With `prefer`, only an Advertise of that address counts: the address another
    /// one offers is noted, and ends the Solicit once the first RT has passed without one of
    /// `prefer`. True when the Solicit ended (an Advertise chosen, or another address offered);
    /// false at `deadline` (`st` then says when its next transmission is due).
    fn solicit(
        &self,
        prefer: Option<Ipv6Addr>,
        st: &mut Soliciting,
        deadline: Instant,
        watch: &dyn Fn() -> anyhow::Result<()>,
    ) -> anyhow::Result<bool> {
        let mut sol = self.base(msg::SOLICIT);
        sol.push(opt::IA_NA, self.ia(prefer));
        let mrt = Cell::new(st.sol_max_rt);
        let choice = RefCell::new(std::mem::take(&mut st.choice));
        let other = Cell::new(st.other);
        let ended = Cell::new(false);
        let mut offer = |adv: Message| {
            if let Some(secs) = sol_max_rt_of(&adv) {
                mrt.set(Some(secs));
            }
            match Lease6::from_reply(&adv, self.iaid) {
                Ok(l) if prefer.is_none_or(|p| p == l.address) => choice.borrow_mut().offer(preference(&adv), l),
                Ok(l) => other.set(Some(l.address)),
                // §18.2.9: an Advertise without an address for us is ignored
                Err(e) => tracing::info!(ifname = %self.ifname, "DHCPv6 advertise without a usable address: {e:#}"),
            }
        };
        let mut done = |rt_passed| {
            let mut c = choice.borrow_mut();
            let end = c.done(rt_passed) || (c.late && other.get().is_some());
            ended.set(end);
            end
        };
        let plan = Plan { rt: Box::new(|| solicit_rt(mrt.get())), deadline, watch };
        let res = self.exchange(&mut sol, msg::ADVERTISE, &mut st.txn, plan, &mut offer, &mut done);
        (st.sol_max_rt, st.choice, st.other) = (mrt.get(), choice.into_inner(), other.get());
        res.map(|_| ended.get())
    }

    /// REQUEST the address `offered` advertised: the lease of the REPLY, `Err` with why for a
    /// REPLY we cannot use (what it bound at the server released first), `None` without a REPLY
    /// (after REQ_MAX_RC transmissions, or at `deadline`).
    fn request(
        &self,
        offered: &Lease6,
        deadline: Instant,
        watch: &dyn Fn() -> anyhow::Result<()>,
    ) -> anyhow::Result<Option<Result<Lease6, String>>> {
        let mut req = self.base(msg::REQUEST);
        req.push(opt::SERVERID, offered.server_id.clone());
        req.push(opt::IA_NA, self.ia(Some(offered.address)));
        let Some(reply) = self.transact(&mut req, msg::REPLY, Plan::new(REQUEST_RT, deadline, watch))? else {
            return Ok(None);
        };
        let lease = Lease6::from_reply(&reply, self.iaid)
            .map(|l| Lease6 { sol_max_rt: l.sol_max_rt.or(offered.sol_max_rt), ..l });
        Ok(Some(lease.map_err(|e| {
            if let Some((server_id, address)) = bound_address(&reply, self.iaid) {
                // the server bound the address in a reply we cannot use: give it back (sent once
                // even at the acquisition's deadline, its answer awaited 1 s)
                match self.release_address(&server_id, address, deadline_in(Duration::from_secs(1))) {
                    Ok(_) => tracing::info!(ifname = %self.ifname, %address, "unusable DHCPv6 reply: released"),
                    Err(e) => {
                        tracing::warn!(ifname = %self.ifname, %address, "unusable DHCPv6 reply not released: {e:#}")
                    }
                }
            }
            format!("{e:#}")
        })))
    }

    /// SOLICIT → ADVERTISE → REQUEST → REPLY, soliciting again after a REPLY we cannot use.
    /// `Ok(None)`: no server answered in time.
    pub fn acquire(&self, deadline: Instant) -> anyhow::Result<Option<Lease6>> {
        let mut attempt = 0;
        while Instant::now() < deadline {
            if attempt > 0 {
                super::client::pause_before_retry(attempt - 1, deadline);
            }
            attempt += 1;
            let mut st = Soliciting::new(None);
            self.solicit(None, &mut st, deadline, &unwatched)?;
            let Some(offered) = st.chosen() else { return Ok(None) };
            match self.request(&offered, deadline, &unwatched)? {
                None => return Ok(None),
                Some(Ok(l)) => return Ok(Some(l)),
                Some(Err(why)) => {
                    tracing::info!(ifname = %self.ifname, "DHCPv6 request refused, soliciting again: {why}")
                }
            }
        }
        Ok(None)
    }

    /// Get the address of `lease` back (after it expired or the server lost the binding): go on
    /// with the Solicit `st` (with the address as the hint, its MRT the lease's SOL_MAX_RT when
    /// new) until `deadline`, then REQUEST only an Advertise of the address. An Advertise of
    /// another address is never requested: [`Reacquired::Other`] once the first RT passed with
    /// one and none of the address. A REPLY binding another address is released. At `deadline`
    /// without an Advertise (or at an error), [`Reacquired::NoAnswer`] and `st` is left to carry
    /// the Solicit on; once it ended, `st` is `None` (the next is a new transaction).
    pub fn reacquire(
        &self,
        lease: &Lease6,
        st: &mut Option<Soliciting>,
        deadline: Instant,
        watch: &dyn Fn() -> anyhow::Result<()>,
    ) -> anyhow::Result<Reacquired<Lease6>> {
        let address = lease.address;
        let soliciting = st.get_or_insert_with(|| Soliciting::new(lease.sol_max_rt));
        if !self.solicit(Some(address), soliciting, deadline, watch)? {
            return Ok(Reacquired::NoAnswer);
        }
        let Some(done) = st.take() else { return Ok(Reacquired::NoAnswer) };
        let other = done.other;
        let Some(offered) = done.chosen() else {
            return Ok(other.map_or(Reacquired::NoAnswer, |a| Reacquired::Other(IpAddr::V6(a))));
        };
        // the Request is a whole exchange of its own, ended by REQ_MAX_RC
        Ok(match self.request(&offered, deadline_in(Duration::MAX), watch)? {
            None => Reacquired::NoAnswer,
            Some(Ok(l)) if l.address == address => Reacquired::Same(l),
            Some(Ok(l)) => {
                self.release(&l, deadline_in(Duration::from_secs(1)))?;
                Reacquired::Other(IpAddr::V6(l.address))
            }
            Some(Err(why)) => Reacquired::Refused(why),
        })
    }

    /// RENEW (to the server that gave the lease) or REBIND (to any server): one transaction
    /// until `deadline` (MRD: T2 for a Renew, the end of the valid lifetime for a Rebind). Our
    /// address's IAADDR in the REPLY extends the lease, whatever else the server added; our
    /// address with a valid lifetime of 0 ends it ([`Renewal::Withdrawn`], RFC 8415 §18.2.10.1).
    /// An address the server added, which is not ours to use, is released.
    pub fn renew(
        &self,
        lease: &Lease6,
        rebind: bool,
        deadline: Instant,
        watch: &dyn Fn() -> anyhow::Result<()>,
    ) -> anyhow::Result<Renewal<Lease6>> {
        let (ty, rt) = if rebind { (msg::REBIND, REBIND_RT) } else { (msg::RENEW, RENEW_RT) };
        let mut m = self.base(ty);
        if !rebind {
            m.push(opt::SERVERID, lease.server_id.clone());
        }
        m.push(opt::IA_NA, self.ia(Some(lease.address)));
        let Some(reply) = self.transact(&mut m, msg::REPLY, Plan::new(rt, deadline, watch))? else {
            return Ok(Renewal::NoReply);
        };
        let outcome = if withdraws(&reply, self.iaid, lease.address) {
            Renewal::Withdrawn(lease.ended())
        } else {
            match Lease6::from_reply_for(&reply, self.iaid, Some(lease.address)) {
                Ok(mut l) => {
                    if l.dns.is_empty() && l.search.is_empty() {
                        // a server may leave options out of a renewal: keep what we had
                        l.dns = lease.dns.clone();
                        l.search = lease.search.clone();
                    }
                    l.sol_max_rt = l.sol_max_rt.or(lease.sol_max_rt);
                    Renewal::Bound(l)
                }
                Err(e) => Renewal::Refused(format!("{e:#}")),
            }
        };
        self.release_added(&reply, lease.address, &outcome);
        Ok(outcome)
    }

    /// Release the addresses a REPLY to a renewal added to our IA_NA (valid ones other than
    /// `ours` and the one `outcome` binds, which the daemon releases itself when it is not
    /// `ours`): they are not ours to use (best effort, each answer awaited 1 s).
    fn release_added(&self, reply: &Message, ours: Ipv6Addr, outcome: &Renewal<Lease6>) {
        let (Some(ia), Some(server_id)) = (our_ia(reply, self.iaid), reply.get(opt::SERVERID)) else { return };
        let bound = match outcome {
            Renewal::Bound(l) => l.address,
            _ => ours,
        };
        for &(address, _, _) in ia.addrs.iter().filter(|a| iaaddr_valid(a) && a.0 != ours && a.0 != bound) {
            match self.release_address(server_id, address, deadline_in(Duration::from_secs(1))) {
                Ok(_) => {
                    tracing::info!(ifname = %self.ifname, %address, %ours, "DHCPv6 renewal added an address: released")
                }
                Err(e) => tracing::warn!(ifname = %self.ifname, %address, "added DHCPv6 address not released: {e:#}"),
            }
        }
    }

    /// RELEASE, waiting briefly for the server's REPLY (retransmitted until `deadline`).
    pub fn release(&self, lease: &Lease6, deadline: Instant) -> anyhow::Result<bool> {
        self.release_address(&lease.server_id, lease.address, deadline)
    }

    /// RELEASE of `address`, bound to us by the server `server_id` (see [`Client6::release`]).
    fn release_address(&self, server_id: &[u8], address: Ipv6Addr, deadline: Instant) -> anyhow::Result<bool> {
        let mut m = self.base(msg::RELEASE);
        m.options.retain(|(c, _)| *c != opt::ORO);
        m.push(opt::SERVERID, server_id.to_vec());
        m.push(opt::IA_NA, self.ia(Some(address)));
        Ok(self.transact(&mut m, msg::REPLY, Plan::new(RELEASE_RT, deadline, &unwatched))?.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_roundtrip_and_ia() {
        let mut m = Message::new(msg::SOLICIT, 0xab_cdef);
        m.push(opt::CLIENTID, duid_for("c/n/eth0"));
        let ia = IaNa {
            iaid: 7,
            t1: 60,
            t2: 96,
            addrs: vec![("fd00::10".parse().unwrap(), 120, 120)],
            status: 0,
            status_msg: String::new(),
        };
        m.push(opt::IA_NA, ia.encode());
        let b = m.encode();
        assert_eq!(b.get(..4), Some(&[1, 0xab, 0xcd, 0xef][..]));
        let d = Message::decode(&b).unwrap();
        assert_eq!(d, m);
        assert_eq!(IaNa::decode(d.get(opt::IA_NA).unwrap()).unwrap(), ia);
        assert!(Message::decode(&[1, 2]).is_err());
        assert!(Message::decode(&[1, 2, 3, 4, 0, 1, 0, 9, 1]).is_err());
    }

    #[test]
    fn duid_is_stable_and_per_attachment() {
        let a = duid_for("c1/net/eth0");
        assert_eq!(a, duid_for("c1/net/eth0"));
        assert_ne!(a, duid_for("c1/net/eth1"));
        assert_eq!(a.len(), 18);
        assert_eq!(a.get(..2), Some(&[0, 4][..]));
        assert_eq!(a[8] >> 4, 8);
        assert_ne!(iaid_for("a"), iaid_for("b"));
    }

    #[test]
    fn lease_from_reply_with_dns_and_default_timers() {
        let mut r = Message::new(msg::REPLY, 1);
        r.push(opt::SERVERID, vec![0, 1, 2, 3]);
        let ia = IaNa {
            iaid: 9,
            t1: 0,
            t2: 0,
            addrs: vec![("fd00::20".parse().unwrap(), 100, 200)],
            status: 0,
            status_msg: String::new(),
        };
        r.push(opt::IA_NA, ia.encode());
        let mut dnsv = "fd00::1".parse::<Ipv6Addr>().unwrap().octets().to_vec();
        dnsv.extend_from_slice(&"fd00::2".parse::<Ipv6Addr>().unwrap().octets());
        r.push(opt::DNS_SERVERS, dnsv);
        r.push(opt::DOMAIN_LIST, b"\x07example\x03com\x00\x03lab\x07example\x03com\x00".to_vec());
        let l = Lease6::from_reply(&r, 9).unwrap();
        assert_eq!(l.address, "fd00::20".parse::<Ipv6Addr>().unwrap());
        assert_eq!((l.t1_secs, l.t2_secs, l.valid_secs), (50, 80, 200));
        assert_eq!(l.dns.len(), 2);
        assert_eq!(l.search, vec!["example.com", "lab.example.com"]);
        assert!(Lease6::from_reply(&r, 10).is_err(), "another IAID");
        r.push(opt::STATUS_CODE, [0u8, 2, b'n', b'o'].to_vec());
        assert!(Lease6::from_reply(&r, 9).is_err());
    }

    fn reply_with(ias: &[IaNa]) -> Message {
        let mut r = Message::new(msg::REPLY, 1);
        r.push(opt::SERVERID, vec![0, 1, 2, 3]);
        for ia in ias {
            r.push(opt::IA_NA, ia.encode());
        }
        r
    }

    fn ia(t1: u32, t2: u32, addrs: &[(&str, u32, u32)]) -> IaNa {
        IaNa {
            iaid: 9,
            t1,
            t2,
            addrs: addrs.iter().map(|(a, p, v)| (a.parse().unwrap(), *p, *v)).collect(),
            status: 0,
            status_msg: String::new(),
        }
    }

    /// RFC 8415 §21.4: an IA_NA with T1 > T2 (both non-zero) is discarded, not repaired; T1 or
    /// T2 of 0 are the client's to choose.
    #[test]
    fn ia_na_with_t1_beyond_t2_is_discarded() {
        let bad = ia(100, 50, &[("fd00::20", 200, 300)]);
        let e = Lease6::from_reply(&reply_with(std::slice::from_ref(&bad)), 9).unwrap_err();
        assert!(format!("{e:#}").contains("without our IA_NA"), "{e:#}");
        // the rest of the message counts: a valid IA_NA after it is taken
        let good = ia(60, 90, &[("fd00::21", 200, 300)]);
        let l = Lease6::from_reply(&reply_with(&[bad, good]), 9).unwrap();
        assert_eq!((l.address.to_string().as_str(), l.t1_secs, l.t2_secs), ("fd00::21", 60, 90));
        // T1 of 0: half the preferred lifetime, but never after the server's T2
        let l = Lease6::from_reply(&reply_with(&[ia(0, 80, &[("fd00::22", 200, 300)])]), 9).unwrap();
        assert_eq!((l.t1_secs, l.t2_secs), (80, 80));
        // T2 of 0 with the server's T1: 0.8 of preferred, but not before T1
        let l = Lease6::from_reply(&reply_with(&[ia(170, 0, &[("fd00::23", 200, 300)])]), 9).unwrap();
        assert_eq!((l.t1_secs, l.t2_secs), (170, 170));
        let l = Lease6::from_reply(&reply_with(&[ia(50, 0, &[("fd00::23", 200, 300)])]), 9).unwrap();
        assert_eq!((l.t1_secs, l.t2_secs), (50, 160));
        // T1 == T2 is valid
        let l = Lease6::from_reply(&reply_with(&[ia(70, 70, &[("fd00::24", 200, 300)])]), 9).unwrap();
        assert_eq!((l.t1_secs, l.t2_secs), (70, 70));
    }

    /// RFC 8415 §21.6: an address whose preferred lifetime is greater than its valid lifetime
    /// is discarded (and one with a valid lifetime of 0).
    #[test]
    fn address_with_preferred_beyond_valid_is_discarded() {
        let only_bad = ia(0, 0, &[("fd00::30", 300, 200)]);
        let e = Lease6::from_reply(&reply_with(&[only_bad]), 9).unwrap_err();
        assert!(format!("{e:#}").contains("without a valid address"), "{e:#}");
        let mixed = ia(0, 0, &[("fd00::30", 300, 200), ("fd00::31", 0, 0), ("fd00::32", 200, 200)]);
        let l = Lease6::from_reply(&reply_with(&[mixed]), 9).unwrap();
        assert_eq!(l.address, "fd00::32".parse::<Ipv6Addr>().unwrap());
        assert_eq!((l.preferred_secs, l.valid_secs), (200, 200));
        // infinite lifetimes: preferred == valid
        let inf = ia(0, 0, &[("fd00::33", INFINITY, INFINITY)]);
        assert_eq!(Lease6::from_reply(&reply_with(&[inf]), 9).unwrap().expiry_at(), u64::MAX);
    }

    /// The waits after each transmission of one exchange ([`Retransmit::next`] after each).
    fn waits(rt: Retransmit, cap: Duration, mut rand: impl FnMut() -> i32) -> impl FnMut() -> Duration {
        let mut prev: Option<Duration> = None;
        move || {
            let next = rt.next(prev, cap, rand());
            prev = Some(next);
            next
        }
    }

    fn schedule(rt: Retransmit, cap: u64, rand: i32, n: usize) -> Vec<u128> {
        let mut waits = waits(rt, Duration::from_secs(cap), move || rand);
        (0..n).map(|_| waits().as_millis()).collect()
    }

    /// RFC 8415 §15: RT = IRT ± 10 %, then 2·RT ± 10 % of RT, then MRT ± 10 %; Solicit's first
    /// RT strictly above IRT; Renew and Rebind start at 10 s.
    #[test]
    fn retransmission_schedule_is_rfc_8415() {
        assert_eq!(schedule(SOLICIT_RT, 3600, 100, 3), [1100, 2310, 4851]);
        assert_eq!(schedule(SOLICIT_RT, 3600, -100, 3), [1100, 2090, 3971], "Solicit's first RAND is positive");
        assert_eq!(schedule(SOLICIT_RT, 3600, 0, 2), [1001, 2002], "strictly above IRT");
        assert_eq!(schedule(REQUEST_RT, 3600, 0, 7), [1000, 2000, 4000, 8000, 16000, 30000, 30000], "REQ_MAX_RT");
        assert_eq!(schedule(REQUEST_RT, 3600, -100, 6), [900, 1710, 3249, 6173, 11728, 22284]);
        assert_eq!(schedule(REQUEST_RT, 3600, -100, 8)[6..], [27000, 27000], "MRT - 10 %");
        assert_eq!(schedule(RENEW_RT, 3600, 0, 8), [10000, 20000, 40000, 80000, 160000, 320000, 600000, 600000]);
        assert_eq!(schedule(REBIND_RT, 3600, 100, 1), [11000]);
        assert_eq!(schedule(REBIND_RT, 3600, -100, 1), [9000]);
        // the daemon's -resendmax lowers MRT, but never below IRT
        assert_eq!(schedule(RENEW_RT, 62, 0, 4), [10000, 20000, 40000, 62000]);
        assert_eq!(schedule(RENEW_RT, 4, 0, 3), [10000, 10000, 10000]);
        assert_eq!(schedule(RELEASE_RT, 3600, 0, 4), [1000, 2000, 4000, 8000]);
        // the real RAND: within its bounds, and not always the same
        let firsts: Vec<u128> =
            (0..200).map(|_| waits(SOLICIT_RT, Duration::from_secs(3600), rand_permille)().as_millis()).collect();
        assert!(firsts.iter().all(|ms| (1001..=1100).contains(ms)), "{firsts:?}");
        let renews: Vec<u128> =
            (0..200).map(|_| waits(RENEW_RT, Duration::from_secs(600), rand_permille)().as_millis()).collect();
        assert!(renews.iter().all(|ms| (9000..=11000).contains(ms)), "{renews:?}");
        assert!(renews.iter().any(|ms| *ms != renews[0]), "no jitter: {renews:?}");
    }

    /// RFC 8415 §21.24: SOL_MAX_RT is taken from 60 to 86400 s only (4 bytes), and kept with
    /// the lease; a lease file without it still reads, and one without it does not write it.
    #[test]
    fn sol_max_rt_in_range_only_and_kept_with_the_lease() {
        let mut r = reply_with(&[ia(0, 0, &[("fd00::40", 200, 300)])]);
        assert_eq!(sol_max_rt_of(&r), None);
        for (v, want) in [(59u32, None), (60, Some(60)), (3600, Some(3600)), (86400, Some(86400)), (86401, None)] {
            r.options.retain(|(c, _)| *c != opt::SOL_MAX_RT);
            r.push(opt::SOL_MAX_RT, v.to_be_bytes().to_vec());
            assert_eq!(sol_max_rt_of(&r), want, "{v}");
            assert_eq!(Lease6::from_reply(&r, 9).unwrap().sol_max_rt, want, "{v}");
        }
        r.options.retain(|(c, _)| *c != opt::SOL_MAX_RT);
        r.push(opt::SOL_MAX_RT, vec![0, 0, 0x0e]);
        assert_eq!(sol_max_rt_of(&r), None, "3 bytes");
        let l = Lease6::from_reply(&r, 9).unwrap();
        let json = serde_json::to_value(&l).unwrap();
        assert!(json.get("sol_max_rt").is_none(), "{json}");
        let back: Lease6 = serde_json::from_value(json).unwrap();
        assert_eq!(back, l);
        let with = Lease6 { sol_max_rt: Some(120), ..l };
        assert_eq!(serde_json::to_value(&with).unwrap()["sol_max_rt"], 120);
    }

    /// A SOL_MAX_RT from the server is the Solicit's MRT (lowered by `-resendmax`, as any MRT).
    #[test]
    fn solicit_mrt_is_the_servers_sol_max_rt() {
        assert_eq!(solicit_rt(None), SOLICIT_RT);
        assert_eq!(schedule(solicit_rt(Some(60)), 3600, 0, 8), [1001, 2002, 4004, 8008, 16016, 32032, 60000, 60000]);
        assert_eq!(schedule(solicit_rt(Some(7200)), 3600, 0, 14)[13], 3_600_000, "-resendmax lowers it");
        // without one: SOL_MAX_RT's default, 3600 s
        assert_eq!(schedule(solicit_rt(None), 100_000, 0, 14)[13], 3_600_000);
    }

    /// A renewal's Reply may list other addresses before ours (RFC 8415 lets a server add
    /// addresses to an IA): our address's lifetimes are the renewed lease. Without ours (or with
    /// ours discarded, §21.6), the first valid address, as for a new lease.
    #[test]
    fn renewal_takes_our_address_wherever_it_is_listed() {
        let r = reply_with(&[ia(100, 160, &[("fd00::77", 300, 600), ("fd00::10", 250, 500)])]);
        let ours: Ipv6Addr = "fd00::10".parse().unwrap();
        let l = Lease6::from_reply_for(&r, 9, Some(ours)).unwrap();
        assert_eq!((l.address, l.preferred_secs, l.valid_secs, l.t1_secs), (ours, 250, 500, 100));
        assert_eq!(Lease6::from_reply(&r, 9).unwrap().address, "fd00::77".parse::<Ipv6Addr>().unwrap());
        let elsewhere: Ipv6Addr = "fd00::99".parse().unwrap();
        assert_eq!(Lease6::from_reply_for(&r, 9, Some(elsewhere)).unwrap().address.to_string(), "fd00::77");
        let discarded = reply_with(&[ia(0, 0, &[("fd00::77", 300, 600), ("fd00::10", 600, 500)])]);
        assert_eq!(Lease6::from_reply_for(&discarded, 9, Some(ours)).unwrap().address.to_string(), "fd00::77");
    }

    /// RFC 8415 §18.2.10.1: our address with a valid (and preferred) lifetime of 0 is withdrawn;
    /// not one whose preferred lifetime exceeds 0 (§21.6 discards it), not another address, not
    /// in a failed reply or IA_NA, not in another IA.
    #[test]
    fn a_valid_lifetime_of_0_withdraws_the_address() {
        let ours: Ipv6Addr = "fd00::10".parse().unwrap();
        let r = |addrs: &[(&str, u32, u32)]| reply_with(&[ia(INFINITY, INFINITY, addrs)]);
        assert!(withdraws(&r(&[("fd00::10", 0, 0)]), 9, ours));
        assert!(withdraws(&r(&[("fd00::77", 300, 600), ("fd00::10", 0, 0)]), 9, ours));
        assert!(!withdraws(&r(&[("fd00::10", 5, 0)]), 9, ours), "preferred > valid: discarded");
        assert!(!withdraws(&r(&[("fd00::77", 0, 0), ("fd00::10", 300, 600)]), 9, ours), "another address");
        assert!(!withdraws(&r(&[("fd00::10", 300, 600)]), 9, ours));
        assert!(!withdraws(&r(&[("fd00::10", 0, 0)]), 10, ours), "another IAID");
        let mut failed = r(&[("fd00::10", 0, 0)]);
        failed.push(opt::STATUS_CODE, vec![0, 1]);
        assert!(!withdraws(&failed, 9, ours), "UnspecFail");
        // and the lease ends now
        let l = Lease6::from_reply(&reply_with(&[ia(100, 160, &[("fd00::10", 300, 600)])]), 9).unwrap();
        let ended = Lease6 { acquired_unix: 1, ..l }.ended();
        let now = now_unix();
        assert!(ended.expiry_at() <= now && ended.t1_at() <= now && ended.expiry_at() + 2 > now, "{ended:?}");
        assert_eq!((ended.address, ended.valid_secs), (ours, 0));
    }

    /// An Advertise of server `server` offering `addr`, with preference option `pref` if any.
    fn advertise(server: u8, addr: &str, pref: Option<Vec<u8>>) -> Lease6 {
        let mut m = reply_with(&[ia(0, 0, &[(addr, 100, 200)])]);
        m.ty = msg::ADVERTISE;
        m.options.retain(|(c, _)| *c != opt::SERVERID);
        m.push(opt::SERVERID, vec![0, 1, 0, server]);
        if let Some(p) = pref {
            m.push(opt::PREFERENCE, p);
        }
        assert_eq!(preference(&m), m.get(opt::PREFERENCE).filter(|v| v.len() == 1).map_or(0, |v| v[0]));
        Lease6::from_reply(&m, 9).unwrap()
    }

    #[test]
    fn preference_option_is_one_octet_else_zero() {
        let mut m = Message::new(msg::ADVERTISE, 1);
        assert_eq!(preference(&m), 0);
        m.push(opt::PREFERENCE, vec![7]);
        assert_eq!(preference(&m), 7);
        let mut m = Message::new(msg::ADVERTISE, 1);
        m.push(opt::PREFERENCE, vec![0, 255]);
        assert_eq!(preference(&m), 0);
    }

    #[test]
    fn advertise_of_highest_preference_is_chosen_at_the_end_of_the_first_rt() {
        let mut c = AdvertiseChoice::default();
        c.offer(10, advertise(1, "fd00::a", Some(vec![10])));
        assert!(!c.done(false), "a preference below 255 waits for the first RT");
        c.offer(200, advertise(2, "fd00::b", Some(vec![200])));
        c.offer(200, advertise(3, "fd00::c", Some(vec![200])));
        c.offer(0, advertise(4, "fd00::d", None));
        assert!(!c.done(false));
        assert!(c.done(true), "the first RT has passed with offers in hand");
        let l = c.chosen().unwrap();
        assert_eq!(
            (l.address, l.server_id),
            ("fd00::b".parse().unwrap(), vec![0, 1, 0, 2]),
            "highest, first of equals"
        );
    }

    #[test]
    fn advertise_of_preference_255_ends_the_wait_at_once() {
        let mut c = AdvertiseChoice::default();
        c.offer(0, advertise(1, "fd00::a", None));
        c.offer(255, advertise(2, "fd00::b", Some(vec![255])));
        assert!(c.done(false));
        assert_eq!(c.chosen().unwrap().address, "fd00::b".parse::<Ipv6Addr>().unwrap());
    }

    #[test]
    fn after_an_empty_first_rt_the_first_advertise_is_taken() {
        let mut c = AdvertiseChoice::default();
        assert!(!c.done(true), "nothing to take at the first RT: retransmit");
        assert!(!c.done(true));
        c.offer(3, advertise(1, "fd00::a", Some(vec![3])));
        assert!(c.done(false), "after the first RT, any valid Advertise ends the Solicit");
        assert_eq!(c.chosen().unwrap().address, "fd00::a".parse::<Ipv6Addr>().unwrap());
        assert!(AdvertiseChoice::default().chosen().is_none());
    }
}
