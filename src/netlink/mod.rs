//! One typed netlink layer over neli; plugins never build bytes.
//!
//! neli provides the socket; requests are encoded by the small byte builder in `msg.rs`
//! (no generic serialisation machinery: smaller binary, exact bytes checked by golden tests).
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

#[cfg(test)]
mod golden;
#[cfg(test)]
mod tests;

pub use addr::{Addr, Family};
pub use kinds::{IpvlanFlag, IpvlanMode, LinkDetails, LinkKind, LinkSpec, MacvlanMode};
pub use link::{format_mac, parse_mac, BridgeSpec, Link, VethSpec};
pub use neigh::Neigh;
pub use route::RouteSpec;
pub use rule::RuleSpec;
pub use socket::{Netlink, NlError};
