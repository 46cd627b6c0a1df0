//! Entry points for the cargo-fuzz targets in `fuzz/` and for `tests/fuzz_replay.rs`, which
//! replays the corpus in `testdata/fuzz/` deterministically. Not an API: every function takes
//! arbitrary bytes, runs one parser/decoder (and the code that consumes its output) and must
//! return without panicking, whatever the input. A few also assert properties that must hold
//! for any input (a result printed for a version parses back to the same text).
//!
//! Nothing here touches the kernel or the file system.

use crate::cni::plugin::{Doc, Kind, Plugin, Version};
use crate::cni::{config, env, io, result::CniResult, Command, Ctx};
use crate::firewall::{conntrack, iptables, iptables_nft, nft, portmap};
use crate::ipam::{host_local, static_, store};
use crate::netlink::{addr, kinds, link, route, rule, wire};

/// Every spec version a result can be printed in (plus one that is not a version).
const VERSIONS: &[&str] = &["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0", "9.9.9"];

/// Split `data` at the first newline: (first line, rest).
fn split_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => (data.get(..i).unwrap_or(&[]), data.get(i + 1..).unwrap_or(&[])),
        None => (&[], data),
    }
}

fn ok_add(ctx: &Ctx) -> anyhow::Result<CniResult> {
    // the IPAM config readers run on every config; their errors are fine, panics are not
    let _ = host_local::load_conf(ctx);
    let _ = static_::load_conf(ctx);
    let _ = crate::plugins::steps::link::requested_mac(ctx);
    let _ = crate::plugins::steps::ipam::conf_dns(ctx);
    Ok(ctx.prev_result.clone().unwrap_or_default())
}

fn ok_verb(ctx: &Ctx) -> anyhow::Result<()> {
    ok_add(ctx).map(|_| ())
}

/// A plugin that only reads its config: the protocol layer runs for real up to the verb.
static FUZZ_APPLET: Plugin = Plugin {
    name: "fuzz",
    about: "fuzz",
    min_version: Version::new(0, 1, 0),
    cni_args: Some(&["IP", "MAC", "GATEWAY", "K8S_POD_NAME"]),
    add: ok_add,
    del: ok_verb,
    check: ok_verb,
    gc: Some(ok_verb),
    status: Some(ok_verb),
    subcommands: &[],
    doc: &Doc { kind: Kind::Meta, summary: "", section: "", keys: &[], notes: &[], example: "{}", config: None },
};

/// One network config (or conflist): fold-parse, name and version checks, version gate,
/// CNI_ARGS, prevResult, the IPAM config readers, and printing the result in the config's
/// version. Input: the first line is CNI_ARGS, the rest is stdin. A conflist's plugins are each
/// run the way libcni injects `name` and `cniVersion` into them.
pub fn config(data: &[u8]) {
    let (args, stdin) = split_line(data);
    let args = String::from_utf8_lossy(args).into_owned();
    let _ = config::parse_raw(stdin);
    run_conf(stdin, &args, Command::Add);
    // portmap's nft-syntax conditions, parsed for both families whatever the plugin type
    if let Ok(v) = config::parse_folded(stdin) {
        for (key, v6) in [("conditionsv4", false), ("conditionsv6", true)] {
            if let Some(list) = v.get(key).and_then(|c| c.as_array()) {
                let conds: Vec<String> = list.iter().filter_map(|c| c.as_str().map(str::to_string)).collect();
                let _ = crate::firewall::nft::cond::parse(&conds, v6);
            }
        }
    }
    let Ok(v) = config::parse_folded(stdin) else { return };
    if let Some(plugins) = v.get("plugins").and_then(|p| p.as_array()) {
        for p in plugins.iter().take(8) {
            let mut p = p.clone();
            if let Some(o) = p.as_object_mut() {
                if let Some(n) = v.get("name") {
                    o.insert("name".into(), n.clone());
                }
                if let Some(cv) = v.get("cniversion") {
                    o.insert("cniVersion".into(), cv.clone());
                }
            }
            if let Ok(bytes) = serde_json::to_vec(&p) {
                run_conf(&bytes, &args, Command::Check);
            }
        }
    }
}

fn run_conf(stdin: &[u8], args: &str, command: Command) {
    let Ok(conf) = config::parse_folded(stdin) else { return };
    // `log` would make the logger open a file named by the input
    let mut conf = conf;
    if let Some(o) = conf.as_object_mut() {
        o.remove("log");
    }
    let Ok(name) = config::validate_name(&conf) else { return };
    let Ok(version) = config::config_version(&conf) else { return };
    let mut ctx = Ctx {
        command,
        container_id: "fuzz-container".into(),
        netns: None,
        ifname: "eth0".into(),
        args: Vec::new(),
        raw_args: args.to_string(),
        path: Vec::new(),
        stdin: stdin.to_vec(),
        spec: version.parse().ok(),
        conf,
        version,
        name,
        prev_result: None,
        plugins: crate::cni::plugin::no_plugins,
        netns_override: false,
    };
    let _ = ctx.valid_attachments();
    let _ = ctx.raw_conf();
    match io::prepare(&FUZZ_APPLET, &mut ctx) {
        Ok(true) => {}
        _ => return,
    }
    let Ok(prev) = config::prev_result(&ctx.conf, &ctx.version) else { return };
    ctx.prev_result = prev;
    if let Ok(Some(r)) = io::invoke(&FUZZ_APPLET, &ctx) {
        let _ = r.to_json(&ctx.version);
    }
}

/// A result of any version: parse it as the version chosen by the first byte, print it in
/// every version, and check that each printed text parses back and prints the same again.
pub fn result(data: &[u8]) {
    let Some((&sel, body)) = data.split_first() else { return };
    let ver = VERSIONS.get(usize::from(sel) % VERSIONS.len()).copied().unwrap_or("1.0.0");
    let Ok(r) = CniResult::from_slice(body, ver) else { return };
    for v in VERSIONS {
        let Ok(text) = r.to_json(v) else { continue };
        let back = match CniResult::from_slice(text.as_bytes(), v) {
            Ok(b) => b,
            Err(e) => panic!("result printed for {v} does not parse back: {e:?}\n{text}"),
        };
        match back.to_json(v) {
            Ok(again) => assert_eq!(text, again, "printing for {v} is not stable"),
            Err(e) => panic!("re-parsed result cannot be printed for {v}: {e:?}\n{text}"),
        }
    }
}

/// CNI_ARGS and the other environment values: strict and lenient CNI_ARGS parsing, the
/// whole environment reader, ifname/container id validation, CNI_PATH.
pub fn cni_args(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    let strict = env::parse_args_strict(&s, &["IP", "MAC", "K8S_POD_NAME", "GATEWAY"]);
    if let Ok(pairs) = &strict {
        for (k, _) in pairs {
            assert!(!k.contains(';'), "a parsed key holds the pair separator");
        }
    }
    let lenient = env::parse_args_lenient(&s);
    for (k, _) in &lenient {
        assert!(!k.is_empty() && !k.contains(';'), "lenient parse yielded key {k:?}");
    }
    let _ = env::validate_ifname(&s);
    let _ = env::validate_link_name(&s);
    let _ = env::validate_container_id(&s);
    let _ = env::split_path(&s);
    let _ = env::parse_command(&s);
    let parts: Vec<&str> = s.splitn(6, '\n').collect();
    let get = |k: &str| -> Option<String> {
        let i = match k {
            "CNI_COMMAND" => 0,
            "CNI_CONTAINERID" => 1,
            "CNI_NETNS" => 2,
            "CNI_IFNAME" => 3,
            "CNI_ARGS" => 4,
            "CNI_PATH" => 5,
            _ => return None,
        };
        parts.get(i).map(|p| p.to_string())
    };
    let _ = env::read(&get);
}

/// The host-local store reader: a file name (first line) and a file's content (the rest),
/// read as a reservation and as `last_reserved_ip.N`.
pub fn store(data: &[u8]) {
    let (name, content) = split_line(data);
    let name = String::from_utf8_lossy(name);
    if let Some(ip) = store::parse_ip_file_name(&name) {
        assert_eq!(store::ip_file_name(ip), name, "a file name parses to an address that names another file");
    }
    let _ = store::validate_network_name(&name);
    let _ = store::validate_data_dir(std::path::Path::new(&*name));
    let owner = store::Owner::parse(content);
    if let store::Owner::Attachment { id, ifname } = &owner {
        assert!(owner.is(id, ifname), "an owner read from a file does not match itself");
    }
    let _ = owner.is("fuzz", "eth0");
    let _ = owner.is_legacy_of("fuzz");
    let _ = std::str::from_utf8(content).ok().map(|t| t.trim().parse::<std::net::IpAddr>());
}

/// rtnetlink reply decoders: the first byte picks the message kind, the rest is the payload
/// after the netlink header.
pub fn netlink(data: &[u8]) {
    let Some((&sel, p)) = data.split_first() else { return };
    match sel % 8 {
        0 => drop(link::parse_link(p)),
        1 => drop(addr::parse_addr(p)),
        2 => drop(route::parse_route(p)),
        3 => drop(rule::parse_rule(p)),
        4 => drop(kinds::parse_details(p)),
        5 => drop(link::parse_bridge_vlans(p)),
        6 => {
            for (_, b) in wire::attrs(p) {
                let _ = (wire::get_u8(b), wire::get_u16(b), wire::get_u32(b), wire::get_i32(b));
                let _ = (wire::get_str(b), wire::get_ip(b));
            }
        }
        _ => {
            // every decoder on the same bytes
            let _ = (link::parse_link(p), addr::parse_addr(p), route::parse_route(p), rule::parse_rule(p));
        }
    }
}

/// nftables/conntrack decoders (one datagram split into messages, errors with ext-ack, tables,
/// chains, rules and their expressions) and the iptables-save text parsers.
pub fn nftables(data: &[u8]) {
    let Some((&sel, p)) = data.split_first() else { return };
    let family = sel >> 3;
    match sel % 4 {
        0 => {
            for m in wire::split(p) {
                let _ = wire::parse_error(&m);
                let _ = nft::decode::decode_table(family, m.body);
                let _ = nft::decode::decode_chain(family, m.body);
                let (r, complete) = nft::decode::decode_rule_checked(family, m.body);
                // iptables-nft's rules rendered as iptables-save prints them
                let _ = iptables_nft::render_checked(&r.chain, &r.exprs, complete, family == 10);
                let _ = conntrack::decode_entry(family, m.body);
            }
        }
        1 => {
            let _ = nft::decode::decode_rule(family, p);
            let _ = nft::decode::decode_expr(p);
            let _ = nft::decode::udata_comment(p);
            for (_, b) in wire::attrs(p) {
                let _ = nft::decode::decode_expr(b);
            }
        }
        2 => {
            let _ = conntrack::decode_entry(family, p);
            let _ = conntrack::decode_tuple(p);
            let _ = nft::decode::decode_chain(family, p);
            let _ = nft::decode::decode_table(family, p);
        }
        _ => {
            let text = String::from_utf8_lossy(p);
            let st = iptables::parse_save(&text);
            let _ = portmap::parse_nat(&text);
            let v6 = family & 1 == 1;
            for line in text.lines().take(64) {
                let args = iptables::split_args(line);
                // restore input lines, as the native iptables-nft writer parses and encodes them
                if let Ok(r) = iptables_nft::write::parse(args.get(2..).unwrap_or_default(), v6) {
                    let _ = iptables_nft::write::encode(&r, v6);
                }
            }
            // a whole restore input planned against the read state (as if read natively)
            let handles = iptables_nft::Handles {
                rules: (0..st.rules.len() as u64).collect(),
                in_kernel: st.chains.clone(),
                ..Default::default()
            };
            let _ = iptables_nft::write::plan(v6, &iptables::NatState { native: Some(handles), ..st }, &text);
        }
    }
}

/// One fuzz entry point.
pub type Target = fn(&[u8]);

/// Target name → entry point, for the replay test.
pub const TARGETS: &[(&str, Target)] = &[
    ("config", config),
    ("result", result),
    ("cni_args", cni_args),
    ("store", store),
    ("netlink", netlink),
    ("nftables", nftables),
    ("re2", re2),
];

/// tuning's allowlist matcher (`re2`): line 1 = a pattern (an allowlist line), rest = a sysctl
/// key to match. Compiling either succeeds or says why; matching answers; a key of up to 1000
/// characters (without `\E`) quoted with `\Q…\E` always matches itself.
pub fn re2(data: &[u8]) {
    let (pattern, text) = split_line(data);
    let (pattern, text) = (String::from_utf8_lossy(pattern), String::from_utf8_lossy(text));
    if let Ok(re) = crate::re2::Regex::new(&pattern) {
        let _ = re.is_match(&text);
    }
    if !text.contains("\\E") && text.chars().count() <= 1000 {
        let literal = crate::re2::Regex::new(&format!("\\Q{text}\\E"));
        assert!(literal.is_ok_and(|re| re.is_match(&text)), "\\Q{text:?}\\E does not match itself");
    }
}
