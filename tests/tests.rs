mod ipam;
mod iface;
