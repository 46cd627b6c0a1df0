//! Firewall backends (nftables over netlink, iptables-restore). Issue 4.
pub mod nft;
