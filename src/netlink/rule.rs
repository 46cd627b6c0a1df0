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

/// A rule as `ip rule` prints it (`not from 198.18.0.2 lookup 100`, `from all`), for messages.
pub fn describe(r: &RuleSpec) -> String {
    let mut s = String::new();
    if r.invert {
        s.push_str("not ");
    }
    // a host prefix prints as the bare address, as `ip rule` does
    let net = |n: &IpNet| if n.prefix_len() == n.max_prefix_len() { n.addr().to_string() } else { n.to_string() };
    s.push_str(&format!("from {}", r.src.as_ref().map_or_else(|| "all".to_string(), net)));
    if let Some(d) = &r.dst {
        s.push_str(&format!(" to {}", net(d)));
    }
    if let Some(i) = &r.iif {
        s.push_str(&format!(" iif {i}"));
    }
    if let Some(o) = &r.oif {
        s.push_str(&format!(" oif {o}"));
    }
    if let Some(m) = r.fwmark {
        match r.fwmask {
            Some(k) => s.push_str(&format!(" fwmark {m:#x}/{k:#x}")),
            None => s.push_str(&format!(" fwmark {m:#x}")),
        }
    }
    if let Some(t) = r.table {
        s.push_str(&format!(" lookup {t}"));
    }
    if let Some(p) = r.priority {
        s.push_str(&format!(" pref {p}"));
    }
    s
}

impl Netlink {
    pub fn rule_add(&mut self, r: &RuleSpec) -> anyhow::Result<()> {
        self.ack(rule_msg(true, r)).with_context(|| format!("failed to add rule {}", describe(r)))
    }

    /// Delete the first rule matching every field that is set.
    pub fn rule_del(&mut self, r: &RuleSpec) -> anyhow::Result<()> {
        self.ack(rule_msg(false, r)).with_context(|| format!("failed to delete rule {}", describe(r)))
    }

    pub fn rules(&mut self, family: Family) -> anyhow::Result<Vec<RuleSpec>> {
        let mut hdr = [0u8; 12];
        hdr[0] = family.af();
        let req = Msg::new(RTM_GETRULE, NLM_F_REQUEST | NLM_F_DUMP, &hdr).finish();
        let replies = self.dump(req).context("failed to list rules")?;
        Ok(replies.iter().filter(|r| r.ty == RTM_NEWRULE).filter_map(|r| parse_rule(&r.payload)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Messages name a rule as `ip rule` prints it, never as a Rust struct (regression: `failed
    /// to add rule RuleSpec { family: V6, … }` reached the CNI error).
    #[test]
    fn rules_are_described_as_ip_rule_prints_them() {
        let mut r = RuleSpec::new(Family::V6);
        assert_eq!(describe(&r), "from all");
        r.src = Some("fd00::2/128".parse().unwrap());
        r.table = Some(101);
        assert_eq!(describe(&r), "from fd00::2 lookup 101");
        r.invert = true;
        r.dst = Some("fd00:1::/64".parse().unwrap());
        r.iif = Some("eth0".into());
        r.fwmark = Some(0x10);
        r.fwmask = Some(0xff);
        r.priority = Some(7);
        assert_eq!(describe(&r), "not from fd00::2 to fd00:1::/64 iif eth0 fwmark 0x10/0xff lookup 101 pref 7");
    }
}
