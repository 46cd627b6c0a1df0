//! One file per plugin; each reads like the steps of what it does.
pub mod bridge;
pub mod common;
pub mod dummy;
pub mod flannel;
pub mod host_device;
pub mod ipvlan;
pub mod loopback;
pub mod macvlan;
pub mod ptp;
pub mod tap;
pub mod vlan;
pub mod vpc_routed;
pub mod vrf;
