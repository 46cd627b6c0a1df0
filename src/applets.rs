//! The one static table of applets: name → verb functions.

use crate::cni::{CniResult, Ctx};

pub type AddFn = fn(&Ctx) -> anyhow::Result<CniResult>;
pub type VerbFn = fn(&Ctx) -> anyhow::Result<()>;

/// One plugin of the multicall binary.
pub struct Applet {
    pub name: &'static str,
    pub about: &'static str,
    /// the lowest cniVersion the plugin accepts (bandwidth 0.3.0, vrf 0.3.1, firewall 0.4.0)
    pub min_version: &'static str,
    /// CNI_ARGS keys this plugin parses; `None` = the plugin ignores CNI_ARGS entirely.
    /// With `Some`, any other key is an error unless `IgnoreUnknown=1|true`.
    pub cni_args: Option<&'static [&'static str]>,
    pub add: AddFn,
    pub del: VerbFn,
    pub check: VerbFn,
    /// `None`: the verb succeeds silently (as the reference skel does)
    pub gc: Option<VerbFn>,
    pub status: Option<VerbFn>,
}

pub static APPLETS: &[Applet] = &[
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

pub fn find(name: &str) -> Option<&'static Applet> {
    APPLETS.iter().find(|a| a.name == name)
}

pub fn names() -> impl Iterator<Item = &'static str> {
    APPLETS.iter().map(|a| a.name)
}
