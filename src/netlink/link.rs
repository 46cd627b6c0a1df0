//! Links: lookup, dump, veth/bridge creation, attribute changes, bridge ports and VLANs.

use std::os::fd::{AsRawFd, BorrowedFd};

use anyhow::Context;

use super::consts::*;
use super::socket::{Netlink, NlError};
use super::wire::{self, attrs, find, get_i32, get_str, get_u32, get_u8, Msg};

/// A network interface as reported by RTM_NEWLINK.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// IFLA_INFO_KIND: "veth", "bridge", ...
    pub kind: Option<String>,
    pub mac: Option<[u8; 6]>,
    /// IFLA_ADDRESS when it is not 6 bytes long (an EUI-64, an IPoIB address, a tunnel's).
    pub other_hw_addr: Option<Vec<u8>>,
    pub mtu: u32,
    /// IFF_* flags.
    pub flags: u32,
    pub oper_state: u8,
    pub master: Option<u32>,
    /// IFLA_LINK: for a veth, the peer's index (in the peer's namespace).
    pub link: Option<u32>,
    pub link_netnsid: Option<i32>,
    pub txqlen: u32,
    pub promisc: bool,
    /// For a bridge: its vlan_filtering setting.
    pub bridge_vlan_filtering: Option<bool>,
    /// For a bridge port: hairpin mode and isolation.
    pub port_hairpin: Option<bool>,
    pub port_isolated: Option<bool>,
    /// net.ipv6.conf.<link>.accept_ra, from the link's IPv6 settings (None without IPv6)
    pub ipv6_accept_ra: Option<i32>,
}

impl Link {
    pub fn is_up(&self) -> bool {
        self.flags & IFF_UP != 0
    }
    pub fn mac_string(&self) -> Option<String> {
        self.mac.as_ref().map(format_mac)
    }
    /// The hardware address, whatever its length.
    pub fn hw_addr(&self) -> Option<&[u8]> {
        self.mac.as_ref().map(|m| &m[..]).or(self.other_hw_addr.as_deref())
    }
    /// The hardware address of any length as Go's `HardwareAddr.String()` prints it.
    pub fn hw_addr_string(&self) -> Option<String> {
        self.hw_addr().map(format_hw_addr)
    }
}

/// A veth pair: `name` (with `mtu`/`mac`) here, `peer_name` in `peer_ns` (or here).
/// As v1.9.1 makes it (`netlink.NewLinkAttrs()`: no flags, TxQLen -1), both ends are created
/// down and keep the kernel's default txqueuelen (1000): the caller sets each end up when it is
/// ready (a zero-length queue, which the Debian 1.1.1 reference gave them, breaks FIFO shapers
/// that take it as their packet limit).
#[derive(Debug, Clone, Copy)]
pub struct VethSpec<'a> {
    pub name: &'a str,
    pub peer_name: &'a str,
    /// Applied to both ends, as the reference does.
    pub mtu: Option<u32>,
    /// MAC of `name` (the peer gets a random one).
    pub mac: Option<[u8; 6]>,
    pub peer_ns: Option<BorrowedFd<'a>>,
}

#[derive(Debug, Clone, Copy)]
pub struct BridgeSpec<'a> {
    pub name: &'a str,
    pub mtu: Option<u32>,
    pub vlan_filtering: bool,
}

/// An Ethernet MAC address: what [`parse_hwaddr`] (Go's `net.ParseMAC`) takes, 6 octets long
/// (`02:aa:bb:cc:dd:ee`, `02-AA-BB-CC-DD-EE`, `02aa.bbcc.ddee`). An 8- or 20-octet address is
/// refused: no Ethernet link can have it (the kernel refuses it for a new veth or macvlan).
pub fn parse_mac(s: &str) -> anyhow::Result<[u8; 6]> {
    let a = parse_hwaddr(s)?;
    <[u8; 6]>::try_from(a.as_slice())
        .map_err(|_| anyhow::anyhow!("address {s}: a {}-octet address, an Ethernet MAC address has 6", a.len()))
}

/// A hardware address in every form Go's `net.ParseMAC` takes: 6, 8 (EUI-64) or 20 (IPoIB)
/// octets, as two hex digits each separated by `:` or `-` (`02:00:5e:10:00:01`), or as groups of
/// four hex digits separated by `.` (`0200.5e10.0001`); one separator throughout. The error is
/// Go's text (`address X: invalid MAC address`).
pub fn parse_hwaddr(s: &str) -> anyhow::Result<Vec<u8>> {
    let invalid = || anyhow::anyhow!("address {s}: invalid MAC address");
    let b = s.as_bytes();
    let hex2 = |i: usize| -> Option<u8> {
        let d = b.get(i..i + 2)?;
        let d = std::str::from_utf8(d).ok()?;
        if !d.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        u8::from_str_radix(d, 16).ok()
    };
    if b.len() < 14 {
        return Err(invalid());
    }
    let mut out = Vec::new();
    match (b.get(2), b.get(4)) {
        (Some(&sep @ (b':' | b'-')), _) => {
            if !(b.len() + 1).is_multiple_of(3) {
                return Err(invalid());
            }
            let n = (b.len() + 1) / 3;
            if ![6, 8, 20].contains(&n) {
                return Err(invalid());
            }
            for i in 0..n {
                let x = i * 3;
                out.push(hex2(x).ok_or_else(invalid)?);
                if i + 1 < n && b.get(x + 2) != Some(&sep) {
                    return Err(invalid());
                }
            }
        }
        (_, Some(b'.')) => {
            if !(b.len() + 1).is_multiple_of(5) {
                return Err(invalid());
            }
            let n = 2 * (b.len() + 1) / 5;
            if ![6, 8, 20].contains(&n) {
                return Err(invalid());
            }
            for g in 0..n / 2 {
                let x = g * 5;
                out.push(hex2(x).ok_or_else(invalid)?);
                out.push(hex2(x + 2).ok_or_else(invalid)?);
                if g + 1 < n / 2 && b.get(x + 4) != Some(&b'.') {
                    return Err(invalid());
                }
            }
        }
        _ => return Err(invalid()),
    }
    Ok(out)
}

/// "aa:bb:cc:dd:ee:ff", lower-case.
pub fn format_mac(m: &[u8; 6]) -> String {
    format_hw_addr(m)
}

/// A hardware address of any length as Go's `HardwareAddr.String()` prints it: two lower-case
/// hex digits per octet, separated by `:`.
pub fn format_hw_addr(a: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(a.len() * 3);
    for (i, b) in a.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    s
}

/// struct ifinfomsg.
pub(crate) fn ifinfo(family: u8, index: u32, flags: u32, change: u32) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[0] = family;
    h[4..8].copy_from_slice(&index.to_ne_bytes());
    h[8..12].copy_from_slice(&flags.to_ne_bytes());
    h[12..16].copy_from_slice(&change.to_ne_bytes());
    h
}

const CREATE: u16 = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
const CHANGE: u16 = NLM_F_REQUEST | NLM_F_ACK;

// ---- encoders (no socket; seq 0) ----

pub(crate) fn get_msg(index: u32, name: Option<&str>) -> Vec<u8> {
    let mut m = Msg::new(RTM_GETLINK, NLM_F_REQUEST | NLM_F_ACK, &ifinfo(AF_UNSPEC, index, 0, 0));
    m.put_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
    if let Some(n) = name {
        m.put_str(IFLA_IFNAME, n);
    }
    m.finish()
}

pub(crate) fn dump_msg() -> Vec<u8> {
    let mut m = Msg::new(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, &ifinfo(AF_UNSPEC, 0, 0, 0));
    m.put_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
    m.finish()
}

/// Attribute order follows `ip link add name N mtu M address A type veth peer name P mtu M
/// netns NS`. As v1.9.1's netlink library sends it for `netlink.NewLinkAttrs()`: no flags (both
/// ends down) and no IFLA_TXQLEN (the kernel's default queue length on both ends).
pub(crate) fn veth_add_msg(spec: &VethSpec) -> Vec<u8> {
    let mut m = Msg::new(RTM_NEWLINK, CREATE, &ifinfo(AF_UNSPEC, 0, 0, 0));
    if let Some(mtu) = spec.mtu {
        m.put_u32(IFLA_MTU, mtu);
    }
    if let Some(mac) = spec.mac {
        m.put(IFLA_ADDRESS, &mac);
    }
    m.put_str(IFLA_IFNAME, spec.name);
    let info = m.begin(IFLA_LINKINFO, false);
    m.put(IFLA_INFO_KIND, b"veth");
    let data = m.begin(IFLA_INFO_DATA, false);
    let peer = m.begin(VETH_INFO_PEER, false);
    m.raw(&ifinfo(AF_UNSPEC, 0, 0, 0));
    if let Some(mtu) = spec.mtu {
        m.put_u32(IFLA_MTU, mtu);
    }
    if let Some(fd) = spec.peer_ns {
        m.put_u32(IFLA_NET_NS_FD, fd.as_raw_fd() as u32);
    }
    m.put_str(IFLA_IFNAME, spec.peer_name);
    m.end(peer).end(data).end(info);
    m.finish()
}

pub(crate) fn bridge_add_msg(spec: &BridgeSpec) -> Vec<u8> {
    let mut m = Msg::new(RTM_NEWLINK, CREATE, &ifinfo(AF_UNSPEC, 0, 0, 0));
    if let Some(mtu) = spec.mtu {
        m.put_u32(IFLA_MTU, mtu);
    }
    m.put_str(IFLA_IFNAME, spec.name);
    let info = m.begin(IFLA_LINKINFO, false);
    m.put(IFLA_INFO_KIND, b"bridge");
    if spec.vlan_filtering {
        let data = m.begin(IFLA_INFO_DATA, false);
        m.put_u8(IFLA_BR_VLAN_FILTERING, 1);
        m.end(data);
    }
    m.end(info);
    m.finish()
}

pub(crate) fn del_msg(index: u32) -> Vec<u8> {
    Msg::new(RTM_DELLINK, CHANGE, &ifinfo(AF_UNSPEC, index, 0, 0)).finish()
}

pub(crate) fn set_flag_msg(index: u32, flag: u32, on: bool) -> Vec<u8> {
    Msg::new(RTM_NEWLINK, CHANGE, &ifinfo(AF_UNSPEC, index, if on { flag } else { 0 }, flag)).finish()
}

/// `ip link set` with one attribute.
pub(crate) fn set_attr_msg(index: u32, f: impl FnOnce(&mut Msg)) -> Vec<u8> {
    let mut m = Msg::new(RTM_NEWLINK, CHANGE, &ifinfo(AF_UNSPEC, index, 0, 0));
    f(&mut m);
    m.finish()
}

/// `bridge link set dev X hairpin on isolated on`.
pub(crate) fn bridge_port_msg(index: u32, hairpin: Option<bool>, isolated: Option<bool>) -> Vec<u8> {
    let mut m = Msg::new(RTM_SETLINK, CHANGE, &ifinfo(AF_BRIDGE, index, 0, 0));
    let p = m.begin(IFLA_PROTINFO, true);
    if let Some(h) = hairpin {
        m.put_u8(IFLA_BRPORT_MODE, h.into());
    }
    if let Some(i) = isolated {
        m.put_u8(IFLA_BRPORT_ISOLATED, i.into());
    }
    m.end(p);
    m.finish()
}

/// `bridge vlan add|del dev X vid V [pvid] [untagged]`.
pub(crate) fn bridge_vlan_msg(add: bool, index: u32, vid: u16, pvid: bool, untagged: bool) -> Vec<u8> {
    let ty = if add { RTM_SETLINK } else { RTM_DELLINK };
    let mut m = Msg::new(ty, CHANGE, &ifinfo(AF_BRIDGE, index, 0, 0));
    let mut flags = 0u16;
    if pvid {
        flags |= BRIDGE_VLAN_INFO_PVID;
    }
    if untagged {
        flags |= BRIDGE_VLAN_INFO_UNTAGGED;
    }
    let mut info = [0u8; 4];
    info[..2].copy_from_slice(&flags.to_ne_bytes());
    info[2..].copy_from_slice(&vid.to_ne_bytes());
    let spec = m.begin(IFLA_AF_SPEC, false);
    m.put(IFLA_BRIDGE_VLAN_INFO, &info);
    m.end(spec);
    m.finish()
}

// ---- decoding ----

fn parse_bool_attr(data: &[u8], ty: u16) -> Option<bool> {
    attrs(data).find(|(t, _)| *t == ty).and_then(|(_, v)| get_u8(v)).map(|v| v != 0)
}

/// Decode an RTM_NEWLINK payload.
pub(crate) fn parse_link(p: &[u8]) -> Option<Link> {
    let index = get_u32(p.get(4..)?)?;
    let flags = get_u32(p.get(8..)?)?;
    let mut l = Link { index, flags, promisc: flags & IFF_PROMISC != 0, ..Link::default() };
    for (ty, v) in attrs(p.get(16..)?) {
        match ty {
            IFLA_IFNAME => l.name = get_str(v),
            IFLA_ADDRESS => match <[u8; 6]>::try_from(v) {
                Ok(m) => l.mac = Some(m),
                Err(_) => l.other_hw_addr = Some(v.to_vec()).filter(|a| !a.is_empty()),
            },
            IFLA_MTU => l.mtu = get_u32(v).unwrap_or(0),
            IFLA_LINK => l.link = get_u32(v),
            IFLA_MASTER => l.master = get_u32(v).filter(|&m| m != 0),
            IFLA_TXQLEN => l.txqlen = get_u32(v).unwrap_or(0),
            IFLA_OPERSTATE => l.oper_state = get_u8(v).unwrap_or(0),
            IFLA_LINK_NETNSID => l.link_netnsid = get_i32(v),
            IFLA_PROTINFO => {
                l.port_hairpin = parse_bool_attr(v, IFLA_BRPORT_MODE);
                l.port_isolated = parse_bool_attr(v, IFLA_BRPORT_ISOLATED);
            }
            IFLA_AF_SPEC => {
                let conf =
                    attrs(v).find(|(fam, _)| *fam == u16::from(AF_INET6)).and_then(|(_, f)| find(f, IFLA_INET6_CONF));
                let at = DEVCONF_ACCEPT_RA * 4;
                l.ipv6_accept_ra = conf.and_then(|c| c.get(at..at + 4)).and_then(get_i32);
            }
            IFLA_LINKINFO => {
                let mut slave_kind = None;
                for (t, d) in attrs(v) {
                    match t {
                        IFLA_INFO_KIND => l.kind = Some(get_str(d)),
                        IFLA_INFO_DATA if l.kind.as_deref() == Some("bridge") => {
                            l.bridge_vlan_filtering = parse_bool_attr(d, IFLA_BR_VLAN_FILTERING);
                        }
                        IFLA_INFO_SLAVE_KIND => slave_kind = Some(get_str(d)),
                        IFLA_INFO_SLAVE_DATA if slave_kind.as_deref() == Some("bridge") => {
                            l.port_hairpin = parse_bool_attr(d, IFLA_BRPORT_MODE);
                            l.port_isolated = parse_bool_attr(d, IFLA_BRPORT_ISOLATED);
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(l)
}

fn not_found_to_none(r: anyhow::Result<Option<Link>>) -> anyhow::Result<Option<Link>> {
    match r {
        Err(e) if e.downcast_ref::<NlError>().is_some_and(NlError::is_not_found) => Ok(None),
        r => r,
    }
}

impl Netlink {
    fn get_link(&mut self, req: Vec<u8>) -> anyhow::Result<Option<Link>> {
        let replies = self.request(req)?;
        Ok(replies.iter().filter(|r| r.ty == RTM_NEWLINK).find_map(|r| parse_link(&r.payload)))
    }

    /// The link called `name`, or None when there is none.
    pub fn link_by_name(&mut self, name: &str) -> anyhow::Result<Option<Link>> {
        not_found_to_none(self.get_link(get_msg(0, Some(name))))
            .with_context(|| format!("failed to look up link {name:?}"))
    }

    /// The link with `index`, or None when there is none.
    pub fn link_by_index(&mut self, index: u32) -> anyhow::Result<Option<Link>> {
        not_found_to_none(self.get_link(get_msg(index, None)))
            .with_context(|| format!("failed to look up link {index}"))
    }

    /// Every link in the namespace.
    pub fn links(&mut self) -> anyhow::Result<Vec<Link>> {
        let replies = self.dump(dump_msg()).context("failed to list links")?;
        Ok(replies.iter().filter(|r| r.ty == RTM_NEWLINK).filter_map(|r| parse_link(&r.payload)).collect())
    }

    /// Create a veth pair (both ends down). Returns the link `spec.name` as the kernel echoes it
    /// (NLM_F_ECHO, Linux ≥ 6.2; None from kernels that do not echo a new link): its index and
    /// MAC without a lookup right after the creation. (While `spec.name` was created up, as the
    /// Debian 1.1.1 reference creates it, that lookup was dear too: a RTM_GETLINK of an up link
    /// with a pending carrier event runs the event inside the request (`linkwatch_sync_dev`),
    /// taking the queues down and waiting for an RCU grace period. The event of a link that is
    /// down touches no queues.)
    pub fn veth_add(&mut self, spec: &VethSpec) -> anyhow::Result<Option<Link>> {
        let mut req = veth_add_msg(spec);
        wire::add_flags(&mut req, wire::NLM_F_ECHO);
        let replies = self
            .change(req)
            .with_context(|| format!("failed to create veth pair {:?}/{:?}", spec.name, spec.peer_name))?;
        Ok(replies
            .iter()
            .filter(|r| r.ty == RTM_NEWLINK)
            .filter_map(|r| parse_link(&r.payload))
            .find(|l| l.name == spec.name))
    }

    pub fn bridge_add(&mut self, spec: &BridgeSpec) -> anyhow::Result<()> {
        self.ack(bridge_add_msg(spec)).with_context(|| format!("failed to create bridge {:?}", spec.name))
    }

    pub fn link_del(&mut self, index: u32) -> anyhow::Result<()> {
        self.ack(del_msg(index)).with_context(|| format!("failed to delete link {index}"))
    }

    pub fn link_set_up(&mut self, index: u32, up: bool) -> anyhow::Result<()> {
        let state = if up { "up" } else { "down" };
        self.ack(set_flag_msg(index, IFF_UP, up)).with_context(|| format!("failed to set link {index} {state}"))
    }

    /// Enslave to `master` and set up, in one request (`ip link set X master B up`: the kernel
    /// applies the flags, then the master; the end state is that of the two requests).
    pub fn link_set_master_up(&mut self, index: u32, master: u32) -> anyhow::Result<()> {
        let mut m = Msg::new(RTM_NEWLINK, CHANGE, &ifinfo(AF_UNSPEC, index, IFF_UP, IFF_UP));
        m.put_u32(IFLA_MASTER, master);
        self.ack(m.finish()).with_context(|| format!("failed to set master of link {index} to {master} and up"))
    }

    /// Set IPv4 per-interface settings (`net.ipv4.conf.<link>.*`, IPV4_DEVCONF_* ids) over
    /// rtnetlink: the kernel stores them exactly as a write to /proc/sys does (value and
    /// "explicitly set" mark), without the /proc/sys path lookup, whose cost grows with the
    /// number of network namespaces on the node.
    pub fn link_set_ipv4_conf(&mut self, index: u32, conf: &[(u16, u32)]) -> anyhow::Result<()> {
        self.ack(set_attr_msg(index, |m| {
            let spec = m.begin(IFLA_AF_SPEC, false);
            let inet = m.begin(u16::from(AF_INET), false);
            let c = m.begin(IFLA_INET_CONF, false);
            for (id, v) in conf {
                m.put_u32(*id, *v);
            }
            m.end(c).end(inet).end(spec);
        }))
        .with_context(|| {
            let ids: Vec<String> = conf.iter().map(|(id, v)| format!("{id}={v}")).collect();
            format!("failed to set IPv4 settings {} of link {index}", ids.join(" "))
        })
    }

    /// `net.ipv4.conf.<link>.arp_notify = 1` (see [`Netlink::link_set_ipv4_conf`]).
    pub fn link_set_arp_notify(&mut self, index: u32) -> anyhow::Result<()> {
        self.link_set_ipv4_conf(index, &[(IPV4_DEVCONF_ARP_NOTIFY, 1)])
    }

    /// Enslave to `master`, or release from any master with None.
    pub fn link_set_master(&mut self, index: u32, master: Option<u32>) -> anyhow::Result<()> {
        self.ack(set_attr_msg(index, |m| {
            m.put_u32(IFLA_MASTER, master.unwrap_or(0));
        }))
        .with_context(|| match master {
            Some(m) => format!("failed to set master of link {index} to {m}"),
            None => format!("failed to release link {index} from its master"),
        })
    }

    pub fn link_set_mtu(&mut self, index: u32, mtu: u32) -> anyhow::Result<()> {
        self.ack(set_attr_msg(index, |m| {
            m.put_u32(IFLA_MTU, mtu);
        }))
        .with_context(|| format!("failed to set MTU of link {index} to {mtu}"))
    }

    pub fn link_set_mac(&mut self, index: u32, mac: [u8; 6]) -> anyhow::Result<()> {
        self.link_set_hw_addr(index, &mac)
    }

    /// IFLA_ADDRESS of any length (an IPoIB link's has 20 octets). The kernel refuses one
    /// shorter than the link's address length and takes the first octets of a longer one.
    pub fn link_set_hw_addr(&mut self, index: u32, addr: &[u8]) -> anyhow::Result<()> {
        self.ack(set_attr_msg(index, |m| {
            m.put(IFLA_ADDRESS, addr);
        }))
        .with_context(|| format!("failed to set MAC of link {index} to {}", format_hw_addr(addr)))
    }

    pub fn link_set_promisc(&mut self, index: u32, on: bool) -> anyhow::Result<()> {
        self.ack(set_flag_msg(index, IFF_PROMISC, on)).with_context(|| format!("failed to set promisc of link {index}"))
    }

    pub fn link_set_name(&mut self, index: u32, name: &str) -> anyhow::Result<()> {
        self.ack(set_attr_msg(index, |m| {
            m.put_str(IFLA_IFNAME, name);
        }))
        .with_context(|| format!("failed to rename link {index} to {name:?}"))
    }

    /// Move the link into the namespace open at `ns`.
    pub fn link_set_netns(&mut self, index: u32, ns: BorrowedFd) -> anyhow::Result<()> {
        self.ack(set_attr_msg(index, |m| {
            m.put_u32(IFLA_NET_NS_FD, ns.as_raw_fd() as u32);
        }))
        .with_context(|| format!("failed to move link {index} to another netns"))
    }

    /// Set bridge port options (None leaves one unchanged).
    pub fn bridge_port_set(&mut self, index: u32, hairpin: Option<bool>, isolated: Option<bool>) -> anyhow::Result<()> {
        if hairpin.is_none() && isolated.is_none() {
            return Ok(());
        }
        self.ack(bridge_port_msg(index, hairpin, isolated))
            .with_context(|| format!("failed to set bridge port options of link {index}"))
    }

    pub fn bridge_vlan_add(&mut self, index: u32, vid: u16, pvid: bool, untagged: bool) -> anyhow::Result<()> {
        self.ack(bridge_vlan_msg(true, index, vid, pvid, untagged))
            .with_context(|| format!("failed to add VLAN {vid} to link {index}"))
    }

    pub fn bridge_vlan_del(&mut self, index: u32, vid: u16) -> anyhow::Result<()> {
        self.ack(bridge_vlan_msg(false, index, vid, false, false))
            .with_context(|| format!("failed to remove VLAN {vid} from link {index}"))
    }

    /// Poll until the link is operationally up, sleeping `delays_ms` in turn between checks.
    /// Returns whether it came up; a missing link is an error.
    pub fn wait_oper_up(&mut self, index: u32, delays_ms: &[u64]) -> anyhow::Result<bool> {
        Ok(self.wait_oper_up_link(index, delays_ms)?.is_some())
    }

    /// [`Netlink::wait_oper_up`], returning the link as last seen when it is up.
    pub fn wait_oper_up_link(&mut self, index: u32, delays_ms: &[u64]) -> anyhow::Result<Option<Link>> {
        let mut delays = delays_ms.iter();
        loop {
            let link = self.link_by_index(index)?.ok_or_else(|| anyhow::anyhow!("link {index} disappeared"))?;
            if link.oper_state == IF_OPER_UP {
                return Ok(Some(link));
            }
            match delays.next() {
                Some(&ms) => std::thread::sleep(std::time::Duration::from_millis(ms)),
                None => return Ok(None),
            }
        }
    }
}

/// A VLAN configured on a bridge port (or on the bridge itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BridgeVlan {
    pub vid: u16,
    pub pvid: bool,
    pub untagged: bool,
}

/// `bridge vlan show`: an AF_BRIDGE link dump asking for per-VLAN entries.
pub(crate) fn bridge_vlan_dump_msg() -> Vec<u8> {
    let mut m = Msg::new(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, &ifinfo(AF_BRIDGE, 0, 0, 0));
    m.put_u32(IFLA_EXT_MASK, RTEXT_FILTER_BRVLAN);
    m.finish()
}

/// The (ifindex, VLANs) of one AF_BRIDGE RTM_NEWLINK payload.
pub(crate) fn parse_bridge_vlans(p: &[u8]) -> Option<(u32, Vec<BridgeVlan>)> {
    let index = get_u32(p.get(4..)?)?;
    let mut out = Vec::new();
    for (ty, v) in attrs(p.get(16..)?) {
        if ty != IFLA_AF_SPEC {
            continue;
        }
        for (t, info) in attrs(v) {
            if let (IFLA_BRIDGE_VLAN_INFO, Some(flags), Some(vid)) =
                (t, super::wire::get_u16(info), info.get(2..).and_then(super::wire::get_u16))
            {
                let pvid = flags & BRIDGE_VLAN_INFO_PVID != 0;
                out.push(BridgeVlan { vid, pvid, untagged: flags & BRIDGE_VLAN_INFO_UNTAGGED != 0 });
            }
        }
    }
    Some((index, out))
}

impl Netlink {
    /// VLANs of bridge port (or bridge) `index`; empty when VLAN filtering is off or absent.
    pub fn bridge_vlans(&mut self, index: u32) -> anyhow::Result<Vec<BridgeVlan>> {
        let replies = self.dump(bridge_vlan_dump_msg()).context("failed to list bridge VLANs")?;
        Ok(replies
            .iter()
            .filter(|r| r.ty == RTM_NEWLINK)
            .filter_map(|r| parse_bridge_vlans(&r.payload))
            .filter(|(i, _)| *i == index)
            .flat_map(|(_, v)| v)
            .collect())
    }
}
