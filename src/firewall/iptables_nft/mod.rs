//! iptables-nft's own tables (`ip`/`ip6` `nat` and `filter`), read and torn down over netlink,
//! without exec'ing the iptables tools.
//!
//! iptables-nft keeps no state of its own: its tables are ordinary nf_tables tables, and every
//! `iptables`, `iptables-save` or `iptables-restore` exec reads them back from the kernel. So a
//! teardown (DEL, GC) can read the table itself, render each rule the way `iptables-save` prints
//! it (the text the teardown planners already understand: [`super::iptables::NatState`]), and
//! delete what the planner names by rule handle, chain by name, in one guarded transaction. The
//! result is what `iptables-restore` would have made of the same `-D`/`-F`/`-X` lines; there is
//! no tool exec (3–9 ms each) and no wait for the tool's socket release.
//!
//! Used only when iptables-legacy holds nothing for the table (`/proc/net/ip*_tables_names`);
//! otherwise the rules are in x_tables and the tools are run as before. Writing (ADD) is
//! [`write`]: the same restore input, encoded as iptables-nft encodes it.
//!
//! The rendering covers what the CNI layouts (ours and the reference's) contain: addresses
//! (`-s`/`-d` with prefix and `!`), interfaces (`-i`/`-o`, `+` wildcards), protocols, ports,
//! `-m comment`, `-m conntrack --ctstate`, any other x_tables match by name, verdicts, jumps,
//! gotos and x_tables targets by name. Anything else shows as `?`, which no planner matches.

use super::iptables::{restore_quote, NatState};
use super::nft::decode::list_rules_checked;
use super::nft::expr::{meta_key, Base, CmpOp, Expr, Verdict};
use super::nft::sock::NftSocket;
use super::nft::{Family, NftError};
use anyhow::{bail, Result};
use std::net::IpAddr;

pub mod write;

/// What the native read keeps beside the text: the handle of each rule (same order as
/// [`NatState::rules`]) and the generation the dump was taken at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Handles {
    pub rules: Vec<u64>,
    pub genid: Option<u32>,
    /// Every rule rendered with nothing unknown (`?`): the text is what `iptables-save` prints,
    /// so `-D` lines planned from it are valid `iptables-restore` input.
    pub exact: bool,
    /// The chains that exist in nf_tables (the built-in ones are listed in the text state
    /// whether or not iptables-nft made them yet).
    pub in_kernel: Vec<String>,
}

pub(crate) fn family(v6: bool) -> Family {
    if v6 {
        Family::Ip6
    } else {
        Family::Ip
    }
}

/// `CNI_MULTI_IPTABLES_NATIVE=0` (the node operator's switch): the iptables tools read and write
/// every table, as before this module existed.
pub const ENV_NATIVE: &str = "CNI_MULTI_IPTABLES_NATIVE";

fn enabled() -> bool {
    std::env::var(ENV_NATIVE).map_or(true, |v| v != "0")
}

/// Does iptables-legacy hold `table` for this family in the calling thread's network namespace?
/// (`/proc/thread-self/net`: `/proc/net` is the main thread's namespace.)
pub fn legacy_holds(v6: bool, table: &str) -> bool {
    let p = if v6 { "/proc/thread-self/net/ip6_tables_names" } else { "/proc/thread-self/net/ip_tables_names" };
    std::fs::read_to_string(p).is_ok_and(|s| s.lines().any(|l| l.trim() == table))
}

/// Reads `table` of one family from nf_tables. None when the native path does not apply
/// (legacy holds the table, or no netfilter socket); a missing table reads as empty.
pub fn read(v6: bool, table: &str) -> Option<Result<NatState>> {
    read_chains(v6, table, None)
}

/// [`read`], with the rules of the chains in `only` alone when given (every chain is listed):
/// what a planner that looks at those chains needs, without the per-container chains that grow
/// with the node.
pub fn read_chains(v6: bool, table: &str, only: Option<&[String]>) -> Option<Result<NatState>> {
    if legacy_holds(v6, table) || !enabled() {
        return None;
    }
    let mut s = NftSocket::cached().ok()?;
    Some(read_with(&mut s, v6, table, only).map_err(anyhow::Error::from))
}

fn read_with(s: &mut NftSocket, v6: bool, table: &str, only: Option<&[String]>) -> Result<NatState, NftError> {
    let genid = s.genid().ok();
    let f = family(v6);
    let chains = super::nft::decode::list_chains(s, f, table)?;
    let rules = match only {
        None => list_rules_checked(s, f, table, None)?,
        Some(wanted) => {
            let mut rules = Vec::new();
            for c in chains.iter().filter(|c| wanted.contains(&c.name)) {
                rules.extend(list_rules_checked(s, f, table, Some(&c.name))?);
            }
            rules
        }
    };
    let mut names: Vec<String> = chains.into_iter().map(|c| c.name).collect();
    let in_kernel = names.clone();
    // iptables-save lists a table's built-in chains whether or not iptables-nft made them yet
    for b in builtin_chains(table) {
        if !names.iter().any(|n| n == b) {
            names.push(b.to_string());
        }
    }
    let mut st = NatState { chains: names, ..Default::default() };
    let mut handles = Handles { rules: Vec::with_capacity(rules.len()), genid, exact: true, in_kernel };
    for (r, complete) in rules {
        let (text, exact) = render_checked(&r.chain, &r.exprs, complete, v6);
        handles.exact &= exact;
        st.rules.push((r.chain.clone(), text));
        handles.rules.push(r.handle);
    }
    st.native = Some(handles);
    Ok(st)
}

pub(crate) fn builtin_chains(table: &str) -> &'static [&'static str] {
    match table {
        "nat" => &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
        "filter" => &["INPUT", "FORWARD", "OUTPUT"],
        "mangle" => &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"],
        "raw" => &["PREROUTING", "OUTPUT"],
        "security" => &["INPUT", "FORWARD", "OUTPUT"],
        _ => &[],
    }
}

/// Applies teardown `lines` (`-D <rule>`, `-F <chain>`, `-X <chain>`, as planned from `st`) in
/// one transaction, guarded by the generation `st` was read at when `guarded`. A stale read or a
/// vanished object makes an error the caller answers by reading again ([`retry`]). Unguarded is
/// safe for a teardown: a rule is named by its handle, which the table never gives to another
/// rule, so the transaction deletes what the plan found or, when any of it is gone, nothing.
pub fn apply(v6: bool, table: &str, st: &NatState, lines: &[String], guarded: bool) -> Result<()> {
    let Some(h) = &st.native else { bail!("not a native read") };
    let Some(input) = super::iptables::wrap_table(table, lines) else { return Ok(()) };
    // the writer's planner maps `-D` to handles and `-F`/`-X` to chains, as for any input
    let b = write::plan(v6, st, &input).map_err(|why| anyhow::anyhow!("iptables-nft: cannot apply {why}"))?;
    let mut s = NftSocket::cached()?;
    s.commit_guarded(&b, if guarded { h.genid } else { None })?;
    tracing::debug!(table, v6, changes = lines.len(), "iptables-nft teardown committed over netlink");
    Ok(())
}

/// Should a failed [`apply`] be answered by reading again (someone changed the table since)?
pub fn retry(e: &anyhow::Error) -> bool {
    e.downcast_ref::<NftError>().is_some_and(|n| n.is_stale() || n.is_not_found())
}

/// What a register holds before a `cmp`.
#[derive(Clone, Copy)]
enum Loaded {
    Payload(Base, u32, u32),
    Meta(u32),
    CtState,
    Nothing,
}

/// One rule as `iptables-save` prints it: `-A <chain>`, then `-s`, `-d`, `-i`, `-o`, `-p` (the
/// fixed order iptables prints them in), then the matches in rule order, then the target. An
/// expression, extension or option this renderer does not know shows as `?`.
pub fn render(chain: &str, exprs: &[Expr], complete: bool, v6: bool) -> String {
    render_checked(chain, exprs, complete, v6).0
}

/// [`render`], and whether nothing in the rule was unknown.
pub fn render_checked(chain: &str, exprs: &[Expr], complete: bool, v6: bool) -> (String, bool) {
    // -s, -d, -i, -o, -p
    let mut base: [Option<String>; 5] = Default::default();
    let mut rest = String::new();
    let mut loaded = Loaded::Nothing;
    let mut mask: Option<&[u8]> = None;
    let mut proto: Option<u8> = None;
    let (src_off, dst_off, proto_off) = if v6 { (8, 24, 6) } else { (12, 16, 9) };
    for e in exprs {
        match e {
            Expr::Payload { base, offset, len, .. } => {
                loaded = Loaded::Payload(*base, *offset, *len);
                mask = None;
            }
            Expr::Meta { key, .. } => {
                loaded = Loaded::Meta(*key);
                mask = None;
            }
            Expr::Ct { key: 0, .. } => {
                loaded = Loaded::CtState;
                mask = None;
            }
            Expr::Bitwise { mask: m, .. } => mask = Some(m),
            Expr::Cmp { op, data, .. } => {
                let not = if *op == CmpOp::Neq { "! " } else { "" };
                let mut set = |slot: usize, text: String| match &base[slot] {
                    None => base[slot] = Some(text),
                    Some(_) => rest.push_str(" ?"),
                };
                match loaded {
                    Loaded::Payload(Base::Network, off, len) if off == src_off || off == dst_off => {
                        let bits = mask.map_or(len * 8, |m| m.iter().map(|b| b.count_ones()).sum());
                        let (slot, flag) = if off == src_off { (0, "-s") } else { (1, "-d") };
                        set(slot, format!("{not}{flag} {}/{bits}", addr(data, v6)));
                    }
                    Loaded::Payload(Base::Network, off, 1) if off == proto_off && mask.is_none() => {
                        let p = data.first().copied().unwrap_or(0);
                        proto = Some(p);
                        set(4, format!("{not}-p {}", proto_name(p)));
                    }
                    Loaded::Meta(meta_key::L4PROTO) if mask.is_none() => {
                        let p = data.first().copied().unwrap_or(0);
                        proto = Some(p);
                        set(4, format!("{not}-p {}", proto_name(p)));
                    }
                    Loaded::Meta(k @ (meta_key::IIFNAME | meta_key::OIFNAME)) if mask.is_none() => {
                        let (slot, flag) = if k == meta_key::IIFNAME { (2, "-i") } else { (3, "-o") };
                        set(slot, format!("{not}{flag} {}", ifname(data)));
                    }
                    Loaded::Payload(Base::Transport, off @ (0 | 2), 2) if mask.is_none() && proto.is_some() => {
                        let port = u16::from_be_bytes([byte(data, 0), byte(data, 1)]);
                        let m = proto.map(proto_name).unwrap_or_default();
                        let flag = if off == 0 { "--sport" } else { "--dport" };
                        rest.push_str(&format!(" -m {m} {not}{flag} {port}"));
                    }
                    Loaded::Meta(meta_key::MARK) => {
                        let m = mask
                            .map_or(u32::MAX, |m| u32::from_ne_bytes([byte(m, 0), byte(m, 1), byte(m, 2), byte(m, 3)]));
                        let v = u32::from_ne_bytes([byte(data, 0), byte(data, 1), byte(data, 2), byte(data, 3)]);
                        rest.push_str(&format!(" -m mark {not}--mark {}", mark(v, m)));
                    }
                    _ => rest.push_str(" ?"),
                }
                loaded = Loaded::Nothing;
                mask = None;
            }
            Expr::Counter => {}
            Expr::Xt { target: false, name, rev, info } => {
                rest.push_str(&format!(" -m {name}"));
                rest.push_str(&match_options(name, *rev, info));
            }
            Expr::Xt { target: true, name, rev, info } => {
                rest.push_str(&format!(" -j {name}"));
                rest.push_str(&target_options(name, *rev, info, v6));
            }
            Expr::Verdict(v) => rest.push_str(&match v {
                Verdict::Accept => " -j ACCEPT".to_string(),
                Verdict::Drop => " -j DROP".to_string(),
                Verdict::Return => " -j RETURN".to_string(),
                Verdict::Continue => String::new(),
                Verdict::Jump(c) => format!(" -j {c}"),
                Verdict::Goto(c) => format!(" -g {c}"),
            }),
            _ => rest.push_str(" ?"),
        }
    }
    if !complete || !matches!(loaded, Loaded::Nothing) {
        rest.push_str(" ?");
    }
    let mut out = format!("-A {chain}");
    for part in base.iter().flatten() {
        out.push(' ');
        out.push_str(part);
    }
    out.push_str(&rest);
    (out, !unknown(&rest))
}

/// Did a part of the rendering mark something unknown (` ?` outside a quoted comment)?
fn unknown(rendered: &str) -> bool {
    let mut quoted = false;
    let mut escaped = false;
    let mut prev = ' ';
    for c in rendered.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '?' if !quoted && prev == ' ' => return true,
            _ => {}
        }
        prev = c;
    }
    false
}

fn byte(d: &[u8], i: usize) -> u8 {
    d.get(i).copied().unwrap_or(0)
}

fn u16_at(d: &[u8], o: usize) -> Option<u16> {
    d.get(o..o + 2).map(|b| u16::from_ne_bytes([b[0], b[1]]))
}

fn u32_at(d: &[u8], o: usize) -> Option<u32> {
    d.get(o..o + 4).map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

/// `0xV` or `0xV/0xM`, as libxt_mark prints a mark and mask.
fn mark(v: u32, m: u32) -> String {
    if m == u32::MAX {
        format!("0x{v:x}")
    } else {
        format!("0x{v:x}/0x{m:x}")
    }
}

/// The options of an x_tables match, as its extension saves them.
fn match_options(name: &str, rev: u32, info: &[u8]) -> String {
    match (name, rev) {
        ("comment", 0) => format!(" --comment {}", save_string(&c_string(info))),
        ("conntrack", 1..=3) => conntrack(rev, info),
        // xt_mark_mtinfo1 { u32 mark, mask; u8 invert }
        ("mark", 1) => match (u32_at(info, 0), u32_at(info, 4), info.get(8)) {
            (Some(v), Some(m), Some(inv)) => format!("{} --mark {}", if *inv != 0 { " !" } else { "" }, mark(v, m)),
            _ => " ?".into(),
        },
        // xt_multiport_v1 { u8 flags, count; u16 ports[15]; u8 pflags[15]; u8 invert }
        ("multiport", 1) => {
            let (Some(&flags), Some(&count), Some(&inv)) = (info.first(), info.get(1), info.get(47)) else {
                return " ?".into();
            };
            let Some(flag) = ["--sports", "--dports", "--ports"].get(usize::from(flags)) else { return " ?".into() };
            let mut ports = Vec::new();
            let mut i = 0usize;
            while i < usize::from(count).min(15) {
                let p = u16_at(info, 2 + 2 * i).unwrap_or(0);
                if info.get(32 + i).copied().unwrap_or(0) != 0 {
                    ports.push(format!("{p}:{}", u16_at(info, 4 + 2 * i).unwrap_or(0)));
                    i += 2;
                } else {
                    ports.push(p.to_string());
                    i += 1;
                }
            }
            format!("{} {flag} {}", if inv != 0 { " !" } else { "" }, ports.join(","))
        }
        // xt_addrtype_info_v1 { u16 source, dest; u32 flags }
        ("addrtype", 1) => {
            let (Some(src), Some(dst), Some(flags)) = (u16_at(info, 0), u16_at(info, 2), u32_at(info, 4)) else {
                return " ?".into();
            };
            let mut out = String::new();
            for (types, invert, flag) in [(src, 1, "--src-type"), (dst, 2, "--dst-type")] {
                if types != 0 {
                    let not = if flags & invert != 0 { " !" } else { "" };
                    out.push_str(&format!("{not} {flag} {}", addr_types(types)));
                }
            }
            if flags & 4 != 0 {
                out.push_str(" --limit-iface-in");
            }
            if flags & 8 != 0 {
                out.push_str(" --limit-iface-out");
            }
            out
        }
        _ => " ?".into(),
    }
}

/// The address types of `-m addrtype`, by their bit (`1 << RTN_*`).
pub(crate) const ADDR_TYPES: [&str; 12] = [
    "UNSPEC",
    "UNICAST",
    "LOCAL",
    "BROADCAST",
    "ANYCAST",
    "MULTICAST",
    "BLACKHOLE",
    "UNREACHABLE",
    "PROHIBIT",
    "THROW",
    "NAT",
    "XRESOLVE",
];

/// The states of `-m conntrack --ctstate` (XT_CONNTRACK_STATE_* bits), in the order iptables
/// prints them.
pub(crate) const CT_STATES: [(u16, &str); 7] =
    [(1, "INVALID"), (8, "NEW"), (4, "RELATED"), (2, "ESTABLISHED"), (256, "UNTRACKED"), (64, "SNAT"), (128, "DNAT")];

fn addr_types(mask: u16) -> String {
    ADDR_TYPES.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, n)| *n).collect::<Vec<_>>().join(",")
}

/// The options of an x_tables target, as its extension saves them.
fn target_options(name: &str, rev: u32, info: &[u8], v6: bool) -> String {
    match (name, rev) {
        // xt_mark_tginfo2 { u32 mark, mask }
        ("MARK", 2) => match (u32_at(info, 0), u32_at(info, 4)) {
            (Some(v), Some(m)) => format!(" --set-xmark 0x{v:x}/0x{m:x}"),
            _ => " ?".into(),
        },
        ("DNAT" | "SNAT" | "MASQUERADE", _) => match nat_range(rev, info, v6) {
            Some(r) if name == "MASQUERADE" => {
                let mut out = String::new();
                if r.flags & 2 != 0 {
                    out.push_str(&format!(" --to-ports {}", ports(r.ports)));
                }
                out.push_str(&nat_flags(r.flags & !3));
                out
            }
            Some(r) if r.flags & 1 != 0 => {
                let to = if name == "DNAT" { "--to-destination" } else { "--to-source" };
                let (lo, hi) = r.addrs;
                let mut a = if lo == hi { lo.to_string() } else { format!("{lo}-{hi}") };
                if r.flags & 2 != 0 {
                    if v6 {
                        a = format!("[{a}]");
                    }
                    a = format!("{a}:{}", ports(r.ports));
                }
                format!(" {to} {a}{}", nat_flags(r.flags & !3))
            }
            _ => " ?".into(),
        },
        _ => " ?".into(),
    }
}

struct NatRange {
    flags: u32,
    addrs: (IpAddr, IpAddr),
    ports: (u16, u16),
}

/// A NAT target's range: `nf_nat_ipv4_multi_range_compat` (revision 0 of IPv4), else
/// `nf_nat_range` / `nf_nat_range2` (revision 1 / 2; revision 0 of IPv6 MASQUERADE).
fn nat_range(rev: u32, info: &[u8], v6: bool) -> Option<NatRange> {
    let be16 = |o: usize| info.get(o..o + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    if rev == 0 && !v6 {
        if u32_at(info, 0)? != 1 {
            return None;
        }
        let a = |o: usize| info.get(o..o + 4).map(|b| IpAddr::from([b[0], b[1], b[2], b[3]]));
        return Some(NatRange { flags: u32_at(info, 4)?, addrs: (a(8)?, a(12)?), ports: (be16(16)?, be16(18)?) });
    }
    let a = |o: usize| -> Option<IpAddr> {
        let b = info.get(o..o + 16)?;
        Some(if v6 { addr(b, true) } else { addr(&b[..4], false) })
    };
    Some(NatRange { flags: u32_at(info, 0)?, addrs: (a(4)?, a(20)?), ports: (be16(36)?, be16(38)?) })
}

fn ports((lo, hi): (u16, u16)) -> String {
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}-{hi}")
    }
}

/// `--random`, `--persistent`, `--random-fully` of NF_NAT_RANGE_* flags (anything else: `?`).
fn nat_flags(flags: u32) -> String {
    let mut out = String::new();
    for (bit, text) in [(4, " --random"), (8, " --persistent"), (16, " --random-fully")] {
        if flags & bit != 0 {
            out.push_str(text);
        }
    }
    if flags & !(4 | 8 | 16) != 0 {
        out.push_str(" ?");
    }
    out
}

fn addr(data: &[u8], v6: bool) -> IpAddr {
    if v6 {
        let mut b = [0u8; 16];
        for (d, s) in b.iter_mut().zip(data) {
            *d = *s;
        }
        IpAddr::from(b)
    } else {
        let mut b = [0u8; 4];
        for (d, s) in b.iter_mut().zip(data) {
            *d = *s;
        }
        IpAddr::from(b)
    }
}

fn proto_name(p: u8) -> String {
    match p {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "ipv6-icmp".into(),
        132 => "sctp".into(),
        n => n.to_string(),
    }
}

/// An interface name as iptables-nft compares it: with its NUL for an exact name, without it for
/// a `+` prefix.
fn ifname(data: &[u8]) -> String {
    match data.iter().position(|&b| b == 0) {
        Some(n) => String::from_utf8_lossy(&data[..n]).into_owned(),
        None => format!("{}+", String::from_utf8_lossy(data)),
    }
}

fn c_string(info: &[u8]) -> String {
    let n = info.iter().position(|&b| b == 0).unwrap_or(info.len());
    String::from_utf8_lossy(&info[..n]).into_owned()
}

/// A value as `iptables-save` writes it: bare when it is only letters, digits, `_` and `-`,
/// else in double quotes.
fn save_string(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        s.to_string()
    } else {
        restore_quote(s)
    }
}

/// `--ctstate` of an `xt_conntrack_mtinfo{1,2,3}` (the state mask and flags sit at the same
/// offsets in all three: after 8 addresses, 2 expiries, l4proto and 4 ports).
fn conntrack(rev: u32, info: &[u8]) -> String {
    let (Some(flags), Some(invert)) = (u16_at(info, 146), u16_at(info, 148)) else { return " ?".into() };
    if flags != 1 {
        // only --ctstate is rendered
        return " ?".into();
    }
    let mask = if rev == 1 { info.get(150).map(|&b| u16::from(b)) } else { u16_at(info, 150) };
    let Some(mask) = mask else { return " ?".into() };
    let list: Vec<&str> = CT_STATES.iter().filter(|(b, _)| mask & b != 0).map(|(_, n)| *n).collect();
    let not = if invert & 1 != 0 { " !" } else { "" };
    format!("{not} --ctstate {}", list.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::nft::expr::REG_1;

    fn pl(base: Base, offset: u32, len: u32) -> Expr {
        Expr::Payload { dreg: REG_1, base, offset, len }
    }
    fn cmp(op: CmpOp, data: &[u8]) -> Expr {
        Expr::Cmp { sreg: REG_1, op, data: data.to_vec() }
    }
    fn comment(c: &str) -> Expr {
        let mut info = c.as_bytes().to_vec();
        info.resize(256, 0);
        Expr::Xt { target: false, name: "comment".into(), rev: 0, info }
    }

    #[test]
    fn renders_the_ipmasq_layout_as_iptables_save() {
        let jump = [
            pl(Base::Network, 12, 4),
            cmp(CmpOp::Eq, &[198, 18, 0, 5]),
            comment("name: \"n\" id: \"c\""),
            Expr::Counter,
            Expr::Verdict(Verdict::Jump("CNI-abc".into())),
        ];
        assert_eq!(
            render("POSTROUTING", &jump, true, false),
            r#"-A POSTROUTING -s 198.18.0.5/32 -m comment --comment "name: \"n\" id: \"c\"" -j CNI-abc"#
        );
        let mut masq_info = vec![1u8, 0, 0, 0];
        masq_info.resize(20, 0);
        let masq = [
            pl(Base::Network, 16, 4),
            Expr::Bitwise { sreg: 1, dreg: 1, mask: vec![0xf0, 0, 0, 0], xor: vec![0; 4] },
            cmp(CmpOp::Neq, &[224, 0, 0, 0]),
            comment("x"),
            Expr::Counter,
            Expr::Xt { target: true, name: "MASQUERADE".into(), rev: 0, info: masq_info },
        ];
        assert_eq!(
            render("CNI-abc", &masq, true, false),
            "-A CNI-abc ! -d 224.0.0.0/4 -m comment --comment x -j MASQUERADE"
        );
        let subnet = [pl(Base::Network, 16, 3), cmp(CmpOp::Eq, &[198, 18, 0]), Expr::Verdict(Verdict::Accept)];
        assert_eq!(render("CNI-abc", &subnet, true, false), "-A CNI-abc -d 198.18.0.0/24 -j ACCEPT");
        let v6 = [pl(Base::Network, 8, 16), cmp(CmpOp::Eq, &[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5])];
        assert_eq!(render("X", &v6, true, true), "-A X -s fd00::5/128");
    }

    #[test]
    fn renders_conntrack_interfaces_ports_and_unknowns() {
        let mut info = vec![0u8; 160];
        info[146] = 1; // XT_CONNTRACK_STATE
        info[150] = 2 | 4; // ESTABLISHED | RELATED
        let ct = [
            pl(Base::Network, 16, 4),
            cmp(CmpOp::Eq, &[198, 18, 0, 5]),
            Expr::Xt { target: false, name: "conntrack".into(), rev: 3, info },
            Expr::Verdict(Verdict::Accept),
        ];
        assert_eq!(
            render("CNI-FORWARD", &ct, true, false),
            "-A CNI-FORWARD -d 198.18.0.5/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
        );
        let ifs = [
            Expr::Meta { key: meta_key::IIFNAME, dreg: 1 },
            cmp(CmpOp::Eq, b"cni0\0"),
            Expr::Meta { key: meta_key::OIFNAME, dreg: 1 },
            cmp(CmpOp::Neq, b"veth"),
            Expr::Meta { key: meta_key::L4PROTO, dreg: 1 },
            cmp(CmpOp::Eq, &[6]),
            pl(Base::Transport, 2, 2),
            cmp(CmpOp::Eq, &[0x1f, 0x90]),
            Expr::Verdict(Verdict::Goto("G".into())),
        ];
        assert_eq!(render("C", &ifs, true, false), "-A C -i cni0 ! -o veth+ -p tcp -m tcp --dport 8080 -g G");
        // a rule with an expression the decoder skipped never looks like a plain one
        assert_eq!(render("C", &[Expr::Verdict(Verdict::Accept)], false, false), "-A C -j ACCEPT ?");
        assert_eq!(render("C", &[Expr::Masq], true, false), "-A C ?");
        assert!(!render_checked("C", &[Expr::Masq], true, false).1);
        assert!(render_checked("C", &[comment("what ?"), Expr::Verdict(Verdict::Accept)], true, false).1);
        let mark = [Expr::Xt { target: true, name: "MARK".into(), rev: 1, info: vec![0; 8] }];
        assert_eq!(render_checked("C", &mark, true, false), ("-A C -j MARK ?".to_string(), false));
    }

    #[test]
    fn apply_refuses_what_it_cannot_map() {
        let st = NatState {
            chains: vec!["C".into()],
            rules: vec![("C".into(), "-A C -j ACCEPT".into())],
            native: Some(Handles { rules: vec![7], genid: None, exact: true, in_kernel: vec![] }),
        };
        assert!(apply(false, "nat", &st, &["-D C -j DROP".into()], true).is_err());
        assert!(apply(false, "nat", &st, &["-P C ACCEPT".into()], true).is_err());
        let text_only = NatState { native: None, ..st };
        assert!(apply(false, "nat", &text_only, &["-X C".into()], false).is_err());
    }
}
