//! One file per plugin; each reads like the steps of what it does.
pub mod bandwidth;
pub mod bridge;
pub mod dummy;
pub mod firewall;
pub mod flannel;
pub mod host_device;
pub mod ipvlan;
pub mod loopback;
pub mod macvlan;
#[cfg(test)]
mod order_tests;
pub mod portmap;
pub mod ptp;
pub mod sbr;
pub mod steps;
pub mod tap;
pub mod tuning;
pub mod vlan;
pub mod vpc_routed;
pub mod vrf;
