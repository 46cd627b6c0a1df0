//! The bridge `macspoofchk` façade: [`ensure`], [`remove`], [`check`], [`gc`] for one bridge port
//! (always nftables, as the reference): the reference's bridge-family layout, over netlink.
//!
//! ```text
//! table bridge nat {
//!     chain PREROUTING {
//!         type filter hook prerouting priority -300; policy accept;
//!         iifname "<hostVeth>" jump cni-br-iface-<cid>-<ifname> comment "macspoofchk-<cid>-<ifname>"
//!     }
//!     chain cni-br-iface-<cid>-<ifname> {
//!         comment "cni-multi net: <network>"
//!         jump cni-br-iface-<cid>-<ifname>-mac comment "macspoofchk-<cid>-<ifname>"
//!     }
//!     chain cni-br-iface-<cid>-<ifname>-mac {
//!         comment "cni-multi net: <network>"
//!         ether saddr <mac> return comment "macspoofchk-<cid>-<ifname>"
//!         drop comment "macspoofchk-<cid>-<ifname>"
//!     }
//! }
//! ```
//! Setup is one transaction (the reference needs two because `nft` cannot flush a chain created
//! in the same run; the kernel can). Unlike the reference, a repeated setup first removes this
//! attachment's old PREROUTING rule instead of adding a duplicate.
//!
//! The chain comments are ours (the reference writes none and reads none): GC runs per network,
//! several networks can share a bridge, and nothing else in this layout names the network, so the
//! comment is how GC tells this network's chains from another's ([`network_tag`]).

use super::nft::decode::{list_chains, list_rules, RuleInfo};
use super::nft::expr::{match_ether_saddr, match_ifname};
use super::nft::plan::TableState;
use super::nft::sock::NftSocket;
use super::nft::{prio, BaseChain, Batch, Expr, Family, Hook, Rule, Verdict, COMMENT_MAX};
use crate::netlink::parse_mac;
use anyhow::{bail, Context, Result};

pub const TABLE: &str = "nat";
pub const BASE_CHAIN: &str = "PREROUTING";

pub use crate::names::{
    macspoof_comment as rule_comment, macspoof_iface_chain as iface_chain, macspoof_mac_chain as mac_chain,
};

fn base_chain() -> BaseChain {
    BaseChain { chain_type: "filter", hook: Hook::Prerouting, priority: prio::BRIDGE_DSTNAT, policy_accept: Some(true) }
}

/// The comment of the two chains an attachment's setup makes: the network whose ADD made them.
/// nft keeps at most [`COMMENT_MAX`] bytes of a comment, so a name too long for that is stored as
/// its SHA-1 (a cut name could equal another network's).
pub fn network_tag(network: &str) -> String {
    let tag = format!("cni-multi net: {network}");
    if tag.len() <= COMMENT_MAX {
        return tag;
    }
    format!("cni-multi net sha1: {}", crate::digest::hex(&crate::digest::sha1(network.as_bytes())))
}

/// One attachment's spoof check: who it belongs to and what it matches.
#[derive(Debug, Clone, Copy)]
pub struct Port<'a> {
    /// the network whose ADD sets it up (the chains' comment, [`network_tag`])
    pub network: &'a str,
    pub container_id: &'a str,
    pub ifname: &'a str,
    /// the bridge port (host end of the veth)
    pub host_veth: &'a str,
    pub mac: [u8; 6],
}

/// The setup transaction (pure: `prerouting` = current rules of the base chain): the full,
/// self-contained plan.
pub fn setup_batch(prerouting: &[RuleInfo], port: &Port) -> Batch {
    plan_setup(None, prerouting.iter(), port)
}

/// The fast plan against a dumped state of `bridge nat`: only what is missing is declared, and
/// the attachment's own chains are flushed only when they already exist (a repeated setup).
pub fn setup_batch_fast(st: &TableState, port: &Port) -> Batch {
    plan_setup(Some(st), st.rules_of(BASE_CHAIN), port)
}

fn plan_setup<'a>(st: Option<&TableState>, prerouting: impl Iterator<Item = &'a RuleInfo>, port: &Port) -> Batch {
    let Port { network, container_id, ifname, host_veth, mac } = *port;
    let tag = network_tag(network);
    let f = Family::Bridge;
    let ic = iface_chain(container_id, ifname);
    let mc = mac_chain(container_id, ifname);
    let comment = rule_comment(container_id, ifname);
    let rule = |chain: &str, exprs| Rule {
        family: f,
        table: TABLE.into(),
        chain: chain.into(),
        exprs,
        comment: Some(comment.clone()),
    };
    let mut b = Batch::new();
    b.ensure_table(st, f, TABLE, None);
    b.ensure_chain(st, f, TABLE, BASE_CHAIN, Some(&base_chain()), None);
    b.ensure_chain(st, f, TABLE, &ic, None, Some(&tag));
    b.ensure_chain(st, f, TABLE, &mc, None, Some(&tag));
    for c in [&ic, &mc] {
        if st.is_none_or(|s| s.has_chain(c)) {
            b.flush_chain(f, TABLE, c);
        }
    }
    for r in prerouting.filter(|r| r.comment.as_deref() == Some(comment.as_str())) {
        b.del_rule(f, TABLE, BASE_CHAIN, r.handle);
    }
    let mut e = match_ifname(true, host_veth);
    e.push(Expr::Verdict(Verdict::Jump(ic.clone())));
    b.add_rule(&rule(BASE_CHAIN, e));
    b.add_rule(&rule(&ic, vec![Expr::Verdict(Verdict::Jump(mc.clone()))]));
    let mut e = match_ether_saddr(mac);
    e.push(Expr::Verdict(Verdict::Return));
    b.add_rule(&rule(&mc, e));
    b.add_rule(&rule(&mc, vec![Expr::Verdict(Verdict::Drop)]));
    b
}

/// Installs the anti-spoofing rules for one bridge port of `network`.
pub fn ensure(network: &str, container_id: &str, ifname: &str, host_veth: &str, mac: &str) -> Result<()> {
    let port = Port { network, container_id, ifname, host_veth, mac: parse_mac(mac)? };
    let mut s = NftSocket::cached().context("failed to setup spoof-check")?;
    s.transact(|s, fast| -> Result<Batch> {
        Ok(if fast {
            setup_batch_fast(&TableState::read(s, Family::Bridge, TABLE)?, &port)
        } else {
            let pre = list_rules(s, Family::Bridge, TABLE, Some(BASE_CHAIN))?;
            setup_batch(&pre, &port)
        })
    })
    .context("failed to setup spoof-check")
}

/// Removes the port's PREROUTING rule and its two chains (table and base chain stay, as the
/// reference). Already gone = success.
pub fn remove(container_id: &str, ifname: &str) -> Result<()> {
    let f = Family::Bridge;
    let ic = iface_chain(container_id, ifname);
    let mc = mac_chain(container_id, ifname);
    let comment = rule_comment(container_id, ifname);
    let mut s = NftSocket::cached().context("failed to teardown spoof-check")?;
    let mut last = None;
    for _ in 0..3 {
        let chains = list_chains(&mut s, f, TABLE)?;
        let pre = if chains.iter().any(|c| c.name == BASE_CHAIN) {
            list_rules(&mut s, f, TABLE, Some(BASE_CHAIN))?
        } else {
            Vec::new()
        };
        let mut b = Batch::new();
        for r in pre.iter().filter(|r| r.comment.as_deref() == Some(comment.as_str())) {
            b.del_rule(f, TABLE, BASE_CHAIN, r.handle);
        }
        let present: Vec<&str> =
            [ic.as_str(), mc.as_str()].into_iter().filter(|n| chains.iter().any(|c| c.name == *n)).collect();
        for n in &present {
            b.flush_chain(f, TABLE, n);
        }
        for n in &present {
            b.del_chain(f, TABLE, n);
        }
        match s.commit(&b) {
            Ok(()) => return Ok(()),
            Err(e) if e.is_not_found() => last = Some(e),
            Err(e) => return Err(anyhow::Error::from(e).context("failed to teardown spoof-check")),
        }
    }
    Err(last.map(anyhow::Error::from).unwrap_or_else(|| anyhow::anyhow!("retries exhausted")))
        .context("failed to teardown spoof-check")
}

/// CHECK: the port's PREROUTING rule and its two chains exist, the MAC chain holds its two rules.
pub fn check(container_id: &str, ifname: &str) -> Result<()> {
    let f = Family::Bridge;
    let (ic, mc) = (iface_chain(container_id, ifname), mac_chain(container_id, ifname));
    let comment = rule_comment(container_id, ifname);
    let mut s = NftSocket::cached()?;
    let chains = list_chains(&mut s, f, TABLE)?;
    for c in [BASE_CHAIN, ic.as_str(), mc.as_str()] {
        if !chains.iter().any(|x| x.name == c) {
            bail!("spoof-check chain {c} not found in table bridge {TABLE}");
        }
    }
    let mine = |chain: &str, s: &mut NftSocket| -> Result<usize> {
        Ok(list_rules(s, f, TABLE, Some(chain))?
            .iter()
            .filter(|r| r.comment.as_deref() == Some(comment.as_str()))
            .count())
    };
    if mine(BASE_CHAIN, &mut s)? < 1 || mine(&mc, &mut s)? < 2 {
        bail!("spoof-check rules of {container_id}/{ifname} missing");
    }
    Ok(())
}

/// The interface name an `iifname == "…"` rule matches, if the rule starts with one.
fn rule_iifname(exprs: &[Expr]) -> Option<String> {
    use super::nft::expr::{meta_key, CmpOp};
    match exprs {
        [Expr::Meta { key, .. }, Expr::Cmp { op: CmpOp::Eq, data, .. }, ..] if *key == meta_key::IIFNAME => {
            Some(String::from_utf8_lossy(data).trim_end_matches('\0').to_string())
        }
        _ => None,
    }
}

/// GC (the reference has none) of `network`: removes the anti-spoofing state of attachments not
/// in `valid` that are this network's (their chain's comment is its [`network_tag`]), and the
/// state nobody can use any more: chains with no network comment (the reference's, an older
/// cni-multi's) whose port no longer exists (`port_exists`). The state of another network (on
/// the same bridge or not) and ownerless state of a port that still exists are kept. Chains are
/// found through the PREROUTING rule's jump target, so container ids containing `-` are no
/// problem. Returns the removed rule comments.
pub fn gc(network: &str, valid: &[super::Attachment], port_exists: impl Fn(&str) -> bool) -> Result<Vec<String>> {
    let f = Family::Bridge;
    let keep: Vec<String> = valid.iter().map(|a| rule_comment(&a.container_id, &a.ifname)).collect();
    let tag = network_tag(network);
    let mut s = NftSocket::cached()?;
    let chains = list_chains(&mut s, f, TABLE)?;
    if !chains.iter().any(|c| c.name == BASE_CHAIN) {
        return Ok(Vec::new());
    }
    let mut b = Batch::new();
    let mut removed = Vec::new();
    for r in list_rules(&mut s, f, TABLE, Some(BASE_CHAIN))? {
        let Some(c) = r.comment.as_deref().filter(|c| c.starts_with("macspoofchk-")) else { continue };
        if keep.iter().any(|k| k == c) {
            continue;
        }
        let target = match r.exprs.last() {
            Some(Expr::Verdict(Verdict::Jump(ic))) => Some(ic.as_str()),
            _ => None,
        };
        let owner = target.and_then(|ic| chains.iter().find(|x| x.name == ic)).and_then(|x| x.comment.as_deref());
        let collect = match owner {
            Some(o) => o == tag,
            None => rule_iifname(&r.exprs).is_some_and(|i| !port_exists(&i)),
        };
        if !collect {
            continue;
        }
        b.del_rule(f, TABLE, BASE_CHAIN, r.handle);
        if let Some(ic) = target {
            let mc = format!("{ic}-mac");
            for n in [ic, mc.as_str()] {
                if chains.iter().any(|x| x.name == n) {
                    b.flush_chain(f, TABLE, n);
                    b.del_chain(f, TABLE, n);
                }
            }
        }
        removed.push(c.to_string());
    }
    s.commit(&b).context("garbage-collecting spoof-check rules")?;
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_mac_accepts_only_six_octets() {
        assert_eq!(parse_mac("02:00:00:00:00:01").unwrap(), [2, 0, 0, 0, 0, 1]);
        assert!(parse_mac("02:00:00:00:00").is_err());
        assert!(parse_mac("02:00:00:00:00:zz").is_err());
    }

    #[test]
    fn setup_batch_is_the_captured_nft_layout_in_one_transaction() {
        // Same messages as golden/spoof.bin (checked byte-for-byte in nft::tests), plus the
        // removal of a previous rule of the same attachment.
        let old = RuleInfo {
            family: 7,
            table: TABLE.into(),
            chain: BASE_CHAIN.into(),
            handle: 4,
            comment: Some("macspoofchk-cid1-eth0".into()),
            exprs: vec![],
        };
        let port = Port {
            network: "n1",
            container_id: "cid1",
            ifname: "eth0",
            host_veth: "veth1234",
            mac: [2, 0, 0, 0, 0, 1],
        };
        let b = setup_batch(&[old], &port);
        let whats: Vec<&str> = b.msgs.iter().map(|m| m.what.as_str()).collect();
        assert_eq!(whats[6], "delete rule bridge nat PREROUTING handle 4");
        assert_eq!(b.msgs.len(), 11);
        // the attachment's two chains carry the network's comment, the base chain none
        let comment = |i: usize| crate::firewall::nft::decode::decode_chain(7, &b.msgs[i].payload).comment;
        assert_eq!((comment(1), comment(2), comment(3)), (None, Some(network_tag("n1")), Some(network_tag("n1"))));
    }

    #[test]
    fn network_tag_fits_nft_comments_and_tells_long_names_apart() {
        assert_eq!(network_tag("msA"), "cni-multi net: msA");
        let (a, b) = ("a".repeat(200), format!("{}b", "a".repeat(199)));
        let (ta, tb) = (network_tag(&a), network_tag(&b));
        assert!(ta.len() <= COMMENT_MAX && ta.starts_with("cni-multi net sha1: "), "{ta}");
        assert_ne!(ta, tb);
        let edge = "n".repeat(COMMENT_MAX - "cni-multi net: ".len());
        assert_eq!(network_tag(&edge), format!("cni-multi net: {edge}"));
    }
}
