//! Every name cni-multi derives the reference's way, in one place, each next to its known-vector
//! test (vectors computed with an independent SHA-512, Python's hashlib): a node can switch
//! between the reference binaries and ours only if both derive the same chain, interface and
//! container names from the same inputs.
//!
//! | name | shape | used by |
//! |---|---|---|
//! | [`ipmasq_chain`] | `CNI-` + 24 hex of sha512(network + containerID) | ipMasq, iptables |
//! | [`ipmasq_comment`] | `name: "<net>" id: "<cid>"` (Go `%q`) | ipMasq, iptables |
//! | [`masq_network_hash`], [`masq_instance_hash`], [`masq_nft_comment`] | `<h16(net)>-<h16(if:cid)>, net: …` | ipMasq, nftables |
//! | [`firewall_nft_tag`], [`firewall_nft_comment`], [`firewall_nft_legacy_comment`] | as ipMasq's / `<cid>` before 2026-12-07 | firewall plugin, nftables |
//! | [`portmap_dn_chain`], [`portmap_sn_chain`] | `CNI-DN-` / `CNI-SN-` + 21 hex | portmap, iptables |
//! | [`portmap_dnat_comment`] | `dnat name: "<net>" id: "<cid>"` (≤ 255 bytes) | portmap, iptables |
//! | [`macspoof_iface_chain`], [`macspoof_mac_chain`], [`macspoof_comment`] | `cni-br-iface-<cid>-<if>[-mac]` | bridge macspoofchk |
//! | [`ifb_name`] | `bwp` + 12 hex of sha512(network + containerID) | bandwidth |
//! | [`random_veth_name`] | `veth` + 8 random hex | bridge, ptp host veths |
//! | [`vpc_host_veth_name`] | prefix + 11 hex of sha1(`<namespace>.<pod>` or container id) | vpc-routed (AWS VPC CNI's way) |
//! | [`cnitool_container_id`] | `cnitool-` + 20 hex of sha512(netns path) | `cni-multi tool` |

use crate::cni::result::go_quote;
use crate::digest::{hex, sha512};

/// The reference's `MustFormatHashWithPrefix(len, prefix, s)`: prefix + hex SHA-512, cut to `len`.
pub fn hash_with_prefix(len: usize, prefix: &str, s: &str) -> String {
    let mut out = format!("{prefix}{}", hex(&sha512(s.as_bytes())));
    out.truncate(len.min(out.len()));
    out
}

/// Cuts `s` to at most `max` bytes on a character boundary.
fn cut(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

// ---- ipMasq ------------------------------------------------------------------------------------

/// iptables ipMasq chain: `CNI-` + 24 hex of sha512(network + containerID) (FormatChainName).
pub fn ipmasq_chain(network: &str, container_id: &str) -> String {
    hash_with_prefix(28, "CNI-", &format!("{network}{container_id}"))
}

/// iptables ipMasq comment (FormatComment): `name: "<net>" id: "<cid>"`, quoted as Go's `%q`.
pub fn ipmasq_comment(network: &str, container_id: &str) -> String {
    format!("name: {} id: {}", go_quote(network), go_quote(container_id))
}

/// nftables ipMasq: first 16 hex of sha512(network).
pub fn masq_network_hash(network: &str) -> String {
    hash_with_prefix(16, "", network)
}

/// nftables ipMasq: `<h16(network)>-<h16(ifname:containerID)>`, the prefix of one attachment's rules.
pub fn masq_instance_hash(network: &str, ifname: &str, container_id: &str) -> String {
    format!("{}-{}", masq_network_hash(network), hash_with_prefix(16, "", &format!("{ifname}:{container_id}")))
}

/// nftables ipMasq rule comment: the instance hash, then the names without quotes, ≤ 128 bytes.
pub fn masq_nft_comment(network: &str, ifname: &str, container_id: &str) -> String {
    let c = format!(
        "{}, net: {}, if: {}, id: {}",
        masq_instance_hash(network, ifname, container_id),
        network.replace('"', ""),
        ifname.replace('"', ""),
        container_id.replace('"', "")
    );
    cut(c, crate::firewall::nft::COMMENT_MAX)
}

// ---- firewall plugin (nftables) ---------------------------------------------------------------

/// The firewall plugin's nftables accept rules of one attachment carry ipMasq's tag: this prefix,
/// `<h16(network)>-<h16(ifname:containerID)>`, names the attachment (network, interface and
/// container) however the comment is cut.
pub fn firewall_nft_tag(network: &str, ifname: &str, container_id: &str) -> String {
    masq_instance_hash(network, ifname, container_id)
}

/// The firewall plugin's nftables accept rule comment: [`firewall_nft_tag`], then the names
/// (the shape of [`masq_nft_comment`]), at most 128 bytes.
pub fn firewall_nft_comment(network: &str, ifname: &str, container_id: &str) -> String {
    masq_nft_comment(network, ifname, container_id)
}

/// The comment cni-multi wrote on those rules before 2026-12-07: the container id alone (cut to
/// the 128 bytes nft keeps), naming neither the network nor the interface. Still read (DEL,
/// CHECK, GC, and ADD replacing it), never written.
pub fn firewall_nft_legacy_comment(container_id: &str) -> String {
    cut(container_id.to_string(), crate::firewall::nft::COMMENT_MAX)
}

// ---- portmap -----------------------------------------------------------------------------------

/// portmap's per-container DNAT chain: `CNI-DN-` + 21 hex of sha512(network + containerID).
pub fn portmap_dn_chain(network: &str, container_id: &str) -> String {
    hash_with_prefix(28, "CNI-DN-", &format!("{network}{container_id}"))
}

/// portmap's obsolete SNAT chain `CNI-SN-…` (deleted on DEL, never created).
pub fn portmap_sn_chain(network: &str, container_id: &str) -> String {
    hash_with_prefix(28, "CNI-SN-", &format!("{network}{container_id}"))
}

/// portmap's entry rule comment `dnat name: "<net>" id: "<cid>"` (plain quotes), cut to 255 bytes
/// with `...` as the reference.
pub fn portmap_dnat_comment(network: &str, container_id: &str) -> String {
    let c = format!("dnat name: \"{network}\" id: \"{container_id}\"");
    if c.len() <= 255 {
        return c;
    }
    format!("{}...", cut(c, 253))
}

// ---- macspoofchk -------------------------------------------------------------------------------

/// `<cid>-<ifname>`, the reference's refID.
fn macspoof_ref(container_id: &str, ifname: &str) -> String {
    format!("{container_id}-{ifname}")
}

/// bridge macspoofchk's per-port chain `cni-br-iface-<cid>-<ifname>`.
pub fn macspoof_iface_chain(container_id: &str, ifname: &str) -> String {
    format!("cni-br-iface-{}", macspoof_ref(container_id, ifname))
}

/// bridge macspoofchk's MAC chain `cni-br-iface-<cid>-<ifname>-mac`.
pub fn macspoof_mac_chain(container_id: &str, ifname: &str) -> String {
    format!("{}-mac", macspoof_iface_chain(container_id, ifname))
}

/// bridge macspoofchk's rule comment `macspoofchk-<cid>-<ifname>`.
pub fn macspoof_comment(container_id: &str, ifname: &str) -> String {
    format!("macspoofchk-{}", macspoof_ref(container_id, ifname))
}

// ---- interfaces and ids ------------------------------------------------------------------------

/// bandwidth's ifb: `bwp` + the first 12 hex digits of sha512(network + containerID).
pub fn ifb_name(network: &str, container_id: &str) -> String {
    hash_with_prefix(15, "bwp", &format!("{network}{container_id}"))
}

/// `veth` + 8 random hex digits, as the reference names host-side veths.
pub fn random_veth_name() -> String {
    format!("veth{}", hex(&crate::sys::random::u32().to_be_bytes()))
}

/// vpc-routed's host veth, named as the AWS VPC CNI does: `prefix` + the first 11 hex digits of
/// sha1(`key`), where `key` is `<namespace>.<pod>` (or the container id without Kubernetes args).
pub fn vpc_host_veth_name(prefix: &str, key: &str) -> String {
    let h = hex(&crate::digest::sha1(key.as_bytes()));
    format!("{prefix}{}", h.get(..11).unwrap_or(&h))
}

/// cnitool's container id: `cnitool-` + the first 10 bytes of sha512(absolute netns path), in hex.
pub fn cnitool_container_id(netns_abs: &str) -> String {
    let h = sha512(netns_abs.as_bytes());
    format!("cnitool-{}", hex(h.get(..10).unwrap_or(&h)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipmasq_names_known_vectors() {
        assert_eq!(ipmasq_chain("mynet", "cid1"), "CNI-a631aa8e1549a3b129110fd2");
        assert_eq!(ipmasq_comment("net", "a\"b"), r#"name: "net" id: "a\"b""#);
        assert_eq!(masq_network_hash("mynet"), "d23676b4f2d9fe04");
        assert_eq!(masq_instance_hash("mynet", "eth0", "cid1"), "d23676b4f2d9fe04-0b65a318f52e521b");
        assert_eq!(
            masq_nft_comment("mynet", "eth0", "ci\"d1"),
            format!("{}, net: mynet, if: eth0, id: cid1", masq_instance_hash("mynet", "eth0", "ci\"d1"))
        );
        assert_eq!(masq_nft_comment("n", "eth0", &"x".repeat(300)).len(), 128);
    }

    #[test]
    fn firewall_nft_names_known_vectors() {
        assert_eq!(firewall_nft_tag("mynet", "eth0", "cid1"), "d23676b4f2d9fe04-0b65a318f52e521b");
        assert_eq!(
            firewall_nft_comment("mynet", "net1", "cid1"),
            format!("{}, net: mynet, if: net1, id: cid1", firewall_nft_tag("mynet", "net1", "cid1"))
        );
        assert_ne!(firewall_nft_tag("mynet", "eth0", "cid1"), firewall_nft_tag("mynet", "net1", "cid1"));
        assert_ne!(firewall_nft_tag("mynet", "eth0", "cid1"), firewall_nft_tag("other", "eth0", "cid1"));
        assert_eq!(firewall_nft_legacy_comment("cid1"), "cid1");
        assert_eq!(firewall_nft_legacy_comment(&"c".repeat(200)), "c".repeat(128));
    }

    #[test]
    fn portmap_names_known_vectors() {
        assert_eq!(portmap_dn_chain("mynet", "cid1"), "CNI-DN-a631aa8e1549a3b129110");
        assert_eq!(portmap_sn_chain("mynet", "cid1"), "CNI-SN-a631aa8e1549a3b129110");
        assert_eq!(portmap_dnat_comment("net", "c"), r#"dnat name: "net" id: "c""#);
        let long = portmap_dnat_comment("net", &"é".repeat(200));
        assert!(long.len() <= 256 && long.ends_with("..."), "{long}");
    }

    #[test]
    fn macspoof_names_known_vectors() {
        assert_eq!(macspoof_iface_chain("cid1", "eth0"), "cni-br-iface-cid1-eth0");
        assert_eq!(macspoof_mac_chain("cid1", "eth0"), "cni-br-iface-cid1-eth0-mac");
        assert_eq!(macspoof_comment("cid1", "eth0"), "macspoofchk-cid1-eth0");
    }

    #[test]
    fn interface_and_id_names_known_vectors() {
        assert_eq!(ifb_name("mynet", "cid1"), "bwpa631aa8e1549");
        assert_eq!(cnitool_container_id("/var/run/netns/testing"), "cnitool-77383ca0a0715733ca6f");
        assert_eq!(vpc_host_veth_name("eni", "default.web-0"), "eni0d7763386da");
        let v = random_veth_name();
        assert_eq!(v.len(), 12);
        assert!(v.starts_with("veth") && v[4..].chars().all(|c| c.is_ascii_hexdigit()), "{v}");
    }
}
