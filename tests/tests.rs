mod dhcp;
mod install;
mod ipam;
mod proto;
