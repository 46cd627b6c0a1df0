//! The one netlink layer: neli's socket plus one wire module, for every protocol we speak
//! (rtnetlink here; nf_tables and ctnetlink in `firewall/nft` and `firewall/conntrack.rs` use
//! the same wire module and connection). Plugins never build bytes.
//!
//! - `wire.rs`: header and flags, the attribute writer (native/big-endian values, nests) and
//!   reader, the datagram splitter, the NLMSG_ERROR/ext-ack parser and [`NlError`], the one error
//!   type (errno, what was asked, the kernel's ext-ack text). No socket: tested without root.
//! - `socket.rs`: [`socket::Transport`] (neli's `NlSocket`, route or netfilter, opened only
//!   here) and [`socket::Conn`]: sequence numbers and the one receive loop (one `recvfrom` per
//!   datagram; the buffer grows and GETs/dumps are re-asked only on truncation); [`Netlink`], the
//!   rtnetlink API, on top.
//! - `consts.rs` (rtnetlink ABI numbers), `link.rs addr.rs route.rs rule.rs neigh.rs tc.rs
//!   kinds.rs ifext.rs`: typed requests and replies.
//! - Tests: golden bytes against iproute2 (`golden.rs`), real-kernel behaviour in throwaway
//!   namespaces (`tests.rs`), and `fake.rs`, the recording fake transport (with `sys::fake`'s
//!   namespaces and sysctls) that `plugins/order_tests.rs` runs the plugins against, no root.
//!
//! Typical use (one socket per namespace, opened once):
//! ```text
//! let cont = NetNs::open(&ctx.netns)?;            // NsError::NotExist => DEL succeeds
//! let mut host = Netlink::new()?;                 // bound in our namespace
//! let mut c = Netlink::in_netns(&cont)?;          // bound in the container, we stay here
//! let host_ns = NetNs::current()?;
//! c.veth_add(&VethSpec { name: "eth0", peer_name: &veth, mtu, mac, peer_ns: Some(host_ns.fd()) })?;
//! let hv = host.link_by_name(&veth)?.context("host veth vanished")?;
//! host.link_set_up(hv.index, true)?;
//! cont.run(|| Ok(sysctl::set_if("ipv4", "eth0", "arp_notify", "1")?))?;  // sysctls: inside
//! ```
//! Errors are `anyhow::Error` wrapping [`NlError`] (errno + kernel ext-ack text); test them
//! with [`socket::is_not_found`] / [`socket::is_exists`] or `downcast_ref::<NlError>()`.
pub mod addr;
pub mod consts;
pub mod ifext;
pub mod kinds;
pub mod link;
pub mod neigh;
pub mod netconf;
pub mod route;
pub mod rule;
pub mod socket;
pub mod tc;
pub mod wire;

#[cfg(test)]
pub(crate) mod fake;

#[cfg(test)]
mod golden;
#[cfg(test)]
mod tests;

pub use addr::{Addr, Family};
pub use kinds::{IpvlanFlag, IpvlanMode, LinkDetails, LinkKind, LinkSpec, MacvlanMode};
pub use link::{format_hw_addr, format_mac, parse_hwaddr, parse_mac, BridgeSpec, BridgeVlan, Link, VethSpec};
pub use neigh::Neigh;
pub use route::RouteSpec;
pub use rule::RuleSpec;
pub use socket::Netlink;
pub use tc::{Filter, Qdisc, Tbf};
pub use wire::NlError;
