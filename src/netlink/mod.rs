//! One typed netlink layer over neli; plugins never build bytes.
//!
//! neli provides the socket; requests are encoded by the small byte builder in `msg.rs`
//! (no generic serialisation machinery: smaller binary, exact bytes checked by golden tests).
pub mod addr;
pub mod kinds;
pub mod link;
pub mod msg;
pub mod neigh;
pub mod route;
pub mod socket;

#[cfg(test)]
mod golden;
#[cfg(test)]
mod tests;

pub use addr::{Addr, Family};
pub use link::{format_mac, parse_mac, BridgeSpec, Link, VethSpec};
pub use route::RouteSpec;
pub use socket::{Netlink, NlError};
