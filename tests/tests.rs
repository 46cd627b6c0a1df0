mod firewall;
