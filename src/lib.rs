//! cni-multi: every standard CNI plugin and IPAM type in one multicall binary.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod applets;
pub mod cli;
pub mod cni;
pub mod dbus;
pub mod digest;
pub mod docs;
pub mod firewall;
#[doc(hidden)]
pub mod fuzzing;
pub mod install;
pub mod ipam;
pub mod logging;
pub mod names;
pub mod netlink;
pub mod plugins;
pub mod re2;
pub mod sys;
pub mod tool;
