// Test code, not the product: unwrap/expect are how a test fails, and the namespace pre_exec and
// ptrace helpers need `unsafe` (each block with a SAFETY comment). The house rules ([lints] in
// Cargo.toml) hold for src/.
#![allow(clippy::unwrap_used, clippy::expect_used, unsafe_code)]

mod harness;

mod bridge;
mod clients;
mod dhcp;
mod differential;
mod exec;
mod faults;
mod firewall;
mod firewalld;
mod flannel;
mod fuzz_replay;
mod hostile;
mod iface;
mod iface_vm;
mod install;
mod ipam;
mod keys;
mod logging;
mod loopback;
mod meta;
mod portmap;
mod protocol;
mod ptp;
mod stress;
mod tool;
mod vpc_routed;
