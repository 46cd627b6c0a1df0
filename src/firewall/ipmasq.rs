//! The ipMasq façade (bridge, ptp): [`ensure`] (backend from `ipMasqBackend`, the environment
//! override, else the reference's default), [`remove`] (both backends, the shared teardown
//! policy), [`check`], [`gc`]. Rules are found by the names and comments of [`crate::names`], so
//! DEL works without the container's netns.
//!
//! The iptables layout is in [`super::iptables`]; the nftables one, with the reference's layout:
//!
//! ```text
//! table inet cni_plugins_masquerade {
//!     comment "Masquerading for plugins from github.com/containernetworking/plugins"
//!     chain masq_checks {
//!         comment "Masquerade traffic from certain IPs to any (non-multicast) IP outside their subnet"
//!         ip saddr 198.18.0.5 ip daddr != 198.18.0.0/24 masquerade comment "<h(net)>-<h(if:id)>, net: …, if: …, id: …"
//!     }
//!     chain postrouting {
//!         type nat hook postrouting priority srcnat; policy accept;
//!         ip daddr 224.0.0.0/4 return
//!         ip6 daddr ff00::/8 return
//!         goto masq_checks
//!     }
//! }
//! ```
//!
//! Each change is one transaction: ensure table/chains, flush+rewrite `postrouting`, delete this
//! attachment's stale rules (same comment prefix), add the new ones. When the table is already
//! right (every attachment after the first), the transaction only adds the attachment's rules
//! ([`setup_batch_fast`], committed guarded by the ruleset generation; see [`super::nft::plan`]).

use super::iptables::IptablesBackend;
use super::nft::decode::{delete_rules_where, list_rules, RuleInfo};
use super::nft::expr::{match_addr, nfproto, CmpOp};
use super::nft::plan::TableState;
use super::nft::sock::NftSocket;
use super::nft::{prio, BaseChain, Batch, Expr, Family, Hook, Rule, Verdict};
use super::{teardown_both, Attachment, BackendKind};
use anyhow::{bail, Context, Result};
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const TABLE: &str = "cni_plugins_masquerade";
pub const CHAIN: &str = "masq_checks";
pub const POSTROUTING: &str = "postrouting";
pub const TABLE_COMMENT: &str = "Masquerading for plugins from github.com/containernetworking/plugins";
pub const CHAIN_COMMENT: &str = "Masquerade traffic from certain IPs to any (non-multicast) IP outside their subnet";

pub use crate::names::{
    masq_instance_hash as hash_for_instance, masq_network_hash as hash_for_network,
    masq_nft_comment as comment_for_instance,
};

/// One attachment's masquerade: its network, container, interface and addresses (with prefix).
#[derive(Debug, Clone, Copy)]
pub struct MasqSpec<'a> {
    pub network: &'a str,
    pub container_id: &'a str,
    pub ifname: &'a str,
    pub ips: &'a [IpNet],
}

/// Masquerades the spec's addresses to anything outside their subnets (except multicast), on the
/// backend `backend_key` (`ipMasqBackend`) names, else the environment override, else the
/// reference's default. Nothing happens (no table, no chain, no exec) without addresses.
pub fn ensure(backend_key: Option<&str>, spec: &MasqSpec) -> Result<()> {
    if spec.ips.is_empty() {
        return Ok(());
    }
    let kind = BackendKind::choose(backend_key)?;
    tracing::debug!(backend = kind.name(), network = spec.network, container_id = spec.container_id, "ipmasq");
    backend(kind).ensure_masquerade(spec.network, spec.container_id, spec.ifname, spec.ips).inspect_err(|_| {
        // nothing half-made: with iptables each family is its own commit, so the IPv4 rules may
        // be in when the IPv6 ones fail
        if let Err(u) = remove(spec) {
            tracing::warn!("ipmasq: removing the rules of a failed setup: {u:#}");
        }
    })
}

/// Removes the attachment's masquerade from both backends (it may have been made by another
/// version or config). Missing = success; `ips` may be empty (netns gone).
pub fn remove(spec: &MasqSpec) -> Result<()> {
    let (n, c, i, ips) = (spec.network, spec.container_id, spec.ifname, spec.ips);
    teardown_both(|| IptablesBackend.remove_masquerade(n, c, i, ips), || NftBackend.remove_masquerade(n, c, i, ips))
}

/// Verifies the attachment's masquerade rules on the backend [`ensure`] would use.
pub fn check(backend_key: Option<&str>, spec: &MasqSpec) -> Result<()> {
    if spec.ips.is_empty() {
        return Ok(());
    }
    backend(BackendKind::choose(backend_key)?).check_masquerade(spec.network, spec.container_id, spec.ifname, spec.ips)
}

/// Removes the masquerade state of `network` whose attachment is not in `valid`, in both backends
/// (the reference has no ipMasq GC; ours recognises its rules by their comments).
pub fn gc(network: &str, valid: &[Attachment]) -> Result<()> {
    teardown_both(|| IptablesBackend.gc_masquerade(network, valid), || NftBackend.gc_masquerade(network, valid))
}

/// One backend's masquerade (what the façade dispatches to; public for the backend tests).
pub trait MasqBackend {
    fn kind(&self) -> BackendKind;

    /// Masquerade traffic from each `ips` address (with its prefix) to anything outside its
    /// subnet, except multicast. Idempotent; replaces this attachment's previous rules.
    fn ensure_masquerade(&self, network: &str, container_id: &str, ifname: &str, ips: &[IpNet]) -> Result<()>;

    /// Removes what [`MasqBackend::ensure_masquerade`] made for this attachment. Missing = success.
    fn remove_masquerade(&self, network: &str, container_id: &str, ifname: &str, ips: &[IpNet]) -> Result<()>;

    /// An error when a rule [`MasqBackend::ensure_masquerade`] makes is missing.
    fn check_masquerade(&self, network: &str, container_id: &str, ifname: &str, ips: &[IpNet]) -> Result<()>;

    /// Removes masquerade state of `network` whose attachment is not in `valid`.
    fn gc_masquerade(&self, network: &str, valid: &[Attachment]) -> Result<()>;
}

/// The backend object for a kind.
pub fn backend(kind: BackendKind) -> Box<dyn MasqBackend> {
    match kind {
        BackendKind::Nftables => Box::new(NftBackend),
        BackendKind::Iptables => Box::new(IptablesBackend),
    }
}

/// The network address of `ip` (e.g. 198.18.0.5/24 → 198.18.0.0).
fn network_addr(ip: &IpNet) -> IpAddr {
    match ip {
        IpNet::V4(n) => IpAddr::V4(n.network()),
        IpNet::V6(n) => IpAddr::V6(n.network()),
    }
}

/// The per-IP rule: `ip[6] saddr == IP ip[6] daddr != subnet masquerade`.
pub fn masq_rule(ip: &IpNet, comment: &str) -> Rule {
    let v6 = ip.addr().is_ipv6();
    let mut exprs = nfproto(v6);
    exprs.extend(match_addr(true, ip.addr(), ip.max_prefix_len(), CmpOp::Eq));
    exprs.extend(match_addr(false, network_addr(ip), ip.prefix_len(), CmpOp::Neq));
    exprs.push(Expr::Masq);
    Rule { family: Family::Inet, table: TABLE.into(), chain: CHAIN.into(), exprs, comment: Some(comment.into()) }
}

/// The three `postrouting` rules.
pub fn postrouting_rules() -> Vec<Rule> {
    let rule =
        |exprs| Rule { family: Family::Inet, table: TABLE.into(), chain: POSTROUTING.into(), exprs, comment: None };
    let mut v4 = nfproto(false);
    v4.extend(match_addr(false, IpAddr::V4(Ipv4Addr::new(224, 0, 0, 0)), 4, CmpOp::Eq));
    v4.push(Expr::Verdict(Verdict::Return));
    let mut v6 = nfproto(true);
    v6.extend(match_addr(false, IpAddr::V6(Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0)), 8, CmpOp::Eq));
    v6.push(Expr::Verdict(Verdict::Return));
    vec![rule(v4), rule(v6), rule(vec![Expr::Verdict(Verdict::Goto(CHAIN.into()))])]
}

/// Builds the setup transaction (pure: `existing` = current rules of `masq_checks`): the full,
/// self-contained plan.
pub fn setup_batch(existing: &[RuleInfo], network: &str, container_id: &str, ifname: &str, ips: &[IpNet]) -> Batch {
    let mut b = Batch::new();
    plan_setup(&mut b, None, existing.iter(), network, container_id, ifname, ips);
    b
}

/// The fast (add-only when possible) setup plan against a dumped state of the table; commit it
/// guarded by the generation the state was read at.
pub fn setup_batch_fast(st: &TableState, network: &str, container_id: &str, ifname: &str, ips: &[IpNet]) -> Batch {
    let mut b = Batch::new();
    plan_setup(&mut b, Some(st), st.rules_of(CHAIN), network, container_id, ifname, ips);
    b
}

fn plan_setup<'a>(
    b: &mut Batch,
    st: Option<&TableState>,
    existing: impl Iterator<Item = &'a RuleInfo>,
    network: &str,
    container_id: &str,
    ifname: &str,
    ips: &[IpNet],
) {
    let prefix = hash_for_instance(network, ifname, container_id);
    let comment = comment_for_instance(network, ifname, container_id);
    b.ensure_table(st, Family::Inet, TABLE, Some(TABLE_COMMENT));
    b.ensure_chain(st, Family::Inet, TABLE, CHAIN, None, Some(CHAIN_COMMENT));
    let base = BaseChain { chain_type: "nat", hook: Hook::Postrouting, priority: prio::SRCNAT, policy_accept: None };
    b.ensure_chain(st, Family::Inet, TABLE, POSTROUTING, Some(&base), None);
    b.ensure_chain_rules(st, Family::Inet, TABLE, POSTROUTING, &postrouting_rules());
    for r in existing.filter(|r| r.comment.as_deref().is_some_and(|c| c.starts_with(&prefix))) {
        b.del_rule(Family::Inet, TABLE, CHAIN, r.handle);
    }
    for ip in ips {
        b.add_rule(&masq_rule(ip, &comment));
    }
}

/// The nftables backend (netlink).
#[derive(Debug, Clone, Copy, Default)]
pub struct NftBackend;

impl NftBackend {
    fn current(s: &mut NftSocket) -> Result<Vec<RuleInfo>> {
        Ok(list_rules(s, Family::Inet, TABLE, Some(CHAIN))?)
    }

    /// Deletes the rules selected by `pick`; retries when a concurrent writer changed the chain.
    fn delete_where(&self, pick: impl Fn(&RuleInfo) -> bool) -> Result<()> {
        let mut s = NftSocket::cached()?;
        Ok(delete_rules_where(&mut s, Family::Inet, TABLE, CHAIN, pick)?)
    }
}

impl MasqBackend for NftBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Nftables
    }

    fn ensure_masquerade(&self, network: &str, container_id: &str, ifname: &str, ips: &[IpNet]) -> Result<()> {
        if ips.is_empty() {
            return Ok(());
        }
        let mut s = NftSocket::cached()?;
        s.transact(|s, fast| -> Result<Batch> {
            Ok(if fast {
                setup_batch_fast(&TableState::read(s, Family::Inet, TABLE)?, network, container_id, ifname, ips)
            } else {
                setup_batch(&Self::current(s)?, network, container_id, ifname, ips)
            })
        })
        .context("setting up nftables masquerade")
    }

    fn remove_masquerade(&self, network: &str, container_id: &str, ifname: &str, _ips: &[IpNet]) -> Result<()> {
        let prefix = hash_for_instance(network, ifname, container_id);
        self.delete_where(|r| r.comment.as_deref().is_some_and(|c| c.starts_with(&prefix)))
            .context("removing nftables masquerade")
    }

    fn check_masquerade(&self, network: &str, container_id: &str, ifname: &str, ips: &[IpNet]) -> Result<()> {
        let comment = comment_for_instance(network, ifname, container_id);
        let mut s = NftSocket::cached()?;
        let have = Self::current(&mut s)?.iter().filter(|r| r.comment.as_deref() == Some(comment.as_str())).count();
        if have < ips.len() {
            bail!("masquerade rules of {container_id}/{ifname} missing in inet {TABLE} {CHAIN}");
        }
        Ok(())
    }

    fn gc_masquerade(&self, network: &str, valid: &[Attachment]) -> Result<()> {
        let prefix = hash_for_network(network);
        let keep: Vec<String> =
            valid.iter().map(|a| comment_for_instance(network, &a.ifname, &a.container_id)).collect();
        self.delete_where(|r| {
            r.comment.as_deref().is_some_and(|c| c.starts_with(&prefix) && !keep.iter().any(|k| k == c))
        })
        .context("garbage-collecting nftables masquerade")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_batch_replaces_stale_rules_of_same_attachment_only() {
        let prefix = hash_for_instance("net", "eth0", "c1");
        let other = hash_for_instance("net", "eth0", "c2");
        let existing = vec![
            RuleInfo {
                family: 1,
                table: TABLE.into(),
                chain: CHAIN.into(),
                handle: 7,
                comment: Some(format!("{prefix}, net: net, if: eth0, id: c1")),
                exprs: vec![],
            },
            RuleInfo {
                family: 1,
                table: TABLE.into(),
                chain: CHAIN.into(),
                handle: 8,
                comment: Some(format!("{other}, …")),
                exprs: vec![],
            },
        ];
        let ips: Vec<IpNet> = vec!["198.18.0.5/24".parse().unwrap(), "fd00::5/64".parse().unwrap()];
        let b = setup_batch(&existing, "net", "c1", "eth0", &ips);
        let whats: Vec<&str> = b.msgs.iter().map(|m| m.what.as_str()).collect();
        assert_eq!(
            whats,
            vec![
                "add table inet cni_plugins_masquerade",
                "add chain inet cni_plugins_masquerade masq_checks",
                "add chain inet cni_plugins_masquerade postrouting",
                "flush chain inet cni_plugins_masquerade postrouting",
                "add rule inet cni_plugins_masquerade postrouting",
                "add rule inet cni_plugins_masquerade postrouting",
                "add rule inet cni_plugins_masquerade postrouting",
                "delete rule inet cni_plugins_masquerade masq_checks handle 7",
                "add rule inet cni_plugins_masquerade masq_checks",
                "add rule inet cni_plugins_masquerade masq_checks",
            ]
        );
    }
}
