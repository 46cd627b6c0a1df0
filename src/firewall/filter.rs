//! The firewall plugin's façade (reference §2.17): [`choose`] the rules backend and
//! [`firewalld_zone`] once, then [`ensure`] (ADD), [`remove`] (DEL), [`check`] (CHECK) for a
//! [`FirewallSpec`]. No GC: the rules carry the container id but not the network, so they cannot
//! be attributed to one network's attachments.
//!
//! firewalld ([`super::firewalld`], D-Bus): when the spec names a zone, every container address
//! becomes a source `IP/32` (`/128`) of it and no per-address rule is written; with
//! `ingressPolicy` open that is all, otherwise the policy's isolation rules are written with the
//! rules backend as well, as the reference does (its firewalld backend's Add, then
//! `setupIngressPolicy`). DEL and CHECK with a zone touch only the zone's sources (the isolation
//! rules stay on DEL, as always).
//!
//! iptables (filter table, the reference's layout, one `iptables-restore` per family):
//! ```text
//! FORWARD:      -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD        (first)
//! CNI-FORWARD:  -m comment --comment "CNI firewall plugin admin overrides" -j CNI-ADMIN  (first)
//!               -d IP/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
//!               -s IP/32 -j ACCEPT
//! ingressPolicy same-bridge / isolated:
//! FORWARD:      -j CNI-ISOLATION-STAGE-1 (first)
//! STAGE-1:      -i BR ! -o BR -j CNI-ISOLATION-STAGE-2 ; [isolated: -i BR -o BR -j DROP] ; -j RETURN
//! STAGE-2:      -o BR -j DROP ; -j RETURN
//! ```
//! The admin chain is created when missing and never modified. DEL removes the per-IP rules only.
//!
//! nftables (the reference has none; our layout, table `inet cni_firewall`):
//! ```text
//! chain forward { type filter hook forward priority filter; policy accept;
//!                 jump isolation_stage_1 ; jump cni_forward }           (rewritten on each ADD)
//! chain cni_forward { jump admin ; ip daddr IP ct state established,related accept comment "<cid>" ;
//!                     ip saddr IP accept comment "<cid>" }
//! chain admin { }                                                       (user-owned, never touched)
//! chain isolation_stage_1 { iifname BR oifname != BR jump isolation_stage_2 comment "<policy> BR" ;
//!                           [isolated: iifname BR oifname BR drop comment "…"] }
//! chain isolation_stage_2 { oifname BR drop comment "<policy> BR" }
//! ```
//! An `accept` in one nftables table cannot overrule a `drop` in another table's base chain, so
//! on nftables the per-IP accepts only matter to rules placed in `admin`; the isolation drops
//! work everywhere.

use super::iptables::{restore_quote, split_args, wrap_table, IptablesBackend, NatState};
use super::nft::decode::{list_chains, list_rules};
use super::nft::expr::{ct_state, match_addr, match_ct_state, match_ifname, meta_key, nfproto, CmpOp, REG_1};
use super::nft::plan::TableState;
use super::nft::sock::NftSocket;
use super::nft::{prio, BaseChain, Batch, Expr, Family, Hook, Rule, Verdict};
use super::BackendKind;
use crate::cni::CniError;
use anyhow::{bail, Result};
use ipnet::IpNet;

/// The firewall plugin's rules backends (firewalld, when chosen, comes on top: [`firewalld_zone`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Iptables,
    Nftables,
}

/// The `backend` key as the reference's `getBackend` reads it: `"iptables"` and `"firewalld"`
/// (and our `"nftables"`) name a backend; any other value names none and falls through to the
/// default (firewalld when it runs, else the reference's rule), as there: a config the reference
/// runs is not refused (logged). Read once, then given to [`choose`] and [`firewalld_zone`].
pub fn backend_key(key: Option<&str>) -> Option<&str> {
    match key.filter(|k| !k.is_empty()) {
        Some(k @ ("iptables" | "nftables" | "firewalld")) => Some(k),
        Some(other) => {
            tracing::warn!(
                "firewall: unknown backend {other:?} (known: iptables, nftables, firewalld): the default is used, \
                 as the reference does"
            );
            None
        }
        None => None,
    }
}

/// The backend, chosen once: `env` (`CNI_MULTI_FIREWALL_BACKEND`), else the config's `backend`
/// ([`backend_key`]), else `default` (the reference's rule: [`super::default_backend`]).
pub fn choose(env: Option<&str>, key: Option<&str>, default: impl FnOnce() -> BackendKind) -> Result<Backend> {
    // `firewalld` ([`firewalld_zone`]) still needs a rules backend for the isolation rules of an
    // ingressPolicy: the one chosen with no key
    let key = backend_key(key).filter(|k| *k != "firewalld");
    let kind = BackendKind::choose_with(env, key, default).map_err(|e| CniError::config(format!("{e:#}")))?;
    Ok(match kind {
        BackendKind::Iptables => Backend::Iptables,
        BackendKind::Nftables => Backend::Nftables,
    })
}

/// The firewalld zone when the firewalld backend is used: `backend: "firewalld"`, unless the node
/// override (`env`) names another backend; with no key, when `is_running()` (firewalld owns its
/// bus name, asked only then). The zone is `firewalldZone`, default `trusted`.
pub fn firewalld_zone(
    env: Option<&str>,
    key: Option<&str>,
    zone: Option<&str>,
    is_running: impl FnOnce() -> bool,
) -> Option<String> {
    super::firewalld::selected(env, key, is_running).then(|| super::firewalld::zone_or_default(zone))
}

/// Whether firewalld owns `org.fedoraproject.FirewallD1` on the system bus.
pub fn firewalld_running() -> bool {
    super::firewalld::running()
}

/// ADD: the firewalld sources, the per-IP accepts and the ingress policy's isolation rules.
pub fn ensure(backend: Backend, spec: &FirewallSpec) -> Result<()> {
    if spec.ingress_policy != IngressPolicy::Open && spec.bridge.is_none() {
        bail!("ingressPolicy needs the bridge as the first interface of prevResult");
    }
    // names written into rules (and into iptables-restore input, where a newline would be a
    // line of its own) are checked before any change
    if let (Some(br), true) = (&spec.bridge, spec.ingress_policy != IngressPolicy::Open) {
        crate::cni::env::validate_link_name(br).map_err(|e| {
            CniError::config(format!("prevResult's bridge interface {}: {}", crate::cni::result::go_quote(br), e.msg))
        })?;
    }
    // (with firewalld no per-address rule is written, so the admin chain is unused)
    if backend == Backend::Iptables && spec.firewalld_zone.is_none() {
        super::iptables::check_chain_name("iptablesAdminChainName", &spec.admin_chain)?;
    }
    if let Some(zone) = &spec.firewalld_zone {
        super::firewalld::add(zone, &spec.ips)?;
        if spec.ingress_policy == IngressPolicy::Open {
            return Ok(());
        }
    }
    match backend {
        Backend::Iptables => iptables_add(spec),
        Backend::Nftables => nft_add(spec),
    }
    .inspect_err(|_| {
        // a failed ADD leaves nothing behind: no firewalld source, and no rules of a family that
        // went in before another failed (with iptables each family is its own commit)
        if let Err(u) = remove(spec) {
            tracing::warn!("firewall: removing the rules of a failed ADD: {u:#}");
        }
    })
}

/// DEL: the per-IP rules (isolation rules stay, as the reference), in both backends (the shared
/// teardown policy, so DEL needs no backend probe). iptables rules carry no id and are found by
/// address, so without the addresses (no prevResult) there is nothing to find there. With
/// firewalld, the zone's sources (ADD wrote no per-IP rule).
pub fn remove(spec: &FirewallSpec) -> Result<()> {
    if let Some(zone) = &spec.firewalld_zone {
        super::firewalld::remove(zone, &spec.ips)?;
        // cni-multi before 2026-12-07 also wrote the iptables accept rules with firewalld and
        // an ingressPolicy, and its DEL left them: remove what is left of them (nothing to do
        // for anything else; a node without iptables has none)
        if !spec.ips.is_empty() {
            if let Err(e) = iptables_del(spec) {
                tracing::debug!("no iptables accept rules of an older cni-multi removed: {e:#}");
            }
        }
        return Ok(());
    }
    super::teardown_both(
        || if spec.ips.is_empty() { Ok(()) } else { iptables_del(spec) },
        || nft_del(&spec.container_id),
    )
}

/// CHECK: chains, jumps and per-IP rules exist; with firewalld, the zone's sources (as the
/// reference, which checks no isolation rule either).
pub fn check(backend: Backend, spec: &FirewallSpec) -> Result<()> {
    if let Some(zone) = &spec.firewalld_zone {
        return super::firewalld::check(zone, &spec.ips);
    }
    match backend {
        Backend::Iptables => iptables_check(spec),
        Backend::Nftables => nft_check(spec),
    }
}

/// `ingressPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngressPolicy {
    Open,
    SameBridge,
    Isolated,
}

impl IngressPolicy {
    pub fn parse(s: &str) -> Result<IngressPolicy> {
        Ok(match s {
            "" | "open" => IngressPolicy::Open,
            "same-bridge" => IngressPolicy::SameBridge,
            "isolated" => IngressPolicy::Isolated,
            other => bail!("unknown ingress policy: {other:?}"),
        })
    }
    fn comment(self) -> &'static str {
        match self {
            IngressPolicy::Isolated => "CNI firewall plugin rules (ingressPolicy: isolated)",
            _ => "CNI firewall plugin rules (ingressPolicy: same-bridge)",
        }
    }
}

/// What one ADD/DEL/CHECK is about.
#[derive(Debug, Clone)]
pub struct FirewallSpec {
    pub container_id: String,
    pub ips: Vec<IpNet>,
    /// `iptablesAdminChainName`, default `CNI-ADMIN`.
    pub admin_chain: String,
    pub ingress_policy: IngressPolicy,
    /// The bridge (prevResult interface 0) for the ingress policy.
    pub bridge: Option<String>,
    /// firewalld backend: the zone whose sources the addresses become ([`firewalld_zone`]); then
    /// the rules backend writes the ingress policy's isolation rules only, no per-IP rule.
    pub firewalld_zone: Option<String>,
}

impl FirewallSpec {
    /// Whether the rules backend writes the per-IP accepts (not with firewalld: its zone does).
    fn accepts(&self) -> bool {
        self.firewalld_zone.is_none()
    }
}

pub const PRIV_CHAIN: &str = "CNI-FORWARD";
pub const STAGE1: &str = "CNI-ISOLATION-STAGE-1";
pub const STAGE2: &str = "CNI-ISOLATION-STAGE-2";
const FILTER_COMMENT: &str = "CNI firewall plugin rules";
const ADMIN_COMMENT: &str = "CNI firewall plugin admin overrides";

fn host_cidr(ip: &IpNet) -> String {
    format!("{}/{}", ip.addr(), ip.max_prefix_len())
}

fn arg<'a>(a: &'a [String], flag: &str) -> Option<&'a str> {
    a.iter().position(|x| x == flag).and_then(|i| a.get(i + 1)).map(String::as_str)
}

fn has(st: &NatState, chain: &str, pred: impl Fn(&[String]) -> bool) -> bool {
    st.rules.iter().any(|(c, l)| c == chain && pred(&split_args(l)))
}

fn is_established_rule(a: &[String], cidr: &str) -> bool {
    arg(a, "-d") == Some(cidr) && arg(a, "-j") == Some("ACCEPT") && a.iter().any(|x| x == "--ctstate")
}

fn is_source_rule(a: &[String], cidr: &str) -> bool {
    arg(a, "-s") == Some(cidr) && arg(a, "-j") == Some("ACCEPT") && !a.iter().any(|x| x == "--ctstate")
}

fn family_ips(spec: &FirewallSpec, v6: bool) -> Vec<IpNet> {
    spec.ips.iter().filter(|i| i.addr().is_ipv6() == v6).copied().collect()
}

/// Restore input (filter table) for ADD in one family; None when the family has no IPs. With
/// firewalld only the ingress policy's isolation rules (the reference's `setupIngressPolicy`).
pub fn iptables_add_input(st: &NatState, spec: &FirewallSpec, v6: bool) -> Option<String> {
    let ips = family_ips(spec, v6);
    if ips.is_empty() {
        return None;
    }
    let admin = spec.admin_chain.as_str();
    let mut decl = Vec::new();
    let mut lines = Vec::new();
    let exists = |c: &str| st.chains.iter().any(|x| x == c);
    if spec.accepts() {
        for c in [PRIV_CHAIN, admin] {
            if !exists(c) {
                decl.push(format!(":{c} - [0:0]"));
            }
        }
        if !has(st, "FORWARD", |a| arg(a, "-j") == Some(PRIV_CHAIN)) {
            lines.push(format!("-I FORWARD 1 -m comment --comment {} -j {PRIV_CHAIN}", restore_quote(FILTER_COMMENT)));
        }
        if !has(st, PRIV_CHAIN, |a| arg(a, "-j") == Some(admin)) {
            lines.push(format!("-I {PRIV_CHAIN} 1 -m comment --comment {} -j {admin}", restore_quote(ADMIN_COMMENT)));
        }
        for ip in &ips {
            let cidr = host_cidr(ip);
            if !has(st, PRIV_CHAIN, |a| is_established_rule(a, &cidr)) {
                lines.push(format!("-A {PRIV_CHAIN} -d {cidr} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"));
            }
            if !has(st, PRIV_CHAIN, |a| is_source_rule(a, &cidr)) {
                lines.push(format!("-A {PRIV_CHAIN} -s {cidr} -j ACCEPT"));
            }
        }
    }
    if let (Some(br), true) = (&spec.bridge, spec.ingress_policy != IngressPolicy::Open) {
        let c = restore_quote(spec.ingress_policy.comment());
        for ch in [STAGE1, STAGE2] {
            if !exists(ch) {
                decl.push(format!(":{ch} - [0:0]"));
            }
        }
        if !has(st, "FORWARD", |a| arg(a, "-j") == Some(STAGE1)) {
            lines.push(format!("-I FORWARD 1 -j {STAGE1} -m comment --comment {c}"));
        }
        let out_not_br =
            |a: &[String]| arg(a, "-i") == Some(br.as_str()) && a.windows(2).any(|w| w[0] == "!" && w[1] == "-o");
        if !has(st, STAGE1, |a| out_not_br(a) && arg(a, "-j") == Some(STAGE2)) {
            lines.push(format!("-I {STAGE1} 1 -i {br} ! -o {br} -j {STAGE2} -m comment --comment {c}"));
        }
        if spec.ingress_policy == IngressPolicy::Isolated
            && !has(st, STAGE1, |a| {
                arg(a, "-i") == Some(br.as_str()) && arg(a, "-o") == Some(br.as_str()) && arg(a, "-j") == Some("DROP")
            })
        {
            lines.push(format!("-I {STAGE1} 1 -i {br} -o {br} -j DROP -m comment --comment {c}"));
        }
        if !has(st, STAGE1, |a| arg(a, "-j") == Some("RETURN")) {
            lines.push(format!("-A {STAGE1} -j RETURN -m comment --comment {c}"));
        }
        if !has(st, STAGE2, |a| arg(a, "-o") == Some(br.as_str()) && arg(a, "-j") == Some("DROP")) {
            lines.push(format!("-I {STAGE2} 1 -o {br} -j DROP -m comment --comment {c}"));
        }
        if !has(st, STAGE2, |a| arg(a, "-j") == Some("RETURN")) {
            lines.push(format!("-A {STAGE2} -j RETURN -m comment --comment {c}"));
        }
    }
    if decl.is_empty() && lines.is_empty() {
        return None;
    }
    Some(format!("*filter\n{}\nCOMMIT\n", decl.into_iter().chain(lines).collect::<Vec<_>>().join("\n")))
}

/// Restore input removing the per-IP rules of one family (chains and isolation rules stay).
pub fn iptables_del_input(st: &NatState, spec: &FirewallSpec, v6: bool) -> Option<String> {
    wrap_table("filter", &iptables_del_lines(st, spec, v6))
}

/// The `-D` lines of [`iptables_del_input`].
pub fn iptables_del_lines(st: &NatState, spec: &FirewallSpec, v6: bool) -> Vec<String> {
    let cidrs: Vec<String> = family_ips(spec, v6).iter().map(host_cidr).collect();
    st.rules
        .iter()
        .filter(|(c, l)| {
            let a = split_args(l);
            c == PRIV_CHAIN && cidrs.iter().any(|cidr| is_established_rule(&a, cidr) || is_source_rule(&a, cidr))
        })
        .filter_map(|(_, l)| l.strip_prefix("-A ").map(|r| format!("-D {r}")))
        .collect()
}

/// iptables ADD: one save + one restore per family with addresses.
pub fn iptables_add(spec: &FirewallSpec) -> Result<()> {
    let ipt = IptablesBackend;
    for v6 in [false, true] {
        if family_ips(spec, v6).is_empty() {
            continue;
        }
        // the chains iptables_add_input reads
        let reads = ["FORWARD", PRIV_CHAIN, spec.admin_chain.as_str(), STAGE1, STAGE2];
        ipt.change(v6, "filter", &reads, |st| Ok(iptables_add_input(st, spec, v6)))?;
    }
    Ok(())
}

/// iptables DEL (missing rules are fine): every family with addresses, read and changed
/// without the tools where iptables-nft holds the table.
pub fn iptables_del(spec: &FirewallSpec) -> Result<()> {
    let fams: Vec<bool> = [false, true].into_iter().filter(|&v6| !family_ips(spec, v6).is_empty()).collect();
    for t in IptablesBackend.teardown_each(&fams, "filter", |v6, st| iptables_del_lines(st, spec, v6)) {
        t.result?;
    }
    Ok(())
}

/// iptables CHECK: chains, jump rules and per-IP rules exist.
pub fn iptables_check(spec: &FirewallSpec) -> Result<()> {
    let ipt = IptablesBackend;
    for v6 in [false, true] {
        let ips = family_ips(spec, v6);
        if ips.is_empty() {
            continue;
        }
        let st = ipt.save_table(v6, "filter")?;
        if !has(&st, "FORWARD", |a| arg(a, "-j") == Some(PRIV_CHAIN)) {
            bail!("expected FORWARD rule jumping to {PRIV_CHAIN} not found");
        }
        if !has(&st, PRIV_CHAIN, |a| arg(a, "-j") == Some(spec.admin_chain.as_str())) {
            bail!("expected {PRIV_CHAIN} rule jumping to {} not found", spec.admin_chain);
        }
        for ip in &ips {
            let cidr = host_cidr(ip);
            if !has(&st, PRIV_CHAIN, |a| is_established_rule(a, &cidr))
                || !has(&st, PRIV_CHAIN, |a| is_source_rule(a, &cidr))
            {
                bail!("expected rules for {cidr} not found");
            }
        }
    }
    Ok(())
}

// ---- nftables ----------------------------------------------------------------------------------

pub const NFT_TABLE: &str = "cni_firewall";
pub const NFT_FORWARD: &str = "forward";
pub const NFT_PRIV: &str = "cni_forward";
pub const NFT_ADMIN: &str = "admin";
pub const NFT_STAGE1: &str = "isolation_stage_1";
pub const NFT_STAGE2: &str = "isolation_stage_2";

fn policy_comment(p: IngressPolicy, br: &str) -> String {
    format!("{} bridge: {br}", p.comment())
}

fn oifname_neq(name: &str) -> Vec<Expr> {
    let mut data = name.as_bytes().to_vec();
    data.resize(16.max(data.len() + 1), 0);
    vec![Expr::Meta { key: meta_key::OIFNAME, dreg: REG_1 }, Expr::Cmp { sreg: REG_1, op: CmpOp::Neq, data }]
}

/// The ADD transaction (pure: `existing_comments` = comments of rules already in the isolation
/// chains, so bridge rules are not duplicated).
pub fn nft_add_batch(spec: &FirewallSpec, existing_comments: &[String]) -> Batch {
    let mut b = Batch::new();
    nft_plan(&mut b, None, spec, existing_comments);
    b
}

/// The fast ADD plan against a dumped state of the table: deletes the container's old per-IP
/// rules (if any), declares only what is missing, leaves `forward` alone when it already holds
/// exactly our two jumps.
pub fn nft_add_batch_fast(st: &TableState, spec: &FirewallSpec) -> Batch {
    let mut b = Batch::new();
    for r in st.rules_of(NFT_PRIV).filter(|r| r.comment.as_deref() == Some(spec.container_id.as_str())) {
        b.del_rule(Family::Inet, NFT_TABLE, NFT_PRIV, r.handle);
    }
    let existing: Vec<String> = [NFT_PRIV, NFT_STAGE1, NFT_STAGE2]
        .iter()
        .flat_map(|c| st.rules_of(c).filter_map(|r| r.comment.clone()))
        .collect();
    nft_plan(&mut b, Some(st), spec, &existing);
    b
}

fn nft_plan(b: &mut Batch, st: Option<&TableState>, spec: &FirewallSpec, existing_comments: &[String]) {
    let f = Family::Inet;
    let t = NFT_TABLE;
    let rule = |chain: &str, exprs: Vec<Expr>, comment: Option<String>| Rule {
        family: f,
        table: t.into(),
        chain: chain.into(),
        exprs,
        comment,
    };
    b.ensure_table(st, f, t, Some("CNI firewall plugin"));
    for c in [NFT_PRIV, NFT_ADMIN, NFT_STAGE1, NFT_STAGE2] {
        b.ensure_chain(st, f, t, c, None, None);
    }
    let base =
        BaseChain { chain_type: "filter", hook: Hook::Forward, priority: prio::FILTER, policy_accept: Some(true) };
    b.ensure_chain(st, f, t, NFT_FORWARD, Some(&base), None);
    let jumps = [NFT_STAGE1, NFT_PRIV].map(|c| rule(NFT_FORWARD, vec![Expr::Verdict(Verdict::Jump(c.into()))], None));
    b.ensure_chain_rules(st, f, t, NFT_FORWARD, &jumps);
    // cni_forward's first rule (jump admin) is only added when the chain is new: the caller
    // passes "admin-jump" in existing_comments when it is there.
    if !existing_comments.iter().any(|c| c == ADMIN_COMMENT) {
        b.add_rule(&rule(NFT_PRIV, vec![Expr::Verdict(Verdict::Jump(NFT_ADMIN.into()))], Some(ADMIN_COMMENT.into())));
    }
    // with firewalld the zone accepts the addresses: the shared chains above, no per-IP rule
    for ip in spec.ips.iter().filter(|_| spec.accepts()) {
        let v6 = ip.addr().is_ipv6();
        let plen = ip.max_prefix_len();
        let mut e = nfproto(v6);
        e.extend(match_addr(false, ip.addr(), plen, CmpOp::Eq));
        e.extend(match_ct_state(ct_state::ESTABLISHED | ct_state::RELATED));
        e.push(Expr::Verdict(Verdict::Accept));
        b.add_rule(&rule(NFT_PRIV, e, Some(spec.container_id.clone())));
        let mut e = nfproto(v6);
        e.extend(match_addr(true, ip.addr(), plen, CmpOp::Eq));
        e.push(Expr::Verdict(Verdict::Accept));
        b.add_rule(&rule(NFT_PRIV, e, Some(spec.container_id.clone())));
    }
    if let (Some(br), true) = (&spec.bridge, spec.ingress_policy != IngressPolicy::Open) {
        let c = policy_comment(spec.ingress_policy, br);
        if !existing_comments.contains(&c) {
            let mut e = match_ifname(true, br);
            e.extend(oifname_neq(br));
            e.push(Expr::Verdict(Verdict::Jump(NFT_STAGE2.into())));
            b.add_rule(&rule(NFT_STAGE1, e, Some(c.clone())));
            if spec.ingress_policy == IngressPolicy::Isolated {
                let mut e = match_ifname(true, br);
                e.extend(match_ifname(false, br));
                e.push(Expr::Verdict(Verdict::Drop));
                b.add_rule(&rule(NFT_STAGE1, e, Some(c.clone())));
            }
            let mut e = match_ifname(false, br);
            e.push(Expr::Verdict(Verdict::Drop));
            b.add_rule(&rule(NFT_STAGE2, e, Some(c)));
        }
    }
}

fn nft_comments(s: &mut NftSocket) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for c in [NFT_PRIV, NFT_STAGE1, NFT_STAGE2] {
        out.extend(list_rules(s, Family::Inet, NFT_TABLE, Some(c))?.into_iter().filter_map(|r| r.comment));
    }
    Ok(out)
}

/// nftables ADD (one transaction). The container's previous per-IP rules are replaced.
pub fn nft_add(spec: &FirewallSpec) -> Result<()> {
    if spec.ips.is_empty() {
        return Ok(());
    }
    let mut s = NftSocket::cached()?;
    s.transact(|s, fast| -> Result<Batch> {
        if fast {
            return Ok(nft_add_batch_fast(&TableState::read(s, Family::Inet, NFT_TABLE)?, spec));
        }
        let existing = nft_comments(s)?;
        let mut b = Batch::new();
        for r in list_rules(s, Family::Inet, NFT_TABLE, Some(NFT_PRIV))? {
            if r.comment.as_deref() == Some(spec.container_id.as_str()) {
                b.del_rule(Family::Inet, NFT_TABLE, NFT_PRIV, r.handle);
            }
        }
        nft_plan(&mut b, None, spec, &existing);
        Ok(b)
    })
}

/// nftables DEL: the container's per-IP rules (isolation rules stay, as the reference).
pub fn nft_del(container_id: &str) -> Result<()> {
    let mut s = NftSocket::cached()?;
    let mut b = Batch::new();
    for r in list_rules(&mut s, Family::Inet, NFT_TABLE, Some(NFT_PRIV))? {
        if r.comment.as_deref() == Some(container_id) {
            b.del_rule(Family::Inet, NFT_TABLE, NFT_PRIV, r.handle);
        }
    }
    s.commit(&b)?;
    Ok(())
}

/// nftables CHECK: chains exist and the container has two rules per IP.
pub fn nft_check(spec: &FirewallSpec) -> Result<()> {
    let mut s = NftSocket::cached()?;
    let chains = list_chains(&mut s, Family::Inet, NFT_TABLE)?;
    for c in [NFT_FORWARD, NFT_PRIV, NFT_ADMIN] {
        if !chains.iter().any(|x| x.name == c) {
            bail!("nftables chain {c} not found in table inet {NFT_TABLE}");
        }
    }
    let n = list_rules(&mut s, Family::Inet, NFT_TABLE, Some(NFT_PRIV))?
        .iter()
        .filter(|r| r.comment.as_deref() == Some(spec.container_id.as_str()))
        .count();
    if n < 2 * spec.ips.len() {
        bail!("missing firewall rules for container {}", spec.container_id);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::iptables::parse_save_table;

    fn spec() -> FirewallSpec {
        FirewallSpec {
            container_id: "c1".into(),
            ips: vec!["198.18.0.5/24".parse().unwrap(), "fd00::5/64".parse().unwrap()],
            admin_chain: "CNI-ADMIN".into(),
            ingress_policy: IngressPolicy::SameBridge,
            bridge: Some("br0".into()),
            firewalld_zone: None,
        }
    }

    #[test]
    fn iptables_add_input_reference_layout() {
        let input = iptables_add_input(&NatState::default(), &spec(), false).unwrap();
        let c = r#""CNI firewall plugin rules (ingressPolicy: same-bridge)""#;
        assert_eq!(
            input,
            format!(
                "*filter\n:CNI-FORWARD - [0:0]\n:CNI-ADMIN - [0:0]\n:CNI-ISOLATION-STAGE-1 - [0:0]\n:CNI-ISOLATION-STAGE-2 - [0:0]\n\
                 -I FORWARD 1 -m comment --comment \"CNI firewall plugin rules\" -j CNI-FORWARD\n\
                 -I CNI-FORWARD 1 -m comment --comment \"CNI firewall plugin admin overrides\" -j CNI-ADMIN\n\
                 -A CNI-FORWARD -d 198.18.0.5/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
                 -A CNI-FORWARD -s 198.18.0.5/32 -j ACCEPT\n\
                 -I FORWARD 1 -j CNI-ISOLATION-STAGE-1 -m comment --comment {c}\n\
                 -I CNI-ISOLATION-STAGE-1 1 -i br0 ! -o br0 -j CNI-ISOLATION-STAGE-2 -m comment --comment {c}\n\
                 -A CNI-ISOLATION-STAGE-1 -j RETURN -m comment --comment {c}\n\
                 -I CNI-ISOLATION-STAGE-2 1 -o br0 -j DROP -m comment --comment {c}\n\
                 -A CNI-ISOLATION-STAGE-2 -j RETURN -m comment --comment {c}\nCOMMIT\n"
            )
        );
    }

    /// With firewalld the zone accepts the addresses: the rules backend writes only the ingress
    /// policy's isolation rules (the reference: firewalld's Add, then `setupIngressPolicy`).
    #[test]
    fn firewalld_with_ingress_policy_writes_only_the_isolation_rules() {
        let s = FirewallSpec { firewalld_zone: Some("trusted".into()), ..spec() };
        let input = iptables_add_input(&NatState::default(), &s, false).unwrap();
        let c = r#""CNI firewall plugin rules (ingressPolicy: same-bridge)""#;
        assert_eq!(
            input,
            format!(
                "*filter\n:CNI-ISOLATION-STAGE-1 - [0:0]\n:CNI-ISOLATION-STAGE-2 - [0:0]\n\
                 -I FORWARD 1 -j CNI-ISOLATION-STAGE-1 -m comment --comment {c}\n\
                 -I CNI-ISOLATION-STAGE-1 1 -i br0 ! -o br0 -j CNI-ISOLATION-STAGE-2 -m comment --comment {c}\n\
                 -A CNI-ISOLATION-STAGE-1 -j RETURN -m comment --comment {c}\n\
                 -I CNI-ISOLATION-STAGE-2 1 -o br0 -j DROP -m comment --comment {c}\n\
                 -A CNI-ISOLATION-STAGE-2 -j RETURN -m comment --comment {c}\nCOMMIT\n"
            )
        );
        // nftables: the isolation rules, no rule of the container
        let per_ip = |b: &Batch| {
            b.msgs.iter().filter(|m| m.what.starts_with(&format!("add rule inet {NFT_TABLE} {NFT_PRIV}"))).count()
        };
        let isolation = |b: &Batch| b.msgs.iter().filter(|m| m.what.contains(NFT_STAGE2)).count();
        let (fw, plain) = (nft_add_batch(&s, &[]), nft_add_batch(&spec(), &[]));
        assert_eq!((per_ip(&fw), per_ip(&plain)), (1, 5), "the admin jump only / admin jump + 2 rules per IP");
        assert!(isolation(&fw) > 0 && isolation(&fw) == isolation(&plain));
    }

    #[test]
    fn iptables_second_add_and_del_are_minimal() {
        let saved = "*filter\n:FORWARD ACCEPT [0:0]\n:CNI-FORWARD - [0:0]\n:CNI-ADMIN - [0:0]\n\
            -A FORWARD -m comment --comment \"CNI firewall plugin rules\" -j CNI-FORWARD\n\
            -A CNI-FORWARD -m comment --comment \"CNI firewall plugin admin overrides\" -j CNI-ADMIN\n\
            -A CNI-FORWARD -d 198.18.0.5/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
            -A CNI-FORWARD -s 198.18.0.5/32 -j ACCEPT\nCOMMIT\n";
        let st = parse_save_table(saved, "filter");
        let mut s = spec();
        s.ingress_policy = IngressPolicy::Open;
        assert_eq!(iptables_add_input(&st, &s, false), None);
        assert_eq!(
            iptables_del_input(&st, &s, false).unwrap(),
            "*filter\n-D CNI-FORWARD -d 198.18.0.5/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
             -D CNI-FORWARD -s 198.18.0.5/32 -j ACCEPT\nCOMMIT\n"
        );
        assert!(IngressPolicy::parse("bogus").is_err());
        assert_eq!(IngressPolicy::parse("").unwrap(), IngressPolicy::Open);
    }

    #[test]
    fn backend_choice_and_firewalld() {
        let nft = || BackendKind::Nftables;
        assert_eq!(choose(None, None, nft).unwrap(), Backend::Nftables);
        assert_eq!(choose(None, Some(""), || BackendKind::Iptables).unwrap(), Backend::Iptables);
        assert_eq!(choose(Some("iptables"), Some("nftables"), nft).unwrap(), Backend::Iptables);
        // firewalld keeps the no-key rules backend (for an ingressPolicy's isolation rules)
        assert_eq!(choose(None, Some("firewalld"), nft).unwrap(), Backend::Nftables);
        let never = || -> bool { panic!("firewalld asked although a key decides") };
        assert_eq!(firewalld_zone(None, Some("firewalld"), None, never).as_deref(), Some("trusted"));
        assert_eq!(firewalld_zone(None, Some("firewalld"), Some("internal"), never).as_deref(), Some("internal"));
        assert_eq!(firewalld_zone(None, Some("iptables"), None, never), None);
        assert_eq!(firewalld_zone(Some("nftables"), Some("firewalld"), None, never), None);
        assert_eq!(firewalld_zone(None, None, None, || true).as_deref(), Some("trusted"));
        assert_eq!(firewalld_zone(None, Some(""), None, || false), None);
        // a value the reference's getBackend does not know names no backend (its default decides)
        assert_eq!(choose(None, Some("ebtables"), nft).unwrap(), Backend::Nftables);
        assert_eq!(backend_key(Some("ebtables")), None);
        assert_eq!(backend_key(Some("nftables")), Some("nftables"));
        // the node override is ours: a value naming no backend is an invalid config
        let e = choose(Some("ebtables"), None, nft).unwrap_err();
        assert_eq!(CniError::from_anyhow(&e).code, crate::cni::code::INVALID_CONFIG);
    }

    #[test]
    fn nft_batch_skips_existing_bridge_rules() {
        let s = spec();
        let fresh = nft_add_batch(&s, &[]);
        let again = nft_add_batch(&s, &[ADMIN_COMMENT.into(), policy_comment(IngressPolicy::SameBridge, "br0")]);
        assert_eq!(fresh.msgs.len(), again.msgs.len() + 3);
    }
}
