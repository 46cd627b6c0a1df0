//! The user documentation of every applet: what it does, its config keys (name, type, default,
//! meaning), capabilities and CNI_ARGS, and an example config. One table feeds `cni-multi --help`,
//! `cni-multi <applet> --help` and the "Plugins" section of README.md (between the
//! [`README_BEGIN`] / [`README_END`] markers; a test checks README.md holds exactly
//! [`readme_section`], `make docs` rewrites it), so the three cannot drift apart.
//!
//! Keyed by applet name, separate from the applet table, so plugin files need no change and an
//! applet without docs still works (its help says so). Docs exist for every plugin of the suite,
//! including those being added on other branches; a test requires docs for every applet in
//! [`crate::applets::APPLETS`] and checks each documented key of a built-in applet against its
//! source.

/// Where a plugin sits in a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// creates or moves the container's interface
    Interface,
    /// allocates addresses for an interface plugin (`ipam.type`)
    Ipam,
    /// chained after an interface plugin; works on its `prevResult`
    Meta,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Interface => "interface plugin",
            Kind::Ipam => "IPAM plugin (used as `ipam.type`)",
            Kind::Meta => "chained (meta) plugin: needs a prevResult",
        }
    }
}

/// Where a setting comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// a key of the plugin's config (or of its `ipam` object for IPAM plugins)
    Conf,
    /// a capability: `runtimeConfig.<name>`, filled by the runtime when the config lists it
    Capability,
    /// a `CNI_ARGS` key (`K=V;K=V`)
    CniArg,
    /// a key of `args.cni` in the config
    ArgsCni,
}

/// One setting.
#[derive(Debug)]
pub struct Key {
    pub name: &'static str,
    pub ty: &'static str,
    /// "" = no default (unset)
    pub default: &'static str,
    pub meaning: &'static str,
    pub source: Source,
}

const fn k(name: &'static str, ty: &'static str, default: &'static str, meaning: &'static str) -> Key {
    Key { name, ty, default, meaning, source: Source::Conf }
}
const fn cap(name: &'static str, ty: &'static str, meaning: &'static str) -> Key {
    Key { name, ty, default: "", meaning, source: Source::Capability }
}
const fn arg(name: &'static str, ty: &'static str, meaning: &'static str) -> Key {
    Key { name, ty, default: "", meaning, source: Source::CniArg }
}
const fn acni(name: &'static str, ty: &'static str, meaning: &'static str) -> Key {
    Key { name, ty, default: "", meaning, source: Source::ArgsCni }
}

/// The documentation of one applet.
#[derive(Debug)]
pub struct AppletDoc {
    pub name: &'static str,
    pub kind: Kind,
    /// one paragraph: what it does
    pub summary: &'static str,
    /// "" = keys at the top level of the plugin's config; "ipam" = keys inside its `ipam` object
    pub section: &'static str,
    pub keys: &'static [Key],
    /// extra facts: behaviour worth knowing, subcommands
    pub notes: &'static [&'static str],
    /// a complete network config (or conflist) using the applet
    pub example: &'static str,
}

pub const README_BEGIN: &str = "<!-- BEGIN GENERATED PLUGIN DOCS (make docs) -->";
pub const README_END: &str = "<!-- END GENERATED PLUGIN DOCS -->";

/// Keys every applet reads, whatever its type.
pub static COMMON_KEYS: &[Key] = &[
    k("cniVersion", "string", "", "spec version of the config and of the printed result: 0.1.0 to 1.1.0"),
    k("name", "string", "", "network name (required); used in IPAM store paths and firewall comments"),
    k("type", "string", "", "the applet to run"),
    k(
        "log",
        "string (path)",
        "",
        "append this invocation's log lines to this file instead of stderr (CNI_MULTI_LOG_FILE wins)",
    ),
    k("prevResult", "object", "", "the previous plugin's result in a chain (set by the runtime)"),
    k("runtimeConfig", "object", "", "capability values from the runtime (see each plugin)"),
    k("args", "object", "", "`args.cni` values (see each plugin)"),
];

const IPAM_KEY: Key = k("ipam", "object", "", "IPAM config: `type` names the IPAM applet (host-local, static, dhcp)");
const DNS_KEY: Key = k("dns", "object", "", "`nameservers`, `domain`, `search`, `options` for the result");

/// Every plugin of the suite, in README order.
pub static DOCS: &[AppletDoc] = &[
    AppletDoc {
        name: "loopback",
        kind: Kind::Interface,
        summary: "Sets the container's `lo` up (DEL sets it down). CNI_IFNAME is ignored. The result is \
                  the prevResult when there is one, else `lo` with its loopback addresses.",
        section: "",
        keys: &[],
        notes: &["ADD fails when `lo` carries a non-loopback address."],
        example: r#"{
  "cniVersion": "1.0.0",
  "name": "lo",
  "type": "loopback"
}"#,
    },
    AppletDoc {
        name: "bridge",
        kind: Kind::Interface,
        summary: "A veth pair: the container end is CNI_IFNAME, the host end a port of a Linux bridge \
                  (created when missing). With `ipam` it also assigns the addresses, and can make the \
                  bridge the gateway; without `ipam` it is L2 only.",
        section: "",
        keys: &[
            k(
                "bridge",
                "string",
                "\"cni0\"",
                "bridge name; created when missing, an error if it exists as another kind",
            ),
            k("isGateway", "bool", "false", "put each range's gateway address on the bridge and enable forwarding"),
            k("isDefaultGateway", "bool", "false", "implies isGateway; add a default route via the gateway per family"),
            k("forceAddress", "bool", "false", "replace a different address already on the bridge instead of failing"),
            k("ipMasq", "bool", "false", "masquerade traffic from the container leaving its subnet"),
            k(
                "ipMasqBackend",
                "\"nftables\" or \"iptables\"",
                "auto",
                "firewall backend for ipMasq; auto = nftables when the kernel has nf_tables",
            ),
            k("mtu", "int", "kernel default", "MTU of both veth ends (and of the bridge when it is created)"),
            k("hairpinMode", "bool", "false", "let traffic leave the bridge port it came in on"),
            k("promiscMode", "bool", "false", "set the bridge promiscuous (not with hairpinMode)"),
            k("vlan", "int 0-4094", "0", "access VLAN of the port (turns on VLAN filtering on the bridge)"),
            k("vlanTrunk", "list of {id} or {minID, maxID}", "[]", "tagged VLANs of the port"),
            k("preserveDefaultVlan", "bool", "false", "keep VLAN 1 on the port when vlan/vlanTrunk are set"),
            k(
                "macspoofchk",
                "bool",
                "false",
                "drop frames from the container whose source MAC is not its own (nftables)",
            ),
            k("enabledad", "bool", "false", "run IPv6 duplicate address detection on the container end"),
            k("disableContainerInterface", "bool", "false", "leave the container end down (L2 only, no ipam)"),
            k("portIsolation", "bool", "false", "mark the port isolated: no traffic to other isolated ports"),
            IPAM_KEY,
            DNS_KEY,
            cap("mac", "string", "MAC address of the container end"),
            acni("mac", "string", "MAC address of the container end (below runtimeConfig)"),
            arg("MAC", "string", "MAC address of the container end (below args.cni)"),
        ],
        notes: &[
            "DEL removes the container end (the host end goes with it), the IPAM lease and the firewall rules; the \
             bridge and its addresses stay.",
            "GC removes IPAM leases, masquerade rules and spoof-check chains of attachments not in \
             `cni.dev/valid-attachments`.",
        ],
        example: r#"{
  "cniVersion": "1.0.0",
  "name": "mynet",
  "type": "bridge",
  "bridge": "cni0",
  "isGateway": true,
  "ipMasq": true,
  "ipam": {
    "type": "host-local",
    "ranges": [[{"subnet": "10.22.0.0/16"}]],
    "routes": [{"dst": "0.0.0.0/0"}]
  }
}"#,
    },
    AppletDoc {
        name: "ptp",
        kind: Kind::Interface,
        summary: "A veth pair without a bridge: the container reaches everything through a /32 (/128) \
                  route to the host end, which carries the IPAM gateway address.",
        section: "",
        keys: &[
            k("ipMasq", "bool", "false", "masquerade traffic from the container leaving its subnet"),
            k("ipMasqBackend", "\"nftables\" or \"iptables\"", "auto", "firewall backend for ipMasq"),
            k("mtu", "int", "kernel default", "MTU of both veth ends"),
            k("ipam", "object", "", "required; every address needs a gateway"),
            DNS_KEY,
        ],
        notes: &[],
        example: r#"{
  "cniVersion": "1.0.0",
  "name": "p2p",
  "type": "ptp",
  "ipam": {
    "type": "host-local",
    "ranges": [[{"subnet": "10.1.1.0/24"}]],
    "routes": [{"dst": "0.0.0.0/0"}]
  }
}"#,
    },
    AppletDoc {
        name: "macvlan",
        kind: Kind::Interface,
        summary: "A macvlan interface on a host interface (the master), with its own MAC address.",
        section: "",
        keys: &[
            k("master", "string", "the default-route interface", "parent interface"),
            k("mode", "string", "\"bridge\"", "bridge, private, vepa or passthru"),
            k("mtu", "int", "0 (kernel)", "MTU, at most the master's"),
            k("mac", "string", "random", "MAC address of the interface"),
            k("linkInContainer", "bool", "false", "the master lives in the container's netns"),
            k("bcqueuelen", "int", "0 (kernel)", "broadcast queue length"),
            k("ipam", "object", "", "optional; without it the interface is only created and set up"),
            DNS_KEY,
            cap("mac", "string", "MAC address (wins over CNI_ARGS and the config)"),
            arg("MAC", "string", "MAC address (wins over the config)"),
        ],
        notes: &[],
        example: r#"{
  "cniVersion": "1.0.0",
  "name": "mynet",
  "type": "macvlan",
  "master": "eth0",
  "mode": "bridge",
  "ipam": {"type": "dhcp"}
}"#,
    },
    AppletDoc {
        name: "ipvlan",
        kind: Kind::Interface,
        summary: "An ipvlan interface sharing the master's MAC address.",
        section: "",
        keys: &[
            k(
                "master",
                "string",
                "the default-route interface",
                "parent interface; when chained, the single interface of the prevResult",
            ),
            k("mode", "string", "\"l2\"", "l2, l3 or l3s"),
            k("mtu", "int", "kernel default", "MTU"),
            k("linkInContainer", "bool", "false", "the master lives in the container's netns"),
            k("ipam", "object", "", "required, unless chained with a prevResult whose addresses are reused"),
            DNS_KEY,
        ],
        notes: &[],
        example: r#"{
  "cniVersion": "1.0.0",
  "name": "mynet",
  "type": "ipvlan",
  "master": "eth0",
  "mode": "l2",
  "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.1.2.0/24"}]]}
}"#,
    },
    AppletDoc {
        name: "vlan",
        kind: Kind::Interface,
        summary: "An 802.1Q VLAN interface on a master interface.",
        section: "",
        keys: &[
            k("master", "string", "", "required: parent interface"),
            k("vlanId", "int 0-4094", "", "required: VLAN id"),
            k("mtu", "int", "0 (kernel)", "MTU, at most the master's"),
            k("linkInContainer", "bool", "false", "the master lives in the container's netns"),
            k("ipam", "object", "", "required"),
            DNS_KEY,
        ],
        notes: &[],
        example: r#"{
  "cniVersion": "1.0.0",
  "name": "vlan100",
  "type": "vlan",
  "master": "eth0",
  "vlanId": 100,
  "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.100.0.0/24"}]]}
}"#,
    },
    AppletDoc {
        name: "host-device",
        kind: Kind::Interface,
        summary: "Moves an existing host interface into the container, renamed to CNI_IFNAME; DEL \
                  moves it back under its old name.",
        section: "",
        keys: &[
            k("device", "string", "", "host interface name"),
            k("hwaddr", "string", "", "find the interface by MAC address"),
            k("kernelpath", "string", "", "find it by its /sys/devices/... path"),
            k("pciBusID", "string", "", "find it by PCI address; a DPDK-bound device is left in place"),
            k("ipam", "object", "", "optional"),
            DNS_KEY,
            cap("deviceID", "string", "PCI or auxiliary-bus device id; wins over pciBusID"),
        ],
        notes: &["Exactly one way of naming the device is needed."],
        example: r#"{
  "cniVersion": "1.0.0",
  "name": "passthrough",
  "type": "host-device",
  "device": "enp3s0f1"
}"#,
    },
    AppletDoc {
        name: "dummy",
        kind: Kind::Interface,
        summary: "A dummy interface named CNI_IFNAME in the container, with addresses from IPAM.",
        section: "",
        keys: &[k("ipam", "object", "", "required")],
        notes: &[],
        example: r#"{
  "cniVersion": "1.0.0",
  "name": "dummynet",
  "type": "dummy",
  "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.1.3.0/24"}]]}
}"#,
    },
    AppletDoc {
        name: "tap",
        kind: Kind::Interface,
        summary: "A tap device in the container (for VMs in pods), created over netlink and ioctl \
                  only (no `ip` binary).",
        section: "",
        keys: &[
            k("mac", "string", "random", "MAC address"),
            k("mtu", "int", "kernel default", "MTU"),
            k("multiQueue", "bool", "false", "multi-queue tap"),
            k("owner", "int (uid)", "", "owner of the tap device"),
            k("group", "int (gid)", "", "group of the tap device"),
            k("selinuxContext", "string", "", "SELinux context for the device (applied where SELinux is present)"),
            k("bridge", "string", "", "enslave the tap to this existing bridge inside the container"),
            k("ipam", "object", "", "optional"),
            DNS_KEY,
            cap("mac", "string", "MAC address"),
            arg("MAC", "string", "MAC address"),
        ],
        notes: &[],
        example: r#"{
  "cniVersion": "1.0.0",
  "name": "vmnet",
  "type": "tap",
  "multiQueue": true,
  "owner": 107,
  "group": 107,
  "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.1.4.0/24"}]]}
}"#,
    },
    AppletDoc {
        name: "vrf",
        kind: Kind::Meta,
        summary: "Puts CNI_IFNAME into a VRF inside the container (created when missing) and moves its \
                  routes into the VRF's table. DEL removes the VRF when its last member leaves.",
        section: "",
        keys: &[
            k("vrfname", "string", "", "required: name of the VRF device"),
            k("table", "int", "first unused id", "routing table of the VRF; an error if the VRF exists with another"),
        ],
        notes: &[],
        example: r#"{
  "cniVersion": "1.0.0",
  "name": "red",
  "plugins": [
    {"type": "macvlan", "master": "eth0", "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.1.5.0/24"}]]}},
    {"type": "vrf", "vrfname": "red"}
  ]
}"#,
    },
    AppletDoc {
        name: "tuning",
        kind: Kind::Meta,
        summary: "Changes sysctls and link attributes of CNI_IFNAME in the container. Link attributes \
                  are saved on ADD and restored on DEL (sysctls are not).",
        section: "",
        keys: &[
            k("sysctl", "object", "{}", "sysctl name (dotted, under net.) to value; IFNAME in a name is replaced"),
            k("mac", "string", "", "MAC address"),
            k("mtu", "int", "", "MTU"),
            k("promisc", "bool", "false", "promiscuous mode"),
            k("allmulti", "bool", "", "all-multicast mode"),
            k("txQLen", "int", "", "transmit queue length"),
            k("dataDir", "string", "\"/run/cni/tuning\"", "where the saved attributes are kept until DEL"),
            cap("mac", "string", "MAC address"),
            arg("MAC", "string", "MAC address"),
            acni("sysctl, mac, mtu, promisc, allmulti, txQLen", "as above", "override the config (args.cni wins)"),
        ],
        notes: &["When /etc/cni/tuning/allowlist.conf exists, every sysctl must match one of its regex lines."],
        example: r#"{
  "cniVersion": "1.0.0",
  "name": "tuned",
  "plugins": [
    {"type": "bridge", "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.1.6.0/24"}]]}},
    {"type": "tuning", "sysctl": {"net.core.somaxconn": "512"}, "mtu": 1400}
  ]
}"#,
    },
    AppletDoc {
        name: "sbr",
        kind: Kind::Meta,
        summary: "Source-based routing: traffic from the interface's addresses uses its own routing \
                  table (by default a new one per address, holding the interface's routes).",
        section: "",
        keys: &[
            k("table", "int", "", "only add `from <ip> lookup <table>` rules, leave the routes alone"),
            k("gateways", "list of IPs", "", "at most one IPv4 and one IPv6 gateway overriding the prevResult's"),
            k("addSourceHints", "bool", "false", "keep subnet routes in main with a source hint"),
        ],
        notes: &[],
        example: r#"{
  "cniVersion": "1.0.0",
  "name": "sbrnet",
  "plugins": [
    {"type": "ipvlan", "master": "eth1", "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.1.7.0/24"}]]}},
    {"type": "sbr"}
  ]
}"#,
    },
    AppletDoc {
        name: "bandwidth",
        kind: Kind::Meta,
        summary: "Rate-limits the container with tbf: ingress on the host veth, egress through an ifb \
                  device. Needs a veth-based interface plugin before it.",
        section: "",
        keys: &[
            k("ingressRate", "int (bit/s)", "", "rate into the container; needs ingressBurst"),
            k("ingressBurst", "int (bits)", "", "burst into the container"),
            k("egressRate", "int (bit/s)", "", "rate out of the container; needs egressBurst"),
            k("egressBurst", "int (bits)", "", "burst out of the container"),
            cap("bandwidth", "object", "the same four keys; used only when the config sets none"),
        ],
        notes: &[],
        example: r#"{
  "cniVersion": "1.0.0",
  "name": "limited",
  "plugins": [
    {"type": "bridge", "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.1.8.0/24"}]]}},
    {"type": "bandwidth", "ingressRate": 10000000, "ingressBurst": 80000000, "egressRate": 10000000, "egressBurst": 80000000}
  ]
}"#,
    },
    AppletDoc {
        name: "portmap",
        kind: Kind::Meta,
        summary: "Forwards host ports to the container (DNAT), with masquerading for hairpin and \
                  localhost traffic.",
        section: "",
        keys: &[
            k("backend", "\"nftables\" or \"iptables\"", "auto", "firewall backend"),
            k("snat", "bool", "true", "masquerade hairpin and localhost traffic"),
            k("masqAll", "bool", "false", "masquerade forwarded traffic from any source"),
            k("markMasqBit", "int 0-31", "13", "mark bit for masquerading (iptables)"),
            k("externalSetMarkChain", "string", "", "use this chain to set the mark (iptables)"),
            k("conditionsV4", "list of strings", "", "extra match expressions for IPv4 rules"),
            k("conditionsV6", "list of strings", "", "extra match expressions for IPv6 rules"),
            cap("portMappings", "list", "`{hostPort, containerPort, protocol, hostIP}` entries"),
        ],
        notes: &[],
        example: r#"{
  "cniVersion": "1.0.0",
  "name": "web",
  "plugins": [
    {"type": "bridge", "isGateway": true, "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.1.9.0/24"}]]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}"#,
    },
    AppletDoc {
        name: "firewall",
        kind: Kind::Meta,
        summary: "Lets the container's traffic through the host's forward filter, and optionally \
                  isolates bridges from each other.",
        section: "",
        keys: &[
            k("backend", "\"iptables\", \"nftables\" or \"firewalld\"", "auto", "firewall backend"),
            k("iptablesAdminChainName", "string", "\"CNI-ADMIN\"", "user-owned chain jumped to first, never changed"),
            k("firewalldZone", "string", "\"trusted\"", "zone for the container addresses (firewalld)"),
            k("ingressPolicy", "string", "\"open\"", "open, same-bridge or isolated"),
        ],
        notes: &[],
        example: r#"{
  "cniVersion": "1.0.0",
  "name": "guarded",
  "plugins": [
    {"type": "bridge", "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.1.10.0/24"}]]}},
    {"type": "firewall", "ingressPolicy": "same-bridge"}
  ]
}"#,
    },
    AppletDoc {
        name: "flannel",
        kind: Kind::Meta,
        summary: "Reads the node's subnet from flannel's subnet.env, builds a delegate config (bridge \
                  and host-local over the node subnet by default) and runs it; DEL runs the saved \
                  delegate config.",
        section: "",
        keys: &[
            k(
                "subnetFile",
                "string",
                "\"/run/flannel/subnet.env\"",
                "FLANNEL_NETWORK, FLANNEL_SUBNET, FLANNEL_MTU, FLANNEL_IPMASQ",
            ),
            k("dataDir", "string", "\"/var/lib/cni/flannel\"", "where each container's delegate config is saved"),
            k(
                "delegate",
                "object",
                "{\"type\": \"bridge\"}",
                "keys passed to the delegate plugin (they win over flannel's)",
            ),
        ],
        notes: &[],
        example: r#"{
  "cniVersion": "1.0.0",
  "name": "cbr0",
  "plugins": [
    {"type": "flannel", "delegate": {"hairpinMode": true, "isDefaultGateway": true}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}"#,
    },
    AppletDoc {
        name: "vpc-routed",
        kind: Kind::Interface,
        summary: "Routed veth as AWS VPC CNI and Calico wire pods: the pod's default route goes via \
                  169.254.1.1 (fe80::1) answered by the host veth, the host routes the pod's /32 \
                  (/128) over the veth, with policy rules for ENI route tables.",
        section: "",
        keys: &[
            k("vethPrefix", "string", "\"eni\"", "prefix of the host veth name (the rest is a hash of the pod)"),
            k("mtu", "int", "kernel default", "MTU of both veth ends"),
            k("table", "int", "", "route table of the pod's ENI: adds `from <pod> lookup <table>`"),
            k("ipam", "object", "", "required"),
        ],
        notes: &["`cni-multi vpc-routed setup-host` prepares the node (rp_filter, fwmark rule, ENI routes)."],
        example: r#"{
  "cniVersion": "1.0.0",
  "name": "vpc",
  "type": "vpc-routed",
  "mtu": 9001,
  "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.1.11.0/24"}]]}
}"#,
    },
    AppletDoc {
        name: "host-local",
        kind: Kind::Ipam,
        summary: "Allocates addresses from ranges and keeps one file per address under dataDir, in \
                  the same layout as the reference, so a node can switch implementations.",
        section: "ipam",
        keys: &[
            k(
                "ranges",
                "list of range sets",
                "",
                "one address is allocated per set; a set is a list of ranges of one family",
            ),
            k("subnet", "CIDR", "", "a range's subnet (also accepted directly under ipam, the legacy form)"),
            k("rangeStart", "IP", "subnet + 1", "first address of a range"),
            k("rangeEnd", "IP", "last usable", "last address of a range"),
            k("gateway", "IP", "subnet + 1", "gateway of a range (never allocated)"),
            k("routes", "list of {dst, gw}", "[]", "routes put into the result"),
            k("dataDir", "string", "\"/var/lib/cni/networks\"", "store directory (one subdirectory per network)"),
            k("resolvConf", "string", "", "resolv.conf file whose contents become the result's dns"),
            cap("ipRanges", "list of range sets", "prepended to the configured ranges"),
            cap("ips", "list of IPs", "addresses to allocate"),
            acni("ips", "list of IPs", "addresses to allocate"),
            arg("IP", "IP", "address to allocate"),
        ],
        notes: &[
            "GC releases addresses of attachments missing from `cni.dev/valid-attachments` (the reference has no GC).",
        ],
        example: r#"{
  "cniVersion": "1.0.0",
  "name": "mynet",
  "type": "bridge",
  "ipam": {
    "type": "host-local",
    "ranges": [
      [{"subnet": "10.10.0.0/16", "rangeStart": "10.10.1.20", "rangeEnd": "10.10.3.50", "gateway": "10.10.0.254"}],
      [{"subnet": "fd00:10::/64"}]
    ],
    "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}],
    "dataDir": "/var/lib/cni/networks"
  }
}"#,
    },
    AppletDoc {
        name: "static",
        kind: Kind::Ipam,
        summary: "Returns fixed addresses, routes and DNS from the config; stores nothing.",
        section: "ipam",
        keys: &[
            k("addresses", "list of {address, gateway}", "[]", "CIDR addresses with optional gateways"),
            k("routes", "list of {dst, gw}", "[]", "routes put into the result"),
            k("dns", "object", "", "DNS put into the result"),
            cap("ips", "list of CIDRs", "replaces the addresses (highest priority)"),
            acni("ips", "list of CIDRs", "replaces the addresses"),
            arg("IP", "CIDRs, comma separated", "appended to the addresses"),
            arg("GATEWAY", "IPs, comma separated", "gateways for the addresses in their subnets"),
        ],
        notes: &[],
        example: r#"{
  "cniVersion": "1.0.0",
  "name": "fixed",
  "type": "macvlan",
  "master": "eth0",
  "ipam": {
    "type": "static",
    "addresses": [{"address": "10.10.0.1/24", "gateway": "10.10.0.254"}],
    "routes": [{"dst": "0.0.0.0/0"}]
  }
}"#,
    },
    AppletDoc {
        name: "dhcp",
        kind: Kind::Ipam,
        summary: "Gets an IPv4 address from a DHCP server on the container's network through the \
                  lease daemon (`dhcp daemon`), which keeps the leases renewed.",
        section: "ipam",
        keys: &[
            k("daemonSocketPath", "string", "\"/run/cni/dhcp.sock\"", "the daemon's socket"),
            k(
                "request",
                "list of {option, skipDefault}",
                "[]",
                "options to ask for (routers and subnet-mask unless skipDefault)",
            ),
            k("provide", "list of {option, value, fromArg}", "[]", "options to send; fromArg takes a CNI_ARGS value"),
            k("priority", "int", "0", "metric of every returned route"),
        ],
        notes: &[
            "`dhcp daemon [-socketpath P] [-pidfile P] [-hostprefix P] [-broadcast] [-timeout 10s] [-resendmax 62s] \
             [-resendtimeout 208s] [-statedir /var/lib/cni/dhcp] [-linkcheck 10s]` runs the daemon; leases persist \
             in -statedir across restarts.",
        ],
        example: r#"{
  "cniVersion": "1.0.0",
  "name": "lan",
  "type": "macvlan",
  "master": "eth0",
  "ipam": {"type": "dhcp", "provide": [{"option": "host-name", "fromArg": "K8S_POD_NAME"}]}
}"#,
    },
];

/// The docs of an applet, if it has any.
pub fn find(name: &str) -> Option<&'static AppletDoc> {
    DOCS.iter().find(|d| d.name == name)
}

fn key_label(key: &Key, md: bool) -> String {
    let q = |s: &str| if md { format!("`{s}`") } else { s.to_string() };
    match key.source {
        Source::Conf => q(key.name),
        Source::Capability => format!("capability {} (runtimeConfig)", q(key.name)),
        Source::CniArg => format!("CNI_ARGS {}", q(key.name)),
        Source::ArgsCni => format!("args.cni {}", q(key.name)),
    }
}

fn section_label(doc: &AppletDoc) -> &'static str {
    if doc.section == "ipam" {
        "Keys (inside the `ipam` object):"
    } else {
        "Keys (in the plugin's config):"
    }
}

/// Markdown for one applet (a README subsection).
pub fn markdown(doc: &AppletDoc) -> String {
    let mut s = format!("### {}\n\n*{}.* {}\n\n", doc.name, doc.kind.label(), doc.summary);
    if doc.keys.is_empty() {
        s.push_str("No keys of its own.\n\n");
    } else {
        s.push_str(section_label(doc));
        s.push_str("\n\n| key | type | default | meaning |\n|---|---|---|---|\n");
        for key in doc.keys {
            let default = if key.default.is_empty() { "–".to_string() } else { format!("`{}`", key.default) };
            s.push_str(&format!("| {} | {} | {default} | {} |\n", key_label(key, true), key.ty, key.meaning));
        }
        s.push('\n');
    }
    for n in doc.notes {
        s.push_str(&format!("- {n}\n"));
    }
    if !doc.notes.is_empty() {
        s.push('\n');
    }
    s.push_str(&format!("Example:\n\n```json\n{}\n```\n", doc.example));
    s
}

/// The README section: common keys, then every plugin, between the markers.
pub fn readme_section() -> String {
    let mut s = String::new();
    s.push_str(README_BEGIN);
    s.push_str(
        "\n\nGenerated from `src/docs.rs` (the same text `cni-multi <plugin> --help` prints); edit it there \
         and run `make docs`. `cni-multi --list` shows which of these plugins this build contains.\n\n",
    );
    s.push_str("### Keys every plugin reads\n\n| key | type | meaning |\n|---|---|---|\n");
    for key in COMMON_KEYS {
        s.push_str(&format!("| `{}` | {} | {} |\n", key.name, key.ty, key.meaning));
    }
    s.push_str(
        "\nKey names are matched without regard to case, as the reference's JSON decoding does. Logging: \
         `CNI_MULTI_LOG=error|warn|info|debug|trace` (default warn) on stderr, one line per event with the \
         applet, the command and the container id.\n\n",
    );
    for doc in DOCS {
        s.push_str(&markdown(doc));
        s.push('\n');
    }
    s.push_str(README_END);
    s
}

/// Word-wrap `text` to `width` columns, every line prefixed by `indent`.
fn wrap(text: &str, indent: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && indent.len() + line.len() + 1 + word.len() > width {
            out.push_str(indent);
            out.push_str(&line);
            out.push('\n');
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        out.push_str(indent);
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Plain text for `--help` (no markdown tables).
pub fn text(doc: &AppletDoc) -> String {
    let plain = |s: &str| s.replace('`', "");
    let mut s = format!("{} ({})\n", doc.name, plain(doc.kind.label()));
    s.push_str(&wrap(&plain(doc.summary), "  ", 100));
    if doc.keys.is_empty() {
        s.push_str("\n  No keys of its own.\n");
    } else {
        s.push_str(&format!("\n  {}\n", plain(section_label(doc))));
        for key in doc.keys {
            let default = if key.default.is_empty() { String::new() } else { format!(", default {}", key.default) };
            s.push_str(&format!("    {} ({}{default})\n", key_label(key, false), key.ty));
            s.push_str(&wrap(&plain(key.meaning), "        ", 100));
        }
    }
    for n in doc.notes {
        s.push_str(&wrap(&format!("- {}", plain(n)), "  ", 100));
    }
    s.push_str("\n  Example:\n");
    for l in doc.example.lines() {
        s.push_str("    ");
        s.push_str(l);
        s.push('\n');
    }
    s
}

/// Plain text of the keys every applet reads (for `cni-multi --help`).
pub fn common_text() -> String {
    let mut s = String::from("Keys every applet reads:\n");
    for key in COMMON_KEYS {
        s.push_str(&format!("    {} ({})\n", key.name, key.ty));
        s.push_str(&wrap(&key.meaning.replace('`', ""), "        ", 100));
    }
    s.push_str(
        "Logging: CNI_MULTI_LOG=error|warn|info|debug|trace (default warn) on stderr, or the file named by\n\
         CNI_MULTI_LOG_FILE or the `log` key; every line carries the applet, command and container id.\n",
    );
    s
}

/// The help of one applet by name; applets without docs get their `about` line and a note.
pub fn applet_help(name: &str, about: &str) -> String {
    match find(name) {
        Some(d) => text(d),
        None => format!("{name}\n  {about}\n  (no documentation for this applet yet)\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    fn manifest() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    /// README.md holds exactly the generated section. `UPDATE_README=1` (what `make docs` sets)
    /// rewrites it instead of failing.
    #[test]
    fn readme_has_the_generated_plugin_docs() {
        let path = manifest().join("docs/plugins.md");
        let readme = std::fs::read_to_string(&path).unwrap();
        let begin = readme.find(README_BEGIN).expect("README.md has the BEGIN marker");
        let end = readme.find(README_END).expect("README.md has the END marker") + README_END.len();
        assert!(begin < end);
        let want = readme_section();
        if std::env::var_os("UPDATE_README").is_some() {
            let new = format!("{}{want}{}", &readme[..begin], &readme[end..]);
            if new != readme {
                std::fs::write(&path, new).unwrap();
            }
            return;
        }
        assert!(
            readme[begin..end] == want,
            "README.md's plugin docs are out of date with src/docs.rs: run `make docs`"
        );
    }

    #[test]
    fn every_applet_in_the_binary_is_documented() {
        for a in crate::applets::APPLETS {
            assert!(find(a.name).is_some(), "applet {} has no entry in src/docs.rs", a.name);
        }
    }

    #[test]
    fn docs_are_well_formed() {
        let mut seen = std::collections::BTreeSet::new();
        for d in DOCS {
            assert!(seen.insert(d.name), "{} documented twice", d.name);
            for key in d.keys.iter().chain(COMMON_KEYS) {
                for field in [key.name, key.ty, key.default, key.meaning] {
                    assert!(!field.contains('|') && !field.contains('\n'), "{}: {field:?} breaks the table", d.name);
                }
                assert!(!key.meaning.is_empty(), "{}: {} has no meaning", d.name, key.name);
            }
            let v: serde_json::Value =
                serde_json::from_str(d.example).unwrap_or_else(|e| panic!("{}: example is not JSON: {e}", d.name));
            assert!(v["name"].is_string() && v["cniVersion"].is_string(), "{}: example lacks name/cniVersion", d.name);
            // the example uses the applet: as the plugin, as a chained plugin or as the IPAM type
            let uses = |p: &serde_json::Value| p["type"] == d.name || p["ipam"]["type"] == d.name;
            let used = uses(&v) || v["plugins"].as_array().is_some_and(|ps| ps.iter().any(uses));
            assert!(used, "{}: example does not use it", d.name);
        }
    }

    fn source_text(dir: &Path, out: &mut String) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                source_text(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push_str(&std::fs::read_to_string(&p).unwrap().to_ascii_lowercase());
            }
        }
    }

    /// Where an applet's config is read: its plugin file, or its IPAM file/directory.
    fn applet_source(name: &str) -> Option<String> {
        let base = name.replace('-', "_");
        let src = manifest().join("src");
        let mut out = String::new();
        for f in [format!("plugins/{base}.rs"), format!("ipam/{base}.rs"), format!("ipam/{base}_.rs")] {
            if let Ok(t) = std::fs::read_to_string(src.join(f)) {
                out.push_str(&t.to_ascii_lowercase());
            }
        }
        let dir = src.join("ipam").join(&base);
        if dir.is_dir() {
            source_text(&dir, &mut out);
        }
        (!out.is_empty()).then_some(out)
    }

    fn has_token(hay: &str, word: &str) -> bool {
        let word = word.to_ascii_lowercase();
        let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
        hay.match_indices(&word).any(|(i, _)| {
            let before = hay[..i].chars().next_back().is_none_or(|c| !is_ident(c));
            let after = hay[i + word.len()..].chars().next().is_none_or(|c| !is_ident(c));
            before && after
        })
    }

    /// Every documented config key and CNI_ARGS key of an applet built into this binary is read
    /// somewhere in its own source (or the shared plugin/IPAM/protocol code): a renamed or invented
    /// key fails here. Capabilities and args.cni lists are checked the same way.
    #[test]
    fn documented_keys_exist_in_the_source() {
        let mut shared = String::new();
        for d in
            ["src/plugins/common.rs", "src/ipam/common.rs", "src/ipam/range.rs", "src/cni/mod.rs", "src/cni/config.rs"]
        {
            shared.push_str(&std::fs::read_to_string(manifest().join(d)).unwrap_or_default().to_ascii_lowercase());
        }
        // the firewall layer parses some meta plugins' keys (portmap, firewall)
        source_text(&manifest().join("src/firewall"), &mut shared);
        let mut missing = Vec::new();
        for a in crate::applets::APPLETS {
            let (Some(doc), Some(own)) = (find(a.name), applet_source(a.name)) else { continue };
            for key in doc.keys {
                for name in key.name.split(", ") {
                    if !has_token(&own, name) && !has_token(&shared, name) {
                        missing.push(format!("{}: {}", a.name, key_label(key, false)));
                    }
                }
            }
        }
        assert!(missing.is_empty(), "documented but not found in the source: {missing:?}");
    }

    #[test]
    fn help_text_names_every_key_and_tolerates_undocumented_applets() {
        let d = find("bridge").unwrap();
        let t = applet_help("bridge", "");
        for key in d.keys {
            assert!(t.contains(key.name), "{} missing from help", key.name);
        }
        assert!(t.contains("\"type\": \"bridge\""), "example in help");
        assert!(t.lines().all(|l| l.chars().count() <= 120), "{t}");
        let none = applet_help("no-such", "about line");
        assert!(none.contains("about line") && none.contains("no documentation"));
    }

    #[test]
    fn wrapping() {
        assert_eq!(wrap("a b c", "  ", 5), "  a b\n  c\n");
        assert_eq!(wrap("", "  ", 5), "");
    }
}
