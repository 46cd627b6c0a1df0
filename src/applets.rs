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

/// Names other than the applets' that the binary answers to when called by them (argv[0], see
/// `cli::dispatch`): `cnitool` runs `cni-multi tool`. Any name starting with [`MULTI_PREFIX`]
/// is the multicall entry itself. `cni-multi install` and install.sh never remove a link of
/// these names as stale.
pub const ALIASES: &[&str] = &["cnitool"];

/// argv[0] names starting with this (`cni-multi`, `cni-multi-0.1`) run the multicall entry.
pub const MULTI_PREFIX: &str = "cni-multi";

/// Whether the dispatcher accepts `name` as argv[0] without it being an applet.
pub fn is_alias(name: &str) -> bool {
    ALIASES.contains(&name) || name.starts_with(MULTI_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every alias is one the dispatcher honours (`cnitool --help` and `cni-multi-0.1 --version`
    /// exit 0), and a name that is neither an applet nor an alias is refused (exit 2).
    #[test]
    fn aliases_are_what_the_dispatcher_accepts() {
        let run = |n: &str, flag: &str| crate::cli::dispatch(&[n.to_string(), flag.to_string()]);
        for name in ALIASES {
            assert!(is_alias(name) && find(name).is_none(), "{name}");
            assert_eq!(run(name, "--help"), 0, "{name} is not dispatched");
        }
        for name in [MULTI_PREFIX, "cni-multi-0.1"] {
            assert!(is_alias(name), "{name}");
            assert_eq!(run(name, "--version"), 0, "{name} is not dispatched");
        }
        assert!(!is_alias("cnitoo") && !is_alias("multi"));
        assert_eq!(run("cnitoo", "--help"), 2);
    }
}
