mod harness;

mod bridge;
mod dhcp;
mod differential;
mod firewall;
mod install;
mod ipam;
mod loopback;
mod protocol;
mod proto;
mod ptp;
