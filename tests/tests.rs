mod harness;

mod bridge;
mod dhcp;
mod differential;
mod firewall;
mod install;
mod ipam;
mod logging;
mod loopback;
mod protocol;
mod proto;
mod ptp;
