mod harness;

mod bridge;
mod dhcp;
mod differential;
mod faults;
mod firewall;
mod fuzz_replay;
mod hostile;
mod install;
mod ipam;
mod loopback;
mod proto;
mod protocol;
mod ptp;
mod stress;
