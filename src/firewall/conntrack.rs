//! ctnetlink (NETLINK_NETFILTER subsystem 1): delete conntrack entries by original destination
//! port, as portmap does for UDP host ports after ADD so stale flows do not stick to an old
//! backend. Dump + per-entry delete, like the reference (netlink.ConntrackDeleteFilters).

use super::nft::sock::NftSocket;
use super::nft::NftError;
use crate::netlink::wire::{attrs, find, get_ip, get_u16_be, Attrs, NLA_F_NESTED};
use anyhow::{Context, Result};
use std::net::IpAddr;

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;

const CTA_TUPLE_ORIG: u16 = 1;
const CTA_ZONE: u16 = 18;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;

pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_SCTP: u8 = 132;

/// The original-direction tuple of one conntrack entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tuple {
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
}

/// One dumped entry: its tuple, and what a delete must send back (tuple attribute, zone).
#[derive(Debug, Clone)]
pub struct Entry {
    pub family: u8,
    pub orig: Tuple,
    orig_raw: Vec<u8>,
    zone: Option<Vec<u8>>,
}

/// Decodes a CTA_TUPLE_* body.
pub fn decode_tuple(body: &[u8]) -> Tuple {
    let mut t = Tuple { src: None, dst: None, proto: 0, sport: 0, dport: 0 };
    for (ty, p) in attrs(body) {
        match ty {
            CTA_TUPLE_IP => {
                for (k, v) in attrs(p) {
                    match k {
                        CTA_IP_V4_SRC | CTA_IP_V6_SRC => t.src = get_ip(v),
                        CTA_IP_V4_DST | CTA_IP_V6_DST => t.dst = get_ip(v),
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for (k, v) in attrs(p) {
                    match k {
                        CTA_PROTO_NUM => t.proto = v.first().copied().unwrap_or(0),
                        CTA_PROTO_SRC_PORT => t.sport = get_u16_be(v).unwrap_or(0),
                        CTA_PROTO_DST_PORT => t.dport = get_u16_be(v).unwrap_or(0),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    t
}

/// Decodes one dumped conntrack message (attributes after nfgenmsg).
pub fn decode_entry(family: u8, body: &[u8]) -> Option<Entry> {
    let orig_raw = find(body, CTA_TUPLE_ORIG)?.to_vec();
    let zone = find(body, CTA_ZONE).map(<[u8]>::to_vec);
    Some(Entry { family, orig: decode_tuple(&orig_raw), orig_raw, zone })
}

fn ct_type(msg: u16) -> u16 {
    (NFNL_SUBSYS_CTNETLINK << 8) | msg
}

/// All conntrack entries of a family (2 = IPv4, 10 = IPv6) in the current netns.
pub fn list(s: &mut NftSocket, family: u8) -> Result<Vec<Entry>, NftError> {
    Ok(s.dump_type(ct_type(IPCTNL_MSG_CT_GET), family, &[])?
        .into_iter()
        .filter_map(|(f, b)| decode_entry(f, &b))
        .collect())
}

/// The delete request for one entry.
pub fn delete_payload(e: &Entry) -> Vec<u8> {
    let mut a = Attrs::new();
    a.put(CTA_TUPLE_ORIG | NLA_F_NESTED, &e.orig_raw);
    if let Some(z) = &e.zone {
        a.put(CTA_ZONE, z);
    }
    a.bytes().to_vec()
}

/// Deletes the entries of `family` whose original tuple has protocol `proto` and destination
/// port `dport`. Entries that vanish meanwhile (ENOENT) are fine. Returns how many were deleted.
pub fn delete_by_dport(family_v6: bool, proto: u8, dport: u16) -> Result<usize> {
    let family = if family_v6 { 10 } else { 2 };
    let mut s = NftSocket::cached()?;
    let entries = list(&mut s, family).context("listing conntrack entries")?;
    let mut n = 0;
    for e in entries.iter().filter(|e| e.orig.proto == proto && e.orig.dport == dport) {
        match s.request(ct_type(IPCTNL_MSG_CT_DELETE), family, &delete_payload(e), "delete conntrack entry") {
            Ok(()) => n += 1,
            Err(err) if err.is_not_found() => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuple_roundtrip() {
        let mut a = Attrs::new();
        a.nested(CTA_TUPLE_IP, |i| {
            i.put(CTA_IP_V4_SRC, &[198, 18, 0, 2]).put(CTA_IP_V4_DST, &[198, 18, 1, 2]);
        });
        a.nested(CTA_TUPLE_PROTO, |p| {
            p.put(CTA_PROTO_NUM, &[17])
                .put(CTA_PROTO_SRC_PORT, &1234u16.to_be_bytes())
                .put(CTA_PROTO_DST_PORT, &53u16.to_be_bytes());
        });
        let t = decode_tuple(a.bytes());
        assert_eq!(
            t,
            Tuple {
                src: Some("198.18.0.2".parse().unwrap()),
                dst: Some("198.18.1.2".parse().unwrap()),
                proto: 17,
                sport: 1234,
                dport: 53
            }
        );
        let mut m = Attrs::new();
        m.put(CTA_TUPLE_ORIG | NLA_F_NESTED, a.bytes());
        let e = decode_entry(2, m.bytes()).unwrap();
        assert_eq!(e.orig, t);
        assert_eq!(delete_payload(&e), m.bytes());
        assert!(decode_entry(2, &[1, 0]).is_none()); // garbage: no panic
    }
}
