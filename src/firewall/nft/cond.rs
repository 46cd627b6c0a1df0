//! Match conditions written in `nft` syntax (portmap's `conditionsV4` / `conditionsV6`), parsed
//! into the expressions `nft` itself sends for them, so that a rule made from the same text by
//! the reference (which hands the text to `nft`) and by us is the same rule in the kernel. The
//! integration test `meta::portmap_nftables_conditions_encode_as_nft_does` compares our rules
//! with `nft --debug=netlink`'s for every form below.
//!
//! Forms (several in a row are ANDed, as in nft). `OP` is optional: `==`/`eq` (the default),
//! `!=`/`ne`, and for ports also `<`/`lt`, `>`/`gt`, `<=`/`le`, `>=`/`ge`:
//! - `ip saddr|daddr OP ADDR[/LEN]`, `ip6 saddr|daddr OP ADDR[/LEN]`, or `LOW-HIGH` (a range, `==` only)
//! - `ip protocol OP P` (IPv4 tables), `ip6 nexthdr OP P` (IPv6 tables), `meta l4proto OP P`; `P`
//!   a name (tcp, udp, sctp, dccp, udplite, icmp, icmpv6 / ipv6-icmp, gre, esp, ah) or a number
//! - `[meta] pkttype OP T` (host / unicast, broadcast, multicast, other)
//! - `tcp|udp|sctp|dccp|udplite|th sport|dport OP PORT`, or `LOW-HIGH` (`==` only)
//! - `[meta] iifname|oifname OP NAME` (`NAME*` matches every name that starts with `NAME`)
//! - `[meta] mark OP N` (decimal or `0x` hex)
//! - `ct state OP S[,S...]` (new, established, related, invalid, untracked): without an operator
//!   any of the states matches (nft's flag match); `==`/`!=` compare the whole value
//! - `fib saddr|daddr type OP T` (unicast, local, broadcast, anycast, multicast, blackhole,
//!   unreachable, prohibit)
//!
//! Anything else (sets `{ … }`, other expressions and statements) is refused with an error
//! that names the token and the forms above; nothing is half-applied.

use super::expr::{
    ct_key, ct_state, match_addr, meta_key, Base, CmpOp, Expr, FIB_F_DADDR, FIB_F_SADDR, FIB_RESULT_ADDRTYPE, REG_1,
};
use crate::cni::CniError;
use anyhow::{bail, Context, Result};
use ipnet::IpNet;
use std::net::IpAddr;

const FORMS: &str = "ip/ip6 saddr/daddr, ip protocol, ip6 nexthdr, meta l4proto, \
                     tcp/udp/sctp/dccp/udplite/th sport/dport, iifname, oifname, mark, pkttype, ct state, \
                     fib saddr/daddr type";

/// The expressions of `conditions` (all entries' tokens, whitespace-separated) for a table of
/// the given family. A condition we cannot encode is an invalid configuration (code 7).
pub fn parse(conditions: &[String], v6: bool) -> Result<Vec<Expr>> {
    let joined = conditions.join(" ");
    let toks: Vec<&str> = joined.split_whitespace().map(|t| t.trim_matches('"')).collect();
    let mut p = Parser { toks, i: 0, v6, out: Vec::new(), stmts: Vec::new(), l4: None };
    let mut all = || -> Result<()> {
        if p.toks.iter().any(|t| t.starts_with('{')) {
            bail!(
                "nft sets {{ … }} in portmap conditions are not among the forms cni-multi encodes (supported: {FORMS})"
            );
        }
        while let Some(t) = p.next() {
            p.one(t)?;
        }
        Ok(())
    };
    match all() {
        Ok(()) => Ok(merge_ports(p.stmts)),
        Err(e) => Err(CniError::config(format!("{e:#}")).into()),
    }
}

/// One statement (one match) and what nft's payload merging makes of it.
struct Stmt {
    exprs: Vec<Expr>,
    merge: Merge,
}

#[derive(Clone, Copy, PartialEq)]
enum Merge {
    /// any other match (meta, ct, fib, addresses, `<`, ranges): passed over, the run goes on
    Skip,
    /// `sport`/`dport` compared (== or !=) with one value: merged with its neighbour field
    Port { offset: u32, op: CmpOp, value: u16 },
}

/// nft merges the comparisons of adjacent transport header fields of a rule (sport and dport,
/// both `==`, into one 4-byte comparison placed where the sport match was, whatever matches are
/// in between; never addresses, ranges or `<`). nft 1.0 also merges
/// two `!=` the same way, which then matches when either port differs; we keep the two `!=`
/// comparisons that were written.
fn merge_ports(mut stmts: Vec<Stmt>) -> Vec<Expr> {
    let mut gone = vec![false; stmts.len()];
    let mut ports: Vec<(usize, u32, CmpOp, u16)> = stmts
        .iter()
        .enumerate()
        .filter_map(|(i, s)| match s.merge {
            Merge::Port { offset, op, value } => Some((i, offset, op, value)),
            Merge::Skip => None,
        })
        .collect();
    ports.sort_by_key(|p| p.1);
    let mut k = 0;
    while let (Some(&(a, oa, opa, va)), Some(&(b, ob, opb, vb))) = (ports.get(k), ports.get(k + 1)) {
        if oa + 2 == ob && opa == CmpOp::Eq && opb == CmpOp::Eq {
            let mut data = va.to_be_bytes().to_vec();
            data.extend(vb.to_be_bytes());
            if let Some(s) = stmts.get_mut(a) {
                s.exprs = vec![
                    Expr::Payload { dreg: REG_1, base: Base::Transport, offset: oa, len: 4 },
                    Expr::Cmp { sreg: REG_1, op: CmpOp::Eq, data },
                ];
            }
            if let Some(g) = gone.get_mut(b) {
                *g = true;
            }
            k += 2;
        } else {
            k += 1;
        }
    }
    stmts.into_iter().zip(gone).filter(|(_, g)| !g).flat_map(|(s, _)| s.exprs).collect()
}

/// An operator as written: `None` when there was none (nft's implicit match).
fn op_of(tok: &str) -> Option<CmpOp> {
    Some(match tok {
        "==" | "eq" => CmpOp::Eq,
        "!=" | "ne" => CmpOp::Neq,
        "<" | "lt" => CmpOp::Lt,
        ">" | "gt" => CmpOp::Gt,
        "<=" | "le" => CmpOp::Lte,
        ">=" | "ge" => CmpOp::Gte,
        _ => return None,
    })
}

struct Parser<'a> {
    toks: Vec<&'a str>,
    i: usize,
    v6: bool,
    /// the expressions of the statement being parsed
    out: Vec<Expr>,
    stmts: Vec<Stmt>,
    /// the transport protocol an earlier `==` match established (nft's protocol context): a port
    /// match of that protocol needs no `meta l4proto` of its own
    l4: Option<u8>,
}

impl<'a> Parser<'a> {
    fn next(&mut self) -> Option<&'a str> {
        let t = self.toks.get(self.i).copied();
        self.i += 1;
        t
    }

    fn peek(&self) -> Option<&'a str> {
        self.toks.get(self.i).copied()
    }

    /// The value after an optional operator: (operator as written, value).
    fn op_value(&mut self, what: &str) -> Result<(Option<CmpOp>, &'a str)> {
        let op = self.peek().and_then(op_of);
        if op.is_some() {
            self.i += 1;
        }
        match self.next() {
            Some(v) => Ok((op, v)),
            None => bail!("portmap condition {what:?} has no value"),
        }
    }

    /// `==` or `!=` (or none): the operators every form takes.
    fn eq_or_neq(op: Option<CmpOp>, what: &str) -> Result<CmpOp> {
        match op.unwrap_or(CmpOp::Eq) {
            o @ (CmpOp::Eq | CmpOp::Neq) => Ok(o),
            _ => bail!("portmap condition {what:?} takes only == or !="),
        }
    }

    fn cmp(&mut self, op: CmpOp, data: Vec<u8>) {
        self.out.push(Expr::Cmp { sreg: REG_1, op, data });
    }

    /// The statement parsed so far is complete.
    fn end(&mut self, merge: Merge) {
        let exprs = std::mem::take(&mut self.out);
        self.stmts.push(Stmt { exprs, merge });
    }

    /// `meta l4proto == P` or `ip protocol == P` was matched: the protocol context.
    fn context(&mut self, op: CmpOp, p: u8) {
        if op == CmpOp::Eq {
            self.l4 = Some(p);
        }
    }

    fn one(&mut self, t: &'a str) -> Result<()> {
        match t {
            "ip" | "ip6" => self.ip(t),
            "meta" => match self.next() {
                Some(k @ ("iifname" | "oifname")) => self.ifname(k),
                Some("mark") => self.mark(),
                Some("pkttype") => self.pkttype(),
                Some("l4proto") => {
                    let (op, v) = self.op_value("meta l4proto")?;
                    let op = Self::eq_or_neq(op, "meta l4proto")?;
                    let p = proto(v)?;
                    self.out.push(Expr::Meta { key: meta_key::L4PROTO, dreg: REG_1 });
                    self.cmp(op, vec![p]);
                    self.context(op, p);
                    self.end(Merge::Skip);
                    Ok(())
                }
                other => bail!("unsupported nft portmap condition: meta {} (supported: {FORMS})", other.unwrap_or("")),
            },
            "iifname" | "oifname" => self.ifname(t),
            "mark" => self.mark(),
            "pkttype" => self.pkttype(),
            "tcp" | "udp" | "sctp" | "dccp" | "udplite" | "th" => self.port(t),
            "ct" => self.ct(),
            "fib" => self.fib(),
            other => bail!("unsupported nft portmap condition at {other:?} (supported: {FORMS})"),
        }
    }

    fn ip(&mut self, fam: &str) -> Result<()> {
        if (fam == "ip6") != self.v6 {
            bail!("portmap condition {fam:?} does not match the address family of this table");
        }
        let field = self.next().unwrap_or_default();
        let src = match field {
            "saddr" => true,
            "daddr" => false,
            "protocol" | "nexthdr" if (fam == "ip") == (field == "protocol") => {
                let what = format!("{fam} {field}");
                let (op, v) = self.op_value(&what)?;
                let op = Self::eq_or_neq(op, &what)?;
                let p = proto(v)?;
                let offset = if fam == "ip" { 9 } else { 6 };
                self.out.push(Expr::Payload { dreg: REG_1, base: Base::Network, offset, len: 1 });
                self.cmp(op, vec![p]);
                self.context(op, p);
                self.end(Merge::Skip);
                return Ok(());
            }
            other => bail!("unsupported nft portmap condition: {fam} {other} (supported: {FORMS})"),
        };
        let what = format!("{fam} {field}");
        let (op, val) = self.op_value(&what)?;
        let op = Self::eq_or_neq(op, &what)?;
        let family_ok = |a: &IpAddr| a.is_ipv6() == self.v6;
        if let Some((lo, hi)) = val.split_once('-') {
            let (lo, hi) = (addr(lo, val)?, addr(hi, val)?);
            if op != CmpOp::Eq || !family_ok(&lo) || !family_ok(&hi) || octets(lo) > octets(hi) {
                bail!("bad address range {val:?} in portmap condition (== only, low-high, the table's family)");
            }
            let offset = match (self.v6, src) {
                (false, true) => 12,
                (false, false) => 16,
                (true, true) => 8,
                (true, false) => 24,
            };
            let len = if self.v6 { 16 } else { 4 };
            self.out.push(Expr::Payload { dreg: REG_1, base: Base::Network, offset, len });
            self.cmp(CmpOp::Gte, octets(lo));
            self.cmp(CmpOp::Lte, octets(hi));
            self.end(Merge::Skip);
            return Ok(());
        }
        let net: IpNet = match val.parse::<IpNet>() {
            Ok(n) => n,
            Err(_) => addr(val, val)?.into(),
        };
        if !family_ok(&net.addr()) {
            bail!("portmap condition address {val} does not match the table's family");
        }
        self.out.extend(match_addr(src, net.network(), net.prefix_len(), op));
        self.end(Merge::Skip);
        Ok(())
    }

    /// `iifname|oifname [op] NAME[*]`: the name padded to IFNAMSIZ, or the bare prefix for `*`.
    fn ifname(&mut self, key: &str) -> Result<()> {
        let (op, name) = self.op_value(key)?;
        let op = Self::eq_or_neq(op, key)?;
        let (base, wildcard) = match name.strip_suffix('*') {
            Some(b) => (b, true),
            None => (name, false),
        };
        if base.is_empty() || base.len() > 15 || base.contains(['/', '*']) || base.contains(char::is_whitespace) {
            bail!("bad interface name {name:?} in portmap condition");
        }
        let mut data = base.as_bytes().to_vec();
        if !wildcard {
            data.resize(16, 0);
        }
        let key = if key == "iifname" { meta_key::IIFNAME } else { meta_key::OIFNAME };
        self.out.push(Expr::Meta { key, dreg: REG_1 });
        self.cmp(op, data);
        self.end(Merge::Skip);
        Ok(())
    }

    fn mark(&mut self) -> Result<()> {
        let (op, val) = self.op_value("mark")?;
        let op = Self::eq_or_neq(op, "mark")?;
        let n = number(val).with_context(|| format!("bad mark {val:?} in portmap condition"))?;
        self.out.push(Expr::Meta { key: meta_key::MARK, dreg: REG_1 });
        self.cmp(op, n.to_ne_bytes().to_vec());
        self.end(Merge::Skip);
        Ok(())
    }

    fn pkttype(&mut self) -> Result<()> {
        let (op, val) = self.op_value("pkttype")?;
        let op = Self::eq_or_neq(op, "pkttype")?;
        let t: u8 = match val {
            "host" | "unicast" => 0,
            "broadcast" => 1,
            "multicast" => 2,
            "other" => 3,
            other => bail!("unknown packet type {other:?} in portmap condition"),
        };
        self.out.push(Expr::Meta { key: meta_key::PKTTYPE, dreg: REG_1 });
        self.cmp(op, vec![t]);
        self.end(Merge::Skip);
        Ok(())
    }

    /// `tcp dport 80` is `meta l4proto tcp` + the port; `th dport` is the port alone.
    fn port(&mut self, proto_name: &'a str) -> Result<()> {
        let offset = match self.next() {
            Some("sport") => 0,
            Some("dport") => 2,
            other => {
                bail!("unsupported nft portmap condition: {proto_name} {} (supported: {FORMS})", other.unwrap_or(""))
            }
        };
        let what = format!("{proto_name} {}", if offset == 0 { "sport" } else { "dport" });
        if proto_name != "th" {
            let p = proto(proto_name)?;
            match self.l4 {
                Some(have) if have == p => {}
                Some(have) => bail!("conflicting protocols in portmap condition: {have} vs. {proto_name}"),
                None => {
                    self.out.push(Expr::Meta { key: meta_key::L4PROTO, dreg: REG_1 });
                    self.cmp(CmpOp::Eq, vec![p]);
                    self.l4 = Some(p);
                    self.end(Merge::Skip);
                }
            }
        }
        let (op, val) = self.op_value(&what)?;
        self.out.push(Expr::Payload { dreg: REG_1, base: Base::Transport, offset, len: 2 });
        if let Some((lo, hi)) = val.split_once('-') {
            let (lo, hi) = (port_number(lo, val)?, port_number(hi, val)?);
            if op.is_some_and(|o| o != CmpOp::Eq) || lo > hi {
                bail!("bad port range {val:?} in portmap condition (== only, low-high)");
            }
            self.cmp(CmpOp::Gte, lo.to_be_bytes().to_vec());
            self.cmp(CmpOp::Lte, hi.to_be_bytes().to_vec());
            self.end(Merge::Skip);
        } else {
            let value = port_number(val, val)?;
            let op = op.unwrap_or(CmpOp::Eq);
            self.cmp(op, value.to_be_bytes().to_vec());
            let merge =
                if matches!(op, CmpOp::Eq | CmpOp::Neq) { Merge::Port { offset, op, value } } else { Merge::Skip };
            self.end(merge);
        }
        Ok(())
    }

    /// `ct state S,S`: without an operator any of the bits (bitwise and, != 0); with `==` or
    /// `!=` the value itself, as nft 1.0 encodes them.
    fn ct(&mut self) -> Result<()> {
        if self.next() != Some("state") {
            bail!(
                "unsupported nft portmap condition: ct {} (supported: {FORMS})",
                self.toks.get(self.i - 1).unwrap_or(&"")
            );
        }
        let (op, first) = self.op_value("ct state")?;
        let op = op.map(|o| Self::eq_or_neq(Some(o), "ct state")).transpose()?;
        // `new,established`, `new, established` and `new ,established` are one list
        let mut list = first.to_string();
        while list.ends_with(',') || self.peek().is_some_and(|t| t.starts_with(',')) {
            match self.next() {
                Some(t) => list.push_str(t),
                None => break,
            }
        }
        let mut bits = 0u32;
        for s in list.split(',').filter(|s| !s.is_empty()) {
            bits |= match s {
                "invalid" => ct_state::INVALID,
                "established" => ct_state::ESTABLISHED,
                "related" => ct_state::RELATED,
                "new" => ct_state::NEW,
                "untracked" => ct_state::UNTRACKED,
                other => bail!("unknown ct state {other:?} in portmap condition"),
            };
        }
        if bits == 0 {
            bail!("portmap condition \"ct state\" has no state");
        }
        self.out.push(Expr::Ct { key: ct_key::STATE, dreg: REG_1 });
        match op {
            None => {
                self.out.push(Expr::Bitwise {
                    sreg: REG_1,
                    dreg: REG_1,
                    mask: bits.to_ne_bytes().to_vec(),
                    xor: vec![0; 4],
                });
                self.cmp(CmpOp::Neq, vec![0; 4]);
            }
            Some(o) => self.cmp(o, bits.to_ne_bytes().to_vec()),
        }
        self.end(Merge::Skip);
        Ok(())
    }

    fn fib(&mut self) -> Result<()> {
        let flags = match self.next() {
            Some("saddr") => FIB_F_SADDR,
            Some("daddr") => FIB_F_DADDR,
            other => bail!("unsupported nft portmap condition: fib {} (supported: {FORMS})", other.unwrap_or("")),
        };
        if self.next() != Some("type") {
            bail!("unsupported nft portmap condition: fib without \"type\" (supported: {FORMS})");
        }
        let (op, val) = self.op_value("fib type")?;
        let op = Self::eq_or_neq(op, "fib type")?;
        let rtn: u32 = match val {
            "unspec" => 0,
            "unicast" => 1,
            "local" => 2,
            "broadcast" => 3,
            "anycast" => 4,
            "multicast" => 5,
            "blackhole" => 6,
            "unreachable" => 7,
            "prohibit" => 8,
            other => bail!("unknown fib address type {other:?} in portmap condition"),
        };
        self.out.push(Expr::Fib { flags, result: FIB_RESULT_ADDRTYPE, dreg: REG_1 });
        self.cmp(op, rtn.to_ne_bytes().to_vec());
        self.end(Merge::Skip);
        Ok(())
    }
}

fn addr(s: &str, whole: &str) -> Result<IpAddr> {
    s.parse::<IpAddr>().with_context(|| format!("bad address {whole:?} in portmap condition"))
}

fn octets(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn number(s: &str) -> Result<u32> {
    Ok(match s.strip_prefix("0x") {
        Some(h) => u32::from_str_radix(h, 16)?,
        None => s.parse::<u32>()?,
    })
}

fn port_number(s: &str, whole: &str) -> Result<u16> {
    s.parse::<u16>().with_context(|| format!("bad port {whole:?} in portmap condition"))
}

/// An IP protocol by nft's name or number.
fn proto(s: &str) -> Result<u8> {
    crate::firewall::ip_proto_number(s).with_context(|| format!("unknown protocol {s:?} in portmap condition"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &str, v6: bool) -> Vec<Expr> {
        parse(&[s.to_string()], v6).unwrap_or_else(|e| panic!("{s}: {e:#}"))
    }

    fn cmp(op: CmpOp, data: &[u8]) -> Expr {
        Expr::Cmp { sreg: REG_1, op, data: data.to_vec() }
    }

    /// Each form as `nft --debug=netlink` (nft 1.0.6) shows it.
    #[test]
    fn forms_encode_as_nft_does() {
        let meta = |key| Expr::Meta { key, dreg: REG_1 };
        let pl = |base, offset, len| Expr::Payload { dreg: REG_1, base, offset, len };
        assert_eq!(one("iifname \"eth*\"", false), [meta(meta_key::IIFNAME), cmp(CmpOp::Eq, b"eth")]);
        let mut eth0 = b"eth0".to_vec();
        eth0.resize(16, 0);
        assert_eq!(one("meta iifname != eth0", false), [meta(meta_key::IIFNAME), cmp(CmpOp::Neq, &eth0)]);
        assert_eq!(one("meta l4proto tcp", true), [meta(meta_key::L4PROTO), cmp(CmpOp::Eq, &[6])]);
        assert_eq!(one("ip protocol != udp", false), [pl(Base::Network, 9, 1), cmp(CmpOp::Neq, &[17])]);
        assert_eq!(
            one("tcp dport < 1024", false),
            [meta(meta_key::L4PROTO), cmp(CmpOp::Eq, &[6]), pl(Base::Transport, 2, 2), cmp(CmpOp::Lt, &[4, 0])]
        );
        assert_eq!(
            one("udp sport 1-2", true),
            [
                meta(meta_key::L4PROTO),
                cmp(CmpOp::Eq, &[17]),
                pl(Base::Transport, 0, 2),
                cmp(CmpOp::Gte, &[0, 1]),
                cmp(CmpOp::Lte, &[0, 2])
            ]
        );
        assert_eq!(one("th dport 8080", false), [pl(Base::Transport, 2, 2), cmp(CmpOp::Eq, &[0x1f, 0x90])]);
        let ct = Expr::Ct { key: ct_key::STATE, dreg: REG_1 };
        let bw = |m: u32| Expr::Bitwise { sreg: REG_1, dreg: REG_1, mask: m.to_ne_bytes().to_vec(), xor: vec![0; 4] };
        assert_eq!(one("ct state new", false), [ct.clone(), bw(8), cmp(CmpOp::Neq, &[0; 4])]);
        assert_eq!(one("ct state established, related", false), [ct.clone(), bw(6), cmp(CmpOp::Neq, &[0; 4])]);
        assert_eq!(one("ct state != established,related", false), [ct.clone(), cmp(CmpOp::Neq, &6u32.to_ne_bytes())]);
        assert_eq!(one("ct state == new", false), [ct, cmp(CmpOp::Eq, &8u32.to_ne_bytes())]);
        let fib = |flags| Expr::Fib { flags, result: FIB_RESULT_ADDRTYPE, dreg: REG_1 };
        assert_eq!(one("fib daddr type != local", false), [fib(FIB_F_DADDR), cmp(CmpOp::Neq, &2u32.to_ne_bytes())]);
        assert_eq!(one("fib saddr type unicast", false), [fib(FIB_F_SADDR), cmp(CmpOp::Eq, &1u32.to_ne_bytes())]);
        assert_eq!(one("mark 0x10", false), [meta(meta_key::MARK), cmp(CmpOp::Eq, &16u32.to_ne_bytes())]);
        assert_eq!(one("meta mark != 7", false), [meta(meta_key::MARK), cmp(CmpOp::Neq, &7u32.to_ne_bytes())]);
        assert_eq!(
            one("ip daddr 198.18.0.0-198.18.0.9", false),
            [pl(Base::Network, 16, 4), cmp(CmpOp::Gte, &[198, 18, 0, 0]), cmp(CmpOp::Lte, &[198, 18, 0, 9])]
        );
        assert_eq!(one("ip6 saddr fd00::/8", true), [pl(Base::Network, 8, 1), cmp(CmpOp::Eq, &[0xfd])]);
        assert_eq!(one("ip6 nexthdr != udp", true), [pl(Base::Network, 6, 1), cmp(CmpOp::Neq, &[17])]);
        assert_eq!(one("meta pkttype != multicast", true), [meta(meta_key::PKTTYPE), cmp(CmpOp::Neq, &[2])]);
        assert_eq!(one("pkttype host", false), [meta(meta_key::PKTTYPE), cmp(CmpOp::Eq, &[0])]);
        // several conditions are ANDed in order, across entries and within one
        let both = parse(&["ip saddr 198.18.0.0/15 iifname eth1".into(), "tcp dport 80".into()], false).unwrap();
        assert_eq!(both.len(), 3 + 2 + 4, "{both:?}");
    }

    /// nft's protocol context and payload merging, as `nft --debug=netlink` shows them.
    #[test]
    fn protocol_context_and_port_merging_follow_nft() {
        let meta = |key| Expr::Meta { key, dreg: REG_1 };
        let pl = |offset, len| Expr::Payload { dreg: REG_1, base: Base::Transport, offset, len };
        let dep = [meta(meta_key::L4PROTO), cmp(CmpOp::Eq, &[6])];
        // an earlier `meta l4proto tcp` or `ip protocol tcp` is the port match's dependency
        assert_eq!(
            one("meta l4proto tcp tcp dport 80", false),
            [&dep[..], &[pl(2, 2), cmp(CmpOp::Eq, &[0, 80])]].concat()
        );
        let ipp = Expr::Payload { dreg: REG_1, base: Base::Network, offset: 9, len: 1 };
        assert_eq!(
            one("ip protocol tcp tcp dport 80", false),
            [ipp, cmp(CmpOp::Eq, &[6]), pl(2, 2), cmp(CmpOp::Eq, &[0, 80])]
        );
        let nh = Expr::Payload { dreg: REG_1, base: Base::Network, offset: 6, len: 1 };
        assert_eq!(
            one("ip6 nexthdr tcp tcp dport 80", true),
            [nh, cmp(CmpOp::Eq, &[6]), pl(2, 2), cmp(CmpOp::Eq, &[0, 80])]
        );
        // `!=` sets no context
        assert_eq!(one("meta l4proto != tcp tcp dport 80", false).len(), 2 + 2 + 2);
        assert!(parse(&["meta l4proto udp tcp dport 80".into()], false).is_err(), "conflicting protocols");
        assert!(parse(&["tcp dport 80 udp dport 1".into()], false).is_err(), "conflicting protocols");
        // sport and dport merged into one 4-byte load where sport was, over other matches
        let merged = [pl(0, 4), cmp(CmpOp::Eq, &[0, 1, 0, 2])];
        assert_eq!(one("tcp dport 2 tcp sport 1", false), [&dep[..], &merged[..]].concat());
        let mark = [meta(meta_key::MARK), cmp(CmpOp::Eq, &1u32.to_ne_bytes())];
        assert_eq!(one("tcp dport 2 mark 1 tcp sport 1", false), [&dep[..], &mark[..], &merged[..]].concat());
        assert_eq!(one("th sport 1 tcp dport 2", false), [&merged[..], &dep[..]].concat());
        // not merged: a range, `<`, a repeated field; and two `!=` (nft 1.0 merges those into one
        // comparison that matches when either port differs, not what was written)
        assert_eq!(one("tcp sport 1-5 tcp dport 2", false).len(), 2 + 3 + 2);
        assert_eq!(one("tcp sport 1 tcp dport < 2", false).len(), 2 + 2 + 2);
        assert_eq!(one("tcp sport 1 tcp sport 2", false).len(), 2 + 2 + 2);
        assert_eq!(one("tcp sport != 1 tcp dport != 2", false).len(), 2 + 2 + 2);
    }

    /// Token soup from the forms' vocabulary, cut anywhere: an answer (rules or an error), never a panic.
    #[test]
    fn any_token_sequence_is_answered() {
        let words = [
            "ip",
            "ip6",
            "saddr",
            "daddr",
            "protocol",
            "meta",
            "l4proto",
            "mark",
            "iifname",
            "oifname",
            "tcp",
            "udp",
            "th",
            "sport",
            "dport",
            "ct",
            "state",
            "fib",
            "type",
            "local",
            "new,",
            "established",
            "==",
            "!=",
            "<",
            ">=",
            "1-5",
            "5-1",
            "80",
            "0x10",
            "198.18.0.1",
            "198.18.0.0/15",
            "fd00::/8",
            "198.18.0.1-198.18.0.9",
            "eth*",
            "*",
            "\"\"",
            "{",
            "}",
            ",",
            "-",
            "65536",
            "tcp,",
            "nexthdr",
            "pkttype",
            "host",
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let mut toks = Vec::new();
            for _ in 0..(x % 7) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                toks.push(words[(x % words.len() as u64) as usize]);
            }
            x = x.wrapping_add(1);
            let _ = parse(&[toks.join(" ")], x.is_multiple_of(2));
        }
    }

    #[test]
    fn what_nft_would_not_take_or_we_do_not_encode_is_refused() {
        for bad in [
            "ip6 saddr fd00::1",
            "ip saddr fd00::1",
            "ip saddr nonsense",
            "ip saddr { 198.18.0.1, 198.18.0.2 }",
            "ip saddr != 198.18.0.1-198.18.0.2",
            "ip saddr 198.18.0.9-198.18.0.1",
            "ip saddr < 198.18.0.1",
            "tcp dport 2-1",
            "tcp dport 70000",
            "tcp dport",
            "tcp flags syn",
            "ct state bogus",
            "ct mark 1",
            "fib daddr oif",
            "fib daddr type nowhere",
            "iifname \"\"",
            "oifname *",
            "iifname 0123456789abcdefg",
            "mark lots",
            "meta nfproto ipv4",
            "counter",
            "accept",
        ] {
            let e = parse(&[bad.into()], false).expect_err(bad);
            assert_eq!(CniError::from_anyhow(&e).code, crate::cni::code::INVALID_CONFIG, "{bad}: {e:#}");
        }
        assert!(parse(&["ip protocol tcp".into()], true).is_err(), "ip protocol in an ip6 table");
        assert!(parse(&["ip6 nexthdr tcp".into()], false).is_err(), "ip6 nexthdr in an ip table");
        assert!(parse(&["ip nexthdr tcp".into()], false).is_err());
        assert!(parse(&["ip6 protocol tcp".into()], true).is_err());
        assert!(parse(&["pkttype loopback".into()], false).is_err());
    }
}
