mod ipam;
