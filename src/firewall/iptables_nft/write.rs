//! `iptables-restore --noflush` input applied to iptables-nft's tables over netlink, encoded the
//! way iptables-nft 1.8 encodes it, so that every iptables-nft tool reads the rules back as its
//! own (`firewall::iptables_nft_native_write_is_iptables_restore` compares the kernel's copy of
//! each rule, expression by expression, with what `iptables-restore` makes of the same input).
//!
//! Only the shapes the CNI layouts write are encoded: `-s`/`-d` (with prefix and `!`), `-i`/`-o`
//! (with `+` and `!`), `-p`, `--dport`/`--sport`, `-m comment`, `-m multiport`, `-m addrtype`,
//! `-m mark --mark V/M`, `-m conntrack --ctstate`; targets `ACCEPT`, `DROP`, `RETURN`, a chain
//! (`-j`/`-g`), `MASQUERADE`, `DNAT --to-destination`, `MARK --set-xmark`; lines `:CHAIN`,
//! `-A`, `-I <chain> 1`, `-D`, `-F`, `-X`, `COMMIT`. Anything else (user `conditions` in
//! another syntax, another option or target) is [`Outcome::Unsupported`] and the caller runs
//! `iptables-restore` as before.

use super::{builtin_chains, family, ADDR_TYPES, CT_STATES};
use crate::firewall::iptables::{split_args, NatState};
use crate::firewall::nft::expr::{meta_key, Base, CmpOp, Expr, Verdict, REG_1};
use crate::firewall::nft::sock::NftSocket;
use crate::firewall::nft::{prio, BaseChain, Batch, Hook, Rule};
use anyhow::Result;
use ipnet::IpNet;
use std::net::IpAddr;

/// What [`restore`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Committed (one transaction, guarded by the generation the state was read at).
    Applied,
    /// Not encoded (the reason); nothing was sent.
    Unsupported(String),
}

/// Applies `input` (one table, as `iptables-restore --noflush` takes it) to the table `st` was
/// read from natively. A stale read is an error for which [`super::retry`] is true.
pub fn restore(v6: bool, st: &NatState, input: &str) -> Result<Outcome> {
    let batch = match plan(v6, st, input) {
        Ok(b) => b,
        Err(why) => return Ok(Outcome::Unsupported(why)),
    };
    let genid = st.native.as_ref().and_then(|h| h.genid);
    let mut s = NftSocket::cached()?;
    s.commit_guarded(&batch, genid)?;
    tracing::debug!(v6, messages = batch.msgs.len(), "iptables-nft rules committed over netlink");
    Ok(Outcome::Applied)
}

/// The transaction for `input`, or why it cannot be encoded.
pub fn plan(v6: bool, st: &NatState, input: &str) -> Result<Batch, String> {
    let h = st.native.as_ref().ok_or("not a native read")?;
    let f = family(v6);
    let mut table: Option<String> = None;
    let mut b = Batch::new();
    let mut in_kernel = h.in_kernel.clone();
    let mut used = vec![false; st.rules.len()];
    for raw in input.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(t) = line.strip_prefix('*') {
            if table.is_some() {
                return Err("more than one table".into());
            }
            b.add_table(f, t, None);
            table = Some(t.to_string());
            continue;
        }
        let t = table.clone().ok_or("a line before the table")?;
        if line == "COMMIT" {
            break;
        }
        if let Some(decl) = line.strip_prefix(':') {
            let mut w = decl.split_whitespace();
            let (Some(name), Some("-")) = (w.next(), w.next()) else { return Err(format!("declaration {line:?}")) };
            if builtin_chains(&t).contains(&name) {
                return Err(format!("policy of {name}"));
            }
            if in_kernel.iter().any(|c| c == name) {
                b.flush_chain(f, &t, name);
            } else {
                b.add_chain(f, &t, name, None, None);
                in_kernel.push(name.to_string());
            }
            continue;
        }
        let args = split_args(line);
        let (cmd, chain) = match (args.first(), args.get(1)) {
            (Some(c), Some(ch)) => (c.as_str(), ch.as_str()),
            _ => return Err(format!("line {line:?}")),
        };
        match cmd {
            "-A" | "-I" => {
                let (head, rest) = if cmd == "-I" {
                    match args.get(2).map(String::as_str) {
                        Some("1") => (true, &args[3..]),
                        _ => return Err(format!("insert position in {line:?}")),
                    }
                } else {
                    (false, &args[2..])
                };
                ensure_chain(&mut b, f, &t, chain, &mut in_kernel)?;
                let rule = parse(rest, v6)?;
                if let Target::Verdict(Verdict::Jump(c) | Verdict::Goto(c)) = &rule.target {
                    if !in_kernel.iter().any(|k| k == c) {
                        return Err(format!("no chain {c}"));
                    }
                }
                let (exprs, compat) = encode(&rule, v6);
                let r = Rule { family: f, table: t.clone(), chain: chain.to_string(), exprs, comment: None };
                b.add_rule_at(&r, head, Some(compat));
            }
            "-D" => {
                let want = format!("-A {}", line.strip_prefix("-D ").unwrap_or_default());
                let i = (0..st.rules.len())
                    .find(|&i| !used[i] && st.rules[i].1 == want)
                    .ok_or_else(|| format!("no rule {want:?}"))?;
                used[i] = true;
                b.del_rule(f, &t, &st.rules[i].0, h.rules.get(i).copied().unwrap_or(0));
            }
            "-F" if args.len() == 2 => {
                b.flush_chain(f, &t, chain);
            }
            "-X" if args.len() == 2 => {
                b.del_chain(f, &t, chain);
                in_kernel.retain(|c| c != chain);
            }
            _ => return Err(format!("command {line:?}")),
        }
    }
    if table.is_none() {
        return Err("no table".into());
    }
    Ok(b)
}

/// A built-in chain is made when a rule first goes into it, as iptables-nft makes it.
fn ensure_chain(
    b: &mut Batch,
    f: crate::firewall::nft::Family,
    table: &str,
    chain: &str,
    in_kernel: &mut Vec<String>,
) -> Result<(), String> {
    if in_kernel.iter().any(|c| c == chain) {
        return Ok(());
    }
    let (chain_type, hook, priority) = match (table, chain) {
        ("nat", "PREROUTING") => ("nat", Hook::Prerouting, prio::DSTNAT),
        ("nat", "INPUT") => ("nat", Hook::Input, prio::SRCNAT),
        ("nat", "OUTPUT") => ("nat", Hook::Output, prio::DSTNAT),
        ("nat", "POSTROUTING") => ("nat", Hook::Postrouting, prio::SRCNAT),
        ("filter", "INPUT") => ("filter", Hook::Input, prio::FILTER),
        ("filter", "FORWARD") => ("filter", Hook::Forward, prio::FILTER),
        ("filter", "OUTPUT") => ("filter", Hook::Output, prio::FILTER),
        _ => return Err(format!("no chain {chain} in {table}")),
    };
    let base = BaseChain { chain_type, hook, priority, policy_accept: Some(true) };
    b.add_chain(f, table, chain, Some(&base), None);
    in_kernel.push(chain.to_string());
    Ok(())
}

/// One rule's matches and target, as iptables keeps them.
#[derive(Debug, Default)]
pub struct XRule {
    iif: Option<(bool, String)>,
    oif: Option<(bool, String)>,
    proto: Option<(bool, u8)>,
    src: Option<(bool, IpNet)>,
    dst: Option<(bool, IpNet)>,
    matches: Vec<Match>,
    target: Target,
}

#[derive(Debug)]
enum Match {
    Comment(Option<String>),
    /// flags (0 source, 1 destination, 2 either), ports, invert
    Multiport(Option<(u8, Vec<u16>, bool)>),
    /// source types, destination types, flags
    AddrType(u16, u16, u32),
    /// mark, mask, invert
    Mark(Option<(u32, u32, bool)>),
    /// states, invert
    Conntrack(Option<(u16, bool)>),
    /// the protocol match (`-m tcp`, or loaded by `--dport`): protocol, (source?, port, invert)
    Port(u8, Option<(bool, u16, bool)>),
}

#[derive(Debug, Default)]
enum Target {
    #[default]
    None,
    Verdict(Verdict),
    Masquerade,
    /// address, port
    Dnat(Option<(IpAddr, Option<u16>)>),
    /// mark, mask
    SetMark(Option<(u32, u32)>),
}

fn net(s: &str, v6: bool) -> Result<IpNet, String> {
    let n: IpNet = match s.parse() {
        Ok(n) => n,
        Err(_) => {
            let a: IpAddr = s.parse().map_err(|_| format!("address {s:?}"))?;
            IpNet::from(a)
        }
    };
    if n.addr().is_ipv6() != v6 {
        return Err(format!("address {s:?} of the other family"));
    }
    Ok(n.trunc())
}

fn number(s: &str) -> Result<u32, String> {
    match s.strip_prefix("0x") {
        Some(h) => u32::from_str_radix(h, 16),
        None => s.parse(),
    }
    .map_err(|_| format!("number {s:?}"))
}

/// Parses a rule's arguments (after `-A <chain>`), as iptables would.
pub fn parse(args: &[String], v6: bool) -> Result<XRule, String> {
    let mut r = XRule::default();
    let mut inv = false;
    let mut i = 0;
    let val = |i: usize| args.get(i + 1).map(String::as_str).ok_or_else(|| format!("{} needs a value", args[i]));
    while i < args.len() {
        let a = args[i].as_str();
        if a == "!" {
            if inv {
                return Err("double !".into());
            }
            inv = true;
            i += 1;
            continue;
        }
        let not = std::mem::take(&mut inv);
        let last_match =
            |r: &mut XRule, pick: fn(&Match) -> bool| -> Option<usize> { r.matches.iter().rposition(pick) };
        // iptables refuses a second -s, -d, -i, -o or -p ("multiple -p flags not allowed"):
        // left to the tool, which says so
        let once = |set: bool| if set { Err(format!("multiple {a} flags")) } else { Ok(()) };
        match a {
            "-s" | "--source" | "--src" => {
                once(r.src.is_some())?;
                r.src = Some((not, net(val(i)?, v6)?));
            }
            "-d" | "--destination" | "--dst" => {
                once(r.dst.is_some())?;
                r.dst = Some((not, net(val(i)?, v6)?));
            }
            "-i" | "--in-interface" => {
                once(r.iif.is_some())?;
                r.iif = Some((not, val(i)?.to_string()));
            }
            "-o" | "--out-interface" => {
                once(r.oif.is_some())?;
                r.oif = Some((not, val(i)?.to_string()));
            }
            "-p" | "--protocol" => {
                once(r.proto.is_some())?;
                r.proto = Some((not, crate::firewall::ip_proto_number(val(i)?).ok_or("protocol")?));
            }
            "-m" | "--match" if !not => {
                let m = match val(i)? {
                    "comment" => Match::Comment(None),
                    "multiport" => Match::Multiport(None),
                    "addrtype" => Match::AddrType(0, 0, 0),
                    "mark" => Match::Mark(None),
                    "conntrack" => Match::Conntrack(None),
                    p @ ("tcp" | "udp") => Match::Port(crate::firewall::ip_proto_number(p).unwrap_or(0), None),
                    other => return Err(format!("match {other}")),
                };
                r.matches.push(m);
            }
            "--comment" if !not => {
                let k = last_match(&mut r, |m| matches!(m, Match::Comment(None))).ok_or("--comment")?;
                r.matches[k] = Match::Comment(Some(val(i)?.to_string()));
            }
            "--dports" | "--destination-ports" | "--sports" | "--source-ports" | "--ports" => {
                let k = last_match(&mut r, |m| matches!(m, Match::Multiport(None))).ok_or("multiport option")?;
                let flags = match a {
                    "--sports" | "--source-ports" => 0,
                    "--ports" => 2,
                    _ => 1,
                };
                let mut ports = Vec::new();
                for p in val(i)?.split(',') {
                    if p.contains(':') {
                        return Err("multiport range".into());
                    }
                    ports.push(p.parse::<u16>().map_err(|_| format!("port {p:?}"))?);
                }
                if ports.is_empty() || ports.len() > 15 {
                    return Err("multiport count".into());
                }
                r.matches[k] = Match::Multiport(Some((flags, ports, not)));
            }
            "--dst-type" | "--src-type" => {
                let k = last_match(&mut r, |m| matches!(m, Match::AddrType(..))).ok_or("addrtype option")?;
                let mut types = 0u16;
                for t in val(i)?.split(',') {
                    types |= 1 << addr_type(t).ok_or_else(|| format!("address type {t:?}"))?;
                }
                if let Match::AddrType(src, dst, flags) = &mut r.matches[k] {
                    if a == "--src-type" {
                        *src = types;
                        *flags |= if not { 1 } else { 0 };
                    } else {
                        *dst = types;
                        *flags |= if not { 2 } else { 0 };
                    }
                }
            }
            "--mark" => {
                let k = last_match(&mut r, |m| matches!(m, Match::Mark(None))).ok_or("--mark")?;
                let (v, m) = val(i)?.split_once('/').ok_or("--mark without a mask")?;
                r.matches[k] = Match::Mark(Some((number(v)?, number(m)?, not)));
            }
            "--ctstate" => {
                let k = last_match(&mut r, |m| matches!(m, Match::Conntrack(None))).ok_or("--ctstate")?;
                let mut states = 0u16;
                for s in val(i)?.split(',') {
                    states |= CT_STATES
                        .iter()
                        .find(|(_, n)| *n == s)
                        .map(|(b, _)| *b)
                        .ok_or_else(|| format!("state {s:?}"))?;
                }
                r.matches[k] = Match::Conntrack(Some((states, not)));
            }
            "--dport" | "--destination-port" | "--sport" | "--source-port" => {
                let src = a == "--sport" || a == "--source-port";
                let v = val(i)?;
                let port = v.parse::<u16>().map_err(|_| format!("port {v:?}"))?;
                let k = match last_match(&mut r, |m| matches!(m, Match::Port(_, None))) {
                    Some(k) => k,
                    None => {
                        // iptables loads the protocol's match on its first option
                        let p = match r.proto {
                            Some((false, p @ (6 | 17))) => p,
                            _ => return Err("a port without -p tcp or udp".into()),
                        };
                        r.matches.push(Match::Port(p, None));
                        r.matches.len() - 1
                    }
                };
                if let Match::Port(p, _) = r.matches[k] {
                    r.matches[k] = Match::Port(p, Some((src, port, not)));
                }
            }
            "-j" | "--jump" | "-g" | "--goto" if !not => {
                if !matches!(r.target, Target::None) {
                    return Err("two targets".into());
                }
                let name = val(i)?;
                r.target = if a == "-g" || a == "--goto" {
                    Target::Verdict(Verdict::Goto(name.to_string()))
                } else {
                    match name {
                        "ACCEPT" => Target::Verdict(Verdict::Accept),
                        "DROP" => Target::Verdict(Verdict::Drop),
                        "RETURN" => Target::Verdict(Verdict::Return),
                        "MASQUERADE" => Target::Masquerade,
                        "DNAT" => Target::Dnat(None),
                        "MARK" => Target::SetMark(None),
                        // any other name must be a chain of the table ([`plan`] checks)
                        n => Target::Verdict(Verdict::Jump(n.to_string())),
                    }
                };
            }
            "--to-destination" if !not && matches!(r.target, Target::Dnat(None)) => {
                r.target = Target::Dnat(Some(dnat_to(val(i)?, v6)?));
            }
            "--set-xmark" if !not && matches!(r.target, Target::SetMark(None)) => {
                let (v, m) = val(i)?.split_once('/').ok_or("--set-xmark without a mask")?;
                r.target = Target::SetMark(Some((number(v)?, number(m)?)));
            }
            "--limit-iface-in" | "--limit-iface-out" => return Err(a.to_string()),
            other => return Err(format!("option {other:?}")),
        }
        // every option above takes one value (except -m's name, which is one too)
        i += 2;
    }
    if inv {
        return Err("a trailing !".into());
    }
    let incomplete = r.matches.iter().any(|m| {
        matches!(
            m,
            Match::Comment(None)
                | Match::Multiport(None)
                | Match::Mark(None)
                | Match::Conntrack(None)
                | Match::Port(_, None)
        ) || matches!(m, Match::AddrType(0, 0, _))
    });
    if incomplete {
        return Err("a match without its option".into());
    }
    match r.target {
        Target::None | Target::Dnat(None) | Target::SetMark(None) => Err("target".into()),
        _ => Ok(r),
    }
}

fn addr_type(t: &str) -> Option<u16> {
    ADDR_TYPES.iter().position(|n| *n == t).and_then(|p| u16::try_from(p).ok())
}

/// `ADDR[:PORT]`, `[ADDR6]:PORT` or `ADDR6`.
fn dnat_to(s: &str, v6: bool) -> Result<(IpAddr, Option<u16>), String> {
    let bad = || format!("--to-destination {s:?}");
    let (addr, port) = if let Some(rest) = s.strip_prefix('[') {
        let (a, p) = rest.split_once("]:").ok_or_else(bad)?;
        (a, Some(p))
    } else if v6 {
        (s, None)
    } else {
        match s.split_once(':') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        }
    };
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    if addr.is_ipv6() != v6 {
        return Err(bad());
    }
    let port = port.map(|p| p.parse::<u16>().map_err(|_| bad())).transpose()?;
    Ok((addr, port))
}

fn cmp(not: bool, data: Vec<u8>) -> Expr {
    Expr::Cmp { sreg: REG_1, op: if not { CmpOp::Neq } else { CmpOp::Eq }, data }
}

fn octets(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// The rule's expressions, in iptables-nft's order (interfaces, protocol, addresses, matches,
/// counter, target), and its compat attribute (protocol, inverted).
pub fn encode(r: &XRule, v6: bool) -> (Vec<Expr>, (u32, bool)) {
    let mut e = Vec::new();
    for (key, iface) in [(meta_key::IIFNAME, &r.iif), (meta_key::OIFNAME, &r.oif)] {
        if let Some((not, name)) = iface {
            let data = match name.strip_suffix('+') {
                Some("") => continue,
                Some(prefix) => prefix.as_bytes().to_vec(),
                None => {
                    let mut d = name.as_bytes().to_vec();
                    d.push(0);
                    d
                }
            };
            e.push(Expr::Meta { key, dreg: REG_1 });
            e.push(cmp(*not, data));
        }
    }
    if let Some((not, p)) = r.proto {
        e.push(Expr::Meta { key: meta_key::L4PROTO, dreg: REG_1 });
        e.push(cmp(not, vec![p]));
    }
    let (src_off, dst_off) = if v6 { (8, 24) } else { (12, 16) };
    for (off, a) in [(src_off, &r.src), (dst_off, &r.dst)] {
        let Some((not, n)) = a else { continue };
        let plen = usize::from(n.prefix_len());
        if plen == 0 && !not {
            continue;
        }
        let bytes = octets(n.addr());
        if plen % 8 == 0 {
            let len = plen / 8;
            e.push(Expr::Payload { dreg: REG_1, base: Base::Network, offset: off, len: len as u32 });
            e.push(cmp(*not, bytes[..len].to_vec()));
        } else {
            let mask = octets(n.netmask());
            e.push(Expr::Payload { dreg: REG_1, base: Base::Network, offset: off, len: bytes.len() as u32 });
            e.push(Expr::Bitwise { sreg: REG_1, dreg: REG_1, mask, xor: vec![0; bytes.len()] });
            e.push(cmp(*not, bytes));
        }
    }
    for m in &r.matches {
        match m {
            Match::Comment(Some(c)) => {
                let mut info = vec![0u8; 256];
                let n = c.len().min(255);
                info[..n].copy_from_slice(&c.as_bytes()[..n]);
                e.push(xt(false, "comment", 0, info));
            }
            Match::Multiport(Some((flags, ports, not))) => {
                let mut info = vec![0u8; 48];
                info[0] = *flags;
                info[1] = ports.len() as u8;
                for (k, p) in ports.iter().enumerate() {
                    info[2 + 2 * k..4 + 2 * k].copy_from_slice(&p.to_ne_bytes());
                }
                info[47] = u8::from(*not);
                e.push(xt(false, "multiport", 1, info));
            }
            Match::AddrType(src, dst, flags) => {
                let mut info = Vec::with_capacity(8);
                info.extend_from_slice(&src.to_ne_bytes());
                info.extend_from_slice(&dst.to_ne_bytes());
                info.extend_from_slice(&flags.to_ne_bytes());
                e.push(xt(false, "addrtype", 1, info));
            }
            Match::Mark(Some((v, m, not))) => {
                e.push(Expr::Meta { key: meta_key::MARK, dreg: REG_1 });
                e.push(Expr::Bitwise { sreg: REG_1, dreg: REG_1, mask: m.to_ne_bytes().to_vec(), xor: vec![0; 4] });
                e.push(cmp(*not, v.to_ne_bytes().to_vec()));
            }
            Match::Conntrack(Some((states, not))) => {
                let mut info = vec![0u8; 168];
                info[146..148].copy_from_slice(&1u16.to_ne_bytes());
                info[148..150].copy_from_slice(&u16::from(*not).to_ne_bytes());
                info[150..152].copy_from_slice(&states.to_ne_bytes());
                e.push(xt(false, "conntrack", 3, info));
            }
            Match::Port(_, Some((src, port, not))) => {
                e.push(Expr::Payload { dreg: REG_1, base: Base::Transport, offset: if *src { 0 } else { 2 }, len: 2 });
                e.push(cmp(*not, port.to_be_bytes().to_vec()));
            }
            _ => {}
        }
    }
    e.push(Expr::Counter);
    match &r.target {
        Target::Verdict(v) => e.push(Expr::Verdict(v.clone())),
        Target::Masquerade => {
            // v4: nf_nat_ipv4_multi_range_compat with one empty range; v6: an empty nf_nat_range
            let info = if v6 { vec![0u8; 40] } else { [vec![1, 0, 0, 0], vec![0u8; 20]].concat() };
            e.push(xt(true, "MASQUERADE", 0, info));
        }
        Target::Dnat(Some((addr, port))) => {
            // nf_nat_range2: flags, min/max address, min/max port, base port
            let mut info = vec![0u8; 48];
            let flags: u32 = 1 | if port.is_some() { 2 } else { 0 };
            info[0..4].copy_from_slice(&flags.to_ne_bytes());
            let a = octets(*addr);
            info[4..4 + a.len()].copy_from_slice(&a);
            info[20..20 + a.len()].copy_from_slice(&a);
            if let Some(p) = port {
                info[36..38].copy_from_slice(&p.to_be_bytes());
                info[38..40].copy_from_slice(&p.to_be_bytes());
            }
            e.push(xt(true, "DNAT", 2, info));
        }
        Target::SetMark(Some((v, m))) => {
            let mut info = v.to_ne_bytes().to_vec();
            info.extend_from_slice(&m.to_ne_bytes());
            e.push(xt(true, "MARK", 2, info));
        }
        _ => {}
    }
    let compat = r.proto.map_or((0, false), |(not, p)| (u32::from(p), not));
    (e, compat)
}

fn xt(target: bool, name: &str, rev: u32, info: Vec<u8>) -> Expr {
    Expr::Xt { target, name: name.to_string(), rev, info }
}

#[cfg(test)]
mod tests {
    use super::super::render_checked;
    use super::*;

    fn roundtrip(line: &str, v6: bool) -> String {
        let args = split_args(line);
        let r = parse(&args[2..], v6).unwrap_or_else(|e| panic!("{line}: {e}"));
        let (exprs, _) = encode(&r, v6);
        let (text, exact) = render_checked(&args[1], &exprs, true, v6);
        assert!(exact, "{text}");
        text
    }

    /// Restore input as the planners write it reads back as `iptables-save` prints it.
    #[test]
    fn layouts_encode_to_what_iptables_save_prints() {
        let cases = [
            (
                r#"-A CNI-abc -d 198.18.7.0/24 -j ACCEPT -m comment --comment "name: \"n\" id: \"c\"""#,
                r#"-A CNI-abc -d 198.18.7.0/24 -m comment --comment "name: \"n\" id: \"c\"" -j ACCEPT"#,
            ),
            (
                r#"-A CNI-abc ! -d 224.0.0.0/4 -j MASQUERADE -m comment --comment x"#,
                "-A CNI-abc ! -d 224.0.0.0/4 -m comment --comment x -j MASQUERADE",
            ),
            ("-A POSTROUTING -s 198.18.7.2 -j CNI-abc", "-A POSTROUTING -s 198.18.7.2/32 -j CNI-abc"),
            (
                r#"-A CNI-HOSTPORT-SETMARK -m comment --comment "CNI portfwd masquerade mark" -j MARK --set-xmark 0x2000/0x2000"#,
                r#"-A CNI-HOSTPORT-SETMARK -m comment --comment "CNI portfwd masquerade mark" -j MARK --set-xmark 0x2000/0x2000"#,
            ),
            (
                "-A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE",
                "-A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE",
            ),
            (
                "-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT",
                "-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT",
            ),
            (
                r#"-A CNI-HOSTPORT-DNAT -m comment --comment "dnat" -m multiport -p tcp --destination-ports 8080,9090 -j CNI-DN-x"#,
                "-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment dnat -m multiport --dports 8080,9090 -j CNI-DN-x",
            ),
            (
                "-A CNI-DN-x -p tcp --dport 8080 -s 198.18.7.0/24 -j CNI-HOSTPORT-SETMARK",
                "-A CNI-DN-x -s 198.18.7.0/24 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK",
            ),
            (
                "-A CNI-DN-x -p udp --dport 5300 -d 198.18.9.1 -j DNAT --to-destination 198.18.7.2:53",
                "-A CNI-DN-x -d 198.18.9.1/32 -p udp -m udp --dport 5300 -j DNAT --to-destination 198.18.7.2:53",
            ),
            (
                "-A CNI-FORWARD -d 198.18.7.2/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                "-A CNI-FORWARD -d 198.18.7.2/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            ),
            (
                "-I CNI-ISOLATION-STAGE-1 1 -i br0 ! -o br0 -j CNI-ISOLATION-STAGE-2 -m comment --comment y",
                "-A CNI-ISOLATION-STAGE-1 -i br0 ! -o br0 -m comment --comment y -j CNI-ISOLATION-STAGE-2",
            ),
        ];
        for (input, want) in cases {
            let line = input.replacen("-I CNI-ISOLATION-STAGE-1 1", "-A CNI-ISOLATION-STAGE-1", 1);
            assert_eq!(roundtrip(&line, false), want);
        }
        assert_eq!(
            roundtrip("-A CNI-DN-y -p tcp --dport 80 -j DNAT --to-destination [fd00::2]:80", true),
            "-A CNI-DN-y -p tcp -m tcp --dport 80 -j DNAT --to-destination [fd00::2]:80"
        );
        assert_eq!(roundtrip("-A CNI-abc ! -d ff00::/8 -j MASQUERADE", true), "-A CNI-abc ! -d ff00::/8 -j MASQUERADE");
    }

    #[test]
    fn anything_else_is_left_to_the_tool() {
        for line in [
            "-A X -m statistic --mode random --probability 0.5 -j ACCEPT",
            "-A X -j MARK --set-mark 1",
            "-A X -j MASQUERADE --to-ports 1000",
            "-A X -p tcp --dport 1:2 -j ACCEPT",
            "-A X -m mark --mark 0x1 -j ACCEPT",
            "-A X --dport 80 -j ACCEPT",
            "-A X -s 198.18.0.1",
            "-A X -m comment -j ACCEPT",
            "-A X -s fd00::1 -j ACCEPT",
            "-A X -p tcp -m multiport --dports 1 -p tcp -j ACCEPT",
            "-A X -s 198.18.0.1 -s 198.18.0.2 -j ACCEPT",
        ] {
            let args = split_args(line);
            assert!(parse(&args[2..], false).is_err(), "{line}");
        }
        let st = NatState {
            native: Some(super::super::Handles { in_kernel: vec!["POSTROUTING".into()], ..Default::default() }),
            ..Default::default()
        };
        assert!(plan(false, &st, "*nat\n-I POSTROUTING 2 -j ACCEPT\nCOMMIT\n").is_err());
        assert!(plan(false, &st, "*nat\n-A POSTROUTING -j CNI-missing\nCOMMIT\n").is_err());
        assert!(plan(false, &st, "*nat\n-A POSTROUTING -j REJECT\nCOMMIT\n").is_err(), "not a chain here");
        assert!(plan(false, &st, "*nat\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n").is_err());
        assert!(plan(false, &st, "*nat\n-D POSTROUTING -j ACCEPT\nCOMMIT\n").is_err());
        let ok =
            plan(false, &st, "*nat\n:CNI-a - [0:0]\n-A CNI-a -j ACCEPT\n-I POSTROUTING 1 -j CNI-a\nCOMMIT\n").unwrap();
        let what: Vec<&str> = ok.msgs.iter().map(|m| m.what.as_str()).collect();
        assert_eq!(
            what,
            ["add table ip nat", "add chain ip nat CNI-a", "add rule ip nat CNI-a", "add rule ip nat POSTROUTING"]
        );
        assert!(plan(false, &NatState::default(), "*nat\nCOMMIT\n").is_err(), "a text read is not planned natively");
    }
}
