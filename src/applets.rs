//! The one static table of this binary's plugins, in the order `--list`, `--help` and
//! docs/plugins.md show them. Only `cli` (and the tools above the protocol layer) read it; the
//! protocol layer reaches it through [`crate::cni::Ctx::plugins`].

use crate::cni::Plugin;

pub static APPLETS: &[Plugin] = &[
    crate::plugins::loopback::APPLET,
    crate::plugins::bridge::APPLET,
    crate::plugins::ptp::APPLET,
    crate::plugins::macvlan::APPLET,
    crate::plugins::ipvlan::APPLET,
    crate::plugins::vlan::APPLET,
    crate::plugins::host_device::APPLET,
    crate::plugins::dummy::APPLET,
    crate::plugins::tap::APPLET,
    crate::plugins::vrf::APPLET,
    crate::ipam::host_local::APPLET,
    crate::ipam::static_::APPLET,
    crate::ipam::dhcp::APPLET,
    crate::plugins::tuning::APPLET,
    crate::plugins::sbr::APPLET,
    crate::plugins::bandwidth::APPLET,
    crate::plugins::portmap::APPLET,
    crate::plugins::firewall::APPLET,
    crate::plugins::flannel::APPLET,
    crate::plugins::vpc_routed::APPLET,
];

/// The plugin called `name` (a [`crate::cni::plugin::Lookup`]).
pub fn find(name: &str) -> Option<&'static Plugin> {
    APPLETS.iter().find(|a| a.name == name)
}

pub fn names() -> impl Iterator<Item = &'static str> {
    APPLETS.iter().map(|a| a.name)
}
