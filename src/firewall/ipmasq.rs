//! ipMasq on nftables, with the reference's layout:
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

use super::nft::decode::{list_rules, RuleInfo};
use super::nft::expr::{match_addr, nfproto, CmpOp};
use super::nft::plan::TableState;
use super::nft::sock::NftSocket;
use super::nft::{prio, BaseChain, Batch, Expr, Family, Hook, Rule, Verdict};
use super::sha512::hash_with_prefix;
use super::{Attachment, BackendKind, Firewall};
use anyhow::{Context, Result};
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const TABLE: &str = "cni_plugins_masquerade";
pub const CHAIN: &str = "masq_checks";
pub const POSTROUTING: &str = "postrouting";
pub const TABLE_COMMENT: &str = "Masquerading for plugins from github.com/containernetworking/plugins";
pub const CHAIN_COMMENT: &str = "Masquerade traffic from certain IPs to any (non-multicast) IP outside their subnet";

/// First 16 hex chars of sha512(network).
pub fn hash_for_network(network: &str) -> String {
    hash_with_prefix(16, "", network)
}

/// `<h16(network)>-<h16(ifname:containerID)>`: the prefix identifying one attachment's rules.
pub fn hash_for_instance(network: &str, ifname: &str, container_id: &str) -> String {
    format!("{}-{}", hash_for_network(network), hash_with_prefix(16, "", &format!("{ifname}:{container_id}")))
}

/// The reference's rule comment (quotes removed from the names, cut at 128 bytes).
pub fn comment_for_instance(network: &str, ifname: &str, container_id: &str) -> String {
    let mut c = format!(
        "{}, net: {}, if: {}, id: {}",
        hash_for_instance(network, ifname, container_id),
        network.replace('"', ""),
        ifname.replace('"', ""),
        container_id.replace('"', "")
    );
    if c.len() > super::nft::COMMENT_MAX {
        let mut end = super::nft::COMMENT_MAX;
        while !c.is_char_boundary(end) {
            end -= 1;
        }
        c.truncate(end);
    }
    c
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
        for _ in 0..3 {
            let rules = Self::current(&mut s)?;
            let mut b = Batch::new();
            for r in rules.iter().filter(|r| pick(r)) {
                b.del_rule(Family::Inet, TABLE, CHAIN, r.handle);
            }
            match s.commit(&b) {
                Ok(()) => return Ok(()),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        // Still racing (many DELs and a GC deleting from the same chain): delete one rule per
        // transaction, where ENOENT only means someone else already deleted it.
        for r in Self::current(&mut s)?.iter().filter(|r| pick(r)) {
            let mut b = Batch::new();
            b.del_rule(Family::Inet, TABLE, CHAIN, r.handle);
            match s.commit(&b) {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

impl Firewall for NftBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Nftables
    }

    fn usable(&self) -> bool {
        super::nft_available()
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
    fn comment_format_matches_reference() {
        let c = comment_for_instance("mynet", "eth0", "abc\"def");
        let h = hash_for_instance("mynet", "eth0", "abc\"def");
        assert_eq!(c, format!("{h}, net: mynet, if: eth0, id: abcdef"));
        assert_eq!(h.len(), 33);
        assert_eq!(&h[..16], &crate::firewall::sha512::sha512_hex(b"mynet")[..16]);
        assert_eq!(&h[17..], &crate::firewall::sha512::sha512_hex(b"eth0:abc\"def")[..16]);
        let long = comment_for_instance("n", "eth0", &"x".repeat(300));
        assert_eq!(long.len(), 128);
    }

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
