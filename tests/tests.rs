mod dhcp;
mod install;
mod ipam;
