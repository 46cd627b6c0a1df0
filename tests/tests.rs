mod harness;

mod bridge;
mod dhcp;
mod differential;
mod firewall;
mod fuzz_replay;
mod install;
mod ipam;
mod loopback;
mod proto;
mod protocol;
mod ptp;
