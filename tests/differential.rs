//! Differential tests: every testdata config runs in twin worlds, one with the reference plugins
//! (/usr/lib/cni, Debian 1.1.1) and one with ours, at every cniVersion of the matrix. ADD, CHECK
//! (>= 0.4.0), DEL and a second DEL must behave the same and leave the same normalised kernel
//! state and host-local store behind (see harness::normalize for what is masked).
//!
//! Version-awareness (reference-features.md §0): the oracle rejects spec 1.1.0, so that column is
//! skipped — explicitly, in `SKIPS` — and oracle bugs that ours must not copy are listed per case.

use crate::harness::*;
use serde_json::Value;

/// The cniVersion matrix.
const VERSIONS: &[&str] = &["0.2.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// (testdata file or "*", cniVersion, why) — combinations not run against the oracle.
const SKIPS: &[(&str, &str, &str)] =
    &[("*", "1.1.0", "the Debian 1.1.1 oracle rejects spec 1.1.0 (code 1, incompatible CNI versions)")];

/// Kernel-state differences where newest upstream (which cni-multi follows) deliberately differs
/// from the Debian 1.1.1 oracle: (text in a diff line, why). Applied only when the oracle is
/// compared with cni-multi — never reference-vs-reference or ours-vs-ours.
const KNOWN_NEWER: &[(&str, &str)] = &[(
    "/keep_addr_on_down: \"0\" != \"1\"",
    "v1.7.0 sets keep_addr_on_down=1 on the container interface before its first IPv6 address (§0, §2.1)",
)];

/// Error codes where ours deliberately differs: (text in both messages, reference code, our
/// code, why). The reference wraps every plain error as 999; ours uses the spec's code.
const KNOWN_CODES: &[(&str, u64, u64, &str)] = &[(
    "does not support more than 1 address per family",
    999,
    7,
    "a config that the requested cniVersion cannot express is invalid network config (spec code 7)",
)];

/// Something to prepare in both worlds before ADD.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Setup {
    None,
    /// bridge `cmbr0` already exists in the host netns with `<v4a>.254/24` on it
    BridgeWithAddr,
    /// write `<tmp>/resolv.conf` for host-local `resolvConf`
    ResolvConf,
}

struct Case {
    file: &'static str,
    /// CNI_ARGS (placeholders allowed)
    cni_args: Option<&'static str>,
    setup: Setup,
    /// a MAC the config asks for: kept verbatim by the normaliser, so it is compared
    keep_mac: Option<&'static str>,
    /// the oracle's CHECK fails for this config (a reference bug, §0/§2.2); ours must pass it
    oracle_check_bug: Option<&'static str>,
    /// the config has `ipam.dns` and no top-level `dns`: Debian 1.1.1 bridge/ptp print an empty
    /// `dns`, newest upstream keeps IPAM's (§2.1). Against the oracle, `dns` is compared with the
    /// config instead.
    ipam_dns_kept: bool,
    /// the oracle prints this plugin's result unconverted (1.x shape labelled with an older
    /// version); ours converts as the spec says, so below 1.0.0 only the addresses are compared
    oracle_unconverted_result: Option<&'static str>,
    /// also compare the host's netfilter rules (iptables-save, ip6tables-save, nft list ruleset)
    rules: bool,
}

const fn case(file: &'static str) -> Case {
    Case {
        file,
        cni_args: None,
        setup: Setup::None,
        keep_mac: None,
        oracle_check_bug: None,
        ipam_dns_kept: false,
        oracle_unconverted_result: None,
        rules: false,
    }
}

fn skip_reason(file: &str, version: &str) -> Option<&'static str> {
    SKIPS.iter().find(|(f, v, _)| (*f == "*" || *f == file) && *v == version).map(|(_, _, why)| *why)
}

/// One side of a differential run.
struct Side {
    w: World,
    conf: Value,
    norm: Normalizer,
    cni_args: Option<String>,
    rules: bool,
}

impl Side {
    fn new(imp: Impl, tag: &str, c: &Case, subnets: &Subnets, version: &str) -> Side {
        let w = World::new(tag, 1, imp);
        w.host_nodad();
        let vars = vars(&w, subnets, &format!("net-{tag}"));
        let conf = load(c.file, &vars, version);
        let mut norm = Normalizer::for_world(&w);
        if let Some(m) = c.keep_mac {
            norm = norm.keep_mac(m);
        }
        let cni_args = c.cni_args.map(|a| vars.iter().fold(a.to_string(), |s, (k, v)| s.replace(k, v)));
        match c.setup {
            Setup::None => {}
            Setup::BridgeWithAddr => {
                w.host.must(&["ip", "link", "add", "cmbr0", "type", "bridge"]);
                w.host.must(&["ip", "addr", "add", &format!("{}.254/24", subnets.v4a), "dev", "cmbr0"]);
                w.host.must(&["ip", "link", "set", "cmbr0", "up"]);
            }
            Setup::ResolvConf => {
                let text = format!(
                    "# test resolver\nnameserver {}.53\nnameserver {}::53\ndomain example.test\nsearch a.test b.test\noptions ndots:3 timeout:1\n",
                    subnets.v4a, subnets.v6a
                );
                std::fs::write(w.tmp.join("resolv.conf"), text).expect("write resolv.conf");
            }
        }
        Side { w, conf, norm, cni_args, rules: c.rules }
    }

    fn run(&self, command: &str, prev: Option<&Value>) -> Outcome {
        let mut conf = self.conf.clone();
        if let Some(p) = prev {
            conf["prevResult"] = p.clone();
        }
        let mut call = self.w.cni(command, &conf);
        if let Some(a) = &self.cni_args {
            call = call.cni_args(a);
        }
        call.run()
    }

    fn state(&self) -> Value {
        let mut v = self.norm.snapshot(&self.w.snapshot());
        if self.rules {
            v["rules"] =
                Value::Array(rules(&self.w.host).into_iter().map(|l| Value::String(self.norm.text(&l))).collect());
        }
        v
    }

    /// The result describes the kernel: every interface's MAC is the link's MAC (in the sandbox
    /// or the host netns), every IP pointing at an interface is on it. (Normalisation masks MACs,
    /// so this is checked per side.)
    fn result_matches_kernel(&self, r: &Value) -> Vec<String> {
        let mut out = vec![];
        let label = self.w.imp.label();
        let ifs = r["interfaces"].as_array().cloned().unwrap_or_default();
        for i in &ifs {
            let name = i["name"].as_str().unwrap_or_default();
            let ns = if i.get("sandbox").is_some() { self.w.c(0) } else { &self.w.host };
            match ns.link(name) {
                None => out.push(format!("{label}: result interface {name} does not exist in {}", ns.name)),
                Some(l) => {
                    if i.get("mac").is_some() && i["mac"] != l["address"] {
                        out.push(format!("{label}: {name} MAC in result {} but kernel {}", i["mac"], l["address"]));
                    }
                }
            }
        }
        for ip in r["ips"].as_array().into_iter().flatten() {
            let Some(idx) = ip["interface"].as_u64() else { continue };
            let Some(i) = ifs.get(idx as usize) else {
                out.push(format!("{label}: ip {ip} points at a missing interface"));
                continue;
            };
            let name = i["name"].as_str().unwrap_or_default();
            let ns = if i.get("sandbox").is_some() { self.w.c(0) } else { &self.w.host };
            let addr = ip["address"].as_str().unwrap_or_default().to_string();
            if !ns.addrs(name).contains(&addr) {
                out.push(format!("{label}: {addr} from the result is not on {name}"));
            }
        }
        out
    }

    /// What must be gone after DEL.
    fn leftovers(&self) -> Vec<String> {
        let mut out = vec![];
        let plugin = self.conf["type"].as_str().unwrap_or_default();
        let leases = self.w.leases(&net_name(&self.conf));
        if !leases.is_empty() {
            out.push(format!("{}: leases left behind: {leases:?}", self.w.imp.label()));
        }
        let c = self.w.c(0);
        match plugin {
            "bridge" | "ptp" => {
                if c.link("eth0").is_some() {
                    out.push(format!("{}: container eth0 left behind", self.w.imp.label()));
                }
                let veths: Vec<String> =
                    self.w.host.link_names().into_iter().filter(|n| n.starts_with("veth")).collect();
                if !veths.is_empty() {
                    out.push(format!("{}: host veths left behind: {veths:?}", self.w.imp.label()));
                }
            }
            "loopback" => {
                let lo = c.link("lo").unwrap_or_default();
                if lo["flags"].as_array().is_some_and(|f| f.iter().any(|x| x == "UP")) {
                    out.push(format!("{}: lo still up", self.w.imp.label()));
                }
            }
            _ => {}
        }
        out
    }
}

/// The host's netfilter rules, one line each, in kernel order, counters masked: the iptables view
/// (`iptables-save`, `ip6tables-save`) and the nftables view (`nft list ruleset`).
fn rules(host: &Netns) -> Vec<String> {
    let mut out = vec![];
    for tool in ["iptables-save", "ip6tables-save"] {
        for line in host.must(&[tool]).lines().filter(|l| !l.starts_with('#')) {
            let l = if line.starts_with(':') { line.split(" [").next().unwrap_or(line) } else { line };
            out.push(format!("{tool}: {l}"));
        }
    }
    for line in host.must(&["nft", "list", "ruleset"]).lines() {
        let mut words: Vec<&str> = line.split(' ').collect();
        for i in 1..words.len() {
            if words[i - 1] == "packets" || words[i - 1] == "bytes" {
                words[i] = "N";
            }
        }
        out.push(format!("nft: {}", words.join(" ")));
    }
    out
}

fn short(o: &Outcome) -> String {
    format!("exit {} stdout {:?} stderr {:?}", o.code, o.stdout, o.stderr.lines().last().unwrap_or_default())
}

/// Compare two runs of the same verb. Returns the differences and whether both succeeded.
fn compare_outcomes(verb: &str, r: &Outcome, o: &Outcome, rs: &Side, os: &Side, out: &mut Vec<String>) -> bool {
    match (r.success(), o.success()) {
        (true, true) => true,
        (false, false) => {
            match (r.error(), o.error()) {
                (Some(re), Some(oe)) => {
                    let known = KNOWN_CODES.iter().find(|(needle, rc, oc, _)| {
                        re.code == *rc && oe.code == *oc && re.msg.contains(needle) && oe.msg.contains(needle)
                    });
                    if let Some((_, _, _, why)) = known {
                        eprintln!("known difference: {verb} error code {} vs {} ({why})", re.code, oe.code);
                    } else if re.code != oe.code {
                        out.push(format!(
                            "{verb}: error code reference {} ours {} ({re:?} / {oe:?})",
                            re.code, oe.code
                        ));
                    } else if rs.norm.text(&re.msg) != os.norm.text(&oe.msg) {
                        // wording is not part of the contract; the code is
                        eprintln!("note: {verb} error text differs: reference {:?} ours {:?}", re.msg, oe.msg);
                    }
                }
                _ => {
                    out.push(format!("{verb}: a failure without an error object: ref {} / ours {}", short(r), short(o)))
                }
            }
            false
        }
        _ => {
            out.push(format!("{verb}: outcome differs: reference {} / ours {}", short(r), short(o)));
            false
        }
    }
}

/// DEL after a failed ADD: the same outcome, except that ours may succeed where the oracle fails
/// (the spec wants DEL to succeed; §0: "succeeds where the oracle fails is fine").
fn del_after_failed_add(
    verb: &str,
    r: &Outcome,
    o: &Outcome,
    rs: &Side,
    os: &Side,
    oracle_vs_ours: bool,
    out: &mut Vec<String>,
) {
    if oracle_vs_ours && !r.success() && o.success() {
        eprintln!("note: {verb}: ours succeeds where the oracle fails ({})", short(r));
        return;
    }
    compare_outcomes(verb, r, o, rs, os, out);
}

/// Run `c` at `version` in the reference world and in ours.
fn run_version(tag: &str, c: &Case, version: &str) -> Vec<String> {
    run_pair(tag, c, (Impl::Reference, version), (Impl::Ours, version))
}

/// Drop what only a 1.1.0 result may carry (interface `mtu`/`socketPath`/`pciID`, §1.8) and
/// stamp the version, so a 1.1.0 result compares with a 1.0.0 one.
fn as_version(mut v: Value, version: &str) -> Value {
    if let Some(ifs) = v.get_mut("interfaces").and_then(|i| i.as_array_mut()) {
        for i in ifs.iter_mut().filter_map(|i| i.as_object_mut()) {
            for k in ["mtu", "socketPath", "pciID"] {
                i.remove(k);
            }
        }
    }
    v["cniVersion"] = Value::String(version.to_string());
    v
}

/// Run `c` on two sides: `left` plays the reference role (normally the oracle), `right` is
/// compared with it. Each is (implementation, cniVersion).
fn run_pair(tag: &str, c: &Case, left: (Impl, &str), right: (Impl, &str)) -> Vec<String> {
    let subnets = Subnets::alloc();
    let rs = Side::new(left.0, tag, c, &subnets, left.1);
    let os = Side::new(right.0, tag, c, &subnets, right.1);
    let version = left.1;
    let (ln, rn) = (format!("{}@{}", left.0.label(), left.1), format!("{}@{}", right.0.label(), right.1));
    let oracle_vs_ours = left.0.flavor() == Flavor::Debian && right.0.flavor() == Flavor::CniMulti;
    let state_diff = |when: &str, out: &mut Vec<String>| {
        for d in diff(&rs.state(), &os.state()) {
            match KNOWN_NEWER.iter().find(|(needle, _)| oracle_vs_ours && d.contains(needle)) {
                Some((_, why)) => eprintln!("known difference {when}: {d} ({why})"),
                None => out.push(format!("{when}: {d}")),
            }
        }
    };
    let mut out = vec![];

    // ADD
    let (ra, oa) = (rs.run("ADD", None), os.run("ADD", None));
    let added = compare_outcomes("ADD", &ra, &oa, &rs, &os, &mut out);
    if ra.success() != oa.success() {
        return out;
    }
    if added && c.ipam_dns_kept && oracle_vs_ours {
        let (mut l, mut r) = (rs.norm.result(&ra.stdout), os.norm.result(&oa.stdout));
        let want = os.norm.value(&os.conf["ipam"]["dns"]);
        if r["dns"] != want {
            out.push(format!("ADD result dns {} but ipam.dns is {want} (newest keeps IPAM's DNS)", r["dns"]));
        }
        for v in [&mut l, &mut r] {
            if let Some(o) = v.as_object_mut() {
                o.remove("dns");
            }
        }
        for d in diff(&as_version(l, version), &as_version(r, version)) {
            out.push(format!("ADD result {d}"));
        }
    } else if added {
        if version_ge(version, "1.0.0") {
            // 1.x: key order and an empty `dns` differ by library version (§1.8)
            let (l, r) = (rs.norm.result(&ra.stdout), os.norm.result(&oa.stdout));
            if r["cniVersion"] != right.1 {
                out.push(format!("ADD result cniVersion {} (asked for {})", r["cniVersion"], right.1));
            }
            for d in diff(&as_version(l, version), &as_version(r, version)) {
                out.push(format!("ADD result {d}"));
            }
        } else if let (Some(why), true) = (c.oracle_unconverted_result, oracle_vs_ours) {
            let (l, r) = (rs.norm.text(&ra.stdout), os.norm.text(&oa.stdout));
            let shape = if version_ge(version, "0.3.0") { "\"version\": " } else { "\"ip4\": " };
            if !r.contains(shape) {
                out.push(format!("ADD result is not in the {version} shape (no {shape}):\n{r}"));
            }
            for addr in ["127.0.0.1/8", "::1/128"] {
                if l.contains(addr) != r.contains(addr) {
                    out.push(format!(
                        "ADD result: {addr} in the reference's {} / ours {}",
                        l.contains(addr),
                        r.contains(addr)
                    ));
                }
            }
            eprintln!("known difference: ADD result shape at {version} ({why})");
        } else if rs.norm.text(&ra.stdout) != os.norm.text(&oa.stdout) {
            // before 1.0.0 the printing is byte-for-byte the same in every library version
            out.push(format!(
                "ADD result bytes differ:\n--- reference\n{}\n--- ours\n{}",
                rs.norm.text(&ra.stdout),
                os.norm.text(&oa.stdout)
            ));
        }
    }
    let failed_vs_oracle = !added && oracle_vs_ours;
    if failed_vs_oracle {
        // The oracle does not always roll back a failed ADD (it can leave the container veth,
        // addressed, behind); ours must leave nothing, so ours is checked on its own.
        out.extend(os.leftovers().into_iter().map(|l| format!("after failed ADD: {l}")));
    } else {
        state_diff("after ADD", &mut out);
    }
    if added && c.rules {
        // the comparison of rules means something only when ADD made some
        for side in [&rs, &os] {
            let made = rules(&side.w.host).iter().any(|l| l.contains("MASQUERADE") || l.contains("DNAT"));
            if !made {
                out.push(format!("{}: no MASQUERADE/DNAT rule after ADD", side.w.imp.label()));
            }
        }
    }
    let (rp, op) = (ra.json(), oa.json());
    if added && version_ge(version, "0.3.0") {
        out.extend(rs.result_matches_kernel(rp.as_ref().unwrap_or(&Value::Null)));
        out.extend(os.result_matches_kernel(op.as_ref().unwrap_or(&Value::Null)));
    }
    let prev_ok = added && version_ge(version, "0.4.0");

    // CHECK (>= 0.4.0)
    if prev_ok {
        let (rc, oc) = (rs.run("CHECK", rp.as_ref()), os.run("CHECK", op.as_ref()));
        for (side, o) in [(&rs, &rc), (&os, &oc)] {
            // the oracle's CHECK bugs (table) are expected of the oracle only
            let should_pass = c.oracle_check_bug.is_none() || side.w.imp.flavor() == Flavor::CniMulti;
            if o.success() != should_pass {
                out.push(format!(
                    "{} CHECK: expected {} (oracle bug per table: {:?}): {}",
                    side.w.imp.label(),
                    if should_pass { "success" } else { "failure" },
                    c.oracle_check_bug,
                    short(o)
                ));
            }
        }
    }

    // DEL (with prevResult from 0.4.0 on, as libcni sends it), twice
    let prev = |p: &Option<Value>| if prev_ok { p.clone() } else { None };
    let (rd, od) = (rs.run("DEL", prev(&rp).as_ref()), os.run("DEL", prev(&op).as_ref()));
    if added {
        for (label, o) in [(&ln, &rd), (&rn, &od)] {
            if !o.success() {
                out.push(format!("{label} DEL failed: {}", short(o)));
            }
        }
    } else {
        // after a failed ADD the config may be invalid for DEL too (e.g. 0.2.0 with two v4
        // sets): DEL must then fail the same way — or succeed where the oracle fails
        del_after_failed_add("DEL after failed ADD", &rd, &od, &rs, &os, oracle_vs_ours, &mut out);
    }
    if failed_vs_oracle {
        out.extend(os.leftovers());
    } else {
        state_diff("after DEL", &mut out);
        out.extend(rs.leftovers());
        out.extend(os.leftovers());
    }
    let (rd2, od2) = (rs.run("DEL", prev(&rp).as_ref()), os.run("DEL", prev(&op).as_ref()));
    if added || rd.success() {
        for (label, o) in [(&ln, &rd2), (&rn, &od2)] {
            if !o.success() {
                out.push(format!("{label} second DEL failed: {}", short(o)));
            }
        }
    } else {
        del_after_failed_add("second DEL after failed ADD", &rd2, &od2, &rs, &os, oracle_vs_ours, &mut out);
    }
    out
}

fn run_case(tag: &str, c: Case) {
    assert!(config::exists(c.file), "testdata/{} missing", c.file);
    let mut report = vec![];
    for v in VERSIONS {
        if let Some(why) = skip_reason(c.file, v) {
            eprintln!("skip reference {} @ {v}: {why}", c.file);
            if Impl::Ours.flavor() == Flavor::CniMulti {
                // no oracle here: ours at this version must equal ours at 1.0.0 (§1.8: converting
                // between 1.0.0 and 1.1.0 changes only cniVersion), with the same kernel state
                let pair = run_pair(tag, &c, (Impl::Ours, "1.0.0"), (Impl::Ours, v));
                report.extend(pair.into_iter().map(|l| format!("[{} ours@1.0.0 vs ours@{v}] {l}", c.file)));
            }
            continue;
        }
        report.extend(run_version(tag, &c, v).into_iter().map(|l| format!("[{} @ {v}] {l}", c.file)));
    }
    assert!(report.is_empty(), "{} difference(s):\n{}", report.len(), report.join("\n"));
}

use crate::harness::config;

macro_rules! diff_tests {
    ($($name:ident => $case:expr;)*) => {
        $(
            #[test]
            fn $name() {
                run_case(&stringify!($name).chars().filter(|c| c.is_ascii_alphanumeric()).take(8).collect::<String>(), $case);
            }
        )*
    };
}

diff_tests! {
    bridge_l2 => Case {
        oracle_check_bug: Some("bridge CHECK calls IPAM CHECK with an empty ipam type in L2 mode (§2.2)"),
        ..case("bridge-l2.json")
    };
    bridge_v4 => case("bridge-v4.json");
    bridge_v4_gateway => case("bridge-v4-gateway.json");
    bridge_v4_default_gw => case("bridge-v4-default-gw.json");
    bridge_v6 => case("bridge-v6.json");
    bridge_dual => case("bridge-dual.json");
    bridge_mtu_hairpin => case("bridge-mtu-hairpin.json");
    bridge_promisc => case("bridge-promisc.json");
    bridge_enabledad => case("bridge-enabledad.json");
    bridge_mac_runtime => Case { keep_mac: Some("0a:58:c6:12:00:05"), ..case("bridge-mac-runtime.json") };
    bridge_mac_cniargs => Case {
        cni_args: Some("IgnoreUnknown=1;MAC=0a:58:c6:12:00:06"),
        keep_mac: Some("0a:58:c6:12:00:06"),
        ..case("bridge-mac-cniargs.json")
    };
    bridge_force_address => Case { setup: Setup::BridgeWithAddr, ..case("bridge-force-address.json") };
    bridge_conflict_noforce => Case { setup: Setup::BridgeWithAddr, ..case("bridge-conflict-noforce.json") };
    bridge_routes => case("bridge-routes.json");
    bridge_range_bounds => case("bridge-range-bounds.json");
    bridge_multi_range => case("bridge-multi-range.json");
    bridge_two_v4_sets => case("bridge-two-v4-sets.json");
    bridge_static => Case { ipam_dns_kept: true, ..case("bridge-static.json") };
    bridge_dns => case("bridge-dns.json");
    ptp_v4 => case("ptp-v4.json");
    ptp_v6 => case("ptp-v6.json");
    ptp_dual_mtu => case("ptp-dual-mtu.json");
    ptp_static => case("ptp-static.json");
    ptp_ipmasq_v4 => Case { rules: true, ..case("ptp-ipmasq-v4.json") };
    ptp_ipmasq_v6 => Case { rules: true, ..case("ptp-ipmasq-v6.json") };
    loopback => Case {
        oracle_unconverted_result: Some("Debian 1.1.1 loopback prints its 1.x result labelled with the old version"),
        ..case("loopback.json")
    };
    host_local_v4 => Case { setup: Setup::ResolvConf, ..case("host-local-v4.json") };
    host_local_legacy => case("host-local-legacy.json");
    host_local_sets => case("host-local-sets.json");
    host_local_requested_ip => Case { cni_args: Some("IP=__V4A__.66"), ..case("host-local-requested-ip.json") };
    host_local_args_ips => case("host-local-args-ips.json");
    static_v4 => case("static-v4.json");
    static_dual => case("static-dual.json");
    static_cniargs => Case {
        cni_args: Some("IP=__V4A__.20/24,__V6A__::20/64;GATEWAY=__V4A__.1"),
        ..case("static-cniargs.json")
    };
    static_runtime_ips => case("static-runtime-ips.json");
}

/// Every testdata file is driven by a differential case (no config silently unused).
#[test]
fn every_testdata_file_has_a_case() {
    let src = include_str!("differential.rs");
    let mut missing = vec![];
    for e in std::fs::read_dir(config::testdata_dir()).expect("testdata dir").flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".json") && !src.contains(&format!("\"{name}\"")) {
            missing.push(name);
        }
    }
    assert!(missing.is_empty(), "testdata without a differential case: {missing:?}");
    assert!(VERSIONS.len() >= 4);
}
