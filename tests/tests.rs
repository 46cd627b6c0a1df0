mod harness;

mod bridge;
mod dhcp;
mod differential;
mod firewall;
mod flannel;
mod iface;
mod iface_vm;
mod install;
mod ipam;
mod logging;
mod loopback;
mod proto;
mod protocol;
mod ptp;
mod tool;
mod vpc_routed;
