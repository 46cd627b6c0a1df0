//! tuning: sysctls and link attributes of the container interface (checklist §2.14).
//!
//! ADD (chained; needs prevResult): write each `net.*` sysctl inside the container netns (key
//! `IFNAME` → CNI_IFNAME, after dots became slashes), save the attributes about to change to
//! `<dataDir>/<containerID>_<ifname>.json`, then set mac / promisc / mtu / allmulti / txQLen and
//! report the new MAC in the result. DEL restores the saved attributes (sysctls are not restored,
//! as the reference). CHECK compares everything configured. GC removes saved-state files of this
//! network's attachments not in `cni.dev/valid-attachments`: the file records the network that
//! wrote it (`network`, a key the reference ignores), since dataDir is shared between networks
//! and the file name holds none.

use super::steps::{self, NsOrGone, Undo};
use crate::cni::plugin::{acni, arg, cap, config_fields, k, Doc, Kind, Plugin, Version};
use crate::cni::{CniError, CniResult, Ctx};
use crate::netlink::link::{format_hw_addr, parse_hwaddr};
use crate::netlink::socket::Netlink;
use crate::sys::go_errno;
use anyhow::{bail, Context, Result};
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

pub const APPLET: Plugin = Plugin {
    name: "tuning",
    about: "sysctls and link attributes (mac, mtu, promisc, allmulti, txQLen) of the container interface",
    min_version: Version::new(0, 1, 0),
    cni_args: Some(&["MAC"]),
    add,
    del,
    check,
    gc: Some(gc),
    status: None,
    subcommands: &[],
    doc: &DOC,
};

pub const DOC: Doc = Doc {
    kind: Kind::Meta,
    summary: "Changes sysctls and link attributes of CNI_IFNAME in the container. Link attributes \
              are saved on ADD and restored on DEL (sysctls are not).",
    section: "",
    keys: &[
        k("sysctl", "object", "{}", "sysctl name (dotted, under net.) to value; IFNAME in a name is replaced"),
        k(
            "mac",
            "string",
            "",
            "MAC address, in any form Go's net.ParseMAC takes (`02:aa:bb:cc:dd:ee`, `02aa.bbcc.ddee`)",
        ),
        k("mtu", "int", "", "MTU"),
        k("promisc", "bool", "false", "promiscuous mode"),
        k("allmulti", "bool", "", "all-multicast mode"),
        k("txQLen", "int", "", "transmit queue length"),
        k("dataDir", "string", "\"/run/cni/tuning\"", "where the saved attributes are kept until DEL"),
        cap("mac", "string", "MAC address"),
        arg("MAC", "string", "MAC address"),
        acni("sysctl, mac, mtu, promisc, allmulti, txQLen", "as above", "override the config (args.cni wins)"),
    ],
    notes: &[
        "GC removes the backups this network's ADDs wrote for attachments not in `cni.dev/valid-attachments`. \
         A backup records its network (`\"network\"`, a key the reference ignores); one without it (written by \
         the reference or an older cni-multi) has no known owner and GC keeps it.",
        "When /etc/cni/tuning/allowlist.conf exists, every sysctl must match one of its lines, Go regexps \
             (RE2 syntax, searched for anywhere in the key; tried in order, each compiled when a key reaches it, \
             the first match winning; Unicode classes match ASCII characters only; see \
             docs/guides/meta-plugins.md).",
    ],
    example: r#"{
  "cniVersion": "1.0.0",
  "name": "tuned",
  "plugins": [
    {"type": "bridge", "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.1.6.0/24"}]]}},
    {"type": "tuning", "sysctl": {"net.core.somaxconn": "512"}, "mtu": 1400}
  ]
}"#,
    config: Some(config_fields::<Conf>),
};

pub const DEFAULT_DATA_DIR: &str = "/run/cni/tuning";
pub const ALLOWLIST_FILE: &str = "/etc/cni/tuning/allowlist.conf";

/// The effective settings after merging config, CNI_ARGS, runtimeConfig and args.cni.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Tuning {
    pub data_dir: PathBuf,
    /// (key as configured, value), in config order; args.cni entries override/append
    pub sysctl: Vec<(String, String)>,
    pub mac: Option<String>,
    pub promisc: bool,
    pub mtu: Option<u32>,
    pub allmulti: Option<bool>,
    pub txqlen: Option<u32>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct Conf {
    #[serde(rename = "datadir")]
    data_dir: Option<String>,
    mac: Option<String>,
    promisc: Option<bool>,
    mtu: Option<i64>,
    allmulti: Option<bool>,
    #[serde(rename = "txqlen")]
    txqlen: Option<i64>,
}

/// The saved attributes (the reference's backup file: only what this ADD changed), and the
/// network whose ADD wrote them (ours only: the reference's `configToRestore` ignores the key
/// when it reads the file, and writes none).
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct Backup {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub mac: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub promisc: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub mtu: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub allmulti: Option<bool>,
    #[serde(rename = "txQLen", skip_serializing_if = "Option::is_none", default)]
    pub txqlen: Option<u32>,
    /// the network of the ADD that wrote the file; absent (the reference's files, older
    /// cni-multi's): owner unknown, which GC never removes
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub network: Option<String>,
}

fn non_negative(what: &str, v: Option<i64>) -> Result<Option<u32>> {
    match v {
        None | Some(0) if what == "mtu" => Ok(None),
        None => Ok(None),
        Some(n) => u32::try_from(n).map(Some).map_err(|_| anyhow::anyhow!("invalid {what} {n}")),
    }
}

/// The `sysctl` object of the raw config (keys keep their case: they are file names). Go's
/// decoder matches the key `sysctl` case-insensitively, the last spelling wins.
fn sysctl_of(raw: &Value) -> Result<Vec<(String, String)>> {
    let obj = match raw {
        Value::Object(o) => o,
        _ => return Ok(Vec::new()),
    };
    let Some(v) = obj.iter().rev().find(|(k, _)| k.eq_ignore_ascii_case("sysctl")).map(|(_, v)| v) else {
        return Ok(Vec::new());
    };
    string_map(v).context("failed to load netconf: sysctl")
}

fn string_map(v: &Value) -> Result<Vec<(String, String)>> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                other => bail!("value of {k:?} must be a string, not {}", crate::cni::config::kind(other)),
            })
            .collect(),
        other => bail!("expected an object, got {}", crate::cni::config::kind(other)),
    }
}

/// `mtu` and `txQLen` as the merged config gives them (Go ints), before their range check.
#[derive(Debug, Default)]
struct GivenInts {
    mtu: Option<i64>,
    txqlen: Option<i64>,
}

/// The settings ADD and CHECK apply: the merged config ([`decode`]) with `mtu` and `txQLen`
/// checked against the kernel's range once every source is merged (a negative config `mtu`
/// that `args.cni.mtu` overrides is no error).
pub fn load(ctx: &Ctx) -> Result<Tuning> {
    let (mut t, given) = decode(ctx)?;
    t.mtu = non_negative("mtu", given.mtu)?;
    t.txqlen = non_negative("txQLen", given.txqlen)?;
    Ok(t)
}

/// Merge the config the reference's way: config < CNI_ARGS `MAC` < runtimeConfig.mac < args.cni.
/// Every key's JSON type is checked (the reference's decoding fails DEL too), no value's range:
/// DEL and GC use only `dataDir`, so an `mtu` or `txQLen` that ADD refuses does not fail them.
/// The returned [`Tuning`] has no `mtu` or `txqlen`; they are in the [`GivenInts`].
/// The backups' directory: `dataDir`, or the reference's default when absent or empty.
fn data_dir(given: Option<&str>) -> PathBuf {
    PathBuf::from(given.filter(|d| !d.is_empty()).unwrap_or(DEFAULT_DATA_DIR))
}

fn decode(ctx: &Ctx) -> Result<(Tuning, GivenInts)> {
    let c: Conf = ctx.plugin_conf()?;
    let raw = ctx.raw_conf()?;
    let mut t = Tuning {
        data_dir: data_dir(c.data_dir.as_deref()),
        sysctl: sysctl_of(&raw)?,
        mac: c.mac.filter(|m| !m.is_empty()),
        promisc: c.promisc.unwrap_or(false),
        mtu: None,
        allmulti: c.allmulti,
        txqlen: None,
    };
    let mut given = GivenInts { mtu: c.mtu, txqlen: c.txqlen };
    if let Some(m) = ctx.cni_arg("MAC").filter(|m| !m.is_empty()) {
        t.mac = Some(m.to_string());
    }
    if let Some(m) = ctx.runtime_config("mac").and_then(|v| v.as_str()).filter(|m| !m.is_empty()) {
        t.mac = Some(m.to_string());
    }
    if let Some(a) = ctx.get("args").and_then(|a| a.get("cni")) {
        let wrong = |k: &str| anyhow::anyhow!("failed to load netconf: args.cni.{k} has the wrong type");
        if let Some(v) = raw_args_cni_sysctl(&raw) {
            for (k, val) in string_map(v).context("failed to load netconf: args.cni.sysctl")? {
                match t.sysctl.iter_mut().find(|(have, _)| *have == k) {
                    Some(slot) => slot.1 = val,
                    None => t.sysctl.push((k, val)),
                }
            }
        }
        if let Some(v) = a.get("mac") {
            t.mac = Some(v.as_str().ok_or_else(|| wrong("mac"))?.to_string()).filter(|m| !m.is_empty());
        }
        if let Some(v) = a.get("promisc") {
            t.promisc = v.as_bool().ok_or_else(|| wrong("promisc"))?;
        }
        if let Some(v) = a.get("mtu") {
            given.mtu = Some(v.as_i64().ok_or_else(|| wrong("mtu"))?);
        }
        if let Some(v) = a.get("allmulti") {
            t.allmulti = Some(v.as_bool().ok_or_else(|| wrong("allmulti"))?);
        }
        if let Some(v) = a.get("txqlen") {
            given.txqlen = Some(v.as_i64().ok_or_else(|| wrong("txQLen"))?);
        }
    }
    Ok((t, given))
}

fn raw_args_cni_sysctl(raw: &Value) -> Option<&Value> {
    fn find<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
        v.as_object()?.iter().rev().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v)
    }
    let args = find(raw, "args")?;
    let cni = find(args, "cni")?;
    find(cni, "sysctl")
}

/// The reference rejects a config whose `sysctl` object names the same key twice.
pub fn reject_duplicate_sysctl_keys(stdin: &[u8]) -> Result<()> {
    struct Top;
    struct Keys;
    impl<'de> Visitor<'de> for Top {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a network configuration object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(k) = map.next_key::<String>()? {
                if k.eq_ignore_ascii_case("sysctl") {
                    map.next_value_seed(Keys)?;
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(())
        }
    }
    impl<'de> DeserializeSeed<'de> for Keys {
        type Value = ();
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }
    impl<'de> Visitor<'de> for Keys {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a sysctl object")
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut seen = BTreeSet::new();
            while let Some(k) = map.next_key::<String>()? {
                if !seen.insert(k) {
                    return Err(serde::de::Error::custom("duplicated sysctl keys are not allowed"));
                }
                map.next_value::<IgnoredAny>()?;
            }
            Ok(())
        }
    }
    let mut de = serde_json::Deserializer::from_slice(stdin);
    serde::Deserializer::deserialize_map(&mut de, Top).map_err(|e| {
        // the reference's message has no position (serde's " at line 1 column 142" is dropped)
        let text = e.to_string();
        let at = format!(" at line {} column {}", e.line(), e.column());
        anyhow::anyhow!("{}", text.strip_suffix(&at).unwrap_or(&text))
    })
}

/// `/proc/sys`-relative path of a configured key: dots become slashes, then the first `IFNAME`
/// becomes the interface name (so names containing dots survive). Only `net/…` is allowed.
pub fn sysctl_rel_path(key: &str, ifname: &str) -> Result<String> {
    let rel = key.replace('.', "/").replacen("IFNAME", ifname, 1);
    let clean: Vec<&str> = rel.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
    if clean.first() != Some(&"net") || clean.len() < 2 || clean.contains(&"..") {
        bail!("invalid net sysctl key: {rel:?}");
    }
    Ok(clean.join("/"))
}

/// With an allowlist file present, every configured key must match one of its lines, as the
/// reference's `validateSysctlConf` checks: the file is read whenever it exists (so a file that
/// cannot be read fails every ADD, sysctls or not), and each key is tried against the lines in
/// order, a line compiled only when a key reaches it and the first match winning. A line the
/// matcher refuses therefore fails only an ADD with a key that matches no line before it.
fn check_allowlist(t: &Tuning, file: &Path) -> Result<()> {
    use std::io::Read;
    let mut data = Vec::new();
    match std::fs::File::open(file) {
        Ok(mut f) => {
            f.read_to_end(&mut data).map_err(|e| anyhow::anyhow!("read {}: {}", file.display(), go_errno(&e)))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => bail!("open {}: {}", file.display(), go_errno(&e)),
    }
    // the reference's lines: split at '\n', trimmed, empty ones skipped; a line that is not
    // UTF-8 stays bytes (Go's regexp refuses it when it is reached)
    let lines: Vec<std::result::Result<&str, &[u8]>> = data
        .split(|&b| b == b'\n')
        .map(|l| std::str::from_utf8(l).map(str::trim).map_err(|_| l.trim_ascii()))
        .filter(|l| *l != Ok(""))
        .collect();
    let shown = |l: &std::result::Result<&str, &[u8]>| match l {
        Ok(s) => s.to_string(),
        Err(b) => String::from_utf8_lossy(b).into_owned(),
    };
    // Go's regexp syntax (RE2), as the reference's regexp.MatchString; a line the matcher does
    // not take is an invalid config that names the construct (the reference: 999 for RE2's errors)
    let compile = |l: &std::result::Result<&str, &[u8]>| -> Result<crate::re2::Regex> {
        let p = l.map_err(|_| {
            CniError::config(format!("error parsing regexp {:?} of {}: invalid UTF-8", shown(l), file.display()))
        })?;
        crate::re2::Regex::new(p)
            .map_err(|e| CniError::config(format!("error parsing regexp {p:?} of {}: {e}", file.display())).into())
    };
    let mut compiled: Vec<Option<crate::re2::Regex>> = lines.iter().map(|_| None).collect();
    for (key, _) in &t.sysctl {
        let mut allowed = false;
        for (line, slot) in lines.iter().zip(compiled.iter_mut()) {
            let re = match slot {
                Some(re) => re,
                None => slot.insert(compile(line)?),
            };
            if re.is_match(key) {
                allowed = true;
                break;
            }
        }
        if !allowed {
            let all: Vec<String> = lines.iter().map(shown).collect();
            bail!("Sysctl {key} is not allowed. Only the following sysctls are allowed: [{}]", all.join(" "));
        }
    }
    Ok(())
}

fn backup_path(t: &Tuning, ctx: &Ctx) -> PathBuf {
    t.data_dir.join(format!("{}_{}.json", ctx.container_id, ctx.ifname))
}

fn validate_ifname(ctx: &Ctx) -> Result<()> {
    if ctx.ifname.contains('/') {
        bail!("Interface name ({}) contains an invalid character /", ctx.ifname);
    }
    Ok(())
}

fn add(ctx: &Ctx) -> Result<CniResult> {
    reject_duplicate_sysctl_keys(&ctx.stdin)?;
    let t = load(ctx)?;
    check_allowlist(&t, Path::new(ALLOWLIST_FILE))?;
    validate_ifname(ctx)?;
    let mut result = ctx.prev_result.clone().ok_or_else(|| anyhow::anyhow!("Required prevResult missing"))?;
    // every form Go's net.ParseMAC takes, 6, 8 or 20 octets (an IPoIB link's address has 20)
    let mac =
        t.mac.as_deref().map(|m| parse_hwaddr(m).map_err(|e| anyhow::anyhow!("invalid args {m} for MAC addr: {e}")));
    let mac = mac.transpose()?;
    let ns = steps::ns::open(ctx)?;

    let paths =
        t.sysctl.iter().map(|(k, v)| Ok((sysctl_rel_path(k, &ctx.ifname)?, v.clone()))).collect::<Result<Vec<_>>>()?;
    // a failed ADD puts back every value it changed: the sysctls as they were read just before,
    // the link's attributes from the backup (as DEL does), and removes the backup
    let mut undo = Undo::default();
    let mut before: Vec<(String, String)> = Vec::new();
    let set = ns.run(|| {
        for (p, v) in &paths {
            // a write-only key (net.ipv4.route.flush) cannot be read, nor put back
            let old = crate::sys::sysctl::get(p).ok();
            crate::sys::sysctl::set(p, v)?;
            if let Some(old) = old {
                before.push((p.clone(), old.trim_end_matches('\n').to_string()));
            }
        }
        Ok(())
    });
    if !before.is_empty() {
        let netns = ns.path().to_string();
        undo.push("tuning sysctls", move || {
            steps::ns::reopen(&netns)?.run(|| {
                for (p, v) in before.iter().rev() {
                    crate::sys::sysctl::set(p, v)?;
                }
                Ok(())
            })
        });
    }
    set?;

    let touches_link = mac.is_some() || t.mtu.is_some() || t.promisc || t.allmulti.is_some() || t.txqlen.is_some();
    if !touches_link {
        undo.commit();
        return Ok(result);
    }
    let mut nl = Netlink::in_netns(&ns)?;
    let link = details_by_name(&mut nl, &ctx.ifname)?
        .with_context(|| format!("failed to get {:?}: Link not found", ctx.ifname))?;
    let index = link.link.index;
    let backup = Backup {
        mac: mac.as_ref().and(link.link.hw_addr_string()),
        promisc: t.promisc.then_some(link.link.promisc),
        mtu: t.mtu.map(|_| link.link.mtu),
        allmulti: t.allmulti.map(|_| link.allmulti),
        txqlen: t.txqlen.map(|_| link.link.txqlen),
        network: Some(ctx.name.clone()),
    };
    let bpath = backup_path(&t, ctx);
    write_backup(&bpath, &backup)?;
    let (ifname, saved) = (ctx.ifname.clone(), backup.clone());
    undo.push_in("tuning link attributes", ns.path(), move |nl| {
        if let Some(link) = nl.link_by_name(&ifname)? {
            let errs = restore_link(nl, link.index, &saved);
            if !errs.is_empty() {
                bail!("{}", errs.join("; "));
            }
        }
        std::fs::remove_file(&bpath).with_context(|| format!("failed to remove file {}", bpath.display()))
    });

    if let Some(m) = mac {
        nl.link_set_hw_addr(index, &m).with_context(|| format!("failed to set MAC of {:?}", ctx.ifname))?;
        // the address the link got: the kernel takes the first octets of a longer one (an
        // 8-octet address on an Ethernet link), and refuses a shorter one
        let len = link.link.hw_addr().map_or(m.len(), <[u8]>::len);
        let s = format_hw_addr(m.get(..len).unwrap_or(&m));
        for itf in result.interfaces.iter_mut().filter(|i| i.name == ctx.ifname) {
            itf.mac = Some(s.clone());
        }
    }
    if t.promisc {
        nl.link_set_promisc(index, true).with_context(|| format!("failed to set promisc on {:?}", ctx.ifname))?;
    }
    if let Some(mtu) = t.mtu {
        nl.link_set_mtu(index, mtu).with_context(|| format!("failed to set MTU {mtu} on {:?}", ctx.ifname))?;
    }
    if let Some(on) = t.allmulti {
        nl.link_set_allmulti(index, on).with_context(|| format!("failed to set allmulti on {:?}", ctx.ifname))?;
    }
    if let Some(q) = t.txqlen {
        nl.link_set_txqlen(index, q).with_context(|| format!("failed to set txqueuelen on {:?}", ctx.ifname))?;
    }
    undo.commit();
    Ok(result)
}

fn details_by_name(nl: &mut Netlink, name: &str) -> Result<Option<crate::netlink::LinkDetails>> {
    match nl.link_by_name(name)? {
        Some(l) => nl.link_details(l.index),
        None => Ok(None),
    }
}

fn write_backup(path: &Path, b: &Backup) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent() {
        // the reference creates the directory 0600 (not traversable); 0700 is what it means
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("failed to create backup directory {}", dir.display()))?;
    }
    let data = serde_json::to_vec_pretty(b)?;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("failed to save file {}", tmp.display()))?;
    std::io::Write::write_all(&mut f, &data).with_context(|| format!("failed to save file {}", tmp.display()))?;
    drop(f);
    std::fs::rename(&tmp, path).with_context(|| format!("failed to save file {}", path.display()))
}

fn del(ctx: &Ctx) -> Result<()> {
    // the backup says what to put back: of the config only dataDir is used (and not range-checked)
    let (t, _) = decode(ctx)?;
    let path = backup_path(&t, ctx);
    if let Err(e) = restore(ctx, &path) {
        // like the reference: problems inside the netns do not fail DEL
        tracing::warn!("tuning: restoring {}: {e:#}", path.display());
    }
    Ok(())
}

fn restore(ctx: &Ctx, path: &Path) -> Result<()> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(anyhow::anyhow!("failed to open file {}: {e}", path.display())),
    };
    let Ok(b) = serde_json::from_slice::<Backup>(&data) else {
        return Ok(());
    };
    let NsOrGone::Ns(ns) = steps::ns::open_for_del(ctx)? else {
        let _ = std::fs::remove_file(path);
        return Ok(());
    };
    let mut nl = Netlink::in_netns(&ns)?;
    let Some(link) = nl.link_by_name(&ctx.ifname)? else {
        return Ok(());
    };
    let errs = restore_link(&mut nl, link.index, &b);
    if !errs.is_empty() {
        bail!("{}", errs.join("; "));
    }
    std::fs::remove_file(path).with_context(|| format!("failed to remove file {}", path.display()))
}

/// Puts the saved attributes back on link `index` (DEL, and a failed ADD); the failures, each
/// described.
fn restore_link(nl: &mut Netlink, index: u32, b: &Backup) -> Vec<String> {
    let mut errs = Vec::new();
    if let Some(mtu) = b.mtu.filter(|&m| m != 0) {
        if let Err(e) = nl.link_set_mtu(index, mtu) {
            errs.push(format!("failed to restore MTU: {e:#}"));
        }
    }
    if let Some(m) = b.mac.as_deref().filter(|m| !m.is_empty()) {
        if let Err(e) = parse_hwaddr(m).and_then(|m| nl.link_set_hw_addr(index, &m)) {
            errs.push(format!("failed to restore MAC address: {e:#}"));
        }
    }
    if let Some(p) = b.promisc {
        if let Err(e) = nl.link_set_promisc(index, p) {
            errs.push(format!("failed to restore promiscuous mode: {e:#}"));
        }
    }
    if let Some(a) = b.allmulti {
        if let Err(e) = nl.link_set_allmulti(index, a) {
            errs.push(format!("failed to restore all-multicast mode: {e:#}"));
        }
    }
    if let Some(q) = b.txqlen {
        if let Err(e) = nl.link_set_txqlen(index, q) {
            errs.push(format!("failed to restore txqueuelen: {e:#}"));
        }
    }
    errs
}

fn check(ctx: &Ctx) -> Result<()> {
    reject_duplicate_sysctl_keys(&ctx.stdin)?;
    let t = load(ctx)?;
    steps::check::require_prev(ctx)?;
    let ns = steps::ns::open(ctx)?;
    let paths =
        t.sysctl.iter().map(|(k, v)| Ok((sysctl_rel_path(k, &ctx.ifname)?, v.clone()))).collect::<Result<Vec<_>>>()?;
    ns.run(|| {
        for (p, want) in &paths {
            let have = crate::sys::sysctl::get(p)?;
            if *want != have {
                bail!("Error: Tuning configured value of /proc/sys/{p} is {want}, current value is {have}");
            }
        }
        Ok(())
    })?;
    let mut nl = Netlink::in_netns(&ns)?;
    let d =
        details_by_name(&mut nl, &ctx.ifname)?.with_context(|| format!("Cannot find container link {}", ctx.ifname))?;
    let ifname = &ctx.ifname;
    if let Some(m) = &t.mac {
        // the address, not its spelling: any case, any form net.ParseMAC takes (the reference
        // compares the config's text with the link's lower-case colon form)
        let want = parse_hwaddr(m).ok();
        if want.is_none() || want.as_deref() != d.link.hw_addr() {
            let have = d.link.hw_addr_string().unwrap_or_default();
            bail!("Error: Tuning configured Ethernet of {ifname} is {m}, current value is {have}");
        }
    }
    if t.promisc != d.link.promisc {
        bail!(
            "Error: Tuning link {ifname} configured promisc is {}, current value is {}",
            t.promisc,
            u8::from(d.link.promisc)
        );
    }
    if let Some(mtu) = t.mtu {
        if mtu != d.link.mtu {
            bail!("Error: Tuning configured MTU of {ifname} is {mtu}, current value is {}", d.link.mtu);
        }
    }
    if let Some(a) = t.allmulti {
        if a != d.allmulti {
            bail!("Error: Tuning configured all-multicast mode of {ifname} is {a}, current value is {}", d.allmulti);
        }
    }
    if let Some(q) = t.txqlen {
        if q != d.link.txqlen {
            bail!(
                "Error: Tuning configured Transmit Queue Length of {ifname} is {q}, current value is {}",
                d.link.txqlen
            );
        }
    }
    Ok(())
}

/// GC (the reference has none): saved-state files of this network's attachments that are not in
/// the valid list (their interfaces are gone with their namespaces). The data dir is shared by
/// every network (by default) and a file's name holds no network, so a file is this network's
/// only when it says so; files of other networks and files without an owner (written by the
/// reference or an older cni-multi) are kept. An absent list removes nothing.
fn gc(ctx: &Ctx) -> Result<()> {
    let Some(valid) = ctx.valid_attachments()? else {
        return Ok(());
    };
    // GC reads only `dataDir`: another key of the wrong type (`"mtu": "x"`) stops nothing; a
    // `dataDir` that is no string names no directory any ADD wrote to: nothing to collect
    let data_dir = match ctx.get("datadir") {
        None | Some(serde_json::Value::Null) => data_dir(None),
        Some(serde_json::Value::String(d)) => data_dir(Some(d)),
        Some(other) => {
            tracing::warn!("GC: dataDir is no string ({other}): no backup to collect");
            return Ok(());
        }
    };
    let keep: BTreeSet<String> = valid.iter().map(|a| format!("{}_{}.json", a.container_id, a.ifname)).collect();
    gc_dir(&data_dir, &ctx.name, &keep)
}

/// Largest backup file GC reads to learn its owner (ours are under 200 bytes).
const MAX_BACKUP_BYTES: u64 = 64 << 10;

/// The network recorded in the backup file at `path`; None when it names none or cannot be read.
fn backup_owner(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut data = Vec::new();
    std::fs::File::open(path).ok()?.take(MAX_BACKUP_BYTES).read_to_end(&mut data).ok()?;
    serde_json::from_slice::<Backup>(&data).ok()?.network
}

/// Remove the `*_*.json` files in `dir` that `network` wrote and whose name is not in `keep`.
pub fn gc_dir(dir: &Path, network: &str, keep: &BTreeSet<String>) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(anyhow::anyhow!("failed to read {}: {e}", dir.display())),
    };
    let mut errs = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".json") || !name.contains('_') || keep.contains(&name) {
            continue;
        }
        if backup_owner(&e.path()).as_deref() != Some(network) {
            continue;
        }
        if let Err(err) = std::fs::remove_file(e.path()) {
            if err.kind() != std::io::ErrorKind::NotFound {
                errs.push(format!("{name}: {err}"));
            }
        }
    }
    if !errs.is_empty() {
        return Err(CniError::internal(format!("tuning GC: {}", errs.join("; "))).into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::Command;
    use serde_json::json;

    #[test]
    fn sysctl_paths() {
        assert_eq!(
            sysctl_rel_path("net.ipv4.conf.IFNAME.arp_filter", "eth0.100").unwrap(),
            "net/ipv4/conf/eth0.100/arp_filter"
        );
        assert_eq!(sysctl_rel_path("net/core/somaxconn", "eth0").unwrap(), "net/core/somaxconn");
        assert!(sysctl_rel_path("kernel.hostname", "eth0").is_err());
        // dots become slashes first, so ".." can never climb out of net/
        assert_eq!(sysctl_rel_path("net/../kernel/hostname", "eth0").unwrap(), "net/kernel/hostname");
        assert!(sysctl_rel_path("net", "eth0").is_err());
    }

    #[test]
    fn duplicate_sysctl_keys_rejected() {
        assert!(reject_duplicate_sysctl_keys(br#"{"sysctl": {"a": "1", "b": "2"}}"#).is_ok());
        let e = reject_duplicate_sysctl_keys(br#"{"sysctl": {"a": "1", "a": "2"}}"#).unwrap_err();
        // v1.9.1's words, without serde's position
        assert_eq!(e.to_string(), "duplicated sysctl keys are not allowed");
        assert!(reject_duplicate_sysctl_keys(br#"{"name": "x", "sysctl": null}"#).is_ok());
        assert!(reject_duplicate_sysctl_keys(br#"{"args": {"sysctl": {"a": "1"}}, "sysctl": {"a": "1"}}"#).is_ok());
    }

    fn ctx(conf: serde_json::Value, args: &[(&str, &str)]) -> Ctx {
        let stdin = serde_json::to_vec(&conf).unwrap();
        Ctx {
            conf: crate::cni::config::parse_folded(&stdin).unwrap(),
            stdin,
            args: args.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            container_id: "c1".into(),
            ifname: "eth0".into(),
            ..Ctx::new(Command::Add)
        }
    }

    #[test]
    fn precedence_args_cni_over_runtime_over_cni_args_over_config() {
        let base = json!({"name": "n", "type": "tuning", "mac": "02:00:00:00:00:01", "sysctl": {"net.core.somaxconn": "500", "Net.A": "1"}});
        assert_eq!(load(&ctx(base.clone(), &[])).unwrap().mac.as_deref(), Some("02:00:00:00:00:01"));
        let t = load(&ctx(base.clone(), &[("MAC", "02:00:00:00:00:02")])).unwrap();
        assert_eq!(t.mac.as_deref(), Some("02:00:00:00:00:02"));
        let mut c = base.clone();
        c["runtimeConfig"] = json!({"mac": "02:00:00:00:00:03"});
        assert_eq!(
            load(&ctx(c.clone(), &[("MAC", "02:00:00:00:00:02")])).unwrap().mac.as_deref(),
            Some("02:00:00:00:00:03")
        );
        c["args"] = json!({"cni": {"mac": "02:00:00:00:00:04", "mtu": 1400, "promisc": true, "allmulti": false, "txQLen": 7,
            "sysctl": {"net.core.somaxconn": "600", "net.x": "2"}}});
        let t = load(&ctx(c, &[])).unwrap();
        assert_eq!(t.mac.as_deref(), Some("02:00:00:00:00:04"));
        assert_eq!((t.mtu, t.promisc, t.allmulti, t.txqlen), (Some(1400), true, Some(false), Some(7)));
        // sysctl keys keep their case (applied in key order); args.cni entries override and append
        assert_eq!(
            t.sysctl,
            vec![
                ("Net.A".into(), "1".into()),
                ("net.core.somaxconn".into(), "600".into()),
                ("net.x".into(), "2".into())
            ]
        );
        assert_eq!(t.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
    }

    /// `mtu` and `txQLen` are range-checked once every source is merged, by ADD and CHECK only:
    /// a negative config `mtu` that args.cni overrides is no error (as in the reference, whose
    /// Go ints are simply replaced), and DEL and GC decode the config without the check
    /// (regression: DEL failed with 999 `invalid mtu -5` where the reference's DEL succeeds).
    #[test]
    fn mtu_and_txqlen_are_checked_after_merging_and_not_for_del_or_gc() {
        let base = json!({"name": "n", "type": "tuning", "mtu": -5, "txQLen": -1, "dataDir": "/run/x"});
        let e = load(&ctx(base.clone(), &[])).unwrap_err().to_string();
        assert_eq!(e, "invalid mtu -5");
        let mut c = base.clone();
        c["args"] = json!({"cni": {"mtu": 1400, "txQLen": 0}});
        let t = load(&ctx(c, &[])).unwrap();
        assert_eq!((t.mtu, t.txqlen), (Some(1400), Some(0)));
        let mut c = base.clone();
        c["args"] = json!({"cni": {"mtu": -7}});
        assert_eq!(load(&ctx(c.clone(), &[])).unwrap_err().to_string(), "invalid mtu -7");
        c["mtu"] = json!(1400);
        assert_eq!(load(&ctx(c.clone(), &[])).unwrap_err().to_string(), "invalid mtu -7");
        // what DEL and GC read: the types checked, no range
        let (t, given) = decode(&ctx(c, &[])).unwrap();
        assert_eq!((t.data_dir, given.mtu, given.txqlen), (PathBuf::from("/run/x"), Some(-7), Some(-1)));
        // a value of the wrong type fails DEL too, as the reference's decoding does
        let typed = json!({"name": "n", "type": "tuning", "args": {"cni": {"mtu": "x"}}});
        assert!(decode(&ctx(typed, &[])).is_err());
    }

    /// The allowlist is read whenever it exists and matched as the reference's `contains`
    /// does: the lines in order, each compiled when a key reaches it, the first match winning.
    /// A line the matcher refuses fails only a key that gets that far (regression: every line
    /// was compiled up front, so one refused line failed every tuning ADD, sysctls or not).
    #[test]
    fn allowlist_lines_are_compiled_when_reached_first_match_wins() {
        let dir = std::env::temp_dir().join(format!("tuning-allow-lazy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("allowlist.conf");
        let keys = |ks: &[&str]| Tuning {
            sysctl: ks.iter().map(|k| (k.to_string(), "1".into())).collect(),
            ..Default::default()
        };
        let code = |r: Result<()>| CniError::from_anyhow(&r.unwrap_err());
        std::fs::write(&f, "^net\\.core\\.\n(?=net)\n^net\\.ipv4\\.\n").unwrap();
        assert!(check_allowlist(&keys(&[]), &f).is_ok(), "no sysctl: no line is compiled");
        assert!(check_allowlist(&keys(&["net.core.somaxconn"]), &f).is_ok(), "matched before the bad line");
        let e = code(check_allowlist(&keys(&["net.core.somaxconn", "net.ipv4.ip_forward"]), &f));
        assert_eq!(e.code, crate::cni::code::INVALID_CONFIG, "{e:?}");
        assert!(e.msg.contains("(?=net)") && e.msg.contains("allowlist.conf"), "{e:?}");
        // the bad line first: every key reaches it
        std::fs::write(&f, "(?=net)\n^net\\.core\\.\n").unwrap();
        assert!(check_allowlist(&keys(&[]), &f).is_ok());
        assert_eq!(code(check_allowlist(&keys(&["net.core.somaxconn"]), &f)).code, crate::cni::code::INVALID_CONFIG);
        // a line that is not UTF-8 (which Go's regexp refuses) is no error until it is reached
        std::fs::write(&f, b"^net\\.core\\.\n\xff(\n").unwrap();
        assert!(check_allowlist(&keys(&["net.core.somaxconn"]), &f).is_ok());
        let e = code(check_allowlist(&keys(&["net.ipv4.ip_forward"]), &f));
        assert!(e.msg.contains("invalid UTF-8"), "{e:?}");
        // a key matching no line (all compile) is refused with the reference's words
        std::fs::write(&f, "^net\\.core\\.\n\n  ^net\\.ipv6\\.  \n").unwrap();
        let e = check_allowlist(&keys(&["net.ipv4.ip_forward"]), &f).unwrap_err().to_string();
        assert_eq!(
            e,
            "Sysctl net.ipv4.ip_forward is not allowed. Only the following sysctls are allowed: \
             [^net\\.core\\. ^net\\.ipv6\\.]"
        );
        // the file is read whenever it exists, as the reference's os.ReadFile: one that cannot
        // be read fails an ADD without sysctls too
        std::fs::remove_file(&f).unwrap();
        std::fs::create_dir(&f).unwrap();
        let e = check_allowlist(&keys(&[]), &f).unwrap_err().to_string();
        assert_eq!(e, format!("read {}: is a directory", f.display()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn allowlist_enforced_only_when_file_exists() {
        let dir = std::env::temp_dir().join(format!("tuning-allow-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("allowlist.conf");
        let t = Tuning { sysctl: vec![("net.core.somaxconn".into(), "1".into())], ..Default::default() };
        assert!(check_allowlist(&t, &f).is_ok());
        std::fs::write(&f, "^net\\.ipv4\\..*$\n\n  ^net\\.core\\.somaxconn$  \n").unwrap();
        assert!(check_allowlist(&t, &f).is_ok());
        let bad = Tuning { sysctl: vec![("net.ipv6.conf.all.forwarding".into(), "1".into())], ..Default::default() };
        let e = check_allowlist(&bad, &f).unwrap_err().to_string();
        assert!(e.contains("is not allowed"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The allowlist's lines are Go regexps (RE2): each line form an allowlist plausibly uses,
    /// against sysctl keys, through the plugin's own check (regression: flags, `\b`, named and
    /// non-capturing groups, `\pL` were refused, and `[[:alpha:]_]` was misread).
    #[test]
    fn allowlist_takes_go_regexp_syntax() {
        let dir = std::env::temp_dir().join(format!("tuning-allow-re2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("allowlist.conf");
        let key = |k: &str| Tuning { sysctl: vec![(k.into(), "1".into())], ..Default::default() };
        let table: &[(&str, &str, bool)] = &[
            (r"(?i)^NET\.CORE\.SOMAXCONN$", "net.core.somaxconn", true),
            (r"^(?i:NET)\.core\.somaxconn$", "net.core.somaxconn", true),
            (r"(?s)^net\.core\..*$", "net.core.somaxconn", true),
            (r"(?m)^net\.core\.[a-z_]+$", "net.core.rmem_max", true),
            (r"(?U)^net\.core\..+$", "net.core.rmem_max", true),
            (r"\bsomaxconn\b", "net.core.somaxconn", true),
            (r"\bmaxconn", "net.core.somaxconn", false),
            (r"\Bmaxconn$", "net.core.somaxconn", true),
            (r"\Anet\.core\.somaxconn\z", "net.core.somaxconn", true),
            (r"^net\.(?:core|ipv4)\.", "net.ipv4.tcp_syncookies", true),
            (r"^net\.(?P<family>ipv4|ipv6)\.conf\.IFNAME\.", "net.ipv6.conf.IFNAME.accept_ra", true),
            (r"^net\.(?<family>ipv4|ipv6)\.conf\.IFNAME\.", "net.ipv5.conf.IFNAME.accept_ra", false),
            (r"^net\.\pL+\.\p{L}+$", "net.core.somaxconn", true),
            (r"^net\.\pL+\.\p{L}+$", "net.ipv4.ip_forward", false),
            ("^net[.][[:alpha:]_.]+$", "net.core.rmem_max", true),
            ("^net[.][[:alpha:]_.]+$", "net.ipv4.ip_forward", false),
            ("^net\\.[[:alnum:]_]+\\.[[:^digit:]]+$", "net.ipv4.ip_forward", true),
            (r"^net\.\w+\.\S+$", "net.ipv4.ip_forward", true),
            (r"^net\.\D+$", "net.ipv4.ip_forward", false),
            (r"^net\.ipv4\.tcp_\w{3,8}$", "net.ipv4.tcp_rmem", true),
            (r"^net\.ipv4\.tcp_\w{5,}$", "net.ipv4.tcp_rmem", false),
            ("^net\\.ipv4\\.(ip_forward|tcp_(rmem|wmem))$", "net.ipv4.tcp_wmem", true),
            ("^net\\.ipv4\\.(ip_forward|tcp_(rmem|wmem))$", "net.ipv4.tcp_mem", false),
            ("somaxconn", "net.core.somaxconn", true),
            ("^somaxconn$", "net.core.somaxconn", false),
        ];
        let mut wrong = Vec::new();
        for &(line, k, allowed) in table {
            std::fs::write(&f, format!("{line}\n")).unwrap();
            match (check_allowlist(&key(k), &f), allowed) {
                (Ok(()), true) => {}
                (Err(e), false) if e.to_string().contains("is not allowed") => {}
                (r, _) => wrong.push(format!("{line} / {k}: want allowed={allowed}, got {r:?}")),
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
        // what the matcher (or RE2) cannot do: code 7, naming the construct and the file (for a
        // key that the line before does not match, so it reaches the line)
        for (line, construct) in [("(?=net)", "(?="), (r"^net\.\p{Greek}", r"\p{Greek}"), (r"net\1", r"\1")] {
            std::fs::write(&f, format!("^net\\.core\\..*$\n{line}\n")).unwrap();
            let e = check_allowlist(&key("net.ipv4.ip_forward"), &f).unwrap_err();
            let c = CniError::from_anyhow(&e);
            assert_eq!(c.code, crate::cni::code::INVALID_CONFIG, "{line}: {c:?}");
            assert!(c.msg.contains(construct) && c.msg.contains("allowlist.conf"), "{line}: {c:?}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn gc_removes_only_this_networks_stale_backups() {
        let dir = std::env::temp_dir().join(format!("tuning-gc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (n, text) in [
            ("keep_eth0.json", r#"{"mtu": 1500, "network": "n1"}"#),
            ("old_eth0.json", r#"{"mtu": 1500, "network": "n1"}"#),
            ("other_eth0.json", r#"{"mtu": 1500, "network": "n2"}"#),
            ("reference_eth0.json", r#"{"mtu": 1500}"#),
            ("broken_eth0.json", "{"),
            ("notes.txt", r#"{"network": "n1"}"#),
        ] {
            std::fs::write(dir.join(n), text).unwrap();
        }
        let keep: BTreeSet<String> = ["keep_eth0.json".to_string()].into();
        gc_dir(&dir, "n1", &keep).unwrap();
        let mut left: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        left.sort();
        // another network's file, and files naming no network (the reference's, unreadable), stay
        assert_eq!(
            left,
            vec!["broken_eth0.json", "keep_eth0.json", "notes.txt", "other_eth0.json", "reference_eth0.json"]
        );
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(gc_dir(&dir, "n1", &keep).is_ok()); // missing dir is fine
    }

    #[test]
    fn backup_file_format_matches_reference_keys() {
        let b = Backup {
            mac: Some("02:00:00:00:00:01".into()),
            promisc: Some(false),
            mtu: Some(1500),
            allmulti: None,
            txqlen: Some(1000),
            network: Some("n1".into()),
        };
        let v: serde_json::Value = serde_json::from_slice(&serde_json::to_vec(&b).unwrap()).unwrap();
        assert_eq!(
            v,
            json!({"mac": "02:00:00:00:00:01", "promisc": false, "mtu": 1500, "txQLen": 1000, "network": "n1"})
        );
        // the reference's file (no network) reads as one of unknown owner
        let r: Backup = serde_json::from_str(r#"{"mtu": 1500}"#).unwrap();
        assert_eq!((r.mtu, r.network), (Some(1500), None));
    }
}
