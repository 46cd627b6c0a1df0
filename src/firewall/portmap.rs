//! The portmap façade (reference §2.15): [`choose`] the backend once from the config, then
//! [`ensure_all`] (ADD, the container's addresses), [`remove`] (DEL, the shared both-backends policy),
//! [`check`] (CHECK), [`gc`] (GC). The plugin (config parsing, route_localnet, conntrack flush)
//! lives in `plugins/portmap.rs` and never sees a backend.
//!
//! nftables (tables `ip cni_hostport` / `ip6 cni_hostport`, comment "CNI portmap plugin"):
//! ```text
//! chain hostports          { [ip daddr H] <proto> dport P dnat to C:P' comment "<cid>" }
//! chain hostip_hostports   { }                        (legacy, kept empty for upgrades)
//! chain hostports_all      { jump hostip_hostports; jump hostports }
//! chain prerouting  { type nat hook prerouting priority dstnat; fib daddr type local jump hostports_all }
//! chain output      { type nat hook output priority -100;      fib daddr type local jump hostports_all }
//! chain masquerading { type nat hook postrouting priority srcnat;
//!                      ip saddr C ip daddr C masquerade comment "<cid>"            (hairpin)
//!                      ip saddr 127.0.0.1 ip daddr C masquerade comment "<cid>" }  (v4 localhost)
//! ```
//! The `fib daddr type local` guard in prerouting is what keeps transit traffic from being
//! hijacked (reference issue #1209). `conditionsV4/V6` in nft syntax go before that guard, encoded
//! as `nft` encodes them (the forms of [`super::nft::cond`]; anything else is refused with an
//! error that lists them).
//!
//! iptables (nat table): `CNI-HOSTPORT-DNAT` (from PREROUTING/OUTPUT, `-m addrtype --dst-type
//! LOCAL`), per container `CNI-DN-<21 hex>` with multiport entry rules (≤15 ports each) commented
//! `dnat name: "<net>" id: "<cid>"`, `CNI-HOSTPORT-SETMARK`, `CNI-HOSTPORT-MASQ` (first in
//! POSTROUTING). One `iptables-restore --noflush -w` per family per change.

use super::iptables::{
    canonical_rule, chain_teardown_lines_from, has_exact_rule, parse_save, restore_quote, split_args, IptablesBackend,
    NatState,
};
use super::nft::decode::{list_rules, RuleInfo};
use super::nft::expr::{
    dnat_to, match_addr, match_fib_daddr_local, match_ip_protocol, match_l4proto, match_th_dport, meta_key, Base,
    CmpOp, NAT_RANGE_MAP_IPS,
};
use super::nft::plan::TableState;
use super::nft::sock::NftSocket;
use super::nft::{prio, BaseChain, Batch, Expr, Family, Hook, Rule, Verdict};
use super::{teardown_both, Attachment, BackendKind};
use crate::cni::CniError;
use anyhow::{bail, Context, Result};
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr};

/// One `portMappings` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    /// "tcp", "udp" or "sctp" in any case, or "6", "17", "132" (used verbatim in iptables
    /// rules, as the reference).
    pub protocol: String,
    pub host_ip: Option<IpAddr>,
}

/// Everything a backend needs for one container address.
#[derive(Debug, Clone)]
pub struct PortmapSpec {
    pub network: String,
    pub container_id: String,
    /// The container address with its prefix (the prefix is used by iptables hairpin rules).
    pub container_ip: IpNet,
    pub mappings: Vec<PortMapping>,
    pub snat: bool,
    pub masq_all: bool,
    /// iptables only (default 13).
    pub mark_masq_bit: u32,
    /// iptables only.
    pub external_set_mark_chain: Option<String>,
    /// Extra match tokens for this address family (iptables syntax for the iptables backend).
    pub conditions: Vec<String>,
}

pub const NFT_TABLE: &str = "cni_hostport";
pub const NFT_TABLE_COMMENT: &str = "CNI portmap plugin";
pub const HOSTPORTS: &str = "hostports";
pub const HOSTIP_HOSTPORTS: &str = "hostip_hostports";
pub const HOSTPORTS_ALL: &str = "hostports_all";
pub const MASQUERADING: &str = "masquerading";

pub const TOP_DNAT: &str = "CNI-HOSTPORT-DNAT";
pub const SETMARK: &str = "CNI-HOSTPORT-SETMARK";
pub const MARK_MASQ: &str = "CNI-HOSTPORT-MASQ";
pub const OLD_TOP_SNAT: &str = "CNI-HOSTPORT-SNAT";

// ---- the façade --------------------------------------------------------------------------------

/// The options that only one backend has (they decide the backend when no key does). As in
/// the reference (`validateBackend`), these are `externalSetMarkChain` and the conditions;
/// `markMasqBit` is not one: the nftables backend simply has no use for it.
#[derive(Debug, Clone, Copy, Default)]
pub struct BackendHints<'a> {
    /// `externalSetMarkChain` is set (iptables only).
    pub external_set_mark_chain: bool,
    pub conditions_v4: &'a [String],
    pub conditions_v6: &'a [String],
}

/// First token starting with `-` or `!` ⇒ iptables syntax.
pub fn is_iptables_syntax(conds: &[String]) -> bool {
    conds.first().and_then(|c| c.split_whitespace().next()).is_some_and(|t| t.starts_with('-') || t.starts_with('!'))
}

/// The backend a conditions list is written for, as the reference's `detectBackendOfConditions`:
/// none when the list is empty or its first string is (`[""]` says nothing about the backend).
fn conditions_backend(conds: &[String]) -> Option<BackendKind> {
    conds.first().filter(|c| !c.is_empty())?;
    Some(if is_iptables_syntax(conds) { BackendKind::Iptables } else { BackendKind::Nftables })
}

fn config_err(msg: impl Into<String>) -> anyhow::Error {
    CniError::config(msg).into()
}

/// The backend, chosen once: `env` (`CNI_MULTI_FIREWALL_BACKEND`), else the config's `backend`
/// (any other value than "iptables" or "nftables", even "", is refused with v1.9.1's message),
/// else the options only one backend has (`externalSetMarkChain`, iptables-syntax conditions ⇒
/// iptables; nft-syntax conditions ⇒ nftables), else `default` (the reference's rule,
/// [`super::default_backend`]). An option of the other backend than the one chosen is an invalid
/// config (code 7), with the reference's message. (Where no key names a backend the reference
/// takes its default and then refuses an option of the other backend; an option only one
/// backend has picks that backend here, docs/differences.md.)
pub fn choose(
    env: Option<&str>,
    key: Option<&str>,
    hints: &BackendHints,
    default: impl FnOnce() -> BackendKind,
) -> Result<BackendKind> {
    // the options only iptables has, and those only nftables has
    let (mut ipt, mut nft): (Vec<&str>, Vec<&str>) = (Vec::new(), Vec::new());
    if hints.external_set_mark_chain {
        ipt.push("externalSetMarkChain");
    }
    for (name, conds) in [("conditionsV4", hints.conditions_v4), ("conditionsV6", hints.conditions_v6)] {
        match conditions_backend(conds) {
            Some(BackendKind::Iptables) => ipt.push(name),
            Some(BackendKind::Nftables) => nft.push(name),
            None => {}
        }
    }
    let kind = match (env.filter(|s| !s.is_empty()), key) {
        (Some(b), _) => BackendKind::parse(b).map_err(|e| config_err(format!("{e:#}")))?,
        // a `backend` v1.9.1 does not know ("" too) fails as there: after its check for options
        // of the other backend (iptables' for any value but "iptables")
        (None, Some(k)) => match BackendKind::parse(k) {
            Ok(kind) => kind,
            Err(_) if !ipt.is_empty() => {
                return Err(config_err(format!(
                    "{k} backend was requested but configuration contains iptables-specific options [{}]",
                    ipt.join(" ")
                )))
            }
            Err(_) => return Err(config_err(format!("unrecognized backend {}", crate::cni::result::go_quote(k)))),
        },
        (None, None) => match (ipt.is_empty(), nft.is_empty()) {
            (false, false) => {
                return Err(config_err(format!(
                    "options of both backends (conditions of both syntaxes?): configuration contains \
                     iptables-specific options [{}] and nftables-specific options [{}]",
                    ipt.join(" "),
                    nft.join(" ")
                )))
            }
            (false, true) => BackendKind::Iptables,
            (true, false) => BackendKind::Nftables,
            (true, true) => default(),
        },
    };
    let (other, wrong) = match kind {
        BackendKind::Iptables => (BackendKind::Nftables, &nft),
        BackendKind::Nftables => (BackendKind::Iptables, &ipt),
    };
    if !wrong.is_empty() {
        return Err(config_err(format!(
            "{} backend was requested but configuration contains {}-specific options [{}]",
            kind.name(),
            other.name(),
            wrong.join(" ")
        )));
    }
    Ok(kind)
}

/// ADD for one container address: its DNAT (and hairpin/localhost SNAT) rules, replacing the
/// container's previous ones of this family. A family none of whose mappings applies to it gets
/// the container's chain and entry rules with iptables (as the reference), nothing with nftables.
fn ensure(backend: BackendKind, spec: &PortmapSpec) -> Result<()> {
    match backend {
        BackendKind::Nftables => nft_ensure(spec),
        BackendKind::Iptables => iptables_ensure(spec),
    }
}

/// ADD of every container address (one spec per family), with nothing half-made: the mappings'
/// protocols, nft-syntax conditions (encoded for all of them, [`super::nft::cond`]), the
/// external mark chain's name and the iptables-syntax conditions' characters are checked before
/// any change (code 7; what iptables-syntax conditions mean is the tool's to judge, in the
/// restore that applies them), and when one family fails, the container's mappings of the others come out again
/// (each family is its own commit; the reference leaves them).
pub fn ensure_all(backend: BackendKind, specs: &[PortmapSpec]) -> Result<()> {
    for s in specs {
        for m in &s.mappings {
            proto_number(&m.protocol).map_err(|e| config_err(format!("{e:#}")))?;
        }
        match backend {
            BackendKind::Nftables => {
                super::nft::cond::parse(&s.conditions, s.container_ip.addr().is_ipv6())?;
            }
            BackendKind::Iptables => {
                if let Some(c) = &s.external_set_mark_chain {
                    super::iptables::check_chain_name("externalSetMarkChain", c)?;
                }
                super::iptables::check_restore_args("portmap conditions", &s.conditions)?;
            }
        }
    }
    let ips: Vec<IpAddr> = specs.iter().map(|s| s.container_ip.addr()).collect();
    for s in specs {
        if let Err(e) = ensure(backend, s) {
            if let Err(u) = remove(&s.network, &s.container_id, Some(&ips)) {
                tracing::warn!("portmap: removing the mappings of a failed ADD: {u:#}");
            }
            return Err(e.context(format!("unable to forward ports to {}", s.container_ip.addr())));
        }
    }
    Ok(())
}

/// DEL in both backends and both families (the shared teardown policy): with `ips` (the
/// attachment's container addresses, from prevResult) the rules of that attachment, and what the
/// container's attachments share (its iptables DN chain and entry rules) once none of theirs is
/// left; without (no prevResult) everything of the container, as the reference. The iptables
/// side is only read when iptables state of ours can exist on this node (checked without exec),
/// so a node without iptables pays nothing.
pub fn remove(network: &str, container_id: &str, ips: Option<&[IpAddr]>) -> Result<()> {
    let dn = dn_chain(network, container_id);
    teardown_both(
        || if iptables_state_possible(&dn) { iptables_remove(network, container_id, ips) } else { Ok(()) },
        || nft_remove(container_id, ips),
    )
    .context("could not teardown ipv4 dnat")
}

/// CHECK for one container address: with iptables, the container's chain and entry rules exist
/// even for a family with nothing mapped (ADD makes them, as the reference); with nftables such a
/// family has no rules to check.
pub fn check(backend: BackendKind, spec: &PortmapSpec) -> Result<()> {
    match backend {
        BackendKind::Nftables if family_mappings(spec).is_empty() => Ok(()),
        BackendKind::Nftables => nft_check(spec),
        BackendKind::Iptables => iptables_check(spec),
    }
}

/// GC (the reference has none): iptables DN chains of `network` whose container is not valid.
/// The nft layout's comment is the bare container id, with no network: it cannot be attributed
/// to one network's attachments, so nftables rules are left to DEL.
pub fn gc(network: &str, valid: &[Attachment]) -> Result<()> {
    if !iptables_state_possible(TOP_DNAT) {
        return Ok(());
    }
    iptables_gc(network, valid)
}

/// Could this node hold iptables state of ours? Checked without exec: iptables-nft keeps its
/// `nat` tables in nf_tables, legacy iptables lists its tables in /proc/net/ip*_tables_names.
fn iptables_state_possible(chain: &str) -> bool {
    if super::iptables_nft::legacy_holds(false, "nat") || super::iptables_nft::legacy_holds(true, "nat") {
        return true;
    }
    let Ok(mut s) = NftSocket::cached() else { return true };
    [Family::Ip, Family::Ip6].into_iter().any(|f| {
        super::nft::decode::list_chains(&mut s, f, "nat")
            .map(|cs| cs.iter().any(|c| c.name == chain || c.name == TOP_DNAT))
            .unwrap_or(true)
    })
}

/// iptables CHECK: every rule ADD makes for this address exists, whole ([`iptables_missing`]).
fn iptables_check(s: &PortmapSpec) -> Result<()> {
    let st = IptablesBackend.save(s.container_ip.addr().is_ipv6())?;
    match iptables_missing(&st, s)? {
        Some(what) => bail!("{what}"),
        None => Ok(()),
    }
}

/// A mapping's protocol: tcp, udp or sctp, any case, or their numbers 6, 17, 132 (what the
/// reference maps; see [`protocol_name`]).
fn proto_number(p: &str) -> Result<u8> {
    match protocol_name(&p.to_ascii_lowercase()) {
        name @ ("tcp" | "udp" | "sctp") => super::ip_proto_number(name).context("protocol table"),
        _ => bail!("unsupported portmap protocol {p:?}"),
    }
}

/// The name of a mapping protocol given by its IANA number ("6", "17", "132"), else `p` itself.
/// The iptables rules keep the number as the reference writes it (iptables holds `-p 6` as
/// `-p tcp`); nft and the conntrack flush go by the name.
pub fn protocol_name(p: &str) -> &str {
    match p {
        "6" => "tcp",
        "17" => "udp",
        "132" => "sctp",
        p => p,
    }
}

/// Mappings that apply to this address family, each with its destination host IP (None =
/// any local address). Wrong-family host IPs are skipped; unspecified host IPs mean "any".
fn family_mappings(spec: &PortmapSpec) -> Vec<(&PortMapping, Option<IpAddr>)> {
    let v6 = spec.container_ip.addr().is_ipv6();
    spec.mappings
        .iter()
        .filter_map(|m| match m.host_ip {
            Some(h) if h.is_ipv6() != v6 => None,
            Some(h) if h.is_unspecified() => Some((m, None)),
            h => Some((m, h)),
        })
        .collect()
}

// ---- nftables ----------------------------------------------------------------------------------

fn nft_family(v6: bool) -> Family {
    if v6 {
        Family::Ip6
    } else {
        Family::Ip
    }
}

/// The setup transaction for one family: the full, self-contained plan (the container's old
/// rules are not deleted here; see [`nft_ensure`]).
pub fn nft_setup_batch(spec: &PortmapSpec) -> Result<Batch> {
    let mut b = Batch::new();
    nft_plan(&mut b, None, spec)?;
    Ok(b)
}

/// The fast plan against a dumped state of the family's table: deletes this attachment's old
/// rules (if any; another attachment's rules of the same container stay), declares only what is
/// missing, leaves the shared chains alone when their rules are already the ones we would write.
pub fn nft_setup_batch_fast(st: &TableState, spec: &PortmapSpec) -> Result<Batch> {
    let f = nft_family(spec.container_ip.addr().is_ipv6());
    let ip = [spec.container_ip.addr()];
    let mut b = Batch::new();
    for chain in [HOSTPORTS, HOSTIP_HOSTPORTS, MASQUERADING] {
        for r in st.rules_of(chain).filter(|r| nft_is_attachments(r, &spec.container_id, Some(&ip))) {
            b.del_rule(f, NFT_TABLE, &r.chain, r.handle);
        }
    }
    nft_plan(&mut b, Some(st), spec)?;
    Ok(b)
}

fn nft_plan(b: &mut Batch, st: Option<&TableState>, spec: &PortmapSpec) -> Result<()> {
    let v6 = spec.container_ip.addr().is_ipv6();
    let conditions = super::nft::cond::parse(&spec.conditions, v6)?;
    let f = nft_family(v6);
    let rule = |chain: &str, exprs: Vec<Expr>, comment: Option<&str>| Rule {
        family: f,
        table: NFT_TABLE.into(),
        chain: chain.into(),
        exprs,
        comment: comment.map(str::to_string),
    };
    b.ensure_table(st, f, NFT_TABLE, Some(NFT_TABLE_COMMENT));
    b.ensure_chain(st, f, NFT_TABLE, HOSTPORTS, None, None);
    b.ensure_chain(st, f, NFT_TABLE, HOSTIP_HOSTPORTS, None, None);
    b.ensure_chain(st, f, NFT_TABLE, HOSTPORTS_ALL, None, None);
    let jumps =
        [HOSTIP_HOSTPORTS, HOSTPORTS].map(|c| rule(HOSTPORTS_ALL, vec![Expr::Verdict(Verdict::Jump(c.into()))], None));
    b.ensure_chain_rules(st, f, NFT_TABLE, HOSTPORTS_ALL, &jumps);
    for (name, hook) in [("prerouting", Hook::Prerouting), ("output", Hook::Output)] {
        let base = BaseChain { chain_type: "nat", hook, priority: prio::DSTNAT, policy_accept: None };
        b.ensure_chain(st, f, NFT_TABLE, name, Some(&base), None);
        let mut e = conditions.clone();
        e.extend(match_fib_daddr_local());
        e.push(Expr::Verdict(Verdict::Jump(HOSTPORTS_ALL.into())));
        b.ensure_chain_rules(st, f, NFT_TABLE, name, &[rule(name, e, None)]);
    }
    if spec.snat {
        let base =
            BaseChain { chain_type: "nat", hook: Hook::Postrouting, priority: prio::SRCNAT, policy_accept: None };
        b.ensure_chain(st, f, NFT_TABLE, MASQUERADING, Some(&base), None);
    }
    for r in nft_attachment_rules(spec)? {
        b.add_rule(&r);
    }
    Ok(())
}

/// The attachment's own rules in one family's table (each commented with the container id): a
/// DNAT rule per mapping of the family, then with `snat` the masquerades of hairpin traffic (and,
/// IPv4 without masqAll, of localhost traffic) to the container address.
fn nft_attachment_rules(spec: &PortmapSpec) -> Result<Vec<Rule>> {
    let v6 = spec.container_ip.addr().is_ipv6();
    let f = nft_family(v6);
    let c = spec.container_ip.addr();
    let rule = |chain: &str, exprs: Vec<Expr>| Rule {
        family: f,
        table: NFT_TABLE.into(),
        chain: chain.into(),
        exprs,
        comment: Some(spec.container_id.clone()),
    };
    let mut out = Vec::new();
    for (m, host_ip) in family_mappings(spec) {
        let proto = proto_number(&m.protocol)?;
        let mut e = Vec::new();
        if let Some(h) = host_ip {
            e.extend(match_addr(false, h, if v6 { 128 } else { 32 }, CmpOp::Eq));
        }
        // IPv6 as nft encodes v1.9.1's `tcp dport P` (meta l4proto); IPv4 `ip protocol` (the
        // same packets; nft would write meta l4proto there too: docs/differences.md)
        e.extend(if v6 { match_l4proto(proto) } else { match_ip_protocol(proto) });
        e.extend(match_th_dport(m.host_port));
        e.extend(dnat_to(c, Some(m.container_port)));
        out.push(rule(HOSTPORTS, e));
    }
    if spec.snat {
        let plen = if v6 { 128 } else { 32 };
        let mut e = Vec::new();
        if !spec.masq_all {
            e.extend(match_addr(true, c, plen, CmpOp::Eq));
        }
        e.extend(match_addr(false, c, plen, CmpOp::Eq));
        e.push(Expr::Masq);
        out.push(rule(MASQUERADING, e));
        if !v6 && !spec.masq_all {
            let mut e = match_addr(true, IpAddr::V4(Ipv4Addr::LOCALHOST), 32, CmpOp::Eq);
            e.extend(match_addr(false, c, plen, CmpOp::Eq));
            e.push(Expr::Masq);
            out.push(rule(MASQUERADING, e));
        }
    }
    Ok(out)
}

/// Is `r` (a rule of the layout) for the container address `ip`: a mapping whose DNAT target it
/// is, or a masquerade of traffic to it? Both implementations' rules carry the address there,
/// while their comment is the container id alone, shared by all the container's attachments.
fn nft_rule_is_for(r: &RuleInfo, ip: IpAddr) -> bool {
    let bytes = match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    let dnat = r.exprs.iter().any(|e| matches!(e, Expr::Nat { .. }))
        && r.exprs.iter().any(|e| matches!(e, Expr::Immediate { data, .. } if *data == bytes));
    let daddr = match_addr(false, ip, if ip.is_ipv6() { 128 } else { 32 }, CmpOp::Eq);
    let masq = r.exprs.contains(&Expr::Masq) && r.exprs.windows(daddr.len()).any(|w| w == daddr.as_slice());
    dnat || masq
}

/// Is `r` the container's (its comment is the container id), and with `ips`, of the attachment
/// with those addresses ([`nft_rule_is_for`])?
fn nft_is_attachments(r: &RuleInfo, container_id: &str, ips: Option<&[IpAddr]>) -> bool {
    r.comment.as_deref() == Some(container_id) && ips.is_none_or(|ips| ips.iter().any(|ip| nft_rule_is_for(r, *ip)))
}

/// A rule's expressions as written and as the kernel reports them, in one form: `ip protocol P`
/// read as `meta l4proto P` (the same packets in a table of one family, written either way: ours,
/// `nft`'s for the reference's text), and a NAT to an address with the map-IPs flag the kernel
/// adds to it.
fn nft_normalized(exprs: &[Expr]) -> Vec<Expr> {
    exprs
        .iter()
        .map(|e| match e {
            Expr::Payload { dreg, base: Base::Network, offset: 9, len: 1 } => {
                Expr::Meta { key: meta_key::L4PROTO, dreg: *dreg }
            }
            Expr::Nat { nat_type, family, addr_min: Some(a), proto_min, flags } => Expr::Nat {
                nat_type: *nat_type,
                family: *family,
                addr_min: Some(*a),
                proto_min: *proto_min,
                flags: Some(flags.unwrap_or(0) | NAT_RANGE_MAP_IPS),
            },
            e => e.clone(),
        })
        .collect()
}

/// Rules of the container (comment == container id) in the per-container chains of one table.
fn nft_container_rules(s: &mut NftSocket, f: Family, container_id: &str) -> Result<Vec<RuleInfo>> {
    let mut out = Vec::new();
    for chain in [HOSTPORTS, HOSTIP_HOSTPORTS, MASQUERADING] {
        let rules = list_rules(s, f, NFT_TABLE, Some(chain))?;
        out.extend(rules.into_iter().filter(|r| r.comment.as_deref() == Some(container_id)));
    }
    Ok(out)
}

/// nftables: sets up the mappings of one container address (one transaction). Replaces this
/// attachment's previous rules of this family (the rules for this address); the container's
/// other attachments keep theirs. Nothing is touched when there are no mappings.
pub fn nft_ensure(spec: &PortmapSpec) -> Result<()> {
    if family_mappings(spec).is_empty() {
        return Ok(());
    }
    let f = nft_family(spec.container_ip.addr().is_ipv6());
    let ip = [spec.container_ip.addr()];
    let mut s = NftSocket::cached()?;
    s.transact(|s, fast| -> Result<Batch> {
        if fast {
            return nft_setup_batch_fast(&TableState::read(s, f, NFT_TABLE)?, spec);
        }
        let mut b = Batch::new();
        for r in nft_container_rules(s, f, &spec.container_id)?.iter().filter(|r| nft_rule_is_for(r, ip[0])) {
            b.del_rule(f, NFT_TABLE, &r.chain, r.handle);
        }
        nft_plan(&mut b, None, spec)?;
        Ok(b)
    })
    .context("unable to set up nftables rules for port mappings")
}

/// nftables: deletes the container's rules in both families (missing tables are fine), with
/// `ips` only those of the attachment with these addresses.
pub fn nft_remove(container_id: &str, ips: Option<&[IpAddr]>) -> Result<()> {
    let mut s = NftSocket::cached()?;
    for f in [Family::Ip, Family::Ip6] {
        let rules = nft_container_rules(&mut s, f, container_id)?;
        let mut b = Batch::new();
        for r in rules.iter().filter(|r| nft_is_attachments(r, container_id, ips)) {
            b.del_rule(f, NFT_TABLE, &r.chain, r.handle);
        }
        s.commit(&b).context("error deleting nftables rules")?;
    }
    Ok(())
}

/// nftables CHECK: every rule ADD makes for this attachment ([`nft_attachment_rules`]: each
/// mapping's DNAT to this address and port, the masquerades) is there, commented with the
/// container id (a mapping rule in `hostports` or the reference's `hostip_hostports`). The
/// reference's CHECK only counts the container's rules, so another attachment's rules (or a
/// mapping to another port) passed it.
pub fn nft_check(spec: &PortmapSpec) -> Result<()> {
    let f = nft_family(spec.container_ip.addr().is_ipv6());
    let mut s = NftSocket::cached()?;
    let have = nft_container_rules(&mut s, f, &spec.container_id)?;
    for want in nft_attachment_rules(spec)? {
        let chains: &[&str] = if want.chain == MASQUERADING { &[MASQUERADING] } else { &[HOSTPORTS, HOSTIP_HOSTPORTS] };
        let exprs = nft_normalized(&want.exprs);
        if !have.iter().any(|r| chains.contains(&r.chain.as_str()) && nft_normalized(&r.exprs) == exprs) {
            bail!("missing hostport rules in {:?} chain", want.chain);
        }
    }
    Ok(())
}

// ---- iptables ----------------------------------------------------------------------------------

pub use crate::names::{
    portmap_dn_chain as dn_chain, portmap_dnat_comment as dnat_comment, portmap_sn_chain as sn_chain,
};

fn fmt_ip_port(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

fn arg_is(args: &[String], flag: &str, val: &str) -> bool {
    arg_val(args, flag) == Some(val)
}

/// One rule of the plan: `-A <chain> <args>` (or `-I <chain> 1 <args>` when `first`).
struct PlannedRule {
    chain: String,
    args: String,
    first: bool,
}

impl PlannedRule {
    fn line(&self) -> String {
        if self.first {
            format!("-I {} 1 {}", self.chain, self.args)
        } else {
            format!("-A {} {}", self.chain, self.args)
        }
    }
}

/// Everything ADD makes for one container address, as the reference's `forwardPorts` makes it
/// (ADD ([`iptables_setup_input`]) and CHECK ([`iptables_missing`]) both read it): the shared
/// chains and their rules (SETMARK and MASQ with this config's mark bit, the jumps from
/// POSTROUTING, PREROUTING and OUTPUT), the container's entry rules in CNI-HOSTPORT-DNAT and the
/// rules of its DN chain. The entry rules name the host ports of **every** mapping, grouped by
/// protocol (sorted), 15 per rule, whatever the family of their host IP, as the reference's
/// `fillDnatRules`; the DN chain's rules are this family's mappings only, so a family with
/// nothing mapped still gets the chain and its entry rules (as the reference).
struct Plan {
    /// shared chains (declared only when missing), then the container's DN chain (always declared)
    chains: Vec<String>,
    /// shared rules, each ensured on its own (the reference's insert-unless-present)
    shared: Vec<PlannedRule>,
    /// the container's entry rules
    entries: Vec<PlannedRule>,
    /// the DN chain's rules
    dn: Vec<PlannedRule>,
}

fn plan(spec: &PortmapSpec) -> Result<Plan> {
    if spec.mark_masq_bit > 31 {
        bail!("markMasqBit must be between 0 and 31");
    }
    let v6 = spec.container_ip.addr().is_ipv6();
    let dn = dn_chain(&spec.network, &spec.container_id);
    let mark = 1u32 << spec.mark_masq_bit;
    let mark_def = format!("{mark:#x}/{mark:#x}");
    let setmark = spec.external_set_mark_chain.clone().unwrap_or_else(|| SETMARK.to_string());
    let rule = |chain: &str, args: String| PlannedRule { chain: chain.to_string(), args, first: false };
    let mut p = Plan { chains: Vec::new(), shared: Vec::new(), entries: Vec::new(), dn: Vec::new() };
    if spec.snat && spec.external_set_mark_chain.is_none() {
        p.chains.extend([SETMARK.to_string(), MARK_MASQ.to_string()]);
        p.shared.push(rule(
            SETMARK,
            format!(
                "-m comment --comment {} -j MARK --set-xmark {mark_def}",
                restore_quote("CNI portfwd masquerade mark")
            ),
        ));
        p.shared.push(rule(MARK_MASQ, format!("-m mark --mark {mark_def} -j MASQUERADE")));
        p.shared.push(PlannedRule {
            chain: "POSTROUTING".into(),
            args: format!("-m comment --comment {} -j {MARK_MASQ}", restore_quote("CNI portfwd requiring masquerade")),
            first: true,
        });
    }
    p.chains.push(TOP_DNAT.to_string());
    for entry in ["PREROUTING", "OUTPUT"] {
        p.shared.push(rule(entry, format!("-m addrtype --dst-type LOCAL -j {TOP_DNAT}")));
    }
    p.chains.push(dn.clone());
    let comment = restore_quote(&dnat_comment(&spec.network, &spec.container_id));
    let cond = spec.conditions.iter().map(|c| restore_quote(c)).collect::<Vec<_>>().join(" ");
    let mut protos: Vec<&str> = spec.mappings.iter().map(|m| m.protocol.as_str()).collect();
    protos.sort_unstable();
    protos.dedup();
    for proto in protos {
        let ports: Vec<String> =
            spec.mappings.iter().filter(|m| m.protocol == proto).map(|m| m.host_port.to_string()).collect();
        for chunk in ports.chunks(15) {
            let mut r = format!(
                "-m comment --comment {comment} -m multiport -p {proto} --destination-ports {}",
                chunk.join(",")
            );
            if !cond.is_empty() {
                r.push(' ');
                r.push_str(&cond);
            }
            r.push_str(&format!(" -j {dn}"));
            p.entries.push(rule(TOP_DNAT, r));
        }
    }
    let masq_cidr = if spec.masq_all {
        if v6 {
            "::/0".to_string()
        } else {
            "0.0.0.0/0".to_string()
        }
    } else {
        spec.container_ip.trunc().to_string()
    };
    for (m, host_ip) in family_mappings(spec) {
        let mut base = format!("-p {} --dport {}", m.protocol, m.host_port);
        if let Some(h) = host_ip {
            base.push_str(&format!(" -d {h}"));
        }
        if spec.snat {
            p.dn.push(rule(&dn, format!("{base} -s {masq_cidr} -j {setmark}")));
            if !v6 && !spec.masq_all {
                p.dn.push(rule(&dn, format!("{base} -s 127.0.0.1 -j {setmark}")));
            }
        }
        let to = fmt_ip_port(spec.container_ip.addr(), m.container_port);
        p.dn.push(rule(&dn, format!("{base} -j DNAT --to-destination {to}")));
    }
    // identical rules once (two mappings of one host port share their mark rules), as the
    // reference's insert-unless-present writes them
    let mut seen: Vec<Vec<String>> = Vec::new();
    p.dn.retain(|r| {
        let c = canonical_rule(&split_args(&r.args));
        let new = !seen.contains(&c);
        seen.push(c);
        new
    });
    Ok(p)
}

fn present(state: &NatState, r: &PlannedRule) -> bool {
    has_exact_rule(state, &r.chain, &split_args(&r.args))
}

/// A rule of a container's DN chain, read: its saved line, its [`canonical_rule`] form, its
/// match without source and target (`-p P --dport H [-d hostIP]`, what a mapping's mark rules
/// share with its DNAT rule), and for a DNAT rule, the address and the (protocol, port) it maps.
struct DnRule<'a> {
    line: &'a str,
    canon: Vec<String>,
    base: Vec<String>,
    dnat_to: Option<IpAddr>,
    dport: Option<(u8, u16)>,
}

/// The value after `flag`.
fn arg_val<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).map(String::as_str)
}

/// The address of a `--to-destination` value (`A`, `A:P`, `[A6]:P`, `A6`).
fn dnat_addr(to: &str) -> Option<IpAddr> {
    if let Ok(a) = to.parse() {
        return Some(a);
    }
    match to.strip_prefix('[') {
        Some(rest) => rest.split(']').next()?.parse().ok(),
        None => to.split(':').next()?.parse().ok(),
    }
}

fn proto_of(args: &[String]) -> Option<u8> {
    super::ip_proto_number(protocol_name(&arg_val(args, "-p")?.to_ascii_lowercase()))
}

/// The rules of chain `dn` in `state`.
fn dn_rules<'a>(state: &'a NatState, dn: &str) -> Vec<DnRule<'a>> {
    state
        .rules
        .iter()
        .filter(|(c, _)| c == dn)
        .map(|(_, line)| {
            let args = split_args(line);
            let rule = args.get(2..).unwrap_or_default();
            let canon = canonical_rule(rule);
            let base = canon
                .iter()
                .filter(|g| !["-s\0", "!-s\0", "-j\0", "--to-destination\0"].iter().any(|p| g.starts_with(p)))
                .cloned()
                .collect();
            let dnat_to = (arg_val(rule, "-j") == Some("DNAT")).then(|| arg_val(rule, "--to-destination")).flatten();
            let dport = proto_of(rule).zip(arg_val(rule, "--dport").and_then(|p| p.parse().ok()));
            DnRule { line, canon, base, dnat_to: dnat_to.and_then(dnat_addr), dport }
        })
        .collect()
}

/// The container's DN-chain rules split into those of the attachment with the addresses `ips`
/// and the others (another attachment of the same container on the same network shares the
/// chain): a DNAT rule is the attachment's when its target is one of `ips`, a mark rule when its
/// match is that of one of the attachment's DNAT rules and of no other's.
fn split_dn<'a, 'b>(rules: &'b [DnRule<'a>], ips: &[IpAddr]) -> (Vec<&'b DnRule<'a>>, Vec<&'b DnRule<'a>>) {
    let bases = |ours: bool| -> Vec<&Vec<String>> {
        rules.iter().filter(|r| r.dnat_to.is_some_and(|a| ips.contains(&a) == ours)).map(|r| &r.base).collect()
    };
    let (our_bases, other_bases) = (bases(true), bases(false));
    rules.iter().partition(|r| match r.dnat_to {
        Some(a) => ips.contains(&a),
        None => our_bases.contains(&&r.base) && !other_bases.contains(&&r.base),
    })
}

/// The (protocol, port) pairs an entry rule sends to the DN chain; None when it cannot be read.
fn entry_ports(args: &[String]) -> Option<Vec<(u8, u16)>> {
    let proto = proto_of(args)?;
    let ports = arg_val(args, "--dports").or_else(|| arg_val(args, "--destination-ports"))?;
    ports.split(',').map(|p| p.parse().ok().map(|p| (proto, p))).collect()
}

/// Is an entry rule (not among the plan's) the attachment's stale one: every port it sends is one
/// of `ours` and none one of `others`' DNAT rules? An entry of the other attachments stays.
fn entry_is_ours(args: &[String], ours: &[(u8, u16)], others: &[(u8, u16)]) -> bool {
    entry_ports(args).is_some_and(|ps| !ps.is_empty() && ps.iter().all(|p| ours.contains(p) && !others.contains(p)))
}

fn dnat_ports(rules: &[&DnRule]) -> Vec<(u8, u16)> {
    rules.iter().filter(|r| r.dnat_to.is_some()).filter_map(|r| r.dport).collect()
}

/// Restore input (nat table) setting up one container address; None when there is nothing to map
/// or everything is in place. `state` holds the rules of the shared chains and of the
/// container's DN chain. The shared chains' rules and the entry rules are ensured one by one (the
/// reference's insert-unless-present: what is there stays where it is); the DN chain is created
/// when missing, and this attachment's rules in it (this address's DNAT rules and their mark
/// rules) are rewritten at its end unless they already are the plan's. The rules of the
/// container's other attachments on this network, which share the chain, stay, and so do their
/// entry rules; with no other attachment every entry rule the plan lacks goes (a re-ADD with
/// other mappings replaces them; the reference keeps the old ones).
pub fn iptables_setup_input(state: &NatState, spec: &PortmapSpec) -> Result<Option<String>> {
    if spec.mappings.is_empty() {
        return Ok(None);
    }
    let p = plan(spec)?;
    let dn = dn_chain(&spec.network, &spec.container_id);
    let mut lines: Vec<String> =
        p.chains.iter().filter(|c| !state.chains.contains(c)).map(|c| format!(":{c} - [0:0]")).collect();
    lines.extend(p.shared.iter().filter(|r| !present(state, r)).map(PlannedRule::line));
    let rules = dn_rules(state, &dn);
    let (ours, others) = split_dn(&rules, &[spec.container_ip.addr()]);
    let canon = |r: &PlannedRule| canonical_rule(&split_args(&r.args));
    let want: Vec<&PlannedRule> = p.dn.iter().filter(|r| !others.iter().any(|o| o.canon == canon(r))).collect();
    let in_place = ours.len() == want.len() && ours.iter().zip(&want).all(|(o, w)| o.canon == canon(w));
    let mut dn_lines = Vec::new();
    if !in_place {
        dn_lines.extend(ours.iter().filter_map(|o| o.line.strip_prefix("-A ")).map(|rest| format!("-D {rest}")));
        dn_lines.extend(want.iter().map(|w| w.line()));
    }
    // Entry rules are APPENDED to CNI-HOSTPORT-DNAT in sorted protocol order, as the reference
    // does (after two pods, the first pod's entries come first).
    let other_ports = dnat_ports(&others);
    let mut our_ports = dnat_ports(&ours);
    our_ports.extend(spec.mappings.iter().filter_map(|m| Some((proto_number(&m.protocol).ok()?, m.host_port))));
    let mut entries: Vec<&PlannedRule> = p.entries.iter().collect();
    for (c, l) in &state.rules {
        let args = split_args(l);
        if c != TOP_DNAT || !arg_is(&args, "-j", &dn) {
            continue;
        }
        let have = canonical_rule(args.get(2..).unwrap_or_default());
        match entries.iter().position(|e| canon(e) == have) {
            Some(i) => {
                entries.remove(i);
            }
            None if others.is_empty() || entry_is_ours(&args, &our_ports, &other_ports) => {
                if let Some(rest) = l.strip_prefix("-A ") {
                    lines.push(format!("-D {rest}"));
                }
            }
            None => {}
        }
    }
    lines.extend(entries.iter().map(|e| e.line()));
    lines.extend(dn_lines);
    Ok(super::iptables::wrap_table("nat", &lines))
}

/// What of ADD's rules for one container address ([`plan`]) `state` lacks, as the reference's
/// `chain.check` (every rule exists, whole), and more: the shared chains' rules too, since a
/// missing SETMARK or MASQ rule breaks hairpin and localhost traffic just as well. None when
/// everything is there.
pub fn iptables_missing(state: &NatState, spec: &PortmapSpec) -> Result<Option<String>> {
    if spec.mappings.is_empty() {
        return Ok(None);
    }
    let p = plan(spec)?;
    if let Some(c) = p.chains.iter().find(|c| !state.chains.contains(c)) {
        return Ok(Some(format!("chain {c} does not exist")));
    }
    let missing = p.shared.iter().chain(&p.entries).chain(&p.dn).find(|r| !present(state, r));
    Ok(missing.map(|r| format!("no rule \"{}\" in chain {}", r.args, r.chain)))
}

/// Restore lines removing the container's DN chain (and the obsolete SN chain) with entry rules.
pub fn iptables_teardown_lines(state: &NatState, network: &str, container_id: &str) -> Vec<String> {
    let mut lines = chain_teardown_lines_from(state, TOP_DNAT, &dn_chain(network, container_id));
    lines.extend(chain_teardown_lines_from(state, OLD_TOP_SNAT, &sn_chain(network, container_id)));
    lines
}

/// Restore lines removing the attachment with the container addresses `ips` (of this family):
/// its rules in the container's DN chain and the entry rules only it needs; when the chain keeps
/// no other attachment's rule, the whole of [`iptables_teardown_lines`]. Nothing when `ips` is
/// empty (the attachment has no address of this family, so it made nothing here).
pub fn iptables_attachment_teardown_lines(
    state: &NatState,
    network: &str,
    container_id: &str,
    ips: &[IpAddr],
) -> Vec<String> {
    if ips.is_empty() {
        return Vec::new();
    }
    let dn = dn_chain(network, container_id);
    let rules = dn_rules(state, &dn);
    let (ours, others) = split_dn(&rules, ips);
    if others.is_empty() {
        return iptables_teardown_lines(state, network, container_id);
    }
    let mut lines: Vec<String> =
        ours.iter().filter_map(|o| o.line.strip_prefix("-A ")).map(|rest| format!("-D {rest}")).collect();
    let (our_ports, other_ports) = (dnat_ports(&ours), dnat_ports(&others));
    for (c, l) in &state.rules {
        let args = split_args(l);
        if c == TOP_DNAT && arg_is(&args, "-j", &dn) && entry_is_ours(&args, &our_ports, &other_ports) {
            if let Some(rest) = l.strip_prefix("-A ") {
                lines.push(format!("-D {rest}"));
            }
        }
    }
    lines
}

/// iptables: sets up one container address (one save + one restore exec).
pub fn iptables_ensure(spec: &PortmapSpec) -> Result<()> {
    let v6 = spec.container_ip.addr().is_ipv6();
    let ipt = IptablesBackend;
    if spec.mappings.is_empty() {
        return Ok(());
    }
    // the chains iptables_setup_input reads
    let dn = dn_chain(&spec.network, &spec.container_id);
    let reads = [SETMARK, MARK_MASQ, "POSTROUTING", "PREROUTING", "OUTPUT", TOP_DNAT, &dn];
    ipt.change(v6, "nat", &reads, |st| iptables_setup_input(st, spec)).context("unable to setup DNAT")
}

/// iptables: removes the container's chains in both families (with `ips`, the attachment's
/// rules: [`iptables_attachment_teardown_lines`]); a family whose tool is unusable is skipped
/// unless both are.
pub fn iptables_remove(network: &str, container_id: &str, ips: Option<&[IpAddr]>) -> Result<()> {
    let done = IptablesBackend.teardown_each(&[false, true], "nat", |v6, st| match ips {
        None => iptables_teardown_lines(st, network, container_id),
        Some(ips) => {
            let fam: Vec<IpAddr> = ips.iter().filter(|i| i.is_ipv6() == v6).copied().collect();
            iptables_attachment_teardown_lines(st, network, container_id, &fam)
        }
    });
    if done.iter().all(|t| !t.readable) {
        bail!("neither iptables nor ip6tables is usable");
    }
    let errs: Vec<String> =
        done.into_iter().filter(|t| t.readable).filter_map(|t| t.result.err().map(|e| format!("{e:#}"))).collect();
    if !errs.is_empty() {
        bail!("{}", errs.join("; "));
    }
    Ok(())
}

/// iptables GC: DN chains of `network` (entry comment + hash check) whose container is not valid.
/// (The nft layout's comment is the bare container id, with no network: it cannot be GCed per
/// network without risking other networks' rules, so only the iptables side has GC.)
pub fn iptables_gc(network: &str, valid: &[Attachment]) -> Result<()> {
    let prefix = format!("dnat name: \"{network}\" id: \"");
    let plan = |_: bool, st: &NatState| {
        let mut lines = Vec::new();
        let mut seen: Vec<String> = Vec::new();
        for (c, l) in &st.rules {
            if c != TOP_DNAT {
                continue;
            }
            let args = split_args(l);
            let Some(cm) = args.iter().position(|a| a == "--comment").and_then(|i| args.get(i + 1)) else { continue };
            let Some(cid) = cm.strip_prefix(&prefix).and_then(|r| r.strip_suffix('"')) else { continue };
            let Some(target) = args.iter().position(|a| a == "-j").and_then(|i| args.get(i + 1)) else { continue };
            if *target != dn_chain(network, cid)
                || valid.iter().any(|a| a.container_id == cid)
                || seen.iter().any(|x| x == cid)
            {
                continue;
            }
            lines.extend(iptables_teardown_lines(st, network, cid));
            seen.push(cid.to_string());
        }
        lines
    };
    for t in IptablesBackend.teardown_each(&[false, true], "nat", plan) {
        if t.readable {
            t.result?;
        }
    }
    Ok(())
}

/// Parses saved `nat` text (the fuzzing entry point of the save parser).
pub fn parse_nat(text: &str) -> NatState {
    parse_save(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::nft::sock::split_msgs;

    fn spec(ip: &str) -> PortmapSpec {
        PortmapSpec {
            network: "net".into(),
            container_id: "cid1".into(),
            container_ip: ip.parse().unwrap(),
            mappings: vec![
                PortMapping { host_port: 8080, container_port: 80, protocol: "tcp".into(), host_ip: None },
                PortMapping {
                    host_port: 53,
                    container_port: 5353,
                    protocol: "udp".into(),
                    host_ip: Some("198.18.9.1".parse().unwrap()),
                },
            ],
            snat: true,
            masq_all: false,
            mark_masq_bit: 13,
            external_set_mark_chain: None,
            conditions: vec![],
        }
    }

    /// Compares against the capture of golden/portmap.nft: messages 1..=18 are the IPv4 layout;
    /// message 19 is the masqAll masquerade rule. (The capture's IPv6 line was written with
    /// `ip6 nexthdr`, which is not what we or the reference make: v1.9.1's text for a mapping is
    /// `tcp dport P dnat to …`, which nft encodes with `meta l4proto`, as ours does for IPv6,
    /// checked by the decoder test below and against nft by
    /// `meta::portmap_nftables_mapping_rules_vs_nft_of_the_reference_text`. For IPv4 we keep the
    /// capture's `ip protocol`, where nft writes `meta l4proto`: the same packets, listed in
    /// docs/differences.md.)
    #[test]
    fn nft_layout_matches_nft_capture() {
        let golden = include_bytes!("nft/golden/portmap.bin");
        let g: Vec<_> = split_msgs(golden).into_iter().collect();
        let ours = nft_setup_batch(&spec("198.18.0.5/24")).unwrap().encode(0).unwrap();
        let o: Vec<_> = split_msgs(&ours).into_iter().collect();
        assert_eq!(o.len(), 20);
        for i in 1..=18 {
            assert_eq!(o[i].ty, g[i].ty, "message {i}");
            assert_eq!(o[i].flags, g[i].flags | crate::firewall::nft::NLM_F_ACK, "message {i}");
            assert_eq!(o[i].body, g[i].body, "message {i} body");
        }
        let mut all = spec("198.18.0.5/24");
        all.masq_all = true;
        let ours = nft_setup_batch(&all).unwrap().encode(0).unwrap();
        let o: Vec<_> = split_msgs(&ours).into_iter().collect();
        assert_eq!(o.len(), 19);
        assert_eq!(o[17].body, g[19].body, "masqAll rule");
    }

    #[test]
    fn backend_choice_from_options() {
        let nft = || BackendKind::Nftables;
        let ipt = || BackendKind::Iptables;
        let none = BackendHints::default();
        assert_eq!(choose(None, None, &none, nft).unwrap(), BackendKind::Nftables);
        assert_eq!(choose(None, None, &none, ipt).unwrap(), BackendKind::Iptables);
        assert_eq!(choose(Some("iptables"), Some("nftables"), &none, nft).unwrap(), BackendKind::Iptables);
        let ext = BackendHints { external_set_mark_chain: true, ..Default::default() };
        assert_eq!(choose(None, None, &ext, nft).unwrap(), BackendKind::Iptables);
        let e = choose(None, Some("nftables"), &ext, nft).unwrap_err().to_string();
        assert_eq!(e, "nftables backend was requested but configuration contains iptables-specific options [externalSetMarkChain]");
        let c4 = vec!["ip saddr 198.18.0.0/15".to_string()];
        let nft_conds = BackendHints { conditions_v4: &c4, conditions_v6: &c4, ..Default::default() };
        assert_eq!(choose(None, None, &nft_conds, ipt).unwrap(), BackendKind::Nftables);
        let e = choose(None, Some("iptables"), &nft_conds, ipt).unwrap_err().to_string();
        assert_eq!(e, "iptables backend was requested but configuration contains nftables-specific options [conditionsV4 conditionsV6]");
        let c6 = vec!["-s".to_string(), "fd00::/8".to_string()];
        let mixed = BackendHints { conditions_v4: &c4, conditions_v6: &c6, ..Default::default() };
        assert!(choose(None, None, &mixed, nft).is_err());
        assert!(choose(None, Some("nftables"), &mixed, nft).is_err());
        // as the reference: an empty first condition says nothing about the backend
        let empty = vec![String::new()];
        let e4 = BackendHints { conditions_v4: &empty, ..Default::default() };
        assert_eq!(choose(None, None, &e4, ipt).unwrap(), BackendKind::Iptables);
        assert_eq!(choose(None, None, &e4, nft).unwrap(), BackendKind::Nftables);
        assert_eq!(choose(None, Some("iptables"), &e4, nft).unwrap(), BackendKind::Iptables);
    }

    #[test]
    fn nft_v6_mapping_uses_l4proto_and_roundtrips() {
        use crate::firewall::nft::decode::decode_rule;
        let b = nft_setup_batch(&spec("fd00::5/64")).unwrap();
        let m = b.msgs.iter().find(|m| m.what.ends_with("hostports") && m.what.starts_with("add rule")).unwrap();
        let r = decode_rule(m.family, &m.payload);
        assert_eq!(r.comment.as_deref(), Some("cid1"));
        assert_eq!(r.exprs[0], Expr::Meta { key: crate::firewall::nft::expr::meta_key::L4PROTO, dreg: 1 });
        assert!(matches!(r.exprs.last(), Some(Expr::Nat { family: 10, .. })));
    }

    #[test]
    fn nft_conditions_subset_and_wrong_family_host_ip() {
        let mut s = spec("198.18.0.5/24");
        s.conditions = vec!["ip saddr != 198.18.7.0/24".into(), "iifname \"eth1\"".into()];
        let b = nft_setup_batch(&s).unwrap();
        let pre = b.msgs.iter().find(|m| m.what == "add rule ip cni_hostport prerouting").unwrap();
        let r = crate::firewall::nft::decode::decode_rule(pre.family, &pre.payload);
        assert_eq!(r.exprs[1], Expr::Cmp { sreg: 1, op: CmpOp::Neq, data: vec![198, 18, 7] });
        assert!(matches!(r.exprs[3], Expr::Cmp { op: CmpOp::Eq, .. }));
        assert!(matches!(r.exprs[4], Expr::Fib { .. }));
        s.conditions = vec!["ip6 saddr fd00::1".into()];
        assert!(nft_setup_batch(&s).is_err(), "a v6 condition in the v4 table");
        let s6 = spec("fd00::5/64");
        assert_eq!(family_mappings(&s6).len(), 1); // the v4 host IP mapping is skipped
    }

    #[test]
    fn iptables_input_has_reference_layout() {
        let st = NatState::default();
        let input = iptables_setup_input(&st, &spec("198.18.0.5/24")).unwrap().unwrap();
        let dn = dn_chain("net", "cid1");
        assert_eq!(dn.len(), 28);
        let c = r#""dnat name: \"net\" id: \"cid1\"""#;
        let expected = format!(
            "*nat\n:CNI-HOSTPORT-SETMARK - [0:0]\n:CNI-HOSTPORT-MASQ - [0:0]\n:CNI-HOSTPORT-DNAT - [0:0]\n:{dn} - [0:0]\n\
             -A CNI-HOSTPORT-SETMARK -m comment --comment \"CNI portfwd masquerade mark\" -j MARK --set-xmark 0x2000/0x2000\n\
             -A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE\n\
             -I POSTROUTING 1 -m comment --comment \"CNI portfwd requiring masquerade\" -j CNI-HOSTPORT-MASQ\n\
             -A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT\n\
             -A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT\n\
             -A CNI-HOSTPORT-DNAT -m comment --comment {c} -m multiport -p tcp --destination-ports 8080 -j {dn}\n\
             -A CNI-HOSTPORT-DNAT -m comment --comment {c} -m multiport -p udp --destination-ports 53 -j {dn}\n\
             -A {dn} -p tcp --dport 8080 -s 198.18.0.0/24 -j CNI-HOSTPORT-SETMARK\n\
             -A {dn} -p tcp --dport 8080 -s 127.0.0.1 -j CNI-HOSTPORT-SETMARK\n\
             -A {dn} -p tcp --dport 8080 -j DNAT --to-destination 198.18.0.5:80\n\
             -A {dn} -p udp --dport 53 -d 198.18.9.1 -s 198.18.0.0/24 -j CNI-HOSTPORT-SETMARK\n\
             -A {dn} -p udp --dport 53 -d 198.18.9.1 -s 127.0.0.1 -j CNI-HOSTPORT-SETMARK\n\
             -A {dn} -p udp --dport 53 -d 198.18.9.1 -j DNAT --to-destination 198.18.0.5:5353\nCOMMIT\n"
        );
        assert_eq!(input, expected);
    }

    #[test]
    fn iptables_readd_keeps_present_entries_in_place_and_deletes_stale_ones() {
        let dn = dn_chain("net", "cid1");
        let c = r#""dnat name: \"net\" id: \"cid1\"""#;
        let save = format!(
            "*nat\n:CNI-HOSTPORT-DNAT - [0:0]\n:{dn} - [0:0]\n\
             -A CNI-HOSTPORT-DNAT -p tcp -m comment --comment {c} -m multiport --dports 8080 -j {dn}\n\
             -A CNI-HOSTPORT-DNAT -p tcp -m comment --comment {c} -m multiport --dports 9999 -j {dn}\nCOMMIT\n"
        );
        let input = iptables_setup_input(&parse_save(&save), &spec("198.18.0.5/24")).unwrap().unwrap();
        let entries: Vec<&str> = input.lines().filter(|l| l.contains("CNI-HOSTPORT-DNAT -")).collect();
        assert_eq!(
            entries,
            vec![
                format!("-D CNI-HOSTPORT-DNAT -p tcp -m comment --comment {c} -m multiport --dports 9999 -j {dn}"),
                format!(
                    "-A CNI-HOSTPORT-DNAT -m comment --comment {c} -m multiport -p udp --destination-ports 53 -j {dn}"
                ),
            ]
        );
    }

    /// `spec("198.18.0.5/24")` after ADD, as `iptables-save` prints it (the reference's text).
    fn saved_after_add(dn: &str) -> String {
        let c = r#""dnat name: \"net\" id: \"cid1\"""#;
        format!(
            "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n\
             :CNI-HOSTPORT-SETMARK - [0:0]\n:CNI-HOSTPORT-MASQ - [0:0]\n:CNI-HOSTPORT-DNAT - [0:0]\n:{dn} - [0:0]\n\
             -A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT\n\
             -A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT\n\
             -A POSTROUTING -m comment --comment \"CNI portfwd requiring masquerade\" -j CNI-HOSTPORT-MASQ\n\
             -A CNI-HOSTPORT-SETMARK -m comment --comment \"CNI portfwd masquerade mark\" -j MARK --set-xmark 0x2000/0x2000\n\
             -A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE\n\
             -A CNI-HOSTPORT-DNAT -p tcp -m comment --comment {c} -m multiport --dports 8080 -j {dn}\n\
             -A CNI-HOSTPORT-DNAT -p udp -m comment --comment {c} -m multiport --dports 53 -j {dn}\n\
             -A {dn} -s 198.18.0.0/24 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK\n\
             -A {dn} -s 127.0.0.1/32 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK\n\
             -A {dn} -p tcp -m tcp --dport 8080 -j DNAT --to-destination 198.18.0.5:80\n\
             -A {dn} -s 198.18.0.0/24 -d 198.18.9.1/32 -p udp -m udp --dport 53 -j CNI-HOSTPORT-SETMARK\n\
             -A {dn} -s 127.0.0.1/32 -d 198.18.9.1/32 -p udp -m udp --dport 53 -j CNI-HOSTPORT-SETMARK\n\
             -A {dn} -d 198.18.9.1/32 -p udp -m udp --dport 53 -j DNAT --to-destination 198.18.0.5:5353\nCOMMIT\n"
        )
    }

    /// Regression: CHECK matched by substring ("--dport 80" is inside "--dport 8080", "…:8"
    /// inside "…:80") and never looked at the protocol or the mark rules.
    #[test]
    fn iptables_check_wants_every_rule_whole() {
        let dn = dn_chain("net", "cid1");
        let text = saved_after_add(&dn);
        let st = parse_save(&text);
        let s = spec("198.18.0.5/24");
        assert_eq!(iptables_missing(&st, &s).unwrap(), None);
        // ADD planned against that state changes nothing at all
        assert_eq!(iptables_setup_input(&st, &s).unwrap(), None);
        let tweak = |f: &dyn Fn(&mut PortMapping)| {
            let mut t = s.clone();
            f(&mut t.mappings[0]);
            iptables_missing(&st, &t).unwrap()
        };
        assert!(tweak(&|m| m.host_port = 80).is_some(), "host port 80 is not 8080");
        assert!(tweak(&|m| m.container_port = 8).is_some(), "container port 8 is not 80");
        assert!(tweak(&|m| m.protocol = "udp".into()).is_some(), "udp is not tcp");
        let mut t = s.clone();
        t.mark_masq_bit = 5;
        assert!(iptables_missing(&st, &t).unwrap().unwrap().contains("0x20/0x20"));
        // each rule of the state is needed: without any one of them CHECK fails
        let rules: Vec<&str> = text.lines().filter(|l| l.starts_with("-A ")).collect();
        for gone in &rules {
            let st = parse_save(&text.replace(&format!("{gone}\n"), ""));
            assert!(iptables_missing(&st, &s).unwrap().is_some(), "CHECK passed without {gone}");
        }
        let st = parse_save(&text.replace(&format!(":{dn} - [0:0]\n"), ""));
        assert!(iptables_missing(&st, &s).unwrap().unwrap().contains("does not exist"));
    }

    /// Regression: a second container with another markMasqBit got no SETMARK/MASQ rules of its
    /// own (any MARK rule counted); as the reference, its exact rules are added.
    #[test]
    fn iptables_other_mark_bit_adds_its_own_mark_rules() {
        let st = parse_save(&saved_after_add(&dn_chain("net", "cid1")));
        let mut s = spec("198.18.0.6/24");
        s.container_id = "cid2".into();
        s.mark_masq_bit = 5;
        let input = iptables_setup_input(&st, &s).unwrap().unwrap();
        assert!(
            input.contains(
                "\n-A CNI-HOSTPORT-SETMARK -m comment --comment \"CNI portfwd masquerade mark\" -j MARK --set-xmark 0x20/0x20\n"
            ),
            "{input}"
        );
        assert!(input.contains("\n-A CNI-HOSTPORT-MASQ -m mark --mark 0x20/0x20 -j MASQUERADE\n"), "{input}");
        assert!(!input.contains("POSTROUTING") && !input.contains(":CNI-HOSTPORT-SETMARK"), "{input}");
        s.mark_masq_bit = 13;
        let input = iptables_setup_input(&st, &s).unwrap().unwrap();
        assert!(!input.contains("CNI-HOSTPORT-SETMARK -m") && !input.contains("CNI-HOSTPORT-MASQ -m"), "{input}");
    }

    /// Regression: the entry rules named only this family's host ports; the reference's name every
    /// mapping's (grouped by protocol), and a family with nothing mapped gets the chain and entries.
    #[test]
    fn iptables_entries_name_every_mapping_whatever_its_family() {
        let mut s = spec("fd00::5/64");
        let m = |p: u16, h: Option<&str>| PortMapping {
            host_port: p,
            container_port: 80,
            protocol: "tcp".into(),
            host_ip: h.map(|h| h.parse().unwrap()),
        };
        s.mappings = vec![m(8080, None), m(9090, Some("198.18.1.1")), m(9091, Some("fd00:1::1"))];
        let input = iptables_setup_input(&NatState::default(), &s).unwrap().unwrap();
        assert!(input.contains("-p tcp --destination-ports 8080,9090,9091 -j"), "{input}");
        assert!(!input.contains("--dport 9090"), "{input}");
        assert!(input.contains("--dport 9091 -d fd00:1::1 -j DNAT"), "{input}");
        s.mappings =
            vec![m(9090, Some("198.18.1.1")), PortMapping { protocol: "udp".into(), ..m(53, Some("0.0.0.0")) }];
        let input = iptables_setup_input(&NatState::default(), &s).unwrap().unwrap();
        let dn = dn_chain("net", "cid1");
        assert!(input.contains(&format!(":{dn} - [0:0]")), "{input}");
        assert!(
            input.contains("-p tcp --destination-ports 9090 -j") && input.contains("-p udp --destination-ports 53 -j")
        );
        assert!(!input.contains(&format!("-A {dn} ")), "no rule of the DN chain applies to IPv6: {input}");
    }

    /// Saved `nat` with the rules ADD made for `s` (its own DN chain and entries, read back).
    fn saved_with(base: &str, s: &PortmapSpec) -> String {
        let st = parse_save(base);
        let input = iptables_setup_input(&st, s).unwrap().unwrap();
        let mut lines: Vec<String> = base.lines().filter(|l| *l != "COMMIT").map(str::to_string).collect();
        for l in input.lines().filter(|l| l.starts_with(':') || l.starts_with("-A ") || l.starts_with("-I ")) {
            // (saved form: "-I POSTROUTING 1 …" is listed as "-A POSTROUTING …")
            let l = l.strip_prefix("-I POSTROUTING 1 ").map_or(l.to_string(), |r| format!("-A POSTROUTING {r}"));
            if !lines.contains(&l) {
                lines.push(l);
            }
        }
        lines.push("COMMIT".into());
        lines.join("\n") + "\n"
    }

    /// Regression: ADD of a container's second attachment on the network (another address, same
    /// DN chain) redeclared the chain, dropping the first one's rules, and deleted its entry.
    #[test]
    fn iptables_second_attachment_keeps_the_first_ones_rules_and_del_takes_its_own() {
        let a = spec("198.18.0.5/24");
        let mut b = spec("198.18.1.5/24");
        b.mappings = vec![PortMapping { host_port: 8081, container_port: 80, protocol: "tcp".into(), host_ip: None }];
        let dn = dn_chain("net", "cid1");
        let after_a = saved_with("*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n", &a);
        let input = iptables_setup_input(&parse_save(&after_a), &b).unwrap().unwrap();
        assert!(!input.contains(&format!(":{dn}")) && !input.contains("-D "), "{input}");
        assert_eq!(input.matches(&format!("-A {dn} ")).count(), 3, "{input}");
        assert!(input.contains("--destination-ports 8081 -j"), "{input}");
        let both = saved_with(&after_a, &b);
        // each attachment's ADD again changes nothing; CHECK of each passes
        for s in [&a, &b] {
            assert_eq!(iptables_setup_input(&parse_save(&both), s).unwrap(), None);
            assert_eq!(iptables_missing(&parse_save(&both), s).unwrap(), None);
        }
        // DEL of b: its three rules and its entry; a's stay
        let st = parse_save(&both);
        let lines = iptables_attachment_teardown_lines(&st, "net", "cid1", &["198.18.1.5".parse().unwrap()]);
        assert_eq!(lines.len(), 4, "{lines:#?}");
        assert!(lines.iter().all(|l| l.starts_with("-D ") && (l.contains("8081") || l.contains("198.18.1.0/24"))));
        // DEL of the last attachment (or without addresses): the chain and every entry
        let only_a = parse_save(&after_a);
        let lines = iptables_attachment_teardown_lines(&only_a, "net", "cid1", &["198.18.0.5".parse().unwrap()]);
        assert_eq!(lines, iptables_teardown_lines(&only_a, "net", "cid1"));
        assert!(lines.contains(&format!("-X {dn}")));
        // an attachment without an address of this family made nothing here
        assert!(iptables_attachment_teardown_lines(&only_a, "net", "cid1", &[]).is_empty());
        // a re-ADD of a with another mapping replaces a's rules and entries, b's stay
        let mut a2 = a.clone();
        a2.mappings = vec![PortMapping { host_port: 9090, container_port: 90, protocol: "tcp".into(), host_ip: None }];
        let input = iptables_setup_input(&st, &a2).unwrap().unwrap();
        let deleted: Vec<&str> = input.lines().filter(|l| l.starts_with("-D ")).collect();
        assert_eq!(deleted.len(), 8, "a's 6 rules and 2 entries:\n{input}");
        assert!(deleted.iter().all(|l| !l.contains("8081") && !l.contains("198.18.1.")), "{input}");
    }

    /// Two mappings of one host port (to two container ports) share their mark rules: written
    /// once, as the reference's insert-unless-present leaves them.
    #[test]
    fn iptables_identical_rules_are_written_once() {
        let mut s = spec("198.18.0.5/24");
        let m = |c: u16| PortMapping { host_port: 8080, container_port: c, protocol: "tcp".into(), host_ip: None };
        s.mappings = vec![m(80), m(81)];
        let input = iptables_setup_input(&NatState::default(), &s).unwrap().unwrap();
        let dn = dn_chain("net", "cid1");
        assert_eq!(input.matches(&format!("-A {dn} ")).count(), 4, "{input}");
        assert_eq!(input.matches("-j CNI-HOSTPORT-SETMARK").count(), 2, "{input}");
        assert!(input.contains("--destination-ports 8080,8080 -j"), "the reference's entry: {input}");
    }

    #[test]
    fn nft_rules_are_told_apart_by_the_address_they_map_to() {
        let a = spec("198.18.0.5/24");
        let mut b = spec("198.18.1.5/24");
        b.masq_all = true;
        let info = |r: &Rule| RuleInfo {
            family: 2,
            table: r.table.clone(),
            chain: r.chain.clone(),
            handle: 1,
            comment: r.comment.clone(),
            exprs: r.exprs.clone(),
        };
        let (ra, rb) = (nft_attachment_rules(&a).unwrap(), nft_attachment_rules(&b).unwrap());
        assert_eq!((ra.len(), rb.len()), (4, 3));
        let (ipa, ipb) = (a.container_ip.addr(), b.container_ip.addr());
        for r in &ra {
            assert!(nft_rule_is_for(&info(r), ipa) && !nft_rule_is_for(&info(r), ipb), "{r:?}");
            assert!(nft_is_attachments(&info(r), "cid1", Some(&[ipa])) && nft_is_attachments(&info(r), "cid1", None));
            assert!(!nft_is_attachments(&info(r), "cid2", None));
        }
        for r in &rb {
            assert!(nft_rule_is_for(&info(r), ipb) && !nft_rule_is_for(&info(r), ipa), "{r:?}");
        }
    }

    #[test]
    fn iptables_multiport_chunks_of_15_and_v6_format() {
        let mut s = spec("fd00::5/64");
        s.mappings = (1..=16)
            .map(|p| PortMapping { host_port: 1000 + p, container_port: 80, protocol: "tcp".into(), host_ip: None })
            .collect();
        let input = iptables_setup_input(&NatState::default(), &s).unwrap().unwrap();
        assert_eq!(input.matches("--destination-ports").count(), 2);
        assert!(input.contains("--destination-ports 1016 -j"));
        assert!(input.contains("-j DNAT --to-destination [fd00::5]:80"));
        assert!(!input.contains("127.0.0.1"));
        assert!(input.contains("-s fd00::/64 -j CNI-HOSTPORT-SETMARK"));
    }

    #[test]
    fn iptables_teardown_and_gc_lines() {
        let dn = dn_chain("net", "cid1");
        let save = format!(
            "*nat\n:PREROUTING ACCEPT [0:0]\n:CNI-HOSTPORT-DNAT - [0:0]\n:{dn} - [0:0]\n\
             -A CNI-HOSTPORT-DNAT -p tcp -m comment --comment \"dnat name: \\\"net\\\" id: \\\"cid1\\\"\" -m multiport --dports 8080 -j {dn}\n\
             -A {dn} -p tcp -m tcp --dport 8080 -j DNAT --to-destination 198.18.0.5:80\nCOMMIT\n"
        );
        let st = parse_save(&save);
        let lines = iptables_teardown_lines(&st, "net", "cid1");
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("-D CNI-HOSTPORT-DNAT -p tcp"));
        assert_eq!(lines[1], format!("-F {dn}"));
        assert_eq!(lines[2], format!("-X {dn}"));
        assert!(iptables_teardown_lines(&st, "net", "other").is_empty());
    }
}
