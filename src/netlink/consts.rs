//! Numeric constants of the rtnetlink ABI (linux/rtnetlink.h, if_link.h, if_addr.h,
//! neighbour.h, if_bridge.h). Kept here as plain numbers: they are stable kernel ABI, and
//! several are missing from neli or compiled out of it on musl.
#![allow(dead_code)]

// header-level numbers live with the wire format; re-exported for the rtnetlink encoders
pub use super::wire::{
    NLA_F_NESTED, NLA_TYPE_MASK, NLMSGERR_ATTR_MSG, NLMSG_DONE, NLMSG_ERROR, NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_APPEND,
    NLM_F_CAPPED, NLM_F_CREATE, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_EXCL, NLM_F_MATCH, NLM_F_MULTI, NLM_F_REPLACE,
    NLM_F_REQUEST, NLM_F_ROOT,
};

pub const RTM_NEWLINK: u16 = 16;
pub const RTM_DELLINK: u16 = 17;
pub const RTM_GETLINK: u16 = 18;
pub const RTM_SETLINK: u16 = 19;
pub const RTM_NEWADDR: u16 = 20;
pub const RTM_DELADDR: u16 = 21;
pub const RTM_GETADDR: u16 = 22;
pub const RTM_NEWROUTE: u16 = 24;
pub const RTM_DELROUTE: u16 = 25;
pub const RTM_GETROUTE: u16 = 26;
pub const RTM_NEWNEIGH: u16 = 28;
pub const RTM_DELNEIGH: u16 = 29;
pub const RTM_NEWRULE: u16 = 32;
pub const RTM_DELRULE: u16 = 33;
pub const RTM_GETRULE: u16 = 34;

pub const AF_UNSPEC: u8 = 0;
pub const AF_INET: u8 = 2;
pub const AF_BRIDGE: u8 = 7;
pub const AF_INET6: u8 = 10;

// link
pub const IFF_UP: u32 = 0x1;
pub const IFF_PROMISC: u32 = 0x100;
/// RFC 2863 operstate: neither driver nor userspace set one (ipvlan, dummy, tun without carrier handling).
pub const IF_OPER_UNKNOWN: u8 = 0;
pub const IF_OPER_UP: u8 = 6;
pub const IFLA_ADDRESS: u16 = 1;
pub const IFLA_IFNAME: u16 = 3;
pub const IFLA_MTU: u16 = 4;
pub const IFLA_LINK: u16 = 5;
pub const IFLA_MASTER: u16 = 10;
pub const IFLA_PROTINFO: u16 = 12;
pub const IFLA_TXQLEN: u16 = 13;
pub const IFLA_OPERSTATE: u16 = 16;
pub const IFLA_LINKINFO: u16 = 18;
pub const IFLA_NET_NS_PID: u16 = 19;
pub const IFLA_AF_SPEC: u16 = 26;
pub const IFLA_NET_NS_FD: u16 = 28;
pub const IFLA_EXT_MASK: u16 = 29;
pub const IFLA_LINK_NETNSID: u16 = 37;
pub const IFLA_INFO_KIND: u16 = 1;
pub const IFLA_INFO_DATA: u16 = 2;
pub const IFLA_INFO_SLAVE_KIND: u16 = 4;
pub const IFLA_INFO_SLAVE_DATA: u16 = 5;
pub const VETH_INFO_PEER: u16 = 1;
pub const IFLA_BR_VLAN_FILTERING: u16 = 7;
pub const IFLA_BRPORT_MODE: u16 = 4;
pub const IFLA_BRPORT_ISOLATED: u16 = 33;
pub const IFLA_BRIDGE_VLAN_INFO: u16 = 2;
pub const BRIDGE_VLAN_INFO_PVID: u16 = 0x2;
pub const BRIDGE_VLAN_INFO_UNTAGGED: u16 = 0x4;
pub const RTEXT_FILTER_VF: u32 = 0x1;
pub const RTEXT_FILTER_SKIP_STATS: u32 = 0x8;
pub const RTEXT_FILTER_BRVLAN: u32 = 0x2;

// addr
pub const IFA_ADDRESS: u16 = 1;
pub const IFA_LOCAL: u16 = 2;
pub const IFA_BROADCAST: u16 = 4;
pub const IFA_FLAGS: u16 = 8;

// route
pub const RTA_DST: u16 = 1;
pub const RTA_SRC: u16 = 2;
pub const RTA_OIF: u16 = 4;
pub const RTA_GATEWAY: u16 = 5;
pub const RTA_PRIORITY: u16 = 6;
pub const RTA_PREFSRC: u16 = 7;
pub const RTA_METRICS: u16 = 8;
pub const RTA_MULTIPATH: u16 = 9;
pub const RTA_FLOW: u16 = 11;
pub const RTA_TABLE: u16 = 15;
pub const RTAX_MTU: u16 = 2;
pub const RTAX_ADVMSS: u16 = 8;
/// `rtm_flags`: a route lookup answers with the table the route was found in.
pub const RTM_F_LOOKUP_TABLE: u32 = 0x1000;
pub const RT_TABLE_UNSPEC: u8 = 0;
pub const RT_TABLE_MAIN: u8 = 254;
pub const RTPROT_UNSPEC: u8 = 0;
pub const RTPROT_BOOT: u8 = 3;
pub const RT_SCOPE_UNIVERSE: u8 = 0;
pub const RT_SCOPE_LINK: u8 = 253;
pub const RT_SCOPE_HOST: u8 = 254;
pub const RT_SCOPE_NOWHERE: u8 = 255;
pub const RTN_UNSPEC: u8 = 0;
pub const RTN_UNICAST: u8 = 1;

// neighbour
pub const NDA_DST: u16 = 1;
pub const NDA_LLADDR: u16 = 2;
pub const NUD_REACHABLE: u16 = 0x02;
pub const NUD_PERMANENT: u16 = 0x80;
pub const IFF_ALLMULTI: u32 = 0x200;
pub const IFLA_IFALIAS: u16 = 20;
pub const IFLA_MACVLAN_MODE: u16 = 1;
pub const IFLA_MACVLAN_BC_QUEUE_LEN: u16 = 7;
pub const IFLA_IPVLAN_MODE: u16 = 1;
pub const IFLA_IPVLAN_FLAGS: u16 = 2;
pub const IFLA_VLAN_ID: u16 = 1;
pub const IFLA_VRF_TABLE: u16 = 1;

// fib rules
pub const FRA_DST: u16 = 1;
pub const FRA_SRC: u16 = 2;
pub const FRA_IIFNAME: u16 = 3;
pub const FRA_PRIORITY: u16 = 6;
pub const FRA_FWMARK: u16 = 10;
pub const FRA_TABLE: u16 = 15;
pub const FRA_FWMASK: u16 = 16;
pub const FRA_OIFNAME: u16 = 17;
pub const FR_ACT_TO_TBL: u8 = 1;
pub const FIB_RULE_INVERT: u32 = 0x2;

// traffic control
pub const RTM_NEWQDISC: u16 = 36;
pub const RTM_DELQDISC: u16 = 37;
pub const RTM_GETQDISC: u16 = 38;
pub const RTM_NEWTFILTER: u16 = 44;
pub const RTM_GETTFILTER: u16 = 46;
pub const TCA_KIND: u16 = 1;
pub const TCA_OPTIONS: u16 = 2;
pub const TCA_TBF_PARMS: u16 = 1;
pub const TCA_TBF_RATE64: u16 = 4;
pub const TCA_U32_CLASSID: u16 = 1;
pub const TCA_U32_SEL: u16 = 5;
pub const TCA_U32_ACT: u16 = 7;
pub const TCA_ACT_KIND: u16 = 1;
pub const TCA_ACT_OPTIONS: u16 = 2;
pub const TCA_MIRRED_PARMS: u16 = 2;
pub const TC_U32_TERMINAL: u8 = 1;
pub const TC_ACT_OK: i32 = 0;
pub const TC_ACT_STOLEN: i32 = 4;
pub const TCA_EGRESS_REDIR: i32 = 1;
pub const TC_H_ROOT: u32 = 0xffff_ffff;
pub const TC_H_INGRESS: u32 = 0xffff_fff1;
pub const ETH_P_ALL: u16 = 0x0003;

// per-interface IP settings over rtnetlink (IFLA_AF_SPEC) and netconf
pub const RTM_NEWNETCONF: u16 = 80;
pub const RTM_GETNETCONF: u16 = 82;
pub const NETCONFA_IFINDEX: u16 = 1;
pub const NETCONFA_FORWARDING: u16 = 2;
/// NETCONFA_IFINDEX of the namespace-wide `all` settings (net.ipv4.ip_forward is all's forwarding)
pub const NETCONFA_IFINDEX_ALL: i32 = -1;
/// IFLA_AF_SPEC / AF_INET: the IPV4_DEVCONF_* values (settable)
pub const IFLA_INET_CONF: u16 = 1;
/// IFLA_AF_SPEC / AF_INET6: the DEVCONF_* values as an s32 array (read-only)
pub const IFLA_INET6_CONF: u16 = 2;
/// net.ipv4.conf.<if>.arp_notify
pub const IPV4_DEVCONF_ARP_NOTIFY: u16 = 22;
/// index of net.ipv6.conf.<if>.accept_ra in IFLA_INET6_CONF
pub const DEVCONF_ACCEPT_RA: usize = 3;
