//! Integration-test harness shared by every test module of the `tests` binary.
//!
//! - [`world`]: throwaway netns worlds (a host netns + container netnses, temp dir, plugin dir)
//! - [`plugin`]: running a plugin process (ours or the reference in /usr/lib/cni) inside a world
//! - [`state`]: kernel and store snapshots
//! - [`normalize`]: masking random/kernel-assigned values, structural JSON diff
//! - [`config`]: per-test address blocks and testdata loading
//! - [`topo`]: topology builders (named netns sets, a routed outside netns, two bridges, a DHCP server)
//! - [`runtime`]: `cni-multi tool` / cnitool run inside a world, with temp state dirs

pub mod config;
pub mod normalize;
pub mod plugin;
pub mod runtime;
pub mod state;
pub mod topo;
pub mod world;

pub use config::{bridge_conf, load, net_name, ptp_conf, vars, version_ge, Subnets};
pub use normalize::{diff, Normalizer};
pub use plugin::{have_reference, Flavor, Impl, Outcome};
pub use world::{each_impl, unique, wait_for, Netns, World};
