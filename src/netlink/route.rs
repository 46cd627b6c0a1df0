//! Routes (IPv4 and IPv6, any table).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::Context;
use ipnet::IpNet;

use super::addr::Family;
use super::consts::*;
use super::socket::Netlink;
use super::wire::{attrs, get_ip, get_u16, get_u32, Attrs, Msg};

/// A route to add or delete, or one read back (then `dst`, `family` and `table` are Some, and
/// every attribute a copy needs is kept: a route read back and sent again with another `table`
/// is the same route there, as the reference's `netlink.RouteReplace` of a listed route).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteSpec {
    /// None means the default route of `family`.
    pub dst: Option<IpNet>,
    pub family: Option<Family>,
    pub gw: Option<IpAddr>,
    pub oif: Option<u32>,
    /// Preferred source address (RTA_PREFSRC).
    pub src: Option<IpAddr>,
    /// RT_SCOPE_*; universe when adding, "any" when deleting, if None.
    pub scope: Option<u8>,
    /// Main table if None; tables over 255 go in RTA_TABLE.
    pub table: Option<u32>,
    pub metric: Option<u32>,
    pub mtu: Option<u32>,
    pub advmss: Option<u32>,
    /// The route's other RTA_METRICS attributes (window, ssthresh, initcwnd, hoplimit, features,
    /// rto_min, quickack, congctl — a string —, locks, ...), as the kernel reported them: raw
    /// RTAX_* attributes, sent again as they are after `mtu` and `advmss`. Empty when adding.
    pub other_metrics: Vec<u8>,
    /// Type of service (`rtm_tos`, IPv4); 0 if None.
    pub tos: Option<u8>,
    /// Realm (RTA_FLOW, IPv4).
    pub realm: Option<u32>,
    /// RTPROT_*; boot when adding if None.
    pub protocol: Option<u8>,
    /// RTN_* route type; unicast when adding if None.
    pub kind: Option<u8>,
}

impl RouteSpec {
    fn family(&self) -> Family {
        match (self.dst, self.family, self.gw) {
            (Some(d), _, _) => Family::of(&d.addr()),
            (None, Some(f), _) => f,
            (None, None, Some(g)) => Family::of(&g),
            _ => Family::V4,
        }
    }
}

/// Route scopes (`RT_SCOPE_*`) for [`RouteSpec::scope`], so plugins never write raw numbers.
pub struct Scope;

impl Scope {
    /// a route through a gateway, or anywhere
    pub const UNIVERSE: u8 = 0;
    /// a destination directly on the link
    pub const LINK: u8 = 253;
    /// an address of this host
    pub const HOST: u8 = 254;
    /// no destination; when deleting, "any scope"
    pub const NOWHERE: u8 = 255;
}

/// The kernel's reserved routing tables (`RT_TABLE_*`) for [`RouteSpec::table`] and rules.
pub struct Table;

impl Table {
    pub const DEFAULT: u32 = 253;
    pub const MAIN: u32 = 254;
    pub const LOCAL: u32 = 255;
}

/// Who installed a route (`RTPROT_*`) for [`RouteSpec::protocol`].
pub struct Protocol;

impl Protocol {
    pub const KERNEL: u8 = 2;
    pub const BOOT: u8 = 3;
    pub const STATIC: u8 = 4;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Add,
    Append,
    Prepend,
    Replace,
    Del,
}

/// Encode a route request. Attribute order follows `ip route add DST [tos X] via GW src S table T
/// metric M [realm R] dev D mtu X advmss Y [other metrics]`. The header's flags are always 0 (a
/// route read back may carry RTM_F_* flags the kernel refuses in a request, as the reference
/// resets them).
pub(crate) fn route_msg(op: Op, r: &RouteSpec) -> Vec<u8> {
    let req = NLM_F_REQUEST | NLM_F_ACK;
    let (ty, flags) = match op {
        Op::Add => (RTM_NEWROUTE, req | NLM_F_CREATE | NLM_F_EXCL),
        Op::Append => (RTM_NEWROUTE, req | NLM_F_CREATE | NLM_F_APPEND),
        Op::Prepend => (RTM_NEWROUTE, req | NLM_F_CREATE),
        Op::Replace => (RTM_NEWROUTE, req | NLM_F_CREATE | NLM_F_REPLACE),
        Op::Del => (RTM_DELROUTE, req),
    };
    let del = op == Op::Del;
    let dst = r.dst.map(|d| d.trunc()).filter(|d| d.prefix_len() > 0);
    let table = r.table.unwrap_or(u32::from(RT_TABLE_MAIN));
    let table8 = u8::try_from(table).unwrap_or(RT_TABLE_UNSPEC);
    let mut hdr = [0u8; 12];
    hdr[0] = r.family().af();
    hdr[1] = dst.map_or(0, |d| d.prefix_len());
    hdr[3] = r.tos.unwrap_or(0);
    hdr[4] = table8;
    hdr[5] = r.protocol.unwrap_or(if del { RTPROT_UNSPEC } else { RTPROT_BOOT });
    hdr[6] = r.scope.unwrap_or(if del { RT_SCOPE_NOWHERE } else { RT_SCOPE_UNIVERSE });
    hdr[7] = r.kind.unwrap_or(if del { RTN_UNSPEC } else { RTN_UNICAST });
    let mut m = Msg::new(ty, flags, &hdr);
    if let Some(d) = dst {
        m.put_ip(RTA_DST, d.addr());
    }
    if let Some(gw) = r.gw {
        m.put_ip(RTA_GATEWAY, gw);
    }
    if let Some(src) = r.src {
        m.put_ip(RTA_PREFSRC, src);
    }
    if table > 255 {
        m.put_u32(RTA_TABLE, table);
    }
    if let Some(metric) = r.metric {
        m.put_u32(RTA_PRIORITY, metric);
    }
    if let Some(realm) = r.realm {
        m.put_u32(RTA_FLOW, realm);
    }
    if let Some(oif) = r.oif {
        m.put_u32(RTA_OIF, oif);
    }
    if r.mtu.is_some() || r.advmss.is_some() || !r.other_metrics.is_empty() {
        let nest = m.begin(RTA_METRICS, false);
        if let Some(mtu) = r.mtu {
            m.put_u32(RTAX_MTU, mtu);
        }
        if let Some(advmss) = r.advmss {
            m.put_u32(RTAX_ADVMSS, advmss);
        }
        m.raw(&r.other_metrics);
        m.end(nest);
    }
    m.finish()
}

pub(crate) fn dump_msg(family: Family) -> Vec<u8> {
    let mut hdr = [0u8; 12];
    hdr[0] = family.af();
    Msg::new(RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, &hdr).finish()
}

/// `ip route get DST`: the kernel's own lookup (rules, tables, metrics) of the route to `dst`,
/// answered with the table it was found in (`RTM_F_LOOKUP_TABLE`, as iproute2 and the
/// reference's `netlink.RouteGet` ask).
pub(crate) fn route_get_msg(dst: IpAddr) -> Vec<u8> {
    let mut hdr = [0u8; 12];
    hdr[0] = Family::of(&dst).af();
    hdr[1] = if dst.is_ipv4() { 32 } else { 128 };
    hdr[8..12].copy_from_slice(&RTM_F_LOOKUP_TABLE.to_ne_bytes());
    let mut m = Msg::new(RTM_GETROUTE, NLM_F_REQUEST | NLM_F_ACK, &hdr);
    m.put_ip(RTA_DST, dst);
    m.finish()
}

/// Decode an RTM_NEWROUTE payload; a multipath route yields one entry per next hop.
pub(crate) fn parse_route(p: &[u8]) -> Vec<RouteSpec> {
    let (Some(&af), Some(&dst_len), Some(&tos), Some(&table8), Some(&protocol), Some(&scope), Some(&kind)) =
        (p.first(), p.get(1), p.get(3), p.get(4), p.get(5), p.get(6), p.get(7))
    else {
        return Vec::new();
    };
    let family = if af == AF_INET6 { Family::V6 } else { Family::V4 };
    let mut r = RouteSpec {
        family: Some(family),
        tos: Some(tos).filter(|&t| t != 0),
        scope: Some(scope),
        table: Some(u32::from(table8)),
        protocol: Some(protocol),
        kind: Some(kind),
        ..RouteSpec::default()
    };
    let mut dst = None;
    let mut hops = Vec::new();
    for (ty, v) in attrs(p.get(12..).unwrap_or(&[])) {
        match ty {
            RTA_DST => dst = get_ip(v),
            RTA_GATEWAY => r.gw = get_ip(v),
            RTA_OIF => r.oif = get_u32(v),
            RTA_PREFSRC => r.src = get_ip(v),
            RTA_PRIORITY => r.metric = get_u32(v),
            RTA_TABLE => r.table = get_u32(v),
            RTA_FLOW => r.realm = get_u32(v),
            RTA_METRICS => {
                let mut other = Attrs::new();
                for (t, d) in attrs(v) {
                    match t {
                        RTAX_MTU => r.mtu = get_u32(d),
                        RTAX_ADVMSS => r.advmss = get_u32(d),
                        _ => {
                            other.put(t, d);
                        }
                    }
                }
                r.other_metrics = other.finish().unwrap_or_default();
            }
            RTA_MULTIPATH => hops = parse_multipath(v),
            _ => {}
        }
    }
    let unspec = match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        Family::V6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    r.dst = IpNet::new(dst.unwrap_or(unspec), dst_len).ok();
    if hops.is_empty() {
        return vec![r];
    }
    hops.into_iter().map(|(oif, gw)| RouteSpec { oif: Some(oif), gw, ..r.clone() }).collect()
}

/// The (ifindex, gateway) of each struct rtnexthop in RTA_MULTIPATH.
fn parse_multipath(mut b: &[u8]) -> Vec<(u32, Option<IpAddr>)> {
    let mut out = Vec::new();
    while let (Some(len), Some(oif)) = (get_u16(b).map(usize::from), b.get(4..).and_then(get_u32)) {
        let Some(body) = b.get(8..len) else { break };
        let gw = attrs(body).find(|(t, _)| *t == RTA_GATEWAY).and_then(|(_, v)| get_ip(v));
        out.push((oif, gw));
        b = b.get(len.div_ceil(4) * 4..).unwrap_or(&[]);
    }
    out
}

fn describe(r: &RouteSpec) -> String {
    let dst = r.dst.map_or_else(|| "default".to_string(), |d| d.to_string());
    match r.gw {
        Some(gw) => format!("{dst} via {gw}"),
        None => dst,
    }
}

impl Netlink {
    /// Add a route; fails with EEXIST if it is there already.
    pub fn route_add(&mut self, r: &RouteSpec) -> anyhow::Result<()> {
        self.ack(route_msg(Op::Add, r)).with_context(|| format!("failed to add route {}", describe(r)))
    }

    /// Add a route next to existing ones for the same destination (ECMP for IPv6).
    pub fn route_append(&mut self, r: &RouteSpec) -> anyhow::Result<()> {
        self.ack(route_msg(Op::Append, r)).with_context(|| format!("failed to append route {}", describe(r)))
    }

    /// Add a route in front of existing IPv4 routes for the same destination and metric (so the
    /// newest interface's default route wins), as `ip route prepend` and the reference's
    /// `RouteAddEcmp` send it; an IPv6 route with the same metric joins them as ECMP. An
    /// identical route is EEXIST.
    pub fn route_prepend(&mut self, r: &RouteSpec) -> anyhow::Result<()> {
        self.ack(route_msg(Op::Prepend, r)).with_context(|| format!("failed to add route {}", describe(r)))
    }

    pub fn route_replace(&mut self, r: &RouteSpec) -> anyhow::Result<()> {
        self.ack(route_msg(Op::Replace, r)).with_context(|| format!("failed to replace route {}", describe(r)))
    }

    pub fn route_del(&mut self, r: &RouteSpec) -> anyhow::Result<()> {
        self.ack(route_msg(Op::Del, r)).with_context(|| format!("failed to delete route {}", describe(r)))
    }

    /// The route the kernel takes to `dst` (`ip route get`; for a multipath route, its first
    /// next hop). An error when the kernel has none (e.g. ENETUNREACH).
    pub fn route_get(&mut self, dst: IpAddr) -> anyhow::Result<Option<RouteSpec>> {
        let replies = self.request(route_get_msg(dst)).with_context(|| format!("failed to get the route to {dst}"))?;
        Ok(replies.iter().filter(|r| r.ty == RTM_NEWROUTE).flat_map(|r| parse_route(&r.payload)).next())
    }

    /// Routes of `family`, in `table` or in all tables.
    pub fn routes(&mut self, family: Family, table: Option<u32>) -> anyhow::Result<Vec<RouteSpec>> {
        let replies = self.dump(dump_msg(family)).context("failed to list routes")?;
        Ok(replies
            .iter()
            .filter(|r| r.ty == RTM_NEWROUTE)
            .flat_map(|r| parse_route(&r.payload))
            .filter(|r| table.is_none() || r.table == table)
            .collect())
    }
}
