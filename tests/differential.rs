//! Differential tests: every testdata config runs in twin worlds, one with the reference plugins
//! (/usr/lib/cni, Debian 1.1.1) and one with ours, at every cniVersion of the matrix. ADD, CHECK
//! (>= 0.4.0), DEL and a second DEL must behave the same and leave the same normalised kernel
//! state and host-local store behind (see harness::normalize for what is masked).
//!
//! Version-awareness (reference-features.md §0): the oracle rejects spec 1.1.0, so that column is
//! skipped — explicitly, in `SKIPS` — and oracle bugs that ours must not copy are listed per case.

use crate::harness::state::netfilter;
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
const KNOWN_CODES: &[(&str, u64, u64, &str)] = &[
    (
        "does not support more than 1 address per family",
        999,
        7,
        "a config that the requested cniVersion cannot express is invalid network config (spec code 7)",
    ),
    (
        "cannot convert: no valid IP addresses",
        999,
        7,
        "an L2-only result at 0.1.0/0.2.0: a config that the requested cniVersion cannot express is invalid network config (spec code 7)",
    ),
];

/// The MAC of the device `Setup::HostDevice` makes (host-device `hwaddr` finds it by this).
const HOST_DEVICE_MAC: &str = "0a:58:c6:12:00:31";

/// Something to prepare in both worlds before ADD.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Setup {
    None,
    /// bridge `cmbr0` already exists in the host netns with `<v4a>.254/24` on it
    BridgeWithAddr,
    /// write `<tmp>/resolv.conf` for host-local `resolvConf`
    ResolvConf,
    /// an uplink in the host netns for macvlan/ipvlan/vlan `master`: veth `cmup0` (peer `cmup1`), up
    Uplink,
    /// the same uplink, but `cmup0` lives in the container netns (`linkInContainer`)
    UplinkInContainer,
    /// the nat chain portmap's `externalSetMarkChain` names (`CM-TEST-MARK`), made in the host netns
    MarkChain,
    /// a device for host-device in the host netns: veth `cmhd0` with MAC 0a:58:c6:12:00:31 (peer `cmhd1`)
    HostDevice,
}

pub struct Case {
    pub file: &'static str,
    /// CNI_ARGS (placeholders allowed)
    pub cni_args: Option<&'static str>,
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
    /// the oracle fails a second DEL of this plugin (a reference bug the spec forbids); ours must pass
    oracle_second_del_bug: Option<&'static str>,
    /// kernel-state differences because the config uses a key or behaviour newer than the Debian
    /// 1.1.1 oracle: (text in a diff line, why). Accepted only oracle-vs-ours, and each must be
    /// seen at least once, so the key demonstrably took effect in ours and not in the oracle.
    newer: &'static [(&'static str, &'static str)],
    /// the oracle does not know the key at all (it refuses the config): ours runs against itself
    /// at every version, and `ours_check` asserts what the key does
    oracle_lacks: Option<&'static str>,
    /// after ADD, on our side: what the config's keys must have done (empty = fine)
    ours_check: Option<fn(&World) -> Vec<String>>,
    /// ADD refuses this config at some version; ours must still succeed DEL then (deliberate: the
    /// spec wants DEL to succeed; the oracle fails it with the ADD's error)
    del_of_refused_config_succeeds: bool,
    /// the cniVersions to run (default: all of `VERSIONS`)
    versions: &'static [&'static str],
    /// a kernel feature the case needs, as `ip link add <probe> ...` arguments: without it the case
    /// skips (fails when CI=true); such cases live in `iface_vm` and run in the VM
    needs: Option<&'static [&'static str]>,
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
        oracle_second_del_bug: None,
        newer: &[],
        oracle_lacks: None,
        ours_check: None,
        del_of_refused_config_succeeds: false,
        versions: VERSIONS,
        needs: None,
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
            Setup::BridgeWithAddr => w.host_bridge_with_addr(subnets),
            Setup::ResolvConf => w.write_resolv_conf(subnets),
            Setup::Uplink | Setup::UplinkInContainer => {
                let ns = if c.setup == Setup::Uplink { &w.host } else { w.c(0) };
                ns.must(&["ip", "link", "add", "cmup0", "type", "veth", "peer", "name", "cmup1"]);
                ns.must(&["ip", "link", "set", "cmup0", "up"]);
                ns.must(&["ip", "link", "set", "cmup1", "up"]);
            }
            Setup::MarkChain => {
                w.host.must(&["iptables", "-t", "nat", "-N", "CM-TEST-MARK"]);
            }
            Setup::HostDevice => {
                w.host.must(&["ip", "link", "add", "cmhd0", "type", "veth", "peer", "name", "cmhd1"]);
                w.host.must(&["ip", "link", "set", "cmhd0", "address", HOST_DEVICE_MAC]);
            }
        }
        Side { w, conf, norm, cni_args, rules: c.rules }
    }

    /// Run one verb: a plain config as is, a conflist (`plugins`) the way libcni does — ADD in
    /// order, each plugin with the previous one's result; CHECK in order and DEL in reverse, each
    /// with `prev` — stopping at the first failure.
    fn run(&self, command: &str, prev: Option<&Value>) -> Outcome {
        let Some(plugins) = self.conf["plugins"].as_array() else { return self.run_one(&self.conf, command, prev) };
        let confs: Vec<Value> = plugins
            .iter()
            .map(|p| {
                let mut p = p.clone();
                p["name"] = self.conf["name"].clone();
                p["cniVersion"] = self.conf["cniVersion"].clone();
                p
            })
            .collect();
        let mut last: Option<Outcome> = None;
        let mut failed: Option<Outcome> = None;
        let order: Vec<&Value> = if command == "DEL" { confs.iter().rev().collect() } else { confs.iter().collect() };
        for p in order {
            let chained = if command == "ADD" { last.as_ref().and_then(|o| o.json()) } else { prev.cloned() };
            let o = self.run_one(p, command, chained.as_ref());
            if !o.success() {
                // DEL goes on through the chain (a runtime retries a failed DEL until every plugin
                // has cleaned up); ADD and CHECK stop at the first failure
                if command != "DEL" {
                    return o;
                }
                failed.get_or_insert(o.clone());
            }
            last = Some(o);
        }
        failed.or(last).expect("a conflist has plugins")
    }

    fn run_one(&self, conf: &Value, command: &str, prev: Option<&Value>) -> Outcome {
        let mut conf = conf.clone();
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
            v["rules"] = Value::Array(
                netfilter(&self.w.host).tagged().into_iter().map(|l| Value::String(self.norm.text(&l))).collect(),
            );
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
        let plugin = self.conf["type"].as_str().or(self.conf["plugins"][0]["type"].as_str()).unwrap_or_default();
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
    let seen_newer = std::cell::RefCell::new(vec![false; c.newer.len()]);
    // with no oracle (ours vs ours), kernel timing is all a state diff could show: the run checks
    // outcomes, the result against the kernel, `ours_check` and cleanup instead
    let compare_state = c.oracle_lacks.is_none();
    let state_diff = |when: &str, out: &mut Vec<String>| {
        if !compare_state {
            return;
        }
        for d in diff(&rs.state(), &os.state()) {
            let per_case = c.newer.iter().position(|(needle, _)| oracle_vs_ours && d.contains(needle));
            if let Some(i) = per_case {
                seen_newer.borrow_mut()[i] = true;
                eprintln!("known difference {when}: {d} ({})", c.newer[i].1);
                continue;
            }
            match KNOWN_NEWER.iter().find(|(needle, _)| oracle_vs_ours && d.contains(needle)) {
                Some((_, why)) => eprintln!("known difference {when}: {d} ({why})"),
                None => out.push(format!("{when}: {d}")),
            }
        }
    };
    let mut out = vec![];
    let missing_newer = |out: &mut Vec<String>| {
        if oracle_vs_ours {
            for (i, (needle, why)) in c.newer.iter().enumerate() {
                if !seen_newer.borrow()[i] {
                    out.push(format!("expected difference not seen: {needle:?} ({why}): did the key take effect?"));
                }
            }
        }
    };

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
    if added && right.0.flavor() == Flavor::CniMulti {
        if let Some(check) = c.ours_check {
            out.extend(check(&os.w).into_iter().map(|l| format!("{rn} after ADD: {l}")));
        }
    }
    let failed_vs_oracle = !added && oracle_vs_ours;
    if failed_vs_oracle && os.conf.get("plugins").is_some() {
        // a failed chain ADD leaves the earlier plugins' work until the runtime's DEL (libcni)
    } else if failed_vs_oracle {
        // The oracle does not always roll back a failed ADD (it can leave the container veth,
        // addressed, behind); ours must leave nothing, so ours is checked on its own.
        out.extend(os.leftovers().into_iter().map(|l| format!("after failed ADD: {l}")));
    } else {
        state_diff("after ADD", &mut out);
    }
    if added && c.rules {
        // the comparison of rules means something only when ADD made some
        for side in [&rs, &os] {
            let made = netfilter(&side.w.host).tagged().iter().any(|l| l.contains("MASQUERADE") || l.contains("DNAT"));
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
        if c.del_of_refused_config_succeeds && right.0.flavor() == Flavor::CniMulti && !od.success() {
            out.push(format!("{rn} DEL of a config ADD refused must succeed: {}", short(&od)));
        }
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
            if c.oracle_second_del_bug.is_some() && oracle_vs_ours && std::ptr::eq(o, &rd2) {
                if o.success() {
                    out.push(format!("{label} second DEL succeeds, but the table says the oracle fails it"));
                }
                continue;
            }
            if !o.success() {
                out.push(format!("{label} second DEL failed: {}", short(o)));
            }
        }
    } else {
        del_after_failed_add("second DEL after failed ADD", &rd2, &od2, &rs, &os, oracle_vs_ours, &mut out);
    }
    if added {
        missing_newer(&mut out);
    }
    out
}

/// Can this kernel make a link of this kind? (`ip link add cmprobe0 <args>` in a throwaway netns
/// that has a veth `cmprobeu` to stand in for a master)
fn kernel_has(args: &[&str]) -> bool {
    let ns = Netns::create(&crate::harness::world::unique("probe"));
    ns.must(&["ip", "link", "add", "cmprobeu", "type", "veth", "peer", "name", "cmprobev"]);
    let mut argv = vec!["ip", "link", "add", "cmprobe0"];
    argv.extend_from_slice(args);
    ns.exec(&argv).status.success()
}

fn run_case(tag: &str, c: Case) {
    assert!(config::exists(c.file), "testdata/{} missing", c.file);
    if let Some(args) = c.needs {
        if !kernel_has(args) {
            let msg = format!("this kernel cannot `ip link add ... {}`", args.join(" "));
            assert!(
                std::env::var("CI").map_or(true, |v| v != "true"),
                "{msg}; CI=true, so this fails: run scripts/test-vm.sh"
            );
            eprintln!("skip {}: {msg} (runs in the VM: make test-vm)", c.file);
            return;
        }
    }
    let mut report = vec![];
    for v in c.versions {
        if let Some(why) = c.oracle_lacks {
            eprintln!("no oracle for {} @ {v}: {why}", c.file);
            let pair = run_pair(tag, &c, (Impl::Ours, v), (Impl::Ours, v));
            report.extend(pair.into_iter().map(|l| format!("[{} ours@{v} vs ours@{v}] {l}", c.file)));
            continue;
        }
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

/// macvlan, ipvlan and vlan links keep the kernel's default queue length (no IFLA_TXQLEN) in
/// v1.9.1, which ours follows; the Debian 1.1.1 oracle sends 0 (`ip -j` then prints none).
const TXQLEN_DEFAULT: &str = "/containers[0]/links/eth0/txqlen: only on the right: 1000";
const TXQLEN_DEFAULT_WHY: &str =
    "v1.9.1 makes the link with netlink.NewLinkAttrs() (TxQLen -1: the kernel's default); Debian 1.1.1 sends 0";

/// The veth pair of bridge and ptp: v1.9.1 makes it with `netlink.NewLinkAttrs()` too, so both
/// ends keep the kernel's default queue length, which ours follows; the Debian 1.1.1 oracle
/// sends 0. Every case whose ADD makes a pod's veth pair shows both lines.
const VETH_HOST_TXQLEN: &str = "/host/links/veth<id>/txqlen: only on the right: 1000";
const VETH_TXQLEN_WHY: &str =
    "v1.9.1 makes the veth pair with netlink.NewLinkAttrs() (TxQLen -1: the kernel's default on both ends); Debian 1.1.1 sends 0";
const VETH_NEWER: &[(&str, &str)] = &[(TXQLEN_DEFAULT, VETH_TXQLEN_WHY), (VETH_HOST_TXQLEN, VETH_TXQLEN_WHY)];

/// A case whose config makes a pod's veth pair (bridge, ptp, and the chains that start with
/// bridge): the pair's queue lengths are newer than the oracle (`VETH_NEWER`).
const fn veth(file: &'static str) -> Case {
    Case { newer: VETH_NEWER, ..case(file) }
}

const HOST_DEVICE_SECOND_DEL: &str = "Debian 1.1.1 host-device fails a second DEL (\"Link not found\"), §0";
const HOST_DEVICE_ALIAS: &str = "/host/links/cmhd0/ifalias: only on the left";
const HOST_DEVICE_ALIAS_WHY: &str =
    "newest upstream (v1.6.0 temp-netns move) clears the alias holding the original name when it returns the device";

/// tuning `args.cni`: every value of chain-tuning-args.json's args.cni is on eth0.
fn tuning_from_args(w: &World) -> Vec<String> {
    let c = w.c(0);
    let Some(l) = c.link("eth0") else { return vec!["no container eth0".into()] };
    let mut out = vec![];
    let flags = l["flags"].as_array().cloned().unwrap_or_default();
    for (what, ok) in [
        ("mac 0a:58:c6:12:00:42", l["address"] == "0a:58:c6:12:00:42"),
        ("mtu 1280", l["mtu"] == 1280),
        ("txqlen 600", l["txqlen"] == 600),
        ("promisc", l["promiscuity"].as_u64().is_some_and(|p| p > 0) || flags.iter().any(|f| f == "PROMISC")),
        ("allmulti", flags.iter().any(|f| f == "ALLMULTI") || l["allmulti"].as_u64().is_some_and(|p| p > 0)),
        ("sysctl arp_filter=1", c.sysctl("net/ipv4/conf/eth0/arp_filter").as_deref() == Some("1")),
    ] {
        if !ok {
            out.push(format!("args.cni {what} not applied: {l}"));
        }
    }
    out
}

/// The Debian 1.1.1 chain's CHECK fails once sbr or vrf has moved the interface's routes out of
/// the main table (its bridge CHECK still looks for the gateway route there); ours passes.
const ROUTES_MOVED_CHECK: &str =
    "Debian 1.1.1 CHECK of the chain fails (\"Failed to find Gateway\") after sbr/vrf moved the routes out of main";
const SBR_CHECK: &str = ROUTES_MOVED_CHECK;
const SBR_DEL: &str = "Debian 1.1.1 sbr fails a second DEL (\"Failed to get link eth0\"), §0";

/// sbr `table`: a source rule to table 500 and no routes moved.
fn sbr_rule_to_table_500(w: &World) -> Vec<String> {
    let rules = w.c(0).must(&["ip", "-4", "rule", "show"]);
    if rules.contains("lookup 500") {
        vec![]
    } else {
        vec![format!("no rule to table 500: {rules}")]
    }
}

/// sbr `gateways`: the per-interface table's default route goes via the configured gateway (.254).
fn sbr_default_via_254(w: &World) -> Vec<String> {
    let routes = w.c(0).must(&["ip", "-4", "route", "show", "table", "100"]);
    if routes.lines().any(|l| l.starts_with("default via ") && l.contains(".254 ")) {
        vec![]
    } else {
        vec![format!("table 100 has no default via the configured gateway: {routes}")]
    }
}

/// bridge `disableContainerInterface`: the container end exists and is down.
fn container_end_down(w: &World) -> Vec<String> {
    match w.c(0).link("eth0") {
        None => vec!["no container eth0".into()],
        Some(l) if l["flags"].as_array().is_some_and(|f| f.iter().any(|x| x == "UP")) => {
            vec![format!("disableContainerInterface: eth0 is up: {}", l["flags"])]
        }
        Some(_) => vec![],
    }
}

/// macvlan `linkInContainer`: eth0 is a macvlan whose parent is the container's own cmup0.
fn macvlan_on_container_master(w: &World) -> Vec<String> {
    let c = w.c(0);
    let Some(l) = c.link("eth0") else { return vec!["no container eth0".into()] };
    let mut out = vec![];
    if l["linkinfo"]["info_kind"] != "macvlan" {
        out.push(format!("eth0 is not a macvlan: {}", l["linkinfo"]));
    }
    // `ip -j` names the parent only when it is in the same netns
    if l["link"] != "cmup0" || c.link("cmup0").is_none() {
        out.push(format!("eth0's parent is not the container's cmup0: link {}", l["link"]));
    }
    out
}

/// host-device `hwaddr`: the device found by its MAC is the container's eth0.
fn host_device_in_container(w: &World) -> Vec<String> {
    let mut out = vec![];
    if w.host.link("cmhd0").is_some() {
        out.push("cmhd0 is still in the host netns".into());
    }
    match w.c(0).link("eth0") {
        Some(l) if l["address"] == HOST_DEVICE_MAC => {}
        other => out.push(format!("container eth0 is not the device with {HOST_DEVICE_MAC}: {other:?}")),
    }
    out
}

macro_rules! diff_tests {
    ($($name:ident => $case:expr;)*) => {
        $(
            #[test]
            fn $name() {
                run_case(&stringify!($name).chars().filter(|c| c.is_ascii_alphanumeric()).take(8).collect::<String>(), $case);
            }
        )*
        /// Every case of this table (tests/keys.rs checks what they exercise).
        pub fn table_cases() -> Vec<Case> {
            vec![$($case),*]
        }
    };
}

diff_tests! {
    bridge_l2 => Case {
        oracle_check_bug: Some("bridge CHECK calls IPAM CHECK with an empty ipam type in L2 mode (§2.2)"),
        ..veth("bridge-l2.json")
    };
    bridge_v4 => veth("bridge-v4.json");
    bridge_v4_gateway => veth("bridge-v4-gateway.json");
    bridge_v4_default_gw => veth("bridge-v4-default-gw.json");
    bridge_v6 => veth("bridge-v6.json");
    bridge_dual => veth("bridge-dual.json");
    bridge_mtu_hairpin => veth("bridge-mtu-hairpin.json");
    bridge_promisc => veth("bridge-promisc.json");
    bridge_enabledad => veth("bridge-enabledad.json");
    bridge_mac_runtime => Case { keep_mac: Some("0a:58:c6:12:00:05"), ..veth("bridge-mac-runtime.json") };
    bridge_mac_cniargs => Case {
        cni_args: Some("IgnoreUnknown=1;MAC=0a:58:c6:12:00:06"),
        keep_mac: Some("0a:58:c6:12:00:06"),
        ..veth("bridge-mac-cniargs.json")
    };
    bridge_force_address => Case { setup: Setup::BridgeWithAddr, ..veth("bridge-force-address.json") };
    bridge_conflict_noforce => Case { setup: Setup::BridgeWithAddr, ..case("bridge-conflict-noforce.json") };
    bridge_routes => veth("bridge-routes.json");
    bridge_range_bounds => veth("bridge-range-bounds.json");
    bridge_multi_range => veth("bridge-multi-range.json");
    bridge_two_v4_sets => Case { del_of_refused_config_succeeds: true, ..veth("bridge-two-v4-sets.json") };
    bridge_static => Case { ipam_dns_kept: true, ..veth("bridge-static.json") };
    bridge_dns => veth("bridge-dns.json");
    ptp_v4 => veth("ptp-v4.json");
    ptp_v6 => veth("ptp-v6.json");
    ptp_dual_mtu => veth("ptp-dual-mtu.json");
    ptp_static => veth("ptp-static.json");
    ptp_ipmasq_v4 => Case { rules: true, ..veth("ptp-ipmasq-v4.json") };
    ptp_ipmasq_v6 => Case { rules: true, ..veth("ptp-ipmasq-v6.json") };
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
    static_args_ips => case("static-args-ips.json");
    host_local_runtime => veth("host-local-runtime.json");
    bridge_masq => veth("bridge-masq.json");
    bridge_args_mac => Case { keep_mac: Some("0a:58:c6:12:00:07"), ..veth("bridge-args-mac.json") };
    bridge_l2_isolated => Case {
        oracle_check_bug: Some("bridge CHECK calls IPAM CHECK with an empty ipam type in L2 mode (§2.2)"),
        newer: &[
            (TXQLEN_DEFAULT, VETH_TXQLEN_WHY),
            (VETH_HOST_TXQLEN, VETH_TXQLEN_WHY),
            ("/info_slave_data/isolated: false != true", "portIsolation is newer than the oracle (v1.5.0)"),
        ],
        ..case("bridge-l2-isolated.json")
    };
    bridge_l2_disabled => Case {
        oracle_lacks: Some("disableContainerInterface is newer than the oracle (v1.5.0), which leaves eth0 up"),
        ours_check: Some(container_end_down),
        ..case("bridge-l2-disabled.json")
    };
    ptp_dns => veth("ptp-dns.json");
    macvlan_private => Case {
        setup: Setup::Uplink,
        cni_args: Some("IgnoreUnknown=1;MAC=0a:58:c6:12:00:23"),
        keep_mac: Some("0a:58:c6:12:00:23"),
        newer: &[(TXQLEN_DEFAULT, TXQLEN_DEFAULT_WHY)],
        ..case("macvlan-private.json")
    };
    macvlan_mac => Case {
        setup: Setup::Uplink,
        keep_mac: Some("0a:58:c6:12:00:21"),
        newer: &[
            ("/eth0/linkinfo/info_data/bcqueuelen: 1000 != 100", "bcqueuelen is newer than the oracle (v1.6.0)"),
            ("/eth0/linkinfo/info_data/usedbcqueuelen: 1000 != 100", "bcqueuelen is newer than the oracle (v1.6.0)"),
            (TXQLEN_DEFAULT, TXQLEN_DEFAULT_WHY),
        ],
        ..case("macvlan-mac.json")
    };
    macvlan_runtime_mac => Case {
        setup: Setup::Uplink,
        keep_mac: Some("0a:58:c6:12:00:22"),
        newer: &[(TXQLEN_DEFAULT, TXQLEN_DEFAULT_WHY)],
        ..case("macvlan-runtime-mac.json")
    };
    macvlan_in_container => Case {
        setup: Setup::UplinkInContainer,
        oracle_lacks: Some("linkInContainer is newer than the oracle (v1.4.0): it looks for the master on the host"),
        ours_check: Some(macvlan_on_container_master),
        ..case("macvlan-in-container.json")
    };
    host_device_name => Case {
        setup: Setup::HostDevice,
        keep_mac: Some(HOST_DEVICE_MAC),
        oracle_second_del_bug: Some(HOST_DEVICE_SECOND_DEL),
        newer: &[(HOST_DEVICE_ALIAS, HOST_DEVICE_ALIAS_WHY)],
        ..case("host-device-name.json")
    };
    host_device_hwaddr => Case {
        setup: Setup::HostDevice,
        keep_mac: Some(HOST_DEVICE_MAC),
        oracle_second_del_bug: Some(HOST_DEVICE_SECOND_DEL),
        newer: &[(HOST_DEVICE_ALIAS, HOST_DEVICE_ALIAS_WHY)],
        ours_check: Some(host_device_in_container),
        ..case("host-device-hwaddr.json")
    };
    chain_tuning => Case {
        keep_mac: Some("0a:58:c6:12:00:41"),
        newer: &[
            ("/eth0/txqlen: only on the right: 500", "tuning txQLen is newer than the oracle (v1.2.0)"),
            (VETH_HOST_TXQLEN, VETH_TXQLEN_WHY),
        ],
        ..case("chain-tuning.json")
    };
    chain_tuning_args => Case {
        keep_mac: Some("0a:58:c6:12:00:42"),
        oracle_lacks: Some("Debian 1.1.1 tuning panics on args.cni (nil pointer at tuning.go:396, exit 2)"),
        ours_check: Some(tuning_from_args),
        ..case("chain-tuning-args.json")
    };
    chain_tuning_runtime_mac => Case { keep_mac: Some("0a:58:c6:12:00:43"), ..veth("chain-tuning-runtime-mac.json") };
    chain_tuning_cniargs_mac => Case {
        cni_args: Some("IgnoreUnknown=1;MAC=0a:58:c6:12:00:44"),
        keep_mac: Some("0a:58:c6:12:00:44"),
        ..veth("chain-tuning-sysctl.json")
    };
    chain_sbr => Case { oracle_check_bug: Some(SBR_CHECK), oracle_second_del_bug: Some(SBR_DEL), ..veth("chain-sbr.json") };
    chain_sbr_table => Case {
        oracle_check_bug: Some(SBR_CHECK),
        oracle_second_del_bug: Some(SBR_DEL),
        newer: &[
            (TXQLEN_DEFAULT, VETH_TXQLEN_WHY),
            (VETH_HOST_TXQLEN, VETH_TXQLEN_WHY),
            ("dev eth0 table 100: only on the left", "sbr `table` is newer than the oracle (v1.6.0), which moves the routes"),
            ("dev eth0 table main: only on the right", "sbr `table` is newer than the oracle (v1.6.0): routes stay in main"),
        ],
        ours_check: Some(sbr_rule_to_table_500),
        ..case("chain-sbr-table.json")
    };
    chain_sbr_gateways => Case {
        oracle_check_bug: Some(SBR_CHECK),
        oracle_second_del_bug: Some(SBR_DEL),
        newer: &[
            (TXQLEN_DEFAULT, VETH_TXQLEN_WHY),
            (VETH_HOST_TXQLEN, VETH_TXQLEN_WHY),
            ("dev eth0 table main: only on the right", "addSourceHints is newer than the oracle: the subnet route stays in main"),
            ("dev eth0 table 100/gateway: ", "sbr `gateways` is newer than the oracle, which uses the prevResult's gateway"),
        ],
        ours_check: Some(sbr_default_via_254),
        ..case("chain-sbr-gateways.json")
    };
    chain_bandwidth => Case {
        newer: &[
            (
                "ifalias: only on the right: \"cni bandwidth net=",
                "deliberate: ours labels its ifb with the network and container (GC finds only its own ifbs)",
            ),
            // the host end: the kernel gives a noqueue device with txqueuelen 0 its default queue
            // length when bandwidth attaches its tbf, so both implementations have 1000 there
            (TXQLEN_DEFAULT, VETH_TXQLEN_WHY),
        ],
        ..case("chain-bandwidth.json")
    };
    chain_bandwidth_runtime => Case {
        newer: &[
            (
                "ifalias: only on the right: \"cni bandwidth net=",
                "deliberate: ours labels its ifb with the network and container (GC finds only its own ifbs)",
            ),
            // the host end: the kernel gives a noqueue device with txqueuelen 0 its default queue
            // length when bandwidth attaches its tbf, so both implementations have 1000 there
            (TXQLEN_DEFAULT, VETH_TXQLEN_WHY),
        ],
        ..case("chain-bandwidth-runtime.json")
    };
    chain_portmap => Case {
        setup: Setup::MarkChain,
        oracle_check_bug: Some("Debian 1.1.1 portmap CHECK looks for an IPv6 DNAT chain its ADD never made for a v4-only pod"),
        ..veth("chain-portmap.json")
    };
    chain_portmap_markmasq => Case {
        rules: true,
        oracle_check_bug: Some("Debian 1.1.1 portmap CHECK looks for an IPv6 DNAT chain its ADD never made for a v4-only pod"),
        ..veth("chain-portmap-markmasq.json")
    };
    chain_firewall => veth("chain-firewall.json");
}

/// Cases that need kernel features this machine lacks (ipvlan, 8021q, vrf, bridge VLAN
/// filtering): the module name puts them in `make test-vm` (scripts/test-vm.sh runs the tests
/// matching `iface_vm` in a VM with Debian's stock kernel) and out of `make test-cargo`.
mod iface_vm {
    use super::*;

    const IPVLAN: &[&str] = &["link", "cmprobeu", "type", "ipvlan"];
    const VLAN: &[&str] = &["link", "cmprobeu", "type", "vlan", "id", "7"];
    const VRF: &[&str] = &["type", "vrf", "table", "4242"];
    const BRIDGE_VLAN: &[&str] = &["type", "bridge", "vlan_filtering", "1"];
    /// The VM emulates its CPU (no KVM here), so its cases run at two versions only: 0.3.1 for the
    /// pre-1.0 result shape, 1.0.0 for the current one and CHECK. Every other version is covered on
    /// the host by the cases above, whose code paths do not depend on the link kind.
    const VM_VERSIONS: &[&str] = &["0.3.1", "1.0.0"];
    const LINK_IN_CONTAINER: &str =
        "linkInContainer is newer than the oracle (v1.4.0): it looks for the master on the host";

    /// ipvlan/vlan `linkInContainer`: eth0's parent is the container's own cmup0.
    fn parent_in_container(w: &World) -> Vec<String> {
        let c = w.c(0);
        match c.link("eth0") {
            Some(l) if l["link"] == "cmup0" && c.link("cmup0").is_some() => vec![],
            other => vec![format!("eth0's parent is not the container's cmup0: {other:?}")],
        }
    }

    /// `bridge vlan show` of the host netns, as text.
    fn port_vlans(w: &World) -> String {
        w.host.must(&["bridge", "vlan", "show"])
    }

    /// bridge `vlan` + `preserveDefaultVlan`: the port has PVID 10 and keeps VLAN 1.
    fn access_vlan_and_default(w: &World) -> Vec<String> {
        let v = port_vlans(w);
        let port: Vec<&str> = v.lines().filter(|l| !l.contains("cmbr0")).collect();
        let text = port.join("\n");
        let mut out = vec![];
        if !text.contains("10 PVID") {
            out.push(format!("no access VLAN 10 (PVID) on the port: {v}"));
        }
        if !port.iter().any(|l| l.split_whitespace().any(|t| t == "1")) {
            out.push(format!("preserveDefaultVlan: VLAN 1 left the port: {v}"));
        }
        out
    }

    /// bridge `vlanTrunk`: VLANs 20 and 30-32 tagged on the port.
    fn trunk_vlans(w: &World) -> Vec<String> {
        let v = port_vlans(w);
        let ids: Vec<&str> = v.lines().filter(|l| !l.contains("cmbr0")).flat_map(|l| l.split_whitespace()).collect();
        ["20", "30", "31", "32"]
            .iter()
            .filter(|id| !ids.contains(id))
            .map(|id| format!("VLAN {id} missing on the port: {v}"))
            .collect()
    }

    /// vrf: eth0 is enslaved to cmvrf0, whose table is 1042.
    fn in_vrf_1042(w: &World) -> Vec<String> {
        let c = w.c(0);
        let mut out = vec![];
        if c.link("eth0").map(|l| l["master"].clone()) != Some(Value::from("cmvrf0")) {
            out.push(format!("eth0 is not in cmvrf0: {:?}", c.link("eth0")));
        }
        if c.link("cmvrf0").map(|l| l["linkinfo"]["info_data"]["table"].clone()) != Some(Value::from(1042)) {
            out.push(format!("cmvrf0 table is not 1042: {:?}", c.link("cmvrf0")));
        }
        out
    }

    diff_tests! {
        ipvlan_l3 => Case {
            setup: Setup::Uplink,
            versions: VM_VERSIONS,
            needs: Some(IPVLAN),
            newer: &[(TXQLEN_DEFAULT, TXQLEN_DEFAULT_WHY)],
            ..case("ipvlan-l3.json")
        };
        ipvlan_in_container => Case {
            setup: Setup::UplinkInContainer,
            versions: VM_VERSIONS,
            needs: Some(IPVLAN),
            oracle_lacks: Some(LINK_IN_CONTAINER),
            ours_check: Some(parent_in_container),
            ..case("ipvlan-in-container.json")
        };
        vlan => Case {
            setup: Setup::Uplink,
            versions: VM_VERSIONS,
            needs: Some(VLAN),
            newer: &[(TXQLEN_DEFAULT, TXQLEN_DEFAULT_WHY)],
            ..case("vlan.json")
        };
        vlan_in_container => Case {
            setup: Setup::UplinkInContainer,
            versions: VM_VERSIONS,
            needs: Some(VLAN),
            oracle_lacks: Some(LINK_IN_CONTAINER),
            ours_check: Some(parent_in_container),
            ..case("vlan-in-container.json")
        };
        chain_vrf => Case {
            versions: VM_VERSIONS,
            needs: Some(VRF),
            oracle_check_bug: Some(ROUTES_MOVED_CHECK),
            ours_check: Some(in_vrf_1042),
            ..veth("chain-vrf.json")
        };
        bridge_vlan => Case {
            versions: VM_VERSIONS,
            needs: Some(BRIDGE_VLAN),
            ours_check: Some(access_vlan_and_default),
            ..veth("bridge-vlan.json")
        };
        bridge_vlan_trunk => Case {
            versions: VM_VERSIONS,
            needs: Some(BRIDGE_VLAN),
            oracle_check_bug: Some("bridge CHECK calls IPAM CHECK with an empty ipam type in L2 mode (§2.2)"),
            newer: &[
                ("/cmbr0/linkinfo/info_data/vlan_filtering: 0 != 1", "vlanTrunk is newer than the oracle (v1.2.0)"),
                (TXQLEN_DEFAULT, VETH_TXQLEN_WHY),
                (VETH_HOST_TXQLEN, VETH_TXQLEN_WHY),
            ],
            ours_check: Some(trunk_vlans),
            ..case("bridge-vlan-trunk.json")
        };
    }
}

/// Every differential case, on this host and in the VM (tests/keys.rs checks that every
/// documented key is exercised by one of them or by a behaviour case, and that every testdata
/// file is run).
pub fn cases() -> Vec<Case> {
    assert!(VERSIONS.len() >= 4);
    let mut v = table_cases();
    v.extend(iface_vm::table_cases());
    v
}

/// Where the oracle leaks and ours must not (docs/differences.md): after ADD with ipMasq
/// (bridge-masq.json, IPv4 only, iptables backend) and a DEL whose netns is already gone, ours
/// leaves no masquerade chain and no ip6 nat table; the oracle's leftovers are printed.
#[test]
fn ipmasq_del_without_netns_leaves_no_chain_and_no_ip6_nat() {
    let mut leaks = vec![];
    for imp in [Impl::Reference, Impl::Ours] {
        let mut w = World::new("masqgone", 1, imp);
        w.host_nodad();
        let s = Subnets::alloc();
        let conf = load("bridge-masq.json", &vars(&w, &s, "net-masqgone"), "1.0.0");
        w.add(&conf).run().ok();
        let path = w.c(0).path_str();
        w.containers[0].delete();
        w.del(&conf).netns_path(&path).run().ok();
        let v4 = w.host.must(&["iptables-save", "-t", "nat"]);
        let v6 = w.host.must(&["ip6tables-save"]);
        let chains: Vec<&str> = v4.lines().filter(|l| l.starts_with(":CNI-")).collect();
        let ip6_nat = v6.lines().any(|l| l == "*nat");
        eprintln!("{}: masquerade chains left {chains:?}, ip6 nat table {ip6_nat}", imp.label());
        if imp.flavor() == Flavor::CniMulti {
            assert!(chains.is_empty(), "ours left masquerade chains after a netns-less DEL:\n{v4}");
            assert!(!ip6_nat, "ours made an ip6 nat table for a v4-only network:\n{v6}");
        } else {
            leaks.push((chains.len(), ip6_nat));
        }
    }
    eprintln!("the oracle leaks (chains, ip6 nat): {leaks:?}");
}

/// Where the oracle leaves something and ours must not (docs/differences.md): portmap (iptables,
/// no backend key) of an IPv4-only pod, ADD then DEL. The reference's DEL opens both families'
/// iptables and lists `nat OUTPUT`, which makes an empty `ip6 nat` table; ours touches only the
/// families the mappings need. The oracle's leftover is printed.
#[test]
fn portmap_v4_del_leaves_no_ip6_nat() {
    let mut seen = vec![];
    for imp in [Impl::Reference, Impl::Ours] {
        if imp.flavor() != Flavor::CniMulti && !have_reference("portmap") {
            continue;
        }
        let w = World::new("pmnat6", 1, imp);
        w.host_nodad();
        let s = Subnets::alloc();
        let net = load("bridge-v4.json", &vars(&w, &s, "net-pmnat6"), "1.0.0");
        let prev = w.add(&net).run().ok();
        let mut pm = serde_json::json!({
            "cniVersion": "1.0.0", "name": "net-pmnat6", "type": "portmap",
            "capabilities": {"portMappings": true},
            "runtimeConfig": {"portMappings": [{"hostPort": 18090, "containerPort": 80, "protocol": "tcp"}]},
        });
        pm["prevResult"] = prev;
        w.add(&pm).run().ok();
        let v4 = w.host.must(&["iptables-save", "-t", "nat"]);
        assert!(v4.contains("--dport 18090"), "{} made no DNAT rule:\n{v4}", imp.label());
        w.del(&pm).run().ok();
        w.del(&net).run().ok();
        let v6 = w.host.must(&["ip6tables-save"]);
        let ip6_nat = v6.lines().any(|l| l == "*nat");
        eprintln!("{}: ip6 nat table after DEL: {ip6_nat}", imp.label());
        if imp.flavor() == Flavor::CniMulti {
            assert!(!ip6_nat, "ours made an ip6 nat table for a v4-only pod:\n{v6}");
        }
        seen.push((imp.label(), ip6_nat));
    }
    eprintln!("ip6 nat after DEL: {seen:?}");
}
