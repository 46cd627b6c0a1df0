//! One file per plugin; each reads like the steps of what it does.
pub mod bandwidth;
pub mod bridge;
pub mod common;
pub mod fw_plugin;
pub mod loopback;
pub mod portmap;
pub mod ptp;
pub mod sbr;
pub mod tuning;
