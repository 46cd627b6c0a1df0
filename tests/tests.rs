mod dhcp;
mod firewall;
mod install;
mod ipam;
mod proto;
