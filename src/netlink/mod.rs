//! One typed netlink layer over neli; plugins never build bytes.
//!
//! neli provides the socket; requests are encoded by the small byte builder in `msg.rs`
//! (no generic serialisation machinery: smaller binary, exact bytes checked by golden tests
//! against iproute2 in `golden.rs`; real-kernel behaviour in `tests.rs`).
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
pub mod msg;
pub mod neigh;
pub mod route;
pub mod rule;
pub mod socket;
pub mod tc;

#[cfg(test)]
#[allow(unsafe_code)]
// golden.rs borrows fd 4 for message bytes; goes when golden.rs stops doing that (issue 11 item 8)
mod golden;
#[cfg(test)]
mod tests;

pub use addr::{Addr, Family};
pub use kinds::{IpvlanFlag, IpvlanMode, LinkDetails, LinkKind, LinkSpec, MacvlanMode};
pub use link::{format_mac, parse_mac, BridgeSpec, BridgeVlan, Link, VethSpec};
pub use neigh::Neigh;
pub use route::RouteSpec;
pub use rule::RuleSpec;
pub use socket::{Netlink, NlError};
pub use tc::{Qdisc, Tbf};
