mod dhcp;
mod ipam;
