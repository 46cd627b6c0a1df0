//! The recording fake transport (unit tests only, no root): a small model of the rtnetlink
//! objects a plugin touches (links with veth peers and bridge masters, addresses, routes) in the
//! fake namespaces of [`crate::sys::fake`]. Every request is appended to that world's log as
//! "<ns>: <what>" and answered as the kernel would; [`FakeKernel::fail_at`] makes request N
//! (0-based, counting every netlink request) fail with an errno, so a test can check the
//! rollback after a failure at every step.
//!
//! ```text
//! let k = FakeKernel::install(&["/fake/netns/cont"]);   // ns "host" (current) + "cont"
//! k.fail_at(3, libc::EIO);
//! ... run a plugin (netlink::Netlink, sys::netns, sys::sysctl all use the fake) ...
//! k.log()                                               // ["host: get link cni0", ...]
//! ```
//! Netfilter sockets get a transport that refuses every request (EOPNOTSUPP), so a test can
//! never reach the machine's real ruleset.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;

use ipnet::IpNet;

use super::consts::*;
use super::socket::{Proto, Transport};
use super::wire::{self, attrs, find, get_str, get_u32, Nlmsg};
use crate::sys::fake as world;

const EOPNOTSUPP: i32 = 95;
const ENODEV: i32 = 19;
const EEXIST: i32 = 17;
const EADDRNOTAVAIL: i32 = 99;
const ESRCH: i32 = 3;
const ENOENT: i32 = 2;

#[derive(Debug, Clone)]
struct FLink {
    ns: usize,
    index: u32,
    name: String,
    kind: String,
    mac: [u8; 6],
    mtu: u32,
    up: bool,
    master: Option<u32>,
    /// veth: the peer's index (indexes are unique across namespaces here).
    peer: Option<u32>,
}

#[derive(Default)]
struct Kernel {
    links: Vec<FLink>,
    next_index: u32,
    addrs: Vec<(usize, u32, IpNet)>,
    routes: Vec<(usize, String)>,
    rules: Vec<(usize, String)>,
    requests: usize,
    fail: Option<(usize, i32)>,
    /// After request N is applied, the link named so is set down (another process's doing).
    down_after: Option<(usize, String)>,
    /// A kernel older than 6.2: a new link is not echoed to an NLM_F_ECHO request.
    no_echo: bool,
    /// Appended to every log entry as " [..]" (a test's view of other state, e.g. IPAM leases).
    annotate: Option<Box<dyn Fn() -> String>>,
}

thread_local! {
    static KERNEL: RefCell<Option<Kernel>> = const { RefCell::new(None) };
}

fn with<R>(f: impl FnOnce(&mut Kernel) -> R) -> Option<R> {
    KERNEL.with(|c| c.try_borrow_mut().ok()?.as_mut().map(f))
}

/// The installed fake: namespaces, kernel model and log; removed (with the fake namespaces) on
/// drop.
pub(crate) struct FakeKernel {
    _private: (),
}

impl FakeKernel {
    /// A world with the "host" namespace (current, with `lo`) and `netns_paths` (each with `lo`).
    pub(crate) fn install(netns_paths: &[&str]) -> FakeKernel {
        world::install(netns_paths);
        let mut k = Kernel { next_index: 1, ..Kernel::default() };
        for ns in 0..=netns_paths.len() {
            let index = k.next_index;
            k.next_index += 1;
            let lo = FLink {
                ns,
                index,
                name: "lo".into(),
                kind: String::new(),
                mac: [0; 6],
                mtu: 65536,
                up: true,
                master: None,
                peer: None,
            };
            k.links.push(lo);
        }
        KERNEL.with(|c| *c.borrow_mut() = Some(k));
        FakeKernel { _private: () }
    }

    /// Make netlink request `n` (0-based) fail with `errno`.
    pub(crate) fn fail_at(&self, n: usize, errno: i32) {
        with(|k| k.fail = Some((n, errno)));
    }

    /// Right after request `n` (0-based) is applied, set the link `name` down, as another
    /// process might (a concurrent ADD's rollback).
    pub(crate) fn down_after(&self, n: usize, name: &str) {
        with(|k| k.down_after = Some((n, name.to_string())));
    }

    /// Behave as a kernel before 6.2, which does not echo a new link.
    pub(crate) fn without_echo(&self) {
        with(|k| k.no_echo = true);
    }

    /// Append `f()` to every following log entry, as " [..]".
    pub(crate) fn annotate(&self, f: impl Fn() -> String + 'static) {
        with(|k| k.annotate = Some(Box::new(f)));
    }

    /// The log: netlink requests and sysctl writes, in order (random veth names as `veth*`).
    pub(crate) fn log(&self) -> Vec<String> {
        world::with(|w| w.log.iter().map(|l| norm_text(l)).collect()).unwrap_or_default()
    }

    /// "name@ns" of every link but `lo`, sorted.
    pub(crate) fn links(&self) -> Vec<String> {
        let names = world::with(|w| (0..w.names.len()).map(|i| world::ns_name(w, i)).collect::<Vec<_>>());
        let names = names.unwrap_or_default();
        let mut v: Vec<String> = with(|k| {
            k.links
                .iter()
                .filter(|l| l.name != "lo")
                .map(|l| format!("{}@{}", norm(&l.name), names.get(l.ns).map(String::as_str).unwrap_or("?")))
                .collect()
        })
        .unwrap_or_default();
        v.sort();
        v
    }

    /// Addresses as "addr@ns", sorted.
    pub(crate) fn addrs(&self) -> Vec<String> {
        let names = world::with(|w| (0..w.names.len()).map(|i| world::ns_name(w, i)).collect::<Vec<_>>());
        let names = names.unwrap_or_default();
        let mut v: Vec<String> = with(|k| {
            k.addrs
                .iter()
                .map(|(ns, _, a)| format!("{a}@{}", names.get(*ns).map(String::as_str).unwrap_or("?")))
                .collect()
        })
        .unwrap_or_default();
        v.sort();
        v
    }
}

impl Drop for FakeKernel {
    fn drop(&mut self) {
        KERNEL.with(|c| *c.borrow_mut() = None);
        world::uninstall();
    }
}

/// The transport for a new connection, when a test installed the fake on this thread.
pub(crate) fn transport(proto: Proto) -> Option<Box<dyn Transport>> {
    let ns = world::with(|w| w.cur)?;
    with(|_| ())?;
    Some(Box::new(FakeSocket { ns, proto, queue: VecDeque::new() }))
}

struct FakeSocket {
    ns: usize,
    proto: Proto,
    queue: VecDeque<Vec<u8>>,
}

impl Transport for FakeSocket {
    fn send(&mut self, buf: &[u8]) -> io::Result<()> {
        for m in wire::split(buf) {
            let replies = request(self.ns, self.proto, &m);
            self.queue.extend(replies);
        }
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8], wait: bool) -> io::Result<Option<usize>> {
        let Some(d) = self.queue.pop_front() else {
            if wait {
                return Err(io::Error::other("fake netlink: no reply queued (the request would block)"));
            }
            return Ok(None);
        };
        let n = d.len().min(buf.len());
        buf.get_mut(..n).unwrap_or_default().copy_from_slice(d.get(..n).unwrap_or_default());
        Ok(Some(d.len()))
    }
}

/// `veth` + 8 hex digits (a random host-side name) reads as `veth*` in the log.
fn norm(name: &str) -> String {
    let rnd = name.len() == 12 && name.starts_with("veth") && name[4..].chars().all(|c| c.is_ascii_hexdigit());
    if rnd {
        "veth*".to_string()
    } else {
        name.to_string()
    }
}

/// [`norm`] on every word and path component of a log entry.
fn norm_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut word = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            word.push(c);
        } else {
            out.push_str(&norm(&word));
            word.clear();
            out.push(c);
        }
    }
    out.push_str(&norm(&word));
    out
}

fn ns_name(ns: usize) -> String {
    world::with(|w| world::ns_name(w, ns)).unwrap_or_default()
}

fn ack(m: &Nlmsg, errno: i32) -> Vec<u8> {
    let mut body = (-errno).to_ne_bytes().to_vec();
    body.extend_from_slice(&wire::header(16, m.ty, m.flags, m.seq));
    let flags = if errno == 0 { 0 } else { wire::NLM_F_CAPPED };
    wire::message(NLMSG_ERROR, flags, m.seq, &body, &[])
}

fn done(seq: u32) -> Vec<u8> {
    wire::message(NLMSG_DONE, NLM_F_MULTI, seq, &0i32.to_ne_bytes(), &[])
}

/// One request: log it, apply it, return the reply datagrams.
fn request(ns: usize, proto: Proto, m: &Nlmsg) -> Vec<Vec<u8>> {
    let desc = if proto == Proto::Netfilter { format!("netfilter message {:#x}", m.ty) } else { describe(ns, m) };
    let n = with(|k| {
        k.requests += 1;
        k.requests - 1
    })
    .unwrap_or(0);
    let fail = with(|k| k.fail.filter(|(at, _)| *at == n).map(|(_, e)| e)).flatten();
    let note = KERNEL.with(|c| c.try_borrow().ok()?.as_ref()?.annotate.as_ref().map(|f| format!(" [{}]", f())));
    let entry = format!("{}: {desc}{}", ns_name(ns), note.unwrap_or_default());
    if let Some(errno) = fail {
        world::record(format!("{entry} -> error {errno}"));
        return vec![ack(m, errno)];
    }
    world::record(entry);
    if proto == Proto::Netfilter {
        return vec![ack(m, EOPNOTSUPP)];
    }
    let reply = match with(|k| k.apply(ns, m)) {
        Some(Ok(r)) => r,
        Some(Err(errno)) => vec![ack(m, errno)],
        None => vec![ack(m, EOPNOTSUPP)],
    };
    with(|k| {
        if let Some((_, name)) = k.down_after.as_ref().filter(|(at, _)| *at == n) {
            k.links.iter_mut().filter(|l| l.name == *name).for_each(|l| l.up = false);
        }
    });
    reply
}

/// The IPv4 settings in an IFLA_AF_SPEC (name or id, value), if it holds AF_INET's.
fn inet_conf(spec: &[u8]) -> Option<Vec<(String, u32)>> {
    let inet = attrs(spec).find(|(fam, _)| *fam == u16::from(AF_INET))?.1;
    let conf = find(inet, IFLA_INET_CONF)?;
    Some(
        attrs(conf)
            .map(|(id, v)| {
                let name = if id == IPV4_DEVCONF_ARP_NOTIFY { "arp_notify".to_string() } else { format!("id{id}") };
                (name, get_u32(v).unwrap_or(0))
            })
            .collect(),
    )
}

/// A fake sysctl of namespace `ns` (the kernel's default when never written).
fn sysctl_of(ns: usize, key: &str, default: &str) -> String {
    world::with(|w| w.sysctls.get(&(ns, key.to_string())).cloned()).flatten().unwrap_or_else(|| default.to_string())
}

fn ifinfo_index(body: &[u8]) -> u32 {
    body.get(4..).and_then(get_u32).unwrap_or(0)
}

fn ifinfo_flags(body: &[u8]) -> (u32, u32) {
    (body.get(8..).and_then(get_u32).unwrap_or(0), body.get(12..).and_then(get_u32).unwrap_or(0))
}

/// Attributes after a family header of `hdr` bytes.
fn tail(body: &[u8], hdr: usize) -> &[u8] {
    body.get(hdr..).unwrap_or_default()
}

fn addr_of(body: &[u8]) -> Option<(u32, IpNet)> {
    let prefix = *body.get(1)?;
    let index = get_u32(body.get(4..)?)?;
    let a = tail(body, 8);
    let ip = find(a, IFA_LOCAL).or_else(|| find(a, IFA_ADDRESS)).and_then(wire::get_ip)?;
    Some((index, IpNet::new(ip, prefix).ok()?))
}

fn route_of(body: &[u8]) -> String {
    let dst_len = body.get(1).copied().unwrap_or(0);
    let a = tail(body, 12);
    let dst = find(a, RTA_DST).and_then(wire::get_ip);
    let dst = match dst {
        Some(ip) => format!("{ip}/{dst_len}"),
        None => "default".to_string(),
    };
    let gw = find(a, RTA_GATEWAY).and_then(wire::get_ip).map(|g| format!(" via {g}")).unwrap_or_default();
    let table = find(a, RTA_TABLE).and_then(get_u32).map(|t| format!(" table {t}")).unwrap_or_default();
    format!("{dst}{gw}{table}")
}

fn rule_of(body: &[u8]) -> String {
    let a = tail(body, 12);
    let mut v = Vec::new();
    if let Some(p) = find(a, FRA_PRIORITY).and_then(get_u32) {
        v.push(format!("pref {p}"));
    }
    for (t, name) in [(FRA_SRC, "from"), (FRA_DST, "to")] {
        if let Some(ip) = find(a, t).and_then(wire::get_ip) {
            let len = body.get(if t == FRA_SRC { 2 } else { 1 }).copied().unwrap_or(0);
            v.push(format!("{name} {ip}/{len}"));
        }
    }
    for (t, name) in [(FRA_IIFNAME, "iif"), (FRA_OIFNAME, "oif")] {
        if let Some(n) = find(a, t) {
            v.push(format!("{name} {}", norm(&get_str(n))));
        }
    }
    if let Some(t) = find(a, FRA_TABLE).and_then(get_u32) {
        v.push(format!("table {t}"));
    }
    v.join(" ")
}

fn describe(ns: usize, m: &Nlmsg) -> String {
    let b = m.body;
    let link_name = |index: u32| {
        with(|k| k.links.iter().find(|l| l.index == index).map(|l| norm(&l.name)))
            .flatten()
            .unwrap_or(format!("#{index}"))
    };
    let _ = ns;
    match m.ty {
        RTM_GETLINK if m.flags & NLM_F_DUMP == NLM_F_DUMP => "dump links".into(),
        RTM_GETLINK => match find(tail(b, 16), IFLA_IFNAME) {
            Some(n) => format!("get link {}", norm(&get_str(n))),
            None => format!("get link {}", link_name(ifinfo_index(b))),
        },
        RTM_NEWLINK if m.flags & NLM_F_CREATE != 0 => {
            let a = tail(b, 16);
            let name = find(a, IFLA_IFNAME).map(get_str).unwrap_or_default();
            let info = find(a, IFLA_LINKINFO).unwrap_or_default();
            let kind = find(info, IFLA_INFO_KIND).map(get_str).unwrap_or_default();
            let peer = find(info, IFLA_INFO_DATA)
                .and_then(|d| find(d, VETH_INFO_PEER))
                .and_then(|p| find(tail(p, 16), IFLA_IFNAME))
                .map(|n| format!(" peer {}", norm(&get_str(n))))
                .unwrap_or_default();
            // what the new link is given beyond the defaults: up, a queue length
            let (flags, change) = ifinfo_flags(b);
            let up = if flags & change & IFF_UP != 0 { " up" } else { "" };
            let qlen = find(a, IFLA_TXQLEN).and_then(get_u32).map(|q| format!(" txqlen {q}")).unwrap_or_default();
            format!("create {kind} {}{peer}{up}{qlen}", norm(&name))
        }
        RTM_NEWLINK | RTM_SETLINK => {
            let index = ifinfo_index(b);
            let (flags, change) = ifinfo_flags(b);
            let mut what = Vec::new();
            if change & IFF_UP != 0 {
                what.push(if flags & IFF_UP != 0 { "up".to_string() } else { "down".to_string() });
            }
            if change & IFF_PROMISC != 0 {
                what.push("promisc".to_string());
            }
            for (t, v) in attrs(tail(b, 16)) {
                what.push(match t {
                    IFLA_MASTER => match get_u32(v).unwrap_or(0) {
                        0 => "nomaster".to_string(),
                        i => format!("master {}", link_name(i)),
                    },
                    IFLA_ADDRESS => "address".to_string(),
                    IFLA_MTU => format!("mtu {}", get_u32(v).unwrap_or(0)),
                    IFLA_IFNAME => format!("name {}", norm(&get_str(v))),
                    IFLA_NET_NS_FD => "netns".to_string(),
                    IFLA_PROTINFO => "bridge port".to_string(),
                    IFLA_AF_SPEC => match inet_conf(v) {
                        Some(conf) => format!(
                            "ipv4 conf {}",
                            conf.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
                        ),
                        None => "bridge vlan".to_string(),
                    },
                    t => format!("attr {t}"),
                });
            }
            format!("set link {} {}", link_name(index), what.join(" "))
        }
        RTM_DELLINK => format!("delete link {}", link_name(ifinfo_index(b))),
        RTM_NEWADDR | RTM_DELADDR => {
            let verb = if m.ty == RTM_NEWADDR { "add" } else { "delete" };
            match addr_of(b) {
                Some((i, a)) => format!("{verb} addr {a} dev {}", link_name(i)),
                None => format!("{verb} addr ?"),
            }
        }
        RTM_GETADDR => "dump addrs".into(),
        RTM_NEWROUTE | RTM_DELROUTE => {
            let verb = if m.ty == RTM_NEWROUTE { "add" } else { "delete" };
            let oif = find(tail(b, 12), RTA_OIF).and_then(get_u32).map(|i| format!(" dev {}", link_name(i)));
            format!("{verb} route {}{}", route_of(b), oif.unwrap_or_default())
        }
        RTM_GETROUTE => "dump routes".into(),
        RTM_NEWNEIGH => "add neigh".into(),
        RTM_NEWRULE | RTM_DELRULE => {
            format!("{} rule {}", if m.ty == RTM_NEWRULE { "add" } else { "delete" }, rule_of(b))
        }
        RTM_GETRULE => "dump rules".into(),
        RTM_GETNETCONF => format!("get netconf {}", if b.first() == Some(&AF_INET6) { "inet6" } else { "inet" }),
        t => format!("rtnetlink message {t}"),
    }
}

impl Kernel {
    fn link(&self, ns: usize, index: u32) -> Option<&FLink> {
        self.links.iter().find(|l| l.ns == ns && l.index == index)
    }

    fn by_name(&self, ns: usize, name: &str) -> Option<&FLink> {
        self.links.iter().find(|l| l.ns == ns && l.name == name)
    }

    fn new_link(&mut self, ns: usize, name: &str, kind: &str) -> u32 {
        let index = self.next_index;
        self.next_index += 1;
        let b = index.to_be_bytes();
        let mac = [2, 0xfa, b[0], b[1], b[2], b[3]];
        self.links.push(FLink {
            ns,
            index,
            name: name.to_string(),
            kind: kind.to_string(),
            mac,
            mtu: 1500,
            up: false,
            master: None,
            peer: None,
        });
        index
    }

    fn link_msg(&self, l: &FLink, seq: u32, flags: u16) -> Vec<u8> {
        let mut a = wire::Attrs::new();
        a.put_str(IFLA_IFNAME, &l.name).put_u32(IFLA_MTU, l.mtu).put(IFLA_ADDRESS, &l.mac);
        a.put_u8(IFLA_OPERSTATE, if l.up { IF_OPER_UP } else { 2 });
        if let Some(m) = l.master {
            a.put_u32(IFLA_MASTER, m);
        }
        if let Some(p) = l.peer {
            a.put_u32(IFLA_LINK, p);
        }
        if !l.kind.is_empty() {
            let n = a.begin(IFLA_LINKINFO, false);
            a.put_str(IFLA_INFO_KIND, &l.kind);
            a.end(n);
        }
        // the IPv6 settings, as the kernel dumps them: accept_ra (default 1) at its index
        let accept_ra = sysctl_of(l.ns, &format!("net/ipv6/conf/{}/accept_ra", l.name), "1");
        let mut conf = [0u8; 4 * (DEVCONF_ACCEPT_RA + 1)];
        let at = 4 * DEVCONF_ACCEPT_RA;
        conf[at..].copy_from_slice(&accept_ra.trim().parse::<i32>().unwrap_or(1).to_ne_bytes());
        let spec = a.begin(IFLA_AF_SPEC, false);
        let inet6 = a.begin(u16::from(AF_INET6), false);
        a.put(IFLA_INET6_CONF, &conf);
        a.end(inet6).end(spec);
        let hdr = super::link::ifinfo(AF_UNSPEC, l.index, if l.up { IFF_UP } else { 0 }, 0);
        wire::message(RTM_NEWLINK, flags, seq, &hdr, a.bytes())
    }

    fn apply(&mut self, ns: usize, m: &Nlmsg) -> Result<Vec<Vec<u8>>, i32> {
        let b = m.body;
        match m.ty {
            RTM_GETLINK if m.flags & NLM_F_DUMP == NLM_F_DUMP => {
                let mut d = Vec::new();
                for l in self.links.iter().filter(|l| l.ns == ns) {
                    d.extend(self.link_msg(l, m.seq, NLM_F_MULTI));
                }
                d.extend(done(m.seq));
                Ok(vec![d])
            }
            RTM_GETLINK => {
                let l = match find(tail(b, 16), IFLA_IFNAME) {
                    Some(n) => self.by_name(ns, &get_str(n)),
                    None => self.link(ns, ifinfo_index(b)),
                };
                let l = l.ok_or(ENODEV)?;
                Ok(vec![self.link_msg(l, m.seq, 0), ack(m, 0)])
            }
            RTM_NEWLINK if m.flags & NLM_F_CREATE != 0 => {
                let a = tail(b, 16);
                let name = find(a, IFLA_IFNAME).map(get_str).unwrap_or_default();
                let info = find(a, IFLA_LINKINFO).unwrap_or_default();
                let kind = find(info, IFLA_INFO_KIND).map(get_str).unwrap_or_default();
                if self.by_name(ns, &name).is_some() {
                    return Err(EEXIST);
                }
                let peer = find(info, IFLA_INFO_DATA).and_then(|d| find(d, VETH_INFO_PEER));
                let (peer_name, peer_ns) = match peer {
                    Some(p) => {
                        let pa = tail(p, 16);
                        let pn = find(pa, IFLA_IFNAME).map(get_str).unwrap_or_default();
                        let pns = match find(pa, IFLA_NET_NS_FD).and_then(get_u32) {
                            Some(fd) => world::with(|w| w.fds.get(&(fd as i32)).copied()).flatten().ok_or(ESRCH)?,
                            None => ns,
                        };
                        if self.by_name(pns, &pn).is_some() {
                            return Err(EEXIST);
                        }
                        (Some(pn), pns)
                    }
                    None => (None, ns),
                };
                let (flags, change) = ifinfo_flags(b);
                let index = self.new_link(ns, &name, &kind);
                let mtu = find(a, IFLA_MTU).and_then(get_u32);
                let mac = find(a, IFLA_ADDRESS).and_then(|v| <[u8; 6]>::try_from(v).ok());
                if let Some(l) = self.links.iter_mut().find(|l| l.index == index) {
                    l.up = change & IFF_UP != 0 && flags & IFF_UP != 0;
                    l.mtu = mtu.unwrap_or(l.mtu);
                    l.mac = mac.unwrap_or(l.mac);
                }
                if let Some(pn) = peer_name {
                    let p = self.new_link(peer_ns, &pn, &kind);
                    for l in self.links.iter_mut() {
                        if l.index == index {
                            l.peer = Some(p);
                        } else if l.index == p {
                            l.peer = Some(index);
                            l.mtu = mtu.unwrap_or(l.mtu);
                        }
                    }
                }
                // the kernel echoes the new link to an NLM_F_ECHO request (Linux ≥ 6.2)
                let mut out = Vec::new();
                if m.flags & wire::NLM_F_ECHO != 0 && !self.no_echo {
                    out.extend(self.link(ns, index).map(|l| self.link_msg(l, m.seq, 0)));
                }
                out.push(ack(m, 0));
                Ok(out)
            }
            RTM_NEWLINK | RTM_SETLINK => {
                let index = ifinfo_index(b);
                if self.link(ns, index).is_none() {
                    return Err(ENODEV);
                }
                let (flags, change) = ifinfo_flags(b);
                let a = tail(b, 16).to_vec();
                let target_ns = find(&a, IFLA_NET_NS_FD)
                    .and_then(get_u32)
                    .map(|fd| world::with(|w| w.fds.get(&(fd as i32)).copied()).flatten().ok_or(ESRCH))
                    .transpose()?;
                let l = self.links.iter_mut().find(|l| l.ns == ns && l.index == index).ok_or(ENODEV)?;
                if change & IFF_UP != 0 {
                    l.up = flags & IFF_UP != 0;
                }
                let name = l.name.clone();
                for (t, v) in attrs(&a) {
                    match t {
                        IFLA_AF_SPEC => {
                            for (k, v) in inet_conf(v).unwrap_or_default() {
                                let key = format!("net/ipv4/conf/{name}/{k}");
                                world::with(|w| w.sysctls.insert((ns, key), v.to_string()));
                            }
                        }
                        IFLA_MASTER => l.master = get_u32(v).filter(|&i| i != 0),
                        IFLA_ADDRESS => l.mac = <[u8; 6]>::try_from(v).unwrap_or(l.mac),
                        IFLA_MTU => l.mtu = get_u32(v).unwrap_or(l.mtu),
                        IFLA_IFNAME => l.name = get_str(v),
                        _ => {}
                    }
                }
                if let Some(t) = target_ns {
                    l.ns = t;
                }
                Ok(vec![ack(m, 0)])
            }
            RTM_DELLINK => {
                let index = ifinfo_index(b);
                let l = self.link(ns, index).ok_or(ENODEV)?;
                let peer = l.peer;
                self.links.retain(|l| l.index != index && Some(l.index) != peer);
                self.addrs.retain(|(_, i, _)| *i != index && Some(*i) != peer);
                for l in self.links.iter_mut().filter(|l| l.master == Some(index)) {
                    l.master = None;
                }
                Ok(vec![ack(m, 0)])
            }
            RTM_NEWADDR => {
                let (index, a) = addr_of(b).ok_or(wire::EINVAL)?;
                self.link(ns, index).ok_or(ENODEV)?;
                if self.addrs.iter().any(|(n, i, x)| *n == ns && *i == index && x.addr() == a.addr()) {
                    return Err(EEXIST);
                }
                self.addrs.push((ns, index, a));
                // the kernel adds the prefix route of the address
                if a.prefix_len() < a.max_prefix_len() {
                    self.routes.push((ns, format!("{}", a.trunc())));
                }
                Ok(vec![ack(m, 0)])
            }
            RTM_DELADDR => {
                let (index, a) = addr_of(b).ok_or(wire::EINVAL)?;
                let before = self.addrs.len();
                self.addrs.retain(|(n, i, x)| !(*n == ns && *i == index && x.addr() == a.addr()));
                if self.addrs.len() == before {
                    return Err(EADDRNOTAVAIL);
                }
                Ok(vec![ack(m, 0)])
            }
            RTM_GETADDR => {
                let want = b.first().copied().unwrap_or(0);
                let mut d = Vec::new();
                for (_, index, a) in self.addrs.iter().filter(|(n, _, _)| *n == ns) {
                    let fam = if a.addr().is_ipv4() { AF_INET } else { AF_INET6 };
                    if want != AF_UNSPEC && want != fam {
                        continue;
                    }
                    let mut hdr = vec![fam, a.prefix_len(), 0, 0];
                    hdr.extend_from_slice(&index.to_ne_bytes());
                    let mut at = wire::Attrs::new();
                    at.put_ip(IFA_ADDRESS, a.addr()).put_ip(IFA_LOCAL, a.addr());
                    d.extend(wire::message(RTM_NEWADDR, NLM_F_MULTI, m.seq, &hdr, at.bytes()));
                }
                d.extend(done(m.seq));
                Ok(vec![d])
            }
            RTM_NEWROUTE => {
                let r = route_of(b);
                if self.routes.iter().any(|(n, x)| *n == ns && *x == r) && m.flags & NLM_F_EXCL != 0 {
                    return Err(EEXIST);
                }
                self.routes.push((ns, r));
                Ok(vec![ack(m, 0)])
            }
            RTM_DELROUTE => {
                let r = route_of(b);
                let before = self.routes.len();
                self.routes.retain(|(n, x)| !(*n == ns && *x == r));
                if self.routes.len() == before {
                    return Err(ESRCH);
                }
                Ok(vec![ack(m, 0)])
            }
            RTM_NEWRULE => {
                self.rules.push((ns, rule_of(b)));
                Ok(vec![ack(m, 0)])
            }
            RTM_DELRULE => {
                // the kernel deletes the first rule matching the attributes given
                let want = rule_of(b);
                let words: Vec<&str> = want.split(' ').collect();
                let pos = self.rules.iter().position(|(n, r)| {
                    *n == ns && words.chunks(2).all(|kv| r.split(' ').collect::<Vec<_>>().windows(2).any(|w| w == kv))
                });
                match pos {
                    Some(i) => {
                        self.rules.remove(i);
                        Ok(vec![ack(m, 0)])
                    }
                    None => Err(ENOENT),
                }
            }
            RTM_GETNETCONF => {
                let v6 = b.first() == Some(&AF_INET6);
                let key = if v6 { "net/ipv6/conf/all/forwarding" } else { "net/ipv4/ip_forward" };
                let on = sysctl_of(ns, key, "0").trim() == "1";
                let mut a = wire::Attrs::new();
                a.put_u32(NETCONFA_IFINDEX, NETCONFA_IFINDEX_ALL as u32).put_u32(NETCONFA_FORWARDING, on.into());
                let hdr = [if v6 { AF_INET6 } else { AF_INET }, 0, 0, 0];
                Ok(vec![wire::message(RTM_NEWNETCONF, 0, m.seq, &hdr, a.bytes()), ack(m, 0)])
            }
            _ if m.flags & NLM_F_DUMP == NLM_F_DUMP => Ok(vec![done(m.seq)]),
            _ => Ok(vec![ack(m, 0)]),
        }
    }
}
