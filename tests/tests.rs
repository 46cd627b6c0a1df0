mod ipam;
mod iface;
mod iface_vm;
