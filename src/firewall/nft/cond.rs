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
//! A value may be an anonymous set, `{ V, V, ... }` (`==` or `!=`), for addresses (single,
//! prefix or range), ports (single or range), protocols, interface names (without `*`), marks,
//! packet types, ct states and fib address types: encoded as nft encodes it, a constant set
//! created with the rule (ranges as nft's interval elements, merged and sorted) and a `lookup`;
//! a set of one element is that element.
//!
//! Anything else (nested and named sets, maps, concatenations, other expressions and
//! statements) is refused with an error that names the token and the forms above; nothing is
//! half-applied.

use super::expr::{
    ct_key, ct_state, match_addr, meta_key, Base, CmpOp, Expr, FIB_F_DADDR, FIB_F_SADDR, FIB_RESULT_ADDRTYPE, REG_1,
};
use super::{datatype, AnonSet, SetElem, ELEM_UDATA_OPEN, SET_ELEM_INTERVAL_END};
use crate::cni::CniError;
use anyhow::{bail, Context, Result};
use ipnet::IpNet;
use std::net::IpAddr;

const FORMS: &str = "ip/ip6 saddr/daddr, ip protocol, ip6 nexthdr, meta l4proto, \
                     tcp/udp/sctp/dccp/udplite/th sport/dport, iifname, oifname, mark, pkttype, ct state, \
                     fib saddr/daddr type; anonymous sets { … } of their values";

/// The expressions of `conditions` (all entries' tokens, whitespace-separated) for a table of
/// the given family. A condition we cannot encode is an invalid configuration (code 7).
pub fn parse(conditions: &[String], v6: bool) -> Result<Vec<Expr>> {
    let joined = conditions.join(" ");
    let owned = match tokens(&joined) {
        Ok(t) => t,
        Err(e) => return Err(CniError::config(format!("{e:#}")).into()),
    };
    let toks: Vec<&str> = owned.iter().map(|t| t.trim_matches('"')).collect();
    let mut p = Parser { toks, i: 0, v6, out: Vec::new(), stmts: Vec::new(), l4: None, l4_set: false };
    let mut all = || -> Result<()> {
        if let Some(t) = p.toks.iter().find(|t| **t == "." || t.starts_with('@') || **t == "map" || **t == "vmap") {
            bail!(
                "{t:?} in portmap conditions: concatenations, named sets and maps are not encoded (supported: {FORMS})"
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

/// The words of the conditions; a set `{ … }` is one word, braces included.
fn tokens(text: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_set = false;
    for c in text.chars() {
        match c {
            '{' if in_set => {
                bail!("nested sets {{ {{ … }} }} in portmap conditions are not encoded (supported: {FORMS})")
            }
            '{' => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                in_set = true;
                cur.push(c);
            }
            '}' if !in_set => bail!("unbalanced \"}}\" in portmap conditions"),
            '}' => {
                cur.push(c);
                out.push(std::mem::take(&mut cur));
                in_set = false;
            }
            c if c.is_whitespace() && !in_set => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if in_set {
        bail!("unbalanced \"{{\" in portmap conditions");
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

/// The elements of a set word `{ a, b-c, "d" }` (None: not a set). No element may be empty.
fn set_items(word: &str) -> Option<Result<Vec<String>>> {
    let inner = word.strip_prefix('{')?.strip_suffix('}')?;
    let items: Vec<String> = inner
        .split(',')
        .map(|i| i.chars().filter(|c| !c.is_whitespace()).collect::<String>().trim_matches('"').to_string())
        .collect();
    // nft takes a trailing comma
    let n = items.len() - usize::from(items.len() > 1 && items.last().is_some_and(String::is_empty));
    let items = items.into_iter().take(n).collect::<Vec<_>>();
    if items.iter().any(String::is_empty) {
        return Some(Err(anyhow::anyhow!("empty element in the set {word:?} of a portmap condition")));
    }
    Some(Ok(items))
}

/// The biggest value of a key of `len` bytes.
fn key_max(len: usize) -> u128 {
    if len >= 16 {
        u128::MAX
    } else {
        (1u128 << (8 * len)) - 1
    }
}

/// `v` as a big-endian key of `len` bytes.
fn key_bytes(v: u128, len: usize) -> Vec<u8> {
    v.to_be_bytes().get(16 - len.min(16)..).unwrap_or_default().to_vec()
}

/// An anonymous set of single values (nft's hash set: the values as written, a repeated one
/// too, which the kernel keeps once).
fn value_set(key_type: u32, key_len: u32, byteorder: u32, keys: Vec<Vec<u8>>) -> AnonSet {
    let elems: Vec<SetElem> =
        keys.into_iter().map(|key| SetElem { key, data: None, flags: None, udata: Vec::new() }).collect();
    let size = u32::try_from(elems.len()).unwrap_or(u32::MAX);
    AnonSet { key_type, key_len, byteorder, interval: false, elems, size }
}

/// An anonymous interval set of big-endian ranges `[lo, hi]`, as nft encodes it: ranges sorted
/// and merged where they overlap or touch; an end element at 0 when the first range starts
/// above 0; each range a start element and an end element at `hi + 1` (none when `hi` is the
/// key's last value: the start then carries the open-interval userdata). nft's size counts two
/// elements per range, plus the element at 0.
fn interval_set(key_type: u32, key_len: u32, mut ranges: Vec<(u128, u128)>) -> AnonSet {
    let len = key_len as usize;
    let max = key_max(len);
    ranges.sort_unstable();
    let mut merged: Vec<(u128, u128)> = Vec::new();
    for (lo, hi) in ranges {
        match merged.last_mut() {
            Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    let elem =
        |v: u128, flags: Option<u32>, udata: Vec<u8>| SetElem { key: key_bytes(v, len), data: None, flags, udata };
    let mut elems = Vec::new();
    let lead = merged.first().is_some_and(|r| r.0 != 0);
    if lead {
        elems.push(elem(0, Some(SET_ELEM_INTERVAL_END), Vec::new()));
    }
    for &(lo, hi) in &merged {
        if hi == max {
            elems.push(elem(lo, None, ELEM_UDATA_OPEN.to_vec()));
        } else {
            elems.push(elem(lo, None, Vec::new()));
            elems.push(elem(hi + 1, Some(SET_ELEM_INTERVAL_END), Vec::new()));
        }
    }
    let size = u32::try_from(2 * merged.len() + usize::from(lead)).unwrap_or(u32::MAX);
    AnonSet { key_type, key_len, byteorder: 2, interval: true, elems, size }
}

/// The address as a number (big-endian octets).
fn addr_value(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// A condition's value.
enum Value {
    One(String),
    /// a set of two elements or more
    Set(Vec<String>),
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
    /// an `==` set of protocols was matched: nft then refuses any protocol's port match
    /// ("conflicting protocols"), as the set's protocols cannot all be that one
    l4_set: bool,
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

    /// A value as written, or a set's elements; a set of one element is that element (nft
    /// matches `{ x }` as `x`).
    fn value(v: &str, what: &str) -> Result<Value> {
        let Some(items) = set_items(v) else { return Ok(Value::One(v.to_string())) };
        let mut items = items?;
        match items.len() {
            0 => bail!("empty set in portmap condition {what:?}"),
            1 => Ok(Value::One(items.remove(0))),
            _ => Ok(Value::Set(items)),
        }
    }

    /// The lookup of a set (`!=`: not in it) ends the statement.
    fn lookup(&mut self, op: CmpOp, set: AnonSet) {
        self.out.push(Expr::AnonLookup { sreg: REG_1, set: Box::new(set), invert: op == CmpOp::Neq });
        self.end(Merge::Skip);
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
                    self.out.push(Expr::Meta { key: meta_key::L4PROTO, dreg: REG_1 });
                    self.protocol("meta l4proto")
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

    /// The value of `ip protocol`, `ip6 nexthdr` or `meta l4proto` (whose load is in `out`):
    /// one protocol (an `==` sets the protocol context) or a set of them.
    fn protocol(&mut self, what: &str) -> Result<()> {
        let (op, v) = self.op_value(what)?;
        let op = Self::eq_or_neq(op, what)?;
        match Self::value(v, what)? {
            Value::One(v) => {
                let p = proto(&v)?;
                self.cmp(op, vec![p]);
                self.context(op, p);
                self.end(Merge::Skip);
            }
            Value::Set(items) => {
                let keys = items.iter().map(|i| proto(i).map(|p| vec![p])).collect::<Result<Vec<_>>>()?;
                self.l4_set |= op == CmpOp::Eq;
                self.lookup(op, value_set(datatype::INET_PROTO, 1, 2, keys));
            }
        }
        Ok(())
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
                let offset = if fam == "ip" { 9 } else { 6 };
                self.out.push(Expr::Payload { dreg: REG_1, base: Base::Network, offset, len: 1 });
                return self.protocol(&format!("{fam} {field}"));
            }
            other => bail!("unsupported nft portmap condition: {fam} {other} (supported: {FORMS})"),
        };
        let what = format!("{fam} {field}");
        let (op, val) = self.op_value(&what)?;
        let op = Self::eq_or_neq(op, &what)?;
        let offset = match (self.v6, src) {
            (false, true) => 12,
            (false, false) => 16,
            (true, true) => 8,
            (true, false) => 24,
        };
        let len: u32 = if self.v6 { 16 } else { 4 };
        let val = match Self::value(val, &what)? {
            Value::One(v) => v,
            Value::Set(items) => {
                let mut ranges = Vec::new();
                let mut single = true;
                for i in &items {
                    let (lo, hi, one) = self.addr_range(i)?;
                    ranges.push((lo, hi));
                    single &= one;
                }
                self.out.push(Expr::Payload { dreg: REG_1, base: Base::Network, offset, len });
                let key_type = if self.v6 { datatype::IPV6_ADDR } else { datatype::IPV4_ADDR };
                let set = if single {
                    value_set(key_type, len, 2, ranges.iter().map(|r| key_bytes(r.0, len as usize)).collect())
                } else {
                    interval_set(key_type, len, ranges)
                };
                self.lookup(op, set);
                return Ok(());
            }
        };
        let val = val.as_str();
        if val.contains('-') {
            let (lo, hi, _) = self.addr_range(val)?;
            if op != CmpOp::Eq {
                bail!("bad address range {val:?} in portmap condition (== only, low-high, the table's family)");
            }
            self.out.push(Expr::Payload { dreg: REG_1, base: Base::Network, offset, len });
            self.cmp(CmpOp::Gte, key_bytes(lo, len as usize));
            self.cmp(CmpOp::Lte, key_bytes(hi, len as usize));
            self.end(Merge::Skip);
            return Ok(());
        }
        let net: IpNet = match val.parse::<IpNet>() {
            Ok(n) => n,
            Err(_) => addr(val, val)?.into(),
        };
        if net.addr().is_ipv6() != self.v6 {
            bail!("portmap condition address {val} does not match the table's family");
        }
        self.out.extend(match_addr(src, net.network(), net.prefix_len(), op));
        self.end(Merge::Skip);
        Ok(())
    }

    /// An address `A`, prefix `A/LEN` or range `LOW-HIGH` of the table's family as the numbers
    /// `[lo, hi]`, and whether it was a single address.
    fn addr_range(&self, val: &str) -> Result<(u128, u128, bool)> {
        let family_ok = |a: &IpAddr| a.is_ipv6() == self.v6;
        if let Some((lo, hi)) = val.split_once('-') {
            let (lo, hi) = (addr(lo, val)?, addr(hi, val)?);
            if !family_ok(&lo) || !family_ok(&hi) || addr_value(lo) > addr_value(hi) {
                bail!("bad address range {val:?} in portmap condition (== only, low-high, the table's family)");
            }
            return Ok((addr_value(lo), addr_value(hi), false));
        }
        let (net, prefix): (IpNet, bool) = match val.parse::<IpNet>() {
            Ok(n) => (n, true),
            Err(_) => (addr(val, val)?.into(), false),
        };
        if !family_ok(&net.addr()) {
            bail!("portmap condition address {val} does not match the table's family");
        }
        Ok((addr_value(net.network()), addr_value(net.broadcast()), !prefix))
    }

    /// `iifname|oifname [op] NAME[*]`: the name padded to IFNAMSIZ, or the bare prefix for `*`.
    fn ifname(&mut self, key: &str) -> Result<()> {
        let (op, name) = self.op_value(key)?;
        let op = Self::eq_or_neq(op, key)?;
        let meta = if key == "iifname" { meta_key::IIFNAME } else { meta_key::OIFNAME };
        let check = |base: &str, name: &str| -> Result<()> {
            if base.is_empty() || base.len() > 15 || base.contains(['/', '*']) || base.contains(char::is_whitespace) {
                bail!("bad interface name {name:?} in portmap condition");
            }
            Ok(())
        };
        let padded = |base: &str| {
            let mut data = base.as_bytes().to_vec();
            data.resize(16, 0);
            data
        };
        let name = match Self::value(name, key)? {
            Value::One(n) => n,
            Value::Set(items) => {
                for i in &items {
                    check(i, i)?;
                }
                self.out.push(Expr::Meta { key: meta, dreg: REG_1 });
                self.lookup(op, value_set(datatype::IFNAME, 16, 1, items.iter().map(|i| padded(i)).collect()));
                return Ok(());
            }
        };
        let (base, wildcard) = match name.strip_suffix('*') {
            Some(b) => (b, true),
            None => (name.as_str(), false),
        };
        check(base, &name)?;
        let data = if wildcard { base.as_bytes().to_vec() } else { padded(base) };
        self.out.push(Expr::Meta { key: meta, dreg: REG_1 });
        self.cmp(op, data);
        self.end(Merge::Skip);
        Ok(())
    }

    fn mark(&mut self) -> Result<()> {
        let (op, val) = self.op_value("mark")?;
        let op = Self::eq_or_neq(op, "mark")?;
        let mark = |v: &str| number(v).with_context(|| format!("bad mark {v:?} in portmap condition"));
        self.out.push(Expr::Meta { key: meta_key::MARK, dreg: REG_1 });
        match Self::value(val, "mark")? {
            Value::One(v) => {
                self.cmp(op, mark(&v)?.to_ne_bytes().to_vec());
                self.end(Merge::Skip);
            }
            Value::Set(items) => {
                let keys = items.iter().map(|i| mark(i).map(|n| n.to_ne_bytes().to_vec())).collect::<Result<_>>()?;
                self.lookup(op, value_set(datatype::MARK, 4, 1, keys));
            }
        }
        Ok(())
    }

    fn pkttype(&mut self) -> Result<()> {
        let (op, val) = self.op_value("pkttype")?;
        let op = Self::eq_or_neq(op, "pkttype")?;
        let t = |v: &str| -> Result<u8> {
            Ok(match v {
                "host" | "unicast" => 0,
                "broadcast" => 1,
                "multicast" => 2,
                "other" => 3,
                other => bail!("unknown packet type {other:?} in portmap condition"),
            })
        };
        self.out.push(Expr::Meta { key: meta_key::PKTTYPE, dreg: REG_1 });
        match Self::value(val, "pkttype")? {
            Value::One(v) => {
                self.cmp(op, vec![t(&v)?]);
                self.end(Merge::Skip);
            }
            Value::Set(items) => {
                let keys = items.iter().map(|i| t(i).map(|b| vec![b])).collect::<Result<_>>()?;
                self.lookup(op, value_set(datatype::PKT_TYPE, 1, 1, keys));
            }
        }
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
                None if self.l4_set => {
                    bail!("conflicting protocols in portmap condition: a set of protocols vs. {proto_name}")
                }
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
        let range = |v: &str| -> Result<(u16, u16)> {
            match v.split_once('-') {
                Some((lo, hi)) => {
                    let (lo, hi) = (port_number(lo, v)?, port_number(hi, v)?);
                    if lo > hi {
                        bail!("bad port range {v:?} in portmap condition (low-high)");
                    }
                    Ok((lo, hi))
                }
                None => port_number(v, v).map(|p| (p, p)),
            }
        };
        let val = match Self::value(val, &what)? {
            Value::One(v) => v,
            Value::Set(items) => {
                let op = Self::eq_or_neq(op, &what)?;
                let ranges = items.iter().map(|i| range(i)).collect::<Result<Vec<_>>>()?;
                // a range written (even `80-80`) makes it an interval set, as in nft
                let set = if !items.iter().any(|i| i.contains('-')) {
                    value_set(datatype::INET_SERVICE, 2, 2, ranges.iter().map(|r| r.0.to_be_bytes().to_vec()).collect())
                } else {
                    let ranges = ranges.iter().map(|&(lo, hi)| (u128::from(lo), u128::from(hi))).collect();
                    interval_set(datatype::INET_SERVICE, 2, ranges)
                };
                self.lookup(op, set);
                return Ok(());
            }
        };
        if val.contains('-') {
            let (lo, hi) = range(&val)?;
            if op.is_some_and(|o| o != CmpOp::Eq) {
                bail!("bad port range {val:?} in portmap condition (== only, low-high)");
            }
            self.cmp(CmpOp::Gte, lo.to_be_bytes().to_vec());
            self.cmp(CmpOp::Lte, hi.to_be_bytes().to_vec());
            self.end(Merge::Skip);
        } else {
            let value = port_number(&val, &val)?;
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
        let state = |s: &str| -> Result<u32> {
            Ok(match s {
                "invalid" => ct_state::INVALID,
                "established" => ct_state::ESTABLISHED,
                "related" => ct_state::RELATED,
                "new" => ct_state::NEW,
                "untracked" => ct_state::UNTRACKED,
                other => bail!("unknown ct state {other:?} in portmap condition"),
            })
        };
        let mut list = match Self::value(first, "ct state")? {
            Value::One(v) => v,
            Value::Set(items) => {
                let keys = items.iter().map(|i| state(i).map(|b| b.to_ne_bytes().to_vec())).collect::<Result<_>>()?;
                self.out.push(Expr::Ct { key: ct_key::STATE, dreg: REG_1 });
                self.lookup(op.unwrap_or(CmpOp::Eq), value_set(datatype::CT_STATE, 4, 1, keys));
                return Ok(());
            }
        };
        // `new,established`, `new, established` and `new ,established` are one list
        while list.ends_with(',') || self.peek().is_some_and(|t| t.starts_with(',')) {
            match self.next() {
                Some(t) => list.push_str(t),
                None => break,
            }
        }
        let mut bits = 0u32;
        for s in list.split(',').filter(|s| !s.is_empty()) {
            bits |= state(s)?;
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
        self.out.push(Expr::Fib { flags, result: FIB_RESULT_ADDRTYPE, dreg: REG_1 });
        match Self::value(val, "fib type")? {
            Value::One(v) => {
                self.cmp(op, fib_type(&v)?.to_ne_bytes().to_vec());
                self.end(Merge::Skip);
            }
            Value::Set(items) => {
                let keys =
                    items.iter().map(|i| fib_type(i).map(|t| t.to_ne_bytes().to_vec())).collect::<Result<_>>()?;
                self.lookup(op, value_set(datatype::FIB_ADDRTYPE, 4, 1, keys));
            }
        }
        Ok(())
    }
}

/// An address type of `fib … type` (RTN_*).
fn fib_type(val: &str) -> Result<u32> {
    Ok(match val {
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
    })
}

fn addr(s: &str, whole: &str) -> Result<IpAddr> {
    s.parse::<IpAddr>().with_context(|| format!("bad address {whole:?} in portmap condition"))
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

    fn elem(key: &[u8], end: bool, open: bool) -> SetElem {
        SetElem {
            key: key.to_vec(),
            data: None,
            flags: end.then_some(SET_ELEM_INTERVAL_END),
            udata: if open { ELEM_UDATA_OPEN.to_vec() } else { vec![] },
        }
    }

    fn anon(e: &[Expr]) -> (AnonSet, bool) {
        match e.last() {
            Some(Expr::AnonLookup { set, invert, .. }) => ((**set).clone(), *invert),
            other => panic!("no set lookup at the end: {other:?}"),
        }
    }

    /// Sets as `nft --debug=netlink` (nft 1.0.6) showed them: the set's flags, size and elements
    /// in the order sent.
    #[test]
    fn sets_encode_as_nft_does() {
        let pl = |base, offset, len| Expr::Payload { dreg: REG_1, base, offset, len };
        let e = one("ip saddr != { 198.18.0.0/24, 198.18.5.1 }", false);
        assert_eq!(e.first(), Some(&pl(Base::Network, 12, 4)));
        let (set, invert) = anon(&e);
        assert!(invert && set.interval && set.size == 5);
        assert_eq!((set.key_type, set.key_len, set.byteorder), (datatype::IPV4_ADDR, 4, 2));
        assert_eq!(
            set.elems,
            [
                elem(&[0; 4], true, false),
                elem(&[198, 18, 0, 0], false, false),
                elem(&[198, 18, 1, 0], true, false),
                elem(&[198, 18, 5, 1], false, false),
                elem(&[198, 18, 5, 2], true, false),
            ]
        );
        // touching and overlapping ranges merged
        let (set, _) = anon(&one("ip saddr { 198.18.0.0/24, 198.18.1.0/24, 198.18.1.7 }", false));
        assert_eq!(set.size, 3);
        assert_eq!(
            set.elems,
            [elem(&[0; 4], true, false), elem(&[198, 18, 0, 0], false, false), elem(&[198, 18, 2, 0], true, false)]
        );
        // a range from 0 has no leading element; one to the last value no end (but the userdata)
        let e = one("tcp dport { 0-100, 200, 65535 }", false);
        assert_eq!(e.get(2), Some(&pl(Base::Transport, 2, 2)));
        let (set, invert) = anon(&e);
        assert!(!invert && set.interval && set.size == 6);
        assert_eq!(
            set.elems,
            [
                elem(&[0, 0], false, false),
                elem(&[0, 101], true, false),
                elem(&[0, 200], false, false),
                elem(&[0, 201], true, false),
                elem(&[255, 255], false, true),
            ]
        );
        // single values: a hash set, the values as written
        let (set, _) = anon(&one("tcp dport { 443, 80 }", false));
        assert!(!set.interval && set.size == 2);
        assert_eq!(set.elems, [elem(&[1, 187], false, false), elem(&[0, 80], false, false)]);
        let (set, _) = anon(&one("ip6 daddr { fd00::1, fd00::2 }", true));
        assert!(!set.interval && set.key_len == 16 && set.key_type == datatype::IPV6_ADDR);
        let (set, _) = anon(&one("meta mark { 1, 0x10 }", false));
        assert_eq!((set.key_type, set.byteorder), (datatype::MARK, 1));
        assert_eq!(set.elems, [elem(&1u32.to_ne_bytes(), false, false), elem(&16u32.to_ne_bytes(), false, false)]);
        let (set, _) = anon(&one("iifname { \"eth0\", eth1 }", false));
        assert_eq!((set.key_type, set.key_len, set.byteorder), (datatype::IFNAME, 16, 1));
        assert_eq!(&set.elems[1].key[..5], b"eth1\0");
        let (set, _) = anon(&one("ct state { new, established }", false));
        assert_eq!((set.key_type, set.key_len, set.byteorder), (datatype::CT_STATE, 4, 1));
        assert_eq!(set.elems, [elem(&8u32.to_ne_bytes(), false, false), elem(&2u32.to_ne_bytes(), false, false)]);
        let (set, invert) = anon(&one("meta pkttype != { host, broadcast }", false));
        assert!(invert && set.key_type == datatype::PKT_TYPE && set.key_len == 1);
        let (set, _) = anon(&one("fib daddr type { local, unicast }", false));
        assert_eq!(set.elems, [elem(&2u32.to_ne_bytes(), false, false), elem(&1u32.to_ne_bytes(), false, false)]);
        assert_eq!(one("ct state { new }", false), one("ct state new", false));
        let (set, _) = anon(&one("ip protocol { tcp, udp }", false));
        assert_eq!(set.elems, [elem(&[6], false, false), elem(&[17], false, false)]);
        // a repeated value is sent twice (nft's size 2); a range written, even of one port, makes
        // an interval set; an explicit prefix too
        let (set, _) = anon(&one("tcp dport { 80, 80 }", false));
        assert_eq!((set.size, set.elems.len()), (2, 2));
        let (set, _) = anon(&one("tcp dport { 80-80, 90 }", false));
        assert!(set.interval && set.size == 5);
        let (set, _) = anon(&one("ip saddr { 198.18.0.1/32, 198.18.0.2 }", false));
        assert!(set.interval && set.size == 3);
        // everything: one open range from 0, size 2
        let (set, _) = anon(&one("ip6 saddr { ::/0, fd00::1 }", true));
        assert_eq!((set.size, set.elems.clone()), (2, vec![elem(&[0; 16], false, true)]));
        // a set of one element is that element
        assert_eq!(one("tcp dport { 80 }", false), one("tcp dport 80", false));
        assert_eq!(
            one("ip saddr { 0.0.0.0/0 }", false),
            [
                pl(Base::Network, 12, 4),
                Expr::Bitwise { sreg: REG_1, dreg: REG_1, mask: vec![0; 4], xor: vec![0; 4] },
                cmp(CmpOp::Eq, &[0; 4])
            ]
        );
        assert_eq!(one("ip saddr != { 198.18.1.0/24 }", false), one("ip saddr != 198.18.1.0/24", false));
        assert_eq!(one("th dport {8000 - 8080,}", false), one("th dport 8000-8080", false));
        // after an `==` set of protocols nft refuses a protocol's port match (not `th`); after
        // `!=` one the port match brings its own `meta l4proto`
        assert!(parse(&["meta l4proto { tcp, udp } tcp dport 80".into()], false).is_err());
        assert_eq!(one("ip protocol { tcp, udp } th dport 80", false).len(), 2 + 2);
        assert_eq!(one("ip protocol != { udp, sctp } tcp dport 80", false).len(), 2 + 2 + 2);
        // with a protocol context first, a set of protocols is taken (and the context stays)
        assert_eq!(one("meta l4proto tcp ip protocol { tcp, udp } tcp dport 80", false).len(), 2 + 2 + 2);
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
            "{80,",
            "443}",
            "{",
            "8000-8080}",
            "{eth0,",
            "\"eth1\"}",
            "{198.18.0.0/24,",
            "fd00::1-fd00::9}",
            "{}",
            ",}",
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
            "ct state { new, bogus }",
            "pkttype { host, loopback }",
            "fib daddr type { local, nowhere }",
            "tcp dport vmap { 80 : accept, 443 : drop }",
            "ip saddr . tcp dport { 198.18.0.1 . 80, 198.18.0.2 . 80 }",
            "ip saddr @myset",
            "iifname { \"eth*\", lo }",
            "mark { 1-5, 9 }",
            "ip saddr { 198.18.0.1, { 198.18.0.2 } }",
            "ip saddr { }",
            "ip saddr { , }",
            "ip saddr {198.18.0.1",
            "ip saddr 198.18.0.1 }",
            "ip saddr { 198.18.0.1, fd00::1 }",
            "ip saddr { 198.18.0.9-198.18.0.1, 198.18.0.1 }",
            "tcp dport < { 1, 2 }",
            "tcp dport { 1, 70000 }",
            "meta l4proto { tcp, bogus }",
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
