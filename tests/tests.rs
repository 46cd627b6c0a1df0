mod flannel;
mod ipam;
mod tool;
mod vpc_routed;
