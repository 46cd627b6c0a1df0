//! The firewall plugin's façade (reference §2.17): [`choose`] the rules backend and
//! [`firewalld_zone`] once, then [`ensure`] (ADD), [`remove`] (DEL), [`check`] (CHECK) for a
//! [`FirewallSpec`], and [`gc`] (GC: the nftables rules, whose tag names the attachment; the
//! iptables rules carry no id, as the reference's, so GC leaves them).
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
//! STAGE-1:      [isolated: -i BR -o BR -j DROP] ; -i BR ! -o BR -j CNI-ISOLATION-STAGE-2 ; -j RETURN
//!               (the jump and the DROP are each inserted first, the DROP after the jump)
//! STAGE-2:      -o BR -j DROP ; -j RETURN
//! ```
//! The admin chain is created when missing and never modified. DEL removes the per-IP rules only.
//! Every rule is recognised whole, as the reference's `iptables -C` does (ADD adds a rule unless
//! that exact rule is there, CHECK wants each one, DEL deletes only the exact rules): a rule
//! someone changed (`-s IP -p tcp -j ACCEPT`) is not ours.
//!
//! nftables (the reference has none; our layout, table `inet cni_firewall`):
//! ```text
//! chain forward { type filter hook forward priority filter; policy accept;
//!                 jump isolation_stage_1 ; jump cni_forward }           (rewritten on each ADD)
//! chain cni_forward { jump admin ; ip daddr IP ct state established,related accept comment "<tag>" ;
//!                     ip saddr IP accept comment "<tag>" }
//! chain admin { }                                                       (user-owned, never touched)
//! chain isolation_stage_1 { iifname BR oifname != BR jump isolation_stage_2 comment "<policy> BR" ;
//!                           [isolated: iifname BR oifname BR drop comment "…"] }
//! chain isolation_stage_2 { oifname BR drop comment "<policy> BR" }
//! ```
//! `<tag>` names the attachment ([`crate::names::firewall_nft_comment`]):
//! `<h16(network)>-<h16(ifname:containerID)>, net: <network>, if: <ifname>, id: <containerID>`, so
//! two attachments of one container (two networks, or two interfaces) keep their own rules: ADD
//! replaces, CHECK wants and DEL removes the rules of its attachment only, and GC removes those of
//! its network whose attachment is not valid. Rules written before 2026-12-07 carry the container
//! id alone ([`crate::names::firewall_nft_legacy_comment`]); they are still read: such a rule
//! counts as the attachment's when its expressions are one of the attachment's rules (the same
//! address), so CHECK passes on it, ADD replaces it and DEL removes it; a DEL that knows no
//! address (no prevResult) removes every such rule of the container, as the old DEL did; GC
//! removes those of containers that have no valid attachment in its network (the old comment
//! names no network, see docs/guides/firewall.md).
//!
//! An `accept` in one nftables table cannot overrule a `drop` in another table's base chain, so
//! on nftables the per-IP accepts only matter to rules placed in `admin`; the isolation drops
//! work everywhere.

use super::iptables::{
    canonical_rule, has_exact_rule, restore_quote, split_args, wrap_table, IptablesBackend, NatState,
};
use super::nft::decode::{delete_rules_where, list_chains, list_rules, RuleInfo};
use super::nft::expr::{ct_state, match_addr, match_ct_state, match_ifname, meta_key, nfproto, CmpOp, REG_1};
use super::nft::plan::{same_exprs, TableState};
use super::nft::sock::NftSocket;
use super::nft::{prio, BaseChain, Batch, Expr, Family, Hook, Rule, Verdict};
use super::{Attachment, BackendKind};
use crate::cni::result::go_quote;
use crate::cni::CniError;
use crate::names::{firewall_nft_comment, firewall_nft_legacy_comment, firewall_nft_tag, masq_network_hash};
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
    // the bridge is prevResult's first interface; the reference's messages (it fails after
    // writing the accept rules, we before any change). Names written into rules (and into
    // iptables-restore input, where a newline would be a line of its own) are checked first too.
    if spec.ingress_policy != IngressPolicy::Open {
        match spec.bridge.as_deref() {
            None => bail!(
                "interface needs to be set for ingress policy {}, make sure to chain \"firewall\" plugin with \"bridge\"",
                go_quote(spec.ingress_policy.name())
            ),
            Some("") => bail!("got empty bridge name"),
            Some(br) => crate::cni::env::validate_link_name(br).map_err(|e| {
                CniError::config(format!("prevResult's bridge interface {}: {}", go_quote(br), e.msg))
            })?,
        }
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
/// address, so without the addresses (no prevResult) there is nothing to find there; the
/// nftables ones by the attachment's tag. With firewalld, the zone's sources (ADD wrote no
/// per-IP rule).
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
    super::teardown_both(|| if spec.ips.is_empty() { Ok(()) } else { iptables_del(spec) }, || nft_del(spec))
}

/// DEL when prevResult is there but does not parse (`err`), so the addresses are not known: the
/// attachment's nftables rules are found by their tag and removed; iptables rules and firewalld
/// sources are found by address only, so when `backend` (the one ADD chooses) is iptables, or
/// firewalld is used, DEL fails with `err` (999, as the reference's DEL fails on such a
/// prevResult) and leaves the runtime to retry, instead of succeeding with the rules left.
pub fn remove_without_prev_result(backend: Backend, spec: &FirewallSpec, err: CniError) -> Result<()> {
    let unaddressed = FirewallSpec { ips: Vec::new(), ..spec.clone() };
    super::teardown_both(|| Ok(()), || nft_del(&unaddressed))?;
    if backend == Backend::Iptables || spec.firewalld_zone.is_some() {
        return Err(err.into());
    }
    Ok(())
}

/// GC: the nftables accept rules of `network` whose attachment is not in `valid` (and those
/// written before their tag named the network, of containers with no valid attachment here).
/// iptables rules carry no id (the reference's layout) and firewalld sources no owner: GC leaves
/// them.
pub fn gc(network: &str, valid: &[Attachment]) -> Result<()> {
    super::teardown_both(|| Ok(()), || nft_gc(network, valid))
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
    /// The config value.
    pub fn name(self) -> &'static str {
        match self {
            IngressPolicy::Open => "open",
            IngressPolicy::SameBridge => "same-bridge",
            IngressPolicy::Isolated => "isolated",
        }
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
    /// The attachment: network name, container id and interface (CNI_IFNAME); the nftables
    /// rules' tag names all three.
    pub network: String,
    pub container_id: String,
    pub ifname: String,
    pub ips: Vec<IpNet>,
    /// `iptablesAdminChainName`, default `CNI-ADMIN`.
    pub admin_chain: String,
    pub ingress_policy: IngressPolicy,
    /// The bridge (prevResult interface 0, its name as given, maybe empty) for the ingress
    /// policy; None when prevResult has no interface.
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

/// One rule of the iptables layout: its chain and its arguments as restore input writes them
/// (after `-A <chain>`). Rules are compared whole ([`has_exact_rule`]), as the reference's
/// `iptables -C` compares them.
struct IptRule {
    chain: String,
    args: String,
}

impl IptRule {
    fn new(chain: &str, args: String) -> IptRule {
        IptRule { chain: chain.to_string(), args }
    }

    /// The rule is in `st`, exactly.
    fn present(&self, st: &NatState) -> bool {
        has_exact_rule(st, &self.chain, &split_args(&self.args))
    }

    /// The rule as the reference's messages show it (Go's `%v` of its arguments).
    fn shown(&self) -> String {
        format!("[{}]", split_args(&self.args).join(" "))
    }

    /// `-I <chain> 1 …` (`first`) or `-A <chain> …` unless the exact rule is in `st`.
    fn ensure(&self, st: &NatState, first: bool, lines: &mut Vec<String>) {
        if !self.present(st) {
            lines.push(match first {
                true => format!("-I {} 1 {}", self.chain, self.args),
                false => format!("-A {} {}", self.chain, self.args),
            });
        }
    }
}

/// `FORWARD`'s jump to `CNI-FORWARD`.
fn forward_jump() -> IptRule {
    IptRule::new("FORWARD", format!("-m comment --comment {} -j {PRIV_CHAIN}", restore_quote(FILTER_COMMENT)))
}

/// `CNI-FORWARD`'s jump to the admin chain.
fn admin_jump(admin: &str) -> IptRule {
    IptRule::new(PRIV_CHAIN, format!("-m comment --comment {} -j {admin}", restore_quote(ADMIN_COMMENT)))
}

/// The two accepts of one address, in the reference's order.
fn ip_rules(ip: &IpNet) -> [IptRule; 2] {
    let cidr = host_cidr(ip);
    [
        IptRule::new(PRIV_CHAIN, format!("-d {cidr} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")),
        IptRule::new(PRIV_CHAIN, format!("-s {cidr} -j ACCEPT")),
    ]
}

fn family_ips(spec: &FirewallSpec, v6: bool) -> Vec<IpNet> {
    spec.ips.iter().filter(|i| i.addr().is_ipv6() == v6).copied().collect()
}

/// Restore input (filter table) for ADD in one family; None when the family has no IPs. With
/// firewalld only the ingress policy's isolation rules (the reference's `setupIngressPolicy`).
/// A rule is added unless that exact rule is there (the reference's `Exists`/`AppendUnique`/
/// `InsertUnique`): a changed copy of it does not count.
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
        forward_jump().ensure(st, true, &mut lines);
        admin_jump(admin).ensure(st, true, &mut lines);
        for ip in &ips {
            for r in ip_rules(ip) {
                r.ensure(st, false, &mut lines);
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
        IptRule::new("FORWARD", format!("-j {STAGE1} -m comment --comment {c}")).ensure(st, true, &mut lines);
        IptRule::new(STAGE1, format!("-i {br} ! -o {br} -j {STAGE2} -m comment --comment {c}"))
            .ensure(st, true, &mut lines);
        if spec.ingress_policy == IngressPolicy::Isolated {
            IptRule::new(STAGE1, format!("-i {br} -o {br} -j DROP -m comment --comment {c}"))
                .ensure(st, true, &mut lines);
        }
        IptRule::new(STAGE1, format!("-j RETURN -m comment --comment {c}")).ensure(st, false, &mut lines);
        IptRule::new(STAGE2, format!("-o {br} -j DROP -m comment --comment {c}")).ensure(st, true, &mut lines);
        IptRule::new(STAGE2, format!("-j RETURN -m comment --comment {c}")).ensure(st, false, &mut lines);
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

/// The `-D` lines of [`iptables_del_input`]: the exact rules ADD writes for the family's
/// addresses (the reference's `ipt.Delete`), not a rule someone changed (`-s IP -p tcp -j ACCEPT`).
pub fn iptables_del_lines(st: &NatState, spec: &FirewallSpec, v6: bool) -> Vec<String> {
    let ours: Vec<Vec<String>> =
        family_ips(spec, v6).iter().flat_map(ip_rules).map(|r| canonical_rule(&split_args(&r.args))).collect();
    st.rules
        .iter()
        .filter(|(c, l)| c == PRIV_CHAIN && ours.contains(&canonical_rule(split_args(l).get(2..).unwrap_or_default())))
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

/// iptables CHECK: the jump rules and the per-IP rules exist, each exactly (the reference's
/// `checkRules`, with its messages).
pub fn iptables_check(spec: &FirewallSpec) -> Result<()> {
    let ipt = IptablesBackend;
    for v6 in [false, true] {
        let ips = family_ips(spec, v6);
        if ips.is_empty() {
            continue;
        }
        let st = ipt.save_table(v6, "filter")?;
        let fwd = forward_jump();
        if !fwd.present(&st) {
            bail!("expected FORWARD rule {} not found", fwd.shown());
        }
        let admin = admin_jump(&spec.admin_chain);
        if !admin.present(&st) {
            bail!("expected {PRIV_CHAIN} rule {} not found", admin.shown());
        }
        for r in ips.iter().flat_map(ip_rules) {
            if !r.present(&st) {
                bail!("expected rule {} not found", r.shown());
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

/// The comment of the attachment's accept rules ([`firewall_nft_comment`]).
pub fn nft_comment(spec: &FirewallSpec) -> String {
    firewall_nft_comment(&spec.network, &spec.ifname, &spec.container_id)
}

/// The accept rules of `ips` in `cni_forward` (two per address: `daddr … ct state
/// established,related accept`, `saddr … accept`), each with its nft text for messages.
fn nft_accepts(ips: &[IpNet], comment: &str) -> Vec<(Rule, String)> {
    let rule = |exprs: Vec<Expr>| Rule {
        family: Family::Inet,
        table: NFT_TABLE.into(),
        chain: NFT_PRIV.into(),
        exprs,
        comment: Some(comment.to_string()),
    };
    let mut out = Vec::new();
    for ip in ips {
        let v6 = ip.addr().is_ipv6();
        let (plen, fam) = (ip.max_prefix_len(), if v6 { "ip6" } else { "ip" });
        let mut e = nfproto(v6);
        e.extend(match_addr(false, ip.addr(), plen, CmpOp::Eq));
        e.extend(match_ct_state(ct_state::ESTABLISHED | ct_state::RELATED));
        e.push(Expr::Verdict(Verdict::Accept));
        out.push((rule(e), format!("{fam} daddr {} ct state established,related accept", ip.addr())));
        let mut e = nfproto(v6);
        e.extend(match_addr(true, ip.addr(), plen, CmpOp::Eq));
        e.push(Expr::Verdict(Verdict::Accept));
        out.push((rule(e), format!("{fam} saddr {} accept", ip.addr())));
    }
    out
}

/// A comment of the old format (the container id alone): container ids hold no space, every
/// other comment in `cni_forward` does.
fn is_legacy_comment(c: &str) -> bool {
    !c.contains(' ')
}

/// `r` (a rule of `cni_forward`) is one of the attachment's accepts: it carries the attachment's
/// tag, or the old comment (its container id alone) and the expressions of one of `accepts`
/// (the same address); with `any_address` (DEL that knows no address) every rule with the old
/// comment of the container, as the old DEL removed them.
fn nft_is_attachments(spec: &FirewallSpec, accepts: &[(Rule, String)], any_address: bool, r: &RuleInfo) -> bool {
    let Some(c) = r.comment.as_deref() else { return false };
    if c.starts_with(&firewall_nft_tag(&spec.network, &spec.ifname, &spec.container_id)) {
        return true;
    }
    c == firewall_nft_legacy_comment(&spec.container_id)
        && (any_address || accepts.iter().any(|(want, _)| same_exprs(want, r)))
}

/// The accepts ADD writes (none with firewalld: the zone accepts the addresses).
fn nft_add_accepts(spec: &FirewallSpec) -> Vec<(Rule, String)> {
    match spec.accepts() {
        true => nft_accepts(&spec.ips, &nft_comment(spec)),
        false => Vec::new(),
    }
}

/// The ADD transaction (pure: `existing_comments` = comments of rules already in the isolation
/// chains, so bridge rules are not duplicated).
pub fn nft_add_batch(spec: &FirewallSpec, existing_comments: &[String]) -> Batch {
    let mut b = Batch::new();
    nft_plan(&mut b, None, spec, existing_comments);
    b
}

/// The fast ADD plan against a dumped state of the table: deletes the attachment's old per-IP
/// rules (if any: its tag, or the old comment with one of its addresses), declares only what is
/// missing, leaves `forward` alone when it already holds exactly our two jumps.
pub fn nft_add_batch_fast(st: &TableState, spec: &FirewallSpec) -> Batch {
    let mut b = Batch::new();
    let accepts = nft_add_accepts(spec);
    for r in st.rules_of(NFT_PRIV).filter(|r| nft_is_attachments(spec, &accepts, false, r)) {
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
    for (r, _) in nft_add_accepts(spec) {
        b.add_rule(&r);
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

/// nftables ADD (one transaction). The attachment's previous per-IP rules are replaced; other
/// attachments' rules (another network or interface of the same container) stay.
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
        let accepts = nft_add_accepts(spec);
        let mut b = Batch::new();
        for r in list_rules(s, Family::Inet, NFT_TABLE, Some(NFT_PRIV))? {
            if nft_is_attachments(spec, &accepts, false, &r) {
                b.del_rule(Family::Inet, NFT_TABLE, NFT_PRIV, r.handle);
            }
        }
        nft_plan(&mut b, None, spec, &existing);
        Ok(b)
    })
}

/// Deletes the rules of `cni_forward` that `pick` selects (racing writers tolerated).
fn nft_delete_where(pick: impl Fn(&RuleInfo) -> bool) -> Result<()> {
    let mut s = NftSocket::cached()?;
    Ok(delete_rules_where(&mut s, Family::Inet, NFT_TABLE, NFT_PRIV, pick)?)
}

/// nftables DEL: the attachment's per-IP rules, found by its tag (and rules of the old format
/// by their address; all of the container's when `spec` has no address). Isolation rules stay,
/// as the reference's; so do other attachments' rules.
pub fn nft_del(spec: &FirewallSpec) -> Result<()> {
    let accepts = nft_accepts(&spec.ips, "");
    nft_delete_where(|r| nft_is_attachments(spec, &accepts, spec.ips.is_empty(), r))
}

/// nftables CHECK: the chains exist and each of the attachment's accept rules is there, whole,
/// with its tag (or, written before the tag named the attachment, with the container id).
pub fn nft_check(spec: &FirewallSpec) -> Result<()> {
    let mut s = NftSocket::cached()?;
    let chains = list_chains(&mut s, Family::Inet, NFT_TABLE)?;
    for c in [NFT_FORWARD, NFT_PRIV, NFT_ADMIN] {
        if !chains.iter().any(|x| x.name == c) {
            bail!("nftables chain {c} not found in table inet {NFT_TABLE}");
        }
    }
    let have = list_rules(&mut s, Family::Inet, NFT_TABLE, Some(NFT_PRIV))?;
    let (tagged, legacy) = (nft_comment(spec), firewall_nft_legacy_comment(&spec.container_id));
    for (want, text) in nft_add_accepts(spec) {
        let found = have
            .iter()
            .any(|r| r.comment.as_deref().is_some_and(|c| c == tagged || c == legacy) && same_exprs(&want, r));
        if !found {
            bail!("expected rule [{text}] not found in table inet {NFT_TABLE} chain {NFT_PRIV}");
        }
    }
    Ok(())
}

/// nftables GC: the accept rules tagged with `network` whose attachment is not in `valid`, and
/// those of the old format (the container id alone, no network) whose container has no valid
/// attachment in `network`.
pub fn nft_gc(network: &str, valid: &[Attachment]) -> Result<()> {
    let ours = format!("{}-", masq_network_hash(network));
    let keep: Vec<String> = valid.iter().map(|a| firewall_nft_tag(network, &a.ifname, &a.container_id)).collect();
    let keep_legacy: Vec<String> = valid.iter().map(|a| firewall_nft_legacy_comment(&a.container_id)).collect();
    nft_delete_where(|r| match r.comment.as_deref() {
        Some(c) if c.starts_with(&ours) => !keep.iter().any(|k| c.starts_with(k.as_str())),
        Some(c) if is_legacy_comment(c) => !keep_legacy.iter().any(|k| k == c),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::iptables::parse_save_table;

    fn spec() -> FirewallSpec {
        FirewallSpec {
            network: "net".into(),
            container_id: "c1".into(),
            ifname: "eth0".into(),
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

    /// Rules are recognised whole (the reference's `iptables -C`): a jump without our comment or
    /// an accept with an added match is not ours, so ADD adds ours, CHECK fails naming the
    /// missing rule as the reference does, and DEL leaves the changed rule alone.
    #[test]
    fn iptables_rules_are_recognised_whole() {
        let saved = "*filter\n:FORWARD ACCEPT [0:0]\n:CNI-FORWARD - [0:0]\n:CNI-ADMIN - [0:0]\n\
            -A FORWARD -i lo -j CNI-FORWARD\n\
            -A CNI-FORWARD -m comment --comment \"CNI firewall plugin admin overrides\" -j CNI-ADMIN\n\
            -A CNI-FORWARD -d 198.18.0.5/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
            -A CNI-FORWARD -s 198.18.0.5/32 -p tcp -j ACCEPT\nCOMMIT\n";
        let st = parse_save_table(saved, "filter");
        let s = FirewallSpec { ingress_policy: IngressPolicy::Open, ..spec() };
        assert_eq!(
            iptables_add_input(&st, &s, false).unwrap(),
            "*filter\n-I FORWARD 1 -m comment --comment \"CNI firewall plugin rules\" -j CNI-FORWARD\n\
             -A CNI-FORWARD -s 198.18.0.5/32 -j ACCEPT\nCOMMIT\n"
        );
        assert_eq!(
            iptables_del_input(&st, &s, false).unwrap(),
            "*filter\n-D CNI-FORWARD -d 198.18.0.5/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\nCOMMIT\n"
        );
        assert!(!forward_jump().present(&st));
        assert_eq!(forward_jump().shown(), "[-m comment --comment CNI firewall plugin rules -j CNI-FORWARD]");
        let [_, src] = ip_rules(&"fd00:13::5/64".parse().unwrap());
        assert_eq!(src.shown(), "[-s fd00:13::5/128 -j ACCEPT]");
        // the isolation rules too: a STAGE-2 drop of another bridge is not this bridge's
        let iso = "*filter\n:FORWARD ACCEPT [0:0]\n:CNI-ISOLATION-STAGE-1 - [0:0]\n:CNI-ISOLATION-STAGE-2 - [0:0]\n\
            -A CNI-ISOLATION-STAGE-2 -o br0 -p tcp -j DROP -m comment --comment \"CNI firewall plugin rules (ingressPolicy: same-bridge)\"\nCOMMIT\n";
        let input = iptables_add_input(&parse_save_table(iso, "filter"), &spec(), false).unwrap();
        assert!(input.contains("-I CNI-ISOLATION-STAGE-2 1 -o br0 -j DROP"), "{input}");
    }

    /// The nftables accept rules carry the attachment's tag; a rule of the old format (the
    /// container id alone) counts as the attachment's only with one of its addresses, or with
    /// any address when DEL knows none.
    #[test]
    fn nft_rules_are_the_attachments_by_tag_or_old_comment_and_address() {
        let s = spec();
        let other_net = FirewallSpec { network: "netB".into(), ..spec() };
        let other_if = FirewallSpec { ifname: "net1".into(), ..spec() };
        let accepts = nft_add_accepts(&s);
        assert_eq!(accepts.len(), 4);
        let info = |rule: &Rule, comment: &str| {
            let mut b = Batch::new();
            b.add_rule(&Rule { comment: Some(comment.into()), ..rule.clone() });
            let m = b.msgs.last().unwrap();
            crate::firewall::nft::decode::decode_rule(m.family, &m.payload)
        };
        let (rule, _) = &accepts[1];
        let tagged = info(rule, &nft_comment(&s));
        assert!(nft_is_attachments(&s, &[], false, &tagged));
        assert!(!nft_is_attachments(&other_net, &nft_add_accepts(&other_net), true, &tagged));
        assert!(!nft_is_attachments(&other_if, &nft_add_accepts(&other_if), true, &tagged));
        let legacy = info(rule, "c1");
        assert!(nft_is_attachments(&s, &accepts, false, &legacy));
        assert!(nft_is_attachments(&other_net, &nft_add_accepts(&other_net), false, &legacy), "same address");
        let elsewhere = FirewallSpec { ips: vec!["198.18.1.7/24".parse().unwrap()], ..other_net.clone() };
        assert!(!nft_is_attachments(&elsewhere, &nft_add_accepts(&elsewhere), false, &legacy));
        assert!(nft_is_attachments(&elsewhere, &[], true, &legacy), "DEL without addresses");
        assert!(!nft_is_attachments(&FirewallSpec { container_id: "c2".into(), ..spec() }, &[], true, &legacy));
        assert!(is_legacy_comment("c1") && !is_legacy_comment(ADMIN_COMMENT) && !is_legacy_comment(&nft_comment(&s)));
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
