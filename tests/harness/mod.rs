//! Integration-test harness shared by every test module of the `tests` binary.
//!
//! - [`world`]: throwaway netns worlds (a host netns + container netnses, temp dir, plugin dir)
//! - [`plugin`]: running a plugin process (ours or the reference in /usr/lib/cni) inside a world
//! - [`state`]: kernel and store snapshots
//! - [`normalize`]: masking random/kernel-assigned values, structural JSON diff
//! - [`config`]: per-test address blocks and testdata loading
//! - [`runtime`]: `cni-multi tool` / cnitool run inside a world, with temp state dirs

pub mod config;
pub mod normalize;
pub mod plugin;
pub mod runtime;
pub mod state;
pub mod world;

pub use config::{load, net_name, vars, version_ge, Subnets};
pub use normalize::{diff, Normalizer};
pub use plugin::{Flavor, Impl, Outcome};
pub use world::{unique, wait_for, Netns, World};
