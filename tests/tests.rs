mod dhcp;
