//! Real clients drive cni-multi: a cnitool built from Debian's libcni sources
//! (scripts/build-cnitool.sh) runs every testdata scenario, wrapped in a conflist, and the
//! bridge+portmap+firewall+tuning+bandwidth chains of testdata/clients/, once over a CNI_PATH of
//! symlinks to our binary and once over the reference plugins in /usr/lib/cni. The printed results
//! (normalised), the kernel state, the firewall rules, tc qdiscs and the host-local store must be
//! the same, except for the deliberate differences in `DELIBERATE`.
//!
//! Podman and containerd (`make test-clients`, not in `make test`) are in `podman_*`/`ctr_*`
//! below; docs/guides/clients.md shows the configs.

use crate::harness::runtime::{run_in, Out, Tmp};
use crate::harness::state::netfilter;
use crate::harness::*;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::OnceLock;

/// cniVersions every scenario runs at (libcni 1.1.2 speaks up to 1.0.0; CHECK needs 0.4.0).
const VERSIONS: &[&str] = &["0.4.0", "1.0.0"];

/// Deliberate differences between cni-multi and the Debian 1.1.1 reference seen through cnitool:
/// (testdata file or "*", text in the difference line, why). Each is listed in docs/differences.md.
const DELIBERATE: &[(&str, &str, &str)] = &[
    (
        "*",
        "/keep_addr_on_down: \"0\" != \"1\"",
        "newest upstream (v1.7.0) sets keep_addr_on_down=1 on the container interface before its first IPv6 address",
    ),
    (
        "bridge-static.json",
        "ADD result /dns",
        "bridge returns the IPAM plugin's DNS (newest upstream); Debian 1.1.1 prints an empty dns",
    ),
    (
        "*",
        "ifalias: only on the right: \"cni bandwidth net=",
        "bandwidth labels its ifb with an alias (`cni bandwidth net=… id=…`) so GC can find this network's stale ifbs",
    ),
    (
        "*",
        "rules after ADD: + \t\tcomment \"cni-multi net: ",
        "bridge macspoofchk names the network in its two chains' comment, so GC can tell networks sharing a bridge apart",
    ),
    (
        "*",
        "/txqlen: only on the right: 1000",
        "v1.9.1 makes the veth pair without IFLA_TXQLEN, so both ends keep the kernel's default queue length (1000); the Debian 1.1.1 oracle sends 0, which `ip -j` leaves out",
    ),
    (
        "loopback.json",
        "/version: \"\" != \"",
        "loopback results are converted to the requested version; Debian 1.1.1 prints its 1.x result (no ips[].version) labelled with an older version, which libcni then prints with an empty version",
    ),
];

/// CHECK failures of the reference that ours must not copy: (file, why).
const ORACLE_CHECK_BUGS: &[(&str, &str)] = &[
    ("bridge-l2.json", "bridge CHECK calls IPAM CHECK with an empty ipam type in L2 mode"),
    ("clients/chain-iptables.conflist", PORTMAP_DUAL_CHECK),
    ("clients/chain-default.conflist", PORTMAP_DUAL_CHECK),
];

const PORTMAP_DUAL_CHECK: &str =
    "Debian 1.1.1 portmap CHECK of a dual-stack attachment looks for the IPv4 DNAT rules in ip6tables (\"could not check ipv6 dnat\")";

/// Build (once per process; the script caches across runs) and return the cnitool path.
pub fn cnitool() -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = std::process::Command::new(root.join("scripts/build-cnitool.sh"))
            .output()
            .expect("run scripts/build-cnitool.sh");
        assert!(out.status.success(), "build-cnitool.sh failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Setup {
    None,
    /// bridge `cmbr0` already in the host netns with `<v4a>.254/24`
    BridgeWithAddr,
    /// `<tmp>/resolv.conf` for host-local `resolvConf`
    ResolvConf,
}

#[derive(Clone, Copy)]
struct Scn {
    file: &'static str,
    cni_args: Option<&'static str>,
    cap_args: Option<&'static str>,
    setup: Setup,
    keep_mac: Option<&'static str>,
    /// the rule set must be the same on both sides (explicit backends); otherwise only "no
    /// leftover rules" is checked, in both iptables and nft (the default backend is the node's)
    same_rules: bool,
}

const fn scn(file: &'static str) -> Scn {
    Scn { file, cni_args: None, cap_args: None, setup: Setup::None, keep_mac: None, same_rules: true }
}

const CHAIN_CAPS: &str = r#"{"portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}, {"hostPort": 18053, "containerPort": 53, "protocol": "udp"}], "bandwidth": {"ingressRate": 8000000, "ingressBurst": 80000, "egressRate": 8000000, "egressBurst": 80000}}"#;

/// One side's record of add/check/del/del.
struct Rec {
    add: Out,
    add_result: Value,
    add_state: Value,
    add_rules: String,
    check: Option<Out>,
    del: Out,
    del_state: Value,
    del_rules: String,
    del2: Out,
    leases_after_del: Vec<String>,
}

/// `tc qdisc show` of every netns of the world (bandwidth's ingress/egress shaping).
fn qdiscs(w: &World) -> String {
    let mut s = String::new();
    for ns in std::iter::once(&w.host).chain(w.containers.iter()) {
        let o = ns.exec(&["tc", "qdisc", "show"]);
        for l in String::from_utf8_lossy(&o.stdout).lines() {
            // the host-side veth name is random
            let l: Vec<&str> = l.split(' ').map(|t| if t.starts_with("veth") { "vethX" } else { t }).collect();
            s.push_str(&l.join(" "));
            s.push('\n');
        }
    }
    s
}

type Vars = Vec<(&'static str, String)>;

fn world_for(imp: Impl, tag: &str, s: &Scn, subnets: &Subnets, version: &str) -> (World, Value, Vars) {
    let w = World::new(tag, 1, imp);
    w.host_nodad();
    let vars = vars(&w, subnets, &format!("net-{tag}"));
    let mut conf = load(s.file, &vars, version);
    if conf.get("plugins").is_none() {
        // a single-plugin scenario becomes a one-plugin conflist
        let mut plugin = conf.clone();
        if let Some(o) = plugin.as_object_mut() {
            o.remove("name");
            o.remove("cniVersion");
        }
        conf = json!({"cniVersion": version, "name": conf["name"], "plugins": [plugin]});
    }
    match s.setup {
        Setup::None => {}
        Setup::BridgeWithAddr => w.host_bridge_with_addr(subnets),
        Setup::ResolvConf => w.write_resolv_conf(subnets),
    }
    (w, conf, vars)
}

/// Run add/check/del/del through cnitool in `w`, with the container netns reached through the
/// symlink `sandbox` (the same path on both sides, so cnitool derives the same container id).
fn drive(w: &World, conf: &Value, vars: &Vars, s: &Scn, sandbox: &Path, version: &str) -> Rec {
    let _ = std::fs::remove_file(sandbox);
    std::os::unix::fs::symlink(&w.c(0).path, sandbox).expect("symlink sandbox");
    let netconf = w.tmp.join("net.d");
    std::fs::create_dir_all(&netconf).expect("net.d");
    std::fs::write(netconf.join("10-test.conflist"), serde_json::to_vec_pretty(conf).expect("json")).expect("write");
    let subst = |a: &str| vars.iter().fold(a.to_string(), |t, (k, v)| t.replace(k, v));
    let mut env = vec![
        ("NETCONFPATH", netconf.display().to_string()),
        ("CNI_PATH", w.bin_dir.display().to_string()),
        ("CNI_CACHE_DIR", w.tmp.join("cache").display().to_string()),
    ];
    if let Some(a) = s.cni_args {
        env.push(("CNI_ARGS", subst(a)));
    }
    if let Some(a) = s.cap_args {
        env.push(("CAP_ARGS", a.to_string()));
    }
    let name = net_name(conf);
    let sb = sandbox.display().to_string();
    let run = |verb: &str| run_in(&w.host, cnitool(), &[], &env, &[verb, &name, &sb]);
    let mut norm = Normalizer::for_world(w);
    if let Some(m) = s.keep_mac {
        norm = norm.keep_mac(m);
    }
    let add = run("add");
    let add_result = norm.result(&add.stdout);
    let add_state = norm.snapshot(&w.snapshot());
    let add_rules = norm.text(&(netfilter(&w.host).sorted_text() + &qdiscs(w)));
    let check = (add.ok && version_ge(version, "0.4.0")).then(|| run("check"));
    let del = run("del");
    let del_state = norm.snapshot(&w.snapshot());
    let del_rules = norm.text(&(netfilter(&w.host).sorted_text() + &qdiscs(w)));
    let del2 = run("del");
    let leases_after_del = w.leases(&name);
    Rec { add, add_result, add_state, add_rules, check, del, del_state, del_rules, del2, leases_after_del }
}

/// Lines of `b` not in `a` and of `a` not in `b` (for rule sets).
fn line_diff(a: &str, b: &str) -> Vec<String> {
    let (la, lb): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let mut out: Vec<String> = la.iter().filter(|l| !lb.contains(l)).map(|l| format!("- {l}")).collect();
    out.extend(lb.iter().filter(|l| !la.contains(l)).map(|l| format!("+ {l}")));
    if out.is_empty() && la != lb {
        let i = la.iter().zip(&lb).position(|(x, y)| x != y).unwrap_or(0);
        out.push(format!(
            "same rules in another order, from line {i}: reference {:?} / ours {:?}",
            &la[i..(i + 4).min(la.len())],
            &lb[i..(i + 4).min(lb.len())]
        ));
    }
    out
}

/// Rules that name this attachment (its container id, or one of its addresses) after DEL.
fn leftover_rules(rules: &str, cid_part: &str, addrs: &[String]) -> Vec<String> {
    rules
        .lines()
        .filter(|l| l.contains(cid_part) || addrs.iter().any(|a| l.contains(a.as_str())))
        .map(str::to_string)
        .collect()
}

/// What a failed ADD must not leave: a container interface, a host veth, a lease.
fn failed_add_leftovers(w: &World) -> Vec<String> {
    let mut out = vec![];
    if w.c(0).link("eth0").is_some() {
        out.push("container eth0".to_string());
    }
    out.extend(w.host.link_names().into_iter().filter(|n| n.starts_with("veth")).map(|n| format!("host {n}")));
    out
}

fn addresses(result: &Value) -> Vec<String> {
    result["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["address"].as_str())
        .filter_map(|a| a.split('/').next())
        .map(str::to_string)
        .collect()
}

fn deliberate(file: &str, line: &str) -> Option<&'static str> {
    DELIBERATE.iter().find(|(f, needle, _)| (*f == "*" || *f == file) && line.contains(needle)).map(|(_, _, w)| *w)
}

/// One scenario at one version: the differences that are not deliberate.
fn compare(tag: &str, s: &Scn, version: &str) -> Vec<String> {
    let subnets = Subnets::alloc();
    let link_dir = Tmp::new(&format!("cnitool-{tag}"));
    let sandbox = link_dir.join("sandbox");
    let (rw, rconf, rvars) = world_for(Impl::Reference, tag, s, &subnets, version);
    let (ow, oconf, ovars) = world_for(Impl::Ours, tag, s, &subnets, version);
    let r = drive(&rw, &rconf, &rvars, s, &sandbox, version);
    let o = drive(&ow, &oconf, &ovars, s, &sandbox, version);
    let mut out = vec![];
    let mut push = |line: String| match deliberate(s.file, &line) {
        Some(why) => eprintln!("deliberate difference ({} @{version}): {line} ({why})", s.file),
        None => out.push(line),
    };
    if r.add.ok != o.add.ok {
        push(format!(
            "ADD outcome: reference ok={} ({}) / ours ok={} ({})",
            r.add.ok,
            r.add.stderr.trim(),
            o.add.ok,
            o.add.stderr.trim()
        ));
        return out;
    }
    if r.add.ok {
        for d in diff(&r.add_result, &o.add_result) {
            push(format!("ADD result {d}"));
        }
    } else if r.add.stderr.trim() != o.add.stderr.trim() {
        eprintln!("note: ADD error text: reference {:?} ours {:?}", r.add.stderr.trim(), o.add.stderr.trim());
    }
    if r.add.ok {
        for d in diff(&r.add_state, &o.add_state) {
            push(format!("after ADD: {d}"));
        }
    } else {
        // the reference can leave the container veth of a failed ADD behind; ours rolls back
        for l in failed_add_leftovers(&ow) {
            push(format!("ours after failed ADD: {l}"));
        }
    }
    let cid_part = "cnitool-";
    let addrs = addresses(&r.add_result);
    if s.same_rules && r.add.ok {
        for d in line_diff(&r.add_rules, &o.add_rules) {
            push(format!("rules after ADD: {d}"));
        }
        for d in line_diff(&r.del_rules, &o.del_rules) {
            push(format!("rules after DEL: {d}"));
        }
    } else if r.add_rules != o.add_rules {
        eprintln!("note ({}): the default backends differ (rules compared for leftovers only)", s.file);
    }
    // with either backend, no rule may name the attachment after DEL (iptables and nft views)
    let left = leftover_rules(&o.del_rules, cid_part, &addrs);
    if !left.is_empty() {
        push(format!("ours: rules left after DEL: {left:?}"));
    }
    let left = leftover_rules(&r.del_rules, cid_part, &addrs);
    if !left.is_empty() {
        eprintln!("note ({}): the reference left rules after DEL: {left:?}", s.file);
    }
    match (&r.check, &o.check) {
        (Some(rc), Some(oc)) => {
            let bug = ORACLE_CHECK_BUGS.iter().find(|(f, _)| *f == s.file);
            if !oc.ok {
                push(format!("ours CHECK failed: {}", oc.stderr.trim()));
            }
            if rc.ok == bug.is_some() {
                push(format!(
                    "reference CHECK ok={} but the table says {:?}: {}",
                    rc.ok,
                    bug.map(|b| b.1),
                    rc.stderr.trim()
                ));
            }
        }
        (None, None) => {}
        _ => push("CHECK ran on one side only".into()),
    }
    for (label, rec) in [("reference", &r), ("ours", &o)] {
        if r.add.ok && !rec.del.ok {
            push(format!("{label} DEL failed: {}", rec.del.stderr.trim()));
        }
        if (r.add.ok || rec.del.ok) && !rec.del2.ok {
            push(format!("{label} second DEL failed: {}", rec.del2.stderr.trim()));
        }
        if !rec.leases_after_del.is_empty() {
            push(format!("{label}: leases left after DEL: {:?}", rec.leases_after_del));
        }
    }
    // ours may succeed a DEL after a failed ADD where the reference fails
    if r.del.ok != o.del.ok && (r.add.ok || !o.del.ok) {
        push(format!("DEL outcome: reference ok={} / ours ok={}", r.del.ok, o.del.ok));
    }
    if r.add.ok {
        for d in diff(&r.del_state, &o.del_state) {
            push(format!("after DEL: {d}"));
        }
    }
    out
}

fn run_scn(tag: &str, s: Scn) {
    assert!(config::exists(s.file), "testdata/{} missing", s.file);
    let mut report = vec![];
    for v in VERSIONS {
        for d in compare(tag, &s, v) {
            report.push(format!("{} @{v}: {d}", s.file));
        }
    }
    assert!(report.is_empty(), "cnitool: cni-multi differs from the reference:\n{}", report.join("\n"));
}

macro_rules! cnitool_tests {
    ($($name:ident => $scn:expr;)*) => {
        $(
            #[test]
            fn $name() {
                let tag: String = stringify!($name).trim_start_matches("cnitool_").chars().filter(|c| c.is_ascii_alphanumeric()).take(8).collect();
                run_scn(&format!("k{tag}"), $scn);
            }
        )*
        /// Every testdata scenario runs through cnitool.
        #[test]
        fn cnitool_covers_every_scenario() {
            let files = [$($scn.file),*];
            let mut missing = vec![];
            for e in std::fs::read_dir(config::testdata_dir()).expect("testdata").flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.ends_with(".json") && !files.contains(&n.as_str()) && !DIRECT_ONLY.iter().any(|(f, _)| *f == n) {
                    missing.push(n);
                }
            }
            assert!(missing.is_empty(), "testdata not driven through cnitool: {missing:?}");
        }
    };
}

/// Scenarios compared with the reference only by tests/differential.rs (direct exec, the same
/// result/kernel/store/rule comparisons), not yet through cnitool: each needs what the cnitool
/// runner does not have yet. (testdata file, why)
const DIRECT_ONLY: &[(&str, &str)] = &[
    ("bridge-args-mac.json", "args.cni mac: the runner passes no args section"),
    ("bridge-l2-disabled.json", "key newer than the oracle: needs the differential's ours_check"),
    ("bridge-l2-isolated.json", "key newer than the oracle: needs the differential's `newer` table"),
    ("bridge-vlan.json", "bridge VLAN filtering: VM only"),
    ("bridge-vlan-trunk.json", "bridge VLAN filtering: VM only"),
    ("chain-bandwidth.json", "ifb alias difference: needs the differential's `newer` table"),
    ("chain-bandwidth-runtime.json", "ifb alias difference: needs the differential's `newer` table"),
    ("chain-portmap.json", "needs the external mark chain set up (Setup::MarkChain)"),
    ("chain-portmap-markmasq.json", "oracle CHECK bug for v4-only pods: needs the differential's oracle_check_bug"),
    ("chain-sbr.json", "oracle sbr CHECK/second-DEL bugs: needs the differential's exception fields"),
    ("chain-sbr-gateways.json", "oracle sbr CHECK/second-DEL bugs: needs the differential's exception fields"),
    ("chain-sbr-table.json", "oracle sbr CHECK/second-DEL bugs: needs the differential's exception fields"),
    ("chain-tuning.json", "key newer than the oracle: needs the differential's `newer` table"),
    ("chain-tuning-args.json", "the oracle panics on args.cni: ours-only check"),
    ("chain-tuning-runtime-mac.json", "runtime mac capability with a kept MAC"),
    ("chain-tuning-sysctl.json", "sysctl keys checked by the differential's ours_check"),
    ("chain-vrf.json", "vrf: VM only"),
    ("dummy.json", "dummy: VM only, no oracle plugin"),
    ("flannel.json", "flannel: no oracle plugin in Debian (behaviour test)"),
    ("host-device-hwaddr.json", "needs a device to move (Setup::HostDevice)"),
    ("host-device-name.json", "needs a device to move (Setup::HostDevice)"),
    ("host-local-runtime.json", "runtimeConfig ipRanges capability"),
    ("ipvlan-in-container.json", "ipvlan: VM only"),
    ("ipvlan-l3.json", "ipvlan: VM only"),
    ("macvlan-in-container.json", "needs an uplink in the container; key newer than the oracle"),
    ("macvlan-mac.json", "needs an uplink (Setup::Uplink)"),
    ("macvlan-private.json", "needs an uplink (Setup::Uplink)"),
    ("macvlan-runtime-mac.json", "needs an uplink (Setup::Uplink)"),
    ("tap.json", "tap: no oracle plugin in Debian (behaviour test)"),
    ("tap-runtime-mac.json", "tap: no oracle plugin in Debian (behaviour test)"),
    ("vlan.json", "8021q vlan: VM only"),
    ("vlan-in-container.json", "8021q vlan: VM only"),
    ("vpc-routed.json", "vpc-routed: no oracle plugin (behaviour test)"),
    ("vpc-routed-device.json", "vpc-routed: no oracle plugin (behaviour test)"),
];

cnitool_tests! {
    cnitool_bridge_l2 => scn("bridge-l2.json");
    cnitool_bridge_v4 => scn("bridge-v4.json");
    cnitool_bridge_v4_gateway => scn("bridge-v4-gateway.json");
    cnitool_bridge_v4_default_gw => scn("bridge-v4-default-gw.json");
    cnitool_bridge_v6 => scn("bridge-v6.json");
    cnitool_bridge_dual => scn("bridge-dual.json");
    cnitool_bridge_mtu_hairpin => scn("bridge-mtu-hairpin.json");
    cnitool_bridge_promisc => scn("bridge-promisc.json");
    cnitool_bridge_enabledad => scn("bridge-enabledad.json");
    cnitool_bridge_mac_runtime => Scn {
        cap_args: Some(r#"{"mac": "0a:58:c6:12:00:07"}"#),
        keep_mac: Some("0a:58:c6:12:00:07"),
        ..scn("bridge-mac-runtime.json")
    };
    cnitool_bridge_mac_cniargs => Scn {
        cni_args: Some("IgnoreUnknown=1;MAC=0a:58:c6:12:00:06"),
        keep_mac: Some("0a:58:c6:12:00:06"),
        ..scn("bridge-mac-cniargs.json")
    };
    cnitool_bridge_force_address => Scn { setup: Setup::BridgeWithAddr, ..scn("bridge-force-address.json") };
    cnitool_bridge_conflict_noforce => Scn { setup: Setup::BridgeWithAddr, ..scn("bridge-conflict-noforce.json") };
    cnitool_bridge_routes => scn("bridge-routes.json");
    cnitool_bridge_range_bounds => scn("bridge-range-bounds.json");
    cnitool_bridge_multi_range => scn("bridge-multi-range.json");
    cnitool_bridge_two_v4_sets => scn("bridge-two-v4-sets.json");
    cnitool_bridge_static => scn("bridge-static.json");
    cnitool_bridge_dns => scn("bridge-dns.json");
    cnitool_ptp_v4 => scn("ptp-v4.json");
    cnitool_ptp_v6 => scn("ptp-v6.json");
    cnitool_ptp_dual_mtu => scn("ptp-dual-mtu.json");
    cnitool_ptp_static => scn("ptp-static.json");
    cnitool_loopback => scn("loopback.json");
    cnitool_host_local_v4 => Scn { setup: Setup::ResolvConf, ..scn("host-local-v4.json") };
    cnitool_host_local_legacy => scn("host-local-legacy.json");
    cnitool_host_local_sets => scn("host-local-sets.json");
    cnitool_host_local_requested_ip => Scn { cni_args: Some("IP=__V4A__.66"), ..scn("host-local-requested-ip.json") };
    cnitool_host_local_args_ips => scn("host-local-args-ips.json");
    cnitool_static_v4 => scn("static-v4.json");
    cnitool_static_dual => scn("static-dual.json");
    cnitool_static_cniargs => Scn {
        cni_args: Some("IP=__V4A__.20/24,__V6A__::20/64;GATEWAY=__V4A__.1"),
        ..scn("static-cniargs.json")
    };
    cnitool_static_runtime_ips => scn("static-runtime-ips.json");
    cnitool_static_args_ips => scn("static-args-ips.json");
    cnitool_bridge_masq => scn("bridge-masq.json");
    cnitool_ptp_dns => scn("ptp-dns.json");
    cnitool_ptp_ipmasq_v4 => scn("ptp-ipmasq-v4.json");
    cnitool_ptp_ipmasq_v6 => scn("ptp-ipmasq-v6.json");
    cnitool_chain_firewall => scn("chain-firewall.json");
    cnitool_chain_iptables => Scn { cap_args: Some(CHAIN_CAPS), ..scn("clients/chain-iptables.conflist") };
    cnitool_chain_default => Scn {
        cap_args: Some(CHAIN_CAPS),
        same_rules: false,
        ..scn("clients/chain-default.conflist")
    };
}

// ------------------------------------------------------------------ Podman and containerd
//
// Both run with `cargo test --test tests -- --ignored clients::` (`make test-clients`): they need
// podman/runc/containerd from Debian (scripts/deps.sh) and take a few seconds each.

/// A private mount namespace inside a test "host" netns, kept alive by a holder process: tmpfs on
/// /run, /var/lib, /etc/cni and /opt, and our plugin dir bound over /usr/lib/cni, so everything
/// a client writes (libcni's cache in /var/lib/cni, runc state in /run/runc, podman's netns files
/// in /run/netns, containerd's defaults) stays inside. Clients run in it with `nsenter -t PID -m -n`.
struct Sandbox {
    holder: std::process::Child,
    tmp: Tmp,
    host: Netns,
}

impl Sandbox {
    fn new(tag: &str) -> Sandbox {
        let tmp = Tmp::new(tag);
        let host = Netns::up(&format!("{tag}h"));
        let bin = crate::harness::runtime::our_plugin_dir(&tmp, crate::harness::plugin::APPLET_NAMES);
        for d in ["net.d", "data", "tmp", "root", "runroot"] {
            std::fs::create_dir_all(tmp.join(d)).expect("mkdir");
        }
        let ready = tmp.s("ready");
        let script = format!(
            "set -e; mount -t tmpfs cm-run /run; mkdir -p /run/netns; mount -t tmpfs cm-varlib /var/lib; \
             mkdir -p /var/lib/cni; mount -t tmpfs cm-etccni /etc/cni; mkdir -p /etc/cni/net.d; \
             mount --bind {net} /etc/cni/net.d; mount -t tmpfs cm-opt /opt; mkdir -p /opt/cni/bin; \
             mount --bind {bin} /opt/cni/bin; mount --bind {bin} /usr/lib/cni; touch {ready}; exec sleep 900",
            net = tmp.s("net.d"),
        );
        let holder = host
            .command("unshare")
            .args(["--mount", "--propagation", "private", "--", "sh", "-c", &script])
            .stdin(std::process::Stdio::null())
            .spawn()
            .expect("start the mount-namespace holder");
        assert!(wait_for(60, || tmp.join("ready").exists()), "holder did not get ready");
        Sandbox { holder, tmp, host }
    }

    /// Run `argv` inside (mount + net namespaces of the holder), with `env` on top of PATH.
    fn run(&self, env: &[(&str, String)], argv: &[&str]) -> Out {
        let pid = self.holder.id().to_string();
        let mut cmd = std::process::Command::new("nsenter");
        cmd.args(["-t", &pid, "-m", "-n", "--"]).args(argv);
        cmd.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").env("HOME", self.tmp.s("tmp"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(std::process::Stdio::null()).output().expect("nsenter").into()
    }

    /// Start a long-running `argv` inside (a daemon), output to `<tmp>/<log>`; killed with the netns.
    fn spawn(&self, log: &str, argv: &[&str]) {
        let pid = self.holder.id().to_string();
        let f = std::fs::File::create(self.tmp.join(log)).expect("log file");
        let mut cmd = std::process::Command::new("nsenter");
        cmd.args(["-t", &pid, "-m", "-n", "--"]).args(argv);
        cmd.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        cmd.stdin(std::process::Stdio::null()).stdout(f.try_clone().expect("dup")).stderr(f);
        // reaped when the netns is deleted (Netns::delete kills every process inside)
        drop(cmd.spawn().expect("spawn daemon"));
    }

    /// A tarball of busybox-static's files (`/bin/busybox` and applet links): the image content.
    fn busybox_tar(&self) -> String {
        let root = self.tmp.join("rootfs");
        std::fs::create_dir_all(root.join("bin")).expect("mkdir rootfs");
        std::fs::create_dir_all(root.join("www")).expect("mkdir www");
        std::fs::create_dir_all(root.join("tmp")).expect("mkdir tmp");
        std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("copy busybox (busybox-static)");
        for a in ["sh", "ping", "sleep", "httpd", "wget", "ip", "cat", "echo", "true"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).expect("applet link");
        }
        std::fs::write(root.join("www/index.html"), "hello from cni-multi\n").expect("index.html");
        let tar = self.tmp.s("busybox.tar");
        let out =
            std::process::Command::new("tar").args(["-C", &root.display().to_string(), "-cf", &tar, "."]).output();
        assert!(out.expect("tar").status.success(), "tar failed");
        tar
    }

    /// Every rule naming one of `addrs` (iptables, ip6tables and nft views of the host netns).
    fn rules_naming(&self, addrs: &[String]) -> Vec<String> {
        leftover_rules(&netfilter(&self.host).sorted_text(), "\u{0}", addrs)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // every process of the sandbox (holder, daemons, conmon) lives in the host netns
        self.host.delete();
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// A client netns joined to the sandbox host by a veth: `<net>.2` here, `<net>.1` on the host.
fn client_netns(sb: &Sandbox, net: &str) -> Netns {
    let c = Netns::up("cl");
    let (hv, cv) = (format!("cmh{}", std::process::id() % 100000), "cmc0");
    sb.host.must(&["ip", "link", "add", &hv, "type", "veth", "peer", "name", cv, "netns", &c.name]);
    sb.host.must(&["ip", "addr", "add", &format!("{net}.1/24"), "dev", &hv]);
    sb.host.must(&["ip", "link", "set", &hv, "up"]);
    c.must(&["ip", "addr", "add", &format!("{net}.2/24"), "dev", cv]);
    c.must(&["ip", "link", "set", cv, "up"]);
    c.must(&["ip", "route", "add", "default", "via", &format!("{net}.1")]);
    c
}

/// `GET /` over TCP from `ns` to `addr` (host:port); the whole response, or the error.
fn http_get(ns: &Netns, addr: &str) -> String {
    let addr = addr.to_string();
    ns.run_in(move || {
        use std::io::{Read, Write};
        let sa: std::net::SocketAddr = addr.parse().expect("socket address");
        let mut s = match std::net::TcpStream::connect_timeout(&sa, std::time::Duration::from_secs(3)) {
            Ok(s) => s,
            Err(e) => return format!("connect {addr}: {e}"),
        };
        let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(3)));
        let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    })
}

/// The conflist the Podman and containerd tests use: bridge + portmap + firewall + tuning with
/// no backend keys (the node's default backend), host-local's store in the sandbox.
fn client_conflist(name: &str, bridge: &str, subnet: &str, data_dir: &str) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [
            {
                "type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": true, "hairpinMode": true,
                "ipam": {
                    "type": "host-local", "dataDir": data_dir,
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "ranges": [[{"subnet": format!("{subnet}.0/24"), "gateway": format!("{subnet}.1")}]]
                }
            },
            {"type": "portmap", "capabilities": {"portMappings": true}},
            {"type": "firewall"},
            {"type": "tuning"}
        ]
    })
}

/// Podman 4.3 on its CNI backend, with our plugins: two containers on a 198.18.x.0/24 network
/// ping each other and the gateway, a published port is reached from a client netns, and
/// `podman rm` leaves no veth, lease or rule behind.
#[test]
#[ignore = "make test-clients (needs podman + runc from scripts/deps.sh)"]
fn podman_cni_backend() {
    let sb = Sandbox::new("pm");
    let s = Subnets::alloc();
    let net = "cmpod";
    let conf = client_conflist(net, "cmpod0", &s.v4a, &sb.tmp.s("data"));
    std::fs::write(sb.tmp.join("net.d/10-cmpod.conflist"), serde_json::to_vec_pretty(&conf).unwrap()).unwrap();
    let containers_conf = format!(
        "[containers]\ndefault_ulimits = [\"nofile=4096:4096\", \"nproc=4096:4096\"]\n\
         [network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{bin}\"]\nnetwork_config_dir = \"{netd}\"\n\
         [engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"none\"\nruntime = \"runc\"\n\
         tmp_dir = \"{tmp}\"\nimage_copy_tmp_dir = \"{tmp}\"\n",
        bin = sb.tmp.s("bin"),
        netd = sb.tmp.s("net.d"),
        tmp = sb.tmp.s("tmp"),
    );
    std::fs::write(sb.tmp.join("containers.conf"), containers_conf).unwrap();
    let env = vec![("CONTAINERS_CONF", sb.tmp.s("containers.conf"))];
    let (root, runroot) = (sb.tmp.s("root"), sb.tmp.s("runroot"));
    let podman = |args: &[&str]| {
        let mut argv = vec!["podman", "--root", &root, "--runroot", &runroot, "--storage-driver", "vfs"];
        argv.extend_from_slice(args);
        sb.run(&env, &argv)
    };
    struct RmAll<'a>(&'a dyn Fn(&[&str]) -> Out);
    impl Drop for RmAll<'_> {
        fn drop(&mut self) {
            let _ = (self.0)(&["rm", "-af", "-t", "0"]);
        }
    }
    let _cleanup = RmAll(&podman);

    let tar = sb.busybox_tar();
    podman(&["import", &tar, "localhost/cmbusybox:test"]).expect_ok("podman import");
    let run = |name: &str, cmd: &str, publish: Option<&str>| {
        let mut a = vec!["run", "-d", "--name", name, "--network", net, "--cap-add", "NET_RAW"];
        if let Some(p) = publish {
            a.extend(["-p", p]);
        }
        a.extend(["localhost/cmbusybox:test", "sh", "-c", cmd]);
        podman(&a).expect_ok(&format!("podman run {name}"))
    };
    run("web", "exec httpd -f -p 8080 -h /www", Some("18080:8080"));
    run("peer", "exec sleep 600", None);
    let ip = |name: &str| {
        let o = podman(&["inspect", "-f", &format!("{{{{.NetworkSettings.Networks.{net}.IPAddress}}}}"), name])
            .expect_ok("podman inspect");
        o.stdout.trim().to_string()
    };
    let (web, peer) = (ip("web"), ip("peer"));
    assert!(web.starts_with(&s.v4a) && peer.starts_with(&s.v4a), "addresses {web} {peer} not in {}", s.net4());
    let gw = format!("{}.1", s.v4a);
    for (from, to) in [("peer", web.as_str()), ("web", peer.as_str()), ("peer", gw.as_str())] {
        podman(&["exec", from, "ping", "-c1", "-W2", to]).expect_ok(&format!("{from} pings {to}"));
    }
    assert_eq!(sb.host.link_names().iter().filter(|n| n.starts_with("veth")).count(), 2, "two host veths");
    let store = std::fs::read_dir(sb.tmp.join("data").join(net)).unwrap().flatten();
    // host-local's private index (.cni-multi-index, docs/differences.md) is not a lease
    assert_eq!(store.filter(|e| e.file_name() != ".cni-multi-index").count(), 4, "two leases + lock + last");

    // the published port, from a client beyond the host
    let client = client_netns(&sb, &s.v4b);
    let got = http_get(&client, &format!("{}.1:18080", s.v4b));
    assert!(got.ends_with("hello from cni-multi\n"), "published port answered {got:?}");

    podman(&["rm", "-f", "-t", "0", "web", "peer"]).expect_ok("podman rm");
    let veths: Vec<String> = sb.host.link_names().into_iter().filter(|n| n.starts_with("veth")).collect();
    assert!(veths.is_empty(), "veths left after podman rm: {veths:?}");
    let leases: Vec<String> = std::fs::read_dir(sb.tmp.join("data").join(net))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|f| f != "lock" && f != ".cni-multi-index" && !f.starts_with("last_reserved_ip"))
        .collect();
    assert!(leases.is_empty(), "leases left after podman rm: {leases:?}");
    let left = sb.rules_naming(&[web.clone(), peer.clone()]);
    assert!(left.is_empty(), "rules left after podman rm: {left:?}");
}

/// containerd 1.6's `ctr run --cni` over our plugins: a private containerd (own root, state and
/// socket, started inside the sandbox), a busybox image imported from an archive built here, a
/// container that pings its gateway; afterwards no veth, lease or rule is left.
#[test]
#[ignore = "make test-clients (needs containerd + runc + podman from scripts/deps.sh)"]
fn ctr_run_cni() {
    let sb = Sandbox::new("ctd");
    let s = Subnets::alloc();
    let net = "cmctd";
    let conf = client_conflist(net, "cmctd0", &s.v4a, &sb.tmp.s("data"));
    // /etc/cni/net.d and /opt/cni/bin (where ctr looks) are the sandbox's net.d and bin
    std::fs::write(sb.tmp.join("net.d/10-cmctd.conflist"), serde_json::to_vec_pretty(&conf).unwrap()).unwrap();
    let ctd = sb.tmp.join("ctd");
    let sock = ctd.join("containerd.sock").display().to_string();
    let toml = format!(
        "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
         disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
         [grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{d}/containerd.ttrpc.sock\"\n\
         [debug]\n  address = \"\"\n\
         [plugins.\"io.containerd.grpc.v1.cri\".cni]\n  bin_dir = \"{bin}\"\n  conf_dir = \"{netd}\"\n",
        d = ctd.display(),
        bin = sb.tmp.s("bin"),
        netd = sb.tmp.s("net.d"),
    );
    std::fs::write(sb.tmp.join("containerd.toml"), toml).unwrap();
    sb.spawn("containerd.log", &["containerd", "--config", &sb.tmp.s("containerd.toml")]);
    let up = wait_for(60, || Path::new(&sock).exists());
    eprintln!("ctr: containerd up");
    assert!(
        up,
        "containerd did not start: {}",
        std::fs::read_to_string(sb.tmp.join("containerd.log")).unwrap_or_default()
    );

    // the image: busybox-static's files imported by podman, saved as a docker archive
    let (root, runroot) = (sb.tmp.s("root"), sb.tmp.s("runroot"));
    std::fs::write(
        sb.tmp.join("containers.conf"),
        format!(
            "[engine]\ntmp_dir = \"{0}\"\nimage_copy_tmp_dir = \"{0}\"\nevents_logger = \"none\"\n",
            sb.tmp.s("tmp")
        ),
    )
    .unwrap();
    let penv = vec![("CONTAINERS_CONF", sb.tmp.s("containers.conf"))];
    let podman = |args: &[&str]| {
        let mut argv = vec!["podman", "--root", &root, "--runroot", &runroot, "--storage-driver", "vfs"];
        argv.extend_from_slice(args);
        sb.run(&penv, &argv)
    };
    let tar = sb.busybox_tar();
    podman(&["import", &tar, "localhost/cmbusybox:test"]).expect_ok("podman import");
    let archive = sb.tmp.s("image.tar");
    podman(&["save", "--format", "docker-archive", "-o", &archive, "localhost/cmbusybox:test"])
        .expect_ok("podman save");
    let ctr = |args: &[&str]| {
        let mut argv = vec!["ctr", "-a", &sock, "-n", "cmtest"];
        argv.extend_from_slice(args);
        sb.run(&[], &argv)
    };
    ctr(&["images", "import", "--snapshotter", "native", &archive]).expect_ok("ctr images import");

    eprintln!("ctr: image imported");
    let gw = format!("{}.1", s.v4a);
    let script = format!("ip -4 -o addr show eth0; ping -c1 -W2 {gw}");
    let out = ctr(&[
        "run",
        "--cni",
        "--rm",
        "--snapshotter",
        "native",
        "localhost/cmbusybox:test",
        "cm1",
        "sh",
        "-c",
        &script,
    ])
    .expect_ok("ctr run --cni");
    let addr = out
        .stdout
        .split_whitespace()
        .find(|w| w.starts_with(&format!("{}.", s.v4a)))
        .and_then(|a| a.split('/').next())
        .map(str::to_string);
    let addr = addr.unwrap_or_else(|| panic!("no {} address in the container: {}", s.net4(), out.stdout));
    assert!(out.stdout.contains("1 packets received"), "the gateway did not answer: {}", out.stdout);

    eprintln!("ctr: run done");
    let tasks = ctr(&["tasks", "ls", "-q"]).expect_ok("ctr tasks ls");
    assert!(tasks.stdout.trim().is_empty(), "tasks left: {}", tasks.stdout);
    // ctr's DEL carries no netns (the task is gone): the kernel removes the veth pair with the
    // container's netns, asynchronously
    let veths = || sb.host.link_names().into_iter().filter(|n| n.starts_with("veth")).collect::<Vec<_>>();
    wait_for(10, || veths().is_empty());
    assert!(veths().is_empty(), "veths left after ctr run --rm: {:?}", veths());
    let leases: Vec<String> = std::fs::read_dir(sb.tmp.join("data").join(net))
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    let leases: Vec<&String> = leases
        .iter()
        .filter(|f| *f != "lock" && *f != ".cni-multi-index" && !f.starts_with("last_reserved_ip"))
        .collect();
    assert!(leases.is_empty(), "leases left after ctr run --rm: {leases:?}");
    let left = sb.rules_naming(&[addr]);
    assert!(left.is_empty(), "rules left after ctr run --rm: {left:?}");
}
