mod harness;

mod bridge;
mod dhcp;
mod differential;
mod firewall;
mod flannel;
mod install;
mod ipam;
mod loopback;
mod protocol;
mod proto;
mod ptp;
mod tool;
mod vpc_routed;
