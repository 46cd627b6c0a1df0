//! One file per plugin; each reads like the steps of what it does.
pub mod bridge;
pub mod common;
pub mod flannel;
pub mod loopback;
pub mod ptp;
pub mod vpc_routed;
