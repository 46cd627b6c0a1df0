//! Policy routing rules (`ip rule`).

use anyhow::Context;
use ipnet::IpNet;

use super::addr::Family;
use super::consts::*;
use super::socket::Netlink;
use super::wire::{attrs, get_ip, get_str, get_u32, Msg};

/// A rule to add/delete, or one read back. On delete, unset fields match any rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSpec {
    pub family: Family,
    pub priority: Option<u32>,
    /// Lookup table; tables over 255 go in FRA_TABLE.
    pub table: Option<u32>,
    pub src: Option<IpNet>,
    pub dst: Option<IpNet>,
    pub fwmark: Option<u32>,
    pub fwmask: Option<u32>,
    pub iif: Option<String>,
    pub oif: Option<String>,
    /// `not`: the selector is inverted.
    pub invert: bool,
}

impl RuleSpec {
    pub fn new(family: Family) -> RuleSpec {
        RuleSpec {
            family,
            priority: None,
            table: None,
            src: None,
            dst: None,
            fwmark: None,
            fwmask: None,
            iif: None,
            oif: None,
            invert: false,
        }
    }
}

/// Attribute order follows `ip rule add to D from S iif I oif O fwmark M/K table T pref P`.
pub(crate) fn rule_msg(add: bool, r: &RuleSpec) -> Vec<u8> {
    let (ty, flags) = if add {
        (RTM_NEWRULE, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)
    } else {
        (RTM_DELRULE, NLM_F_REQUEST | NLM_F_ACK)
    };
    let mut hdr = [0u8; 12];
    hdr[0] = r.family.af();
    hdr[1] = r.dst.map_or(0, |d| d.prefix_len());
    hdr[2] = r.src.map_or(0, |s| s.prefix_len());
    let table = r.table.unwrap_or(0);
    hdr[4] = u8::try_from(table).unwrap_or(RT_TABLE_UNSPEC);
    hdr[7] = if add { FR_ACT_TO_TBL } else { 0 };
    if r.invert {
        hdr[8..12].copy_from_slice(&FIB_RULE_INVERT.to_ne_bytes());
    }
    let mut m = Msg::new(ty, flags, &hdr);
    if let Some(d) = r.dst {
        m.put_ip(FRA_DST, d.trunc().addr());
    }
    if let Some(s) = r.src {
        m.put_ip(FRA_SRC, s.trunc().addr());
    }
    if let Some(i) = &r.iif {
        m.put_str(FRA_IIFNAME, i);
    }
    if let Some(o) = &r.oif {
        m.put_str(FRA_OIFNAME, o);
    }
    if let Some(mark) = r.fwmark {
        m.put_u32(FRA_FWMARK, mark);
    }
    if let Some(mask) = r.fwmask {
        m.put_u32(FRA_FWMASK, mask);
    }
    if table > 255 {
        m.put_u32(FRA_TABLE, table);
    }
    if let Some(p) = r.priority {
        m.put_u32(FRA_PRIORITY, p);
    }
    m.finish()
}

pub(crate) fn parse_rule(p: &[u8]) -> Option<RuleSpec> {
    let family = if *p.first()? == AF_INET6 { Family::V6 } else { Family::V4 };
    let (dst_len, src_len, table8) = (*p.get(1)?, *p.get(2)?, *p.get(4)?);
    let flags = get_u32(p.get(8..)?)?;
    let mut r = RuleSpec::new(family);
    r.invert = flags & FIB_RULE_INVERT != 0;
    r.table = Some(u32::from(table8)).filter(|&t| t != 0);
    let net = |v: &[u8], len: u8| get_ip(v).and_then(|ip| IpNet::new(ip, len).ok());
    for (ty, v) in attrs(p.get(12..)?) {
        match ty {
            FRA_DST => r.dst = net(v, dst_len),
            FRA_SRC => r.src = net(v, src_len),
            FRA_IIFNAME => r.iif = Some(get_str(v)),
            FRA_OIFNAME => r.oif = Some(get_str(v)),
            FRA_FWMARK => r.fwmark = get_u32(v),
            FRA_FWMASK => r.fwmask = get_u32(v),
            FRA_TABLE => r.table = get_u32(v),
            FRA_PRIORITY => r.priority = get_u32(v),
            _ => {}
        }
    }
    Some(r)
}

impl Netlink {
    pub fn rule_add(&mut self, r: &RuleSpec) -> anyhow::Result<()> {
        self.ack(rule_msg(true, r)).with_context(|| format!("failed to add rule {r:?}"))
    }

    /// Delete the first rule matching every field that is set.
    pub fn rule_del(&mut self, r: &RuleSpec) -> anyhow::Result<()> {
        self.ack(rule_msg(false, r)).with_context(|| format!("failed to delete rule {r:?}"))
    }

    pub fn rules(&mut self, family: Family) -> anyhow::Result<Vec<RuleSpec>> {
        let mut hdr = [0u8; 12];
        hdr[0] = family.af();
        let req = Msg::new(RTM_GETRULE, NLM_F_REQUEST | NLM_F_DUMP, &hdr).finish();
        let replies = self.dump(req).context("failed to list rules")?;
        Ok(replies.iter().filter(|r| r.ty == RTM_NEWRULE).filter_map(|r| parse_rule(&r.payload)).collect())
    }
}
