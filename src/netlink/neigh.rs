//! Neighbour (ARP/NDP) entries.

use std::net::IpAddr;

use anyhow::Context;

use super::addr::Family;
use super::consts::*;
use super::socket::Netlink;
use super::wire::Msg;

/// struct ndmsg.
fn ndmsg(ip: &IpAddr, index: u32, state: u16) -> [u8; 12] {
    let mut h = [0u8; 12];
    h[0] = Family::of(ip).af();
    h[4..8].copy_from_slice(&index.to_ne_bytes());
    h[8..10].copy_from_slice(&state.to_ne_bytes());
    h
}

/// `ip neigh replace IP lladdr MAC dev X nud permanent|reachable`.
pub(crate) fn neigh_add_msg(index: u32, ip: IpAddr, mac: [u8; 6], permanent: bool) -> Vec<u8> {
    let state = if permanent { NUD_PERMANENT } else { NUD_REACHABLE };
    let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
    let mut m = Msg::new(RTM_NEWNEIGH, flags, &ndmsg(&ip, index, state));
    m.put_ip(NDA_DST, ip).put(NDA_LLADDR, &mac);
    m.finish()
}

/// `ip neigh del IP dev X` (iproute2 leaves the state at NUD_PERMANENT; the kernel ignores it).
pub(crate) fn neigh_del_msg(index: u32, ip: IpAddr) -> Vec<u8> {
    let mut m = Msg::new(RTM_DELNEIGH, NLM_F_REQUEST | NLM_F_ACK, &ndmsg(&ip, index, NUD_PERMANENT));
    m.put_ip(NDA_DST, ip);
    m.finish()
}

impl Netlink {
    /// Add or replace the entry for `ip` on link `index`.
    pub fn neigh_add(&mut self, index: u32, ip: IpAddr, mac: [u8; 6], permanent: bool) -> anyhow::Result<()> {
        self.ack(neigh_add_msg(index, ip, mac, permanent))
            .with_context(|| format!("failed to set neighbour {ip} on link {index}"))
    }

    pub fn neigh_del(&mut self, index: u32, ip: IpAddr) -> anyhow::Result<()> {
        self.ack(neigh_del_msg(index, ip)).with_context(|| format!("failed to delete neighbour {ip} on link {index}"))
    }
}

/// A neighbour table entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neigh {
    pub index: u32,
    pub ip: IpAddr,
    pub mac: Option<[u8; 6]>,
    /// NUD_* state.
    pub state: u16,
}

fn parse_neigh(p: &[u8]) -> Option<Neigh> {
    use super::wire::{attrs, get_ip, get_u16, get_u32};
    let index = get_u32(p.get(4..)?)?;
    let state = get_u16(p.get(8..)?)?;
    let (mut ip, mut mac) = (None, None);
    for (ty, v) in attrs(p.get(12..)?) {
        match ty {
            NDA_DST => ip = get_ip(v),
            NDA_LLADDR => mac = <[u8; 6]>::try_from(v).ok(),
            _ => {}
        }
    }
    Some(Neigh { index, ip: ip?, mac, state })
}

impl Netlink {
    /// Neighbour entries (IPv4 and IPv6), optionally of one link.
    pub fn neighs(&mut self, index: Option<u32>) -> anyhow::Result<Vec<Neigh>> {
        const RTM_GETNEIGH: u16 = 30;
        let req = Msg::new(RTM_GETNEIGH, NLM_F_REQUEST | NLM_F_DUMP, &[0u8; 12]).finish();
        let replies = self.dump(req).context("failed to list neighbours")?;
        Ok(replies
            .iter()
            .filter(|r| r.ty == RTM_NEWNEIGH)
            .filter_map(|r| parse_neigh(&r.payload))
            .filter(|n| index.is_none_or(|i| i == n.index))
            .collect())
    }
}
