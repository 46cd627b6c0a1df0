mod iface;
mod iface_vm;
mod ipam;
