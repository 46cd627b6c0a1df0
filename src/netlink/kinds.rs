//! Creating the other link kinds (macvlan, ipvlan, vlan, dummy, vrf, ifb), their read-back
//! details, and a few more link attributes (alias, txqueuelen, allmulticast).

use std::os::fd::{AsRawFd, BorrowedFd};

use anyhow::Context;

use super::consts::*;
use super::link::{ifinfo, parse_link, set_attr_msg, set_flag_msg, Link};
use super::socket::Netlink;
use super::wire::{attrs, get_str, get_u16, get_u32, Msg};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacvlanMode {
    Private = 1,
    Vepa = 2,
    Bridge = 4,
    Passthru = 8,
    Source = 16,
}

impl MacvlanMode {
    /// The CNI config spelling: "private", "vepa", "bridge", "passthru", "source".
    pub fn from_name(s: &str) -> Option<MacvlanMode> {
        Some(match s {
            "private" => MacvlanMode::Private,
            "vepa" => MacvlanMode::Vepa,
            "bridge" => MacvlanMode::Bridge,
            "passthru" => MacvlanMode::Passthru,
            "source" => MacvlanMode::Source,
            _ => return None,
        })
    }
    pub fn from_u32(v: u32) -> Option<MacvlanMode> {
        [Self::Private, Self::Vepa, Self::Bridge, Self::Passthru, Self::Source].into_iter().find(|m| *m as u32 == v)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpvlanMode {
    L2 = 0,
    L3 = 1,
    L3s = 2,
}

impl IpvlanMode {
    /// "l2", "l3", "l3s".
    pub fn from_name(s: &str) -> Option<IpvlanMode> {
        Some(match s {
            "l2" => IpvlanMode::L2,
            "l3" => IpvlanMode::L3,
            "l3s" => IpvlanMode::L3s,
            _ => return None,
        })
    }
    pub fn from_u16(v: u16) -> Option<IpvlanMode> {
        [Self::L2, Self::L3, Self::L3s].into_iter().find(|m| *m as u16 == v)
    }
}

/// IPVLAN_F_*: bridge (0), private, vepa.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpvlanFlag {
    Bridge = 0,
    Private = 1,
    Vepa = 2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    Macvlan { mode: MacvlanMode, bcqueuelen: Option<u32> },
    Ipvlan { mode: IpvlanMode, flag: IpvlanFlag },
    Vlan { id: u16 },
    Dummy,
    Vrf { table: u32 },
    Ifb,
}

impl LinkKind {
    /// The kernel's name of the kind (IFLA_INFO_KIND), which the reference's messages use too.
    pub fn name(&self) -> &'static str {
        match self {
            LinkKind::Macvlan { .. } => "macvlan",
            LinkKind::Ipvlan { .. } => "ipvlan",
            LinkKind::Vlan { .. } => "vlan",
            LinkKind::Dummy => "dummy",
            LinkKind::Vrf { .. } => "vrf",
            LinkKind::Ifb => "ifb",
        }
    }
}

/// A link to create. `parent` is the lower device (IFLA_LINK) for macvlan/ipvlan/vlan, as
/// an index in the socket's namespace; `netns` creates the link directly in another one.
#[derive(Debug, Clone, Copy)]
pub struct LinkSpec<'a> {
    pub name: &'a str,
    pub kind: LinkKind,
    pub parent: Option<u32>,
    pub mtu: Option<u32>,
    pub mac: Option<[u8; 6]>,
    /// None keeps the kernel default (1000). The reference creates macvlan/ipvlan/vlan/dummy/
    /// vrf/ifb links with txqueuelen 0 (zero-valued Go link attributes): pass Some(0) to match.
    pub txqlen: Option<u32>,
    pub netns: Option<BorrowedFd<'a>>,
}

impl<'a> LinkSpec<'a> {
    pub fn new(name: &'a str, kind: LinkKind) -> LinkSpec<'a> {
        LinkSpec { name, kind, parent: None, mtu: None, mac: None, txqlen: None, netns: None }
    }
}

/// Attribute order follows `ip link add link P name N mtu M address A txqueuelen Q netns NS type K ...`.
pub(crate) fn link_add_msg(s: &LinkSpec) -> Vec<u8> {
    let mut m =
        Msg::new(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, &ifinfo(AF_UNSPEC, 0, 0, 0));
    if let Some(mtu) = s.mtu {
        m.put_u32(IFLA_MTU, mtu);
    }
    if let Some(mac) = s.mac {
        m.put(IFLA_ADDRESS, &mac);
    }
    if let Some(q) = s.txqlen {
        m.put_u32(IFLA_TXQLEN, q);
    }
    if let Some(fd) = s.netns {
        m.put_u32(IFLA_NET_NS_FD, fd.as_raw_fd() as u32);
    }
    if let Some(p) = s.parent {
        m.put_u32(IFLA_LINK, p);
    }
    m.put_str(IFLA_IFNAME, s.name);
    let info = m.begin(IFLA_LINKINFO, false);
    m.put(IFLA_INFO_KIND, s.kind.name().as_bytes());
    let data = |m: &mut Msg, f: &dyn Fn(&mut Msg)| {
        let d = m.begin(IFLA_INFO_DATA, false);
        f(m);
        m.end(d);
    };
    match s.kind {
        LinkKind::Macvlan { mode, bcqueuelen } => data(&mut m, &|m| {
            if let Some(q) = bcqueuelen {
                m.put_u32(IFLA_MACVLAN_BC_QUEUE_LEN, q);
            }
            m.put_u32(IFLA_MACVLAN_MODE, mode as u32);
        }),
        LinkKind::Ipvlan { mode, flag } => data(&mut m, &|m| {
            m.put_u16(IFLA_IPVLAN_MODE, mode as u16).put_u16(IFLA_IPVLAN_FLAGS, flag as u16);
        }),
        LinkKind::Vlan { id } => data(&mut m, &|m| {
            m.put_u16(IFLA_VLAN_ID, id);
        }),
        LinkKind::Vrf { table } => data(&mut m, &|m| {
            m.put_u32(IFLA_VRF_TABLE, table);
        }),
        LinkKind::Dummy | LinkKind::Ifb => {}
    }
    m.end(info);
    m.finish()
}

/// A link plus kind-specific settings, for CHECK and for finding existing VRFs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkDetails {
    pub link: Link,
    pub alias: Option<String>,
    pub allmulti: bool,
    pub macvlan_mode: Option<u32>,
    pub ipvlan_mode: Option<u16>,
    pub vlan_id: Option<u16>,
    pub vrf_table: Option<u32>,
}

pub(crate) fn parse_details(p: &[u8]) -> Option<LinkDetails> {
    let link = parse_link(p)?;
    let mut d = LinkDetails { allmulti: link.flags & IFF_ALLMULTI != 0, ..LinkDetails::default() };
    for (ty, v) in attrs(p.get(16..)?) {
        match ty {
            IFLA_IFALIAS => d.alias = Some(get_str(v)).filter(|s| !s.is_empty()),
            IFLA_LINKINFO => {
                let data = attrs(v).find(|(t, _)| *t == IFLA_INFO_DATA).map(|(_, d)| d).unwrap_or(&[]);
                let get = |want: u16| attrs(data).find(|(t, _)| *t == want).map(|(_, v)| v);
                match link.kind.as_deref() {
                    Some("macvlan") | Some("macvtap") => d.macvlan_mode = get(IFLA_MACVLAN_MODE).and_then(get_u32),
                    Some("ipvlan") => d.ipvlan_mode = get(IFLA_IPVLAN_MODE).and_then(get_u16),
                    Some("vlan") => d.vlan_id = get(IFLA_VLAN_ID).and_then(get_u16),
                    Some("vrf") => d.vrf_table = get(IFLA_VRF_TABLE).and_then(get_u32),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    d.link = link;
    Some(d)
}

impl Netlink {
    /// Create a macvlan/ipvlan/vlan/dummy/vrf/ifb link.
    pub fn link_add(&mut self, spec: &LinkSpec) -> anyhow::Result<()> {
        self.ack(link_add_msg(spec))
            .with_context(|| format!("failed to create {} link {:?}", spec.kind.name(), spec.name))
    }

    /// The link with `index` and its kind-specific settings, or None when there is none.
    pub fn link_details(&mut self, index: u32) -> anyhow::Result<Option<LinkDetails>> {
        let req = super::link::get_msg(index, None);
        match self.request(req) {
            Ok(replies) => Ok(replies.iter().filter(|r| r.ty == RTM_NEWLINK).find_map(|r| parse_details(&r.payload))),
            Err(e) if super::socket::is_not_found(&e) => Ok(None),
            Err(e) => Err(e.context(format!("failed to look up link {index}"))),
        }
    }

    /// Set (or with "" clear) the interface alias.
    pub fn link_set_alias(&mut self, index: u32, alias: &str) -> anyhow::Result<()> {
        self.ack(set_attr_msg(index, |m| {
            m.put(IFLA_IFALIAS, alias.as_bytes());
        }))
        .with_context(|| format!("failed to set alias of link {index}"))
    }

    pub fn link_set_txqlen(&mut self, index: u32, qlen: u32) -> anyhow::Result<()> {
        self.ack(set_attr_msg(index, |m| {
            m.put_u32(IFLA_TXQLEN, qlen);
        }))
        .with_context(|| format!("failed to set txqueuelen of link {index}"))
    }

    pub fn link_set_allmulti(&mut self, index: u32, on: bool) -> anyhow::Result<()> {
        self.ack(set_flag_msg(index, IFF_ALLMULTI, on))
            .with_context(|| format!("failed to set allmulticast of link {index}"))
    }
}
