mod harness;

mod bridge;
mod dhcp;
mod differential;
mod firewall;
mod install;
mod ipam;
mod loopback;
mod meta;
mod proto;
mod protocol;
mod ptp;
