//! Interface addresses.

use std::net::IpAddr;

use anyhow::Context;
use ipnet::IpNet;

use super::consts::*;
use super::socket::Netlink;
use super::wire::{attrs, get_ip, get_u32, Msg};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: &IpAddr) -> Family {
        if ip.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
    pub(crate) fn af(self) -> u8 {
        match self {
            Family::V4 => AF_INET,
            Family::V6 => AF_INET6,
        }
    }
}

/// An address on an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addr {
    pub index: u32,
    /// The address with its prefix length (host bits kept).
    pub addr: IpNet,
    pub scope: u8,
    /// IFA_F_* (from IFA_FLAGS when present), e.g. DADFAILED 0x08, TENTATIVE 0x40.
    pub flags: u32,
}

/// struct ifaddrmsg.
fn ifaddr(family: u8, prefix: u8, scope: u8, index: u32) -> [u8; 8] {
    let i = index.to_ne_bytes();
    [family, prefix, 0, scope, i[0], i[1], i[2], i[3]]
}

/// `ip addr add|del A/P dev X` (+ `brd +` for IPv4 prefixes shorter than /31, as the
/// reference's netlink library adds the broadcast address itself).
pub(crate) fn addr_msg(add: bool, index: u32, addr: IpNet) -> Vec<u8> {
    let (ty, flags) = if add {
        (RTM_NEWADDR, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)
    } else {
        (RTM_DELADDR, NLM_F_REQUEST | NLM_F_ACK)
    };
    let ip = addr.addr();
    let mut m = Msg::new(ty, flags, &ifaddr(Family::of(&ip).af(), addr.prefix_len(), 0, index));
    m.put_ip(IFA_LOCAL, ip).put_ip(IFA_ADDRESS, ip);
    if let (true, IpNet::V4(n)) = (add, addr) {
        if n.prefix_len() < 31 {
            m.put_ip(IFA_BROADCAST, IpAddr::V4(n.broadcast()));
        }
    }
    m.finish()
}

pub(crate) fn dump_msg(family: Option<Family>, index: Option<u32>) -> Vec<u8> {
    let af = family.map_or(AF_UNSPEC, Family::af);
    Msg::new(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, &ifaddr(af, 0, 0, index.unwrap_or(0))).finish()
}

pub(crate) fn parse_addr(p: &[u8]) -> Option<Addr> {
    let (&prefix, &flags8, &scope) = (p.get(1)?, p.get(2)?, p.get(3)?);
    let index = get_u32(p.get(4..)?)?;
    let (mut local, mut address, mut flags) = (None, None, u32::from(flags8));
    for (ty, v) in attrs(p.get(8..)?) {
        match ty {
            IFA_LOCAL => local = get_ip(v),
            IFA_ADDRESS => address = get_ip(v),
            IFA_FLAGS => flags = get_u32(v).unwrap_or(flags),
            _ => {}
        }
    }
    // For point-to-point IPv4 links IFA_ADDRESS is the peer; IFA_LOCAL is ours.
    let ip = local.or(address)?;
    Some(Addr { index, addr: IpNet::new(ip, prefix).ok()?, scope, flags })
}

impl Netlink {
    pub fn addr_add(&mut self, index: u32, addr: IpNet) -> anyhow::Result<()> {
        self.ack(addr_msg(true, index, addr)).with_context(|| format!("failed to add address {addr} to link {index}"))
    }

    pub fn addr_del(&mut self, index: u32, addr: IpNet) -> anyhow::Result<()> {
        self.ack(addr_msg(false, index, addr))
            .with_context(|| format!("failed to delete address {addr} from link {index}"))
    }

    /// Addresses, optionally only of one link and/or family.
    pub fn addrs(&mut self, index: Option<u32>, family: Option<Family>) -> anyhow::Result<Vec<Addr>> {
        let replies = self.dump(dump_msg(family, index)).context("failed to list addresses")?;
        Ok(replies
            .iter()
            .filter(|r| r.ty == RTM_NEWADDR)
            .filter_map(|r| parse_addr(&r.payload))
            .filter(|a| index.is_none_or(|i| i == a.index))
            .filter(|a| family.is_none_or(|f| f == Family::of(&a.addr.addr())))
            .collect())
    }
}

/// IFA_F_* flags that matter for DAD.
pub const IFA_F_DADFAILED: u32 = 0x08;
pub const IFA_F_TENTATIVE: u32 = 0x40;

impl Netlink {
    /// Wait until no address of link `index` is tentative (IPv6 DAD done), polling every
    /// 50 ms up to `timeout`. A DADFAILED address is an error; a link on which the kernel runs
    /// no DAD (see [`dad_runs`]: down, or without carrier) ends the wait at once, without error.
    pub fn settle_addrs(&mut self, index: u32, timeout: std::time::Duration) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let addrs = self.addrs(Some(index), None)?;
            if let Some(a) = addrs.iter().find(|a| a.flags & IFA_F_DADFAILED != 0) {
                anyhow::bail!("link {index} has address {} in DADFAILED state", a.addr);
            }
            if !addrs.iter().any(|a| a.flags & IFA_F_TENTATIVE != 0) {
                return Ok(());
            }
            let Some(link) = self.link_by_index(index)? else { return Ok(()) };
            if !dad_runs(link.oper_state) {
                tracing::debug!("link {index} has operstate {}: no DAD runs, not waiting for it", link.oper_state);
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                anyhow::bail!("link {index} still has tentative addresses after {timeout:?}");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

/// Does the kernel run IPv6 DAD on a link in RFC 2863 operstate `oper`? It starts DAD once the
/// link is ready (`addrconf_link_ready`: `netif_oper_up`, operstate UP or UNKNOWN). UNKNOWN is
/// what links that never report a state show while DAD runs on them (an ipvlan, whatever its
/// lower device says); DOWN, LOWERLAYERDOWN (no carrier), DORMANT and the rest leave the
/// addresses tentative until the link comes up, so waiting for them would only time out.
pub fn dad_runs(oper: u8) -> bool {
    matches!(oper, IF_OPER_UP | IF_OPER_UNKNOWN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dad_runs_on_links_up_or_of_unknown_state_only() {
        // IF_OPER_*: UNKNOWN 0, NOTPRESENT 1, DOWN 2, LOWERLAYERDOWN 3, TESTING 4, DORMANT 5, UP 6
        let runs: Vec<u8> = (0..=6).filter(|&s| dad_runs(s)).collect();
        assert_eq!(runs, vec![IF_OPER_UNKNOWN, IF_OPER_UP]);
    }
}
