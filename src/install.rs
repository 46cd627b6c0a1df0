//! `cni-multi install`: put this binary into a CNI bin directory with one symlink per applet,
//! and optionally a conflist into the runtime's config directory.
//!
//! Every write is atomic (temp file in the target directory, fsync, rename), so a kubelet that
//! execs `/opt/cni/bin/bridge` while we install never sees a half-written file or a missing name.
//! The whole install is planned before anything is touched: a conflict with a file that is not
//! ours (without `--force`) fails the run with nothing changed. Running it twice changes nothing
//! the second time. Unlike a CNI verb, this prints what it did on stdout.

use anyhow::{anyhow, bail, Context};
use argh::FromArgs;
use std::ffi::OsStr;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The name of the installed binary inside the bin directory; applet symlinks point here.
pub const BINARY_NAME: &str = "cni-multi";
/// Default CNI bin directory.
pub const DEFAULT_DIR: &str = "/opt/cni/bin";
/// Default CNI config directory.
pub const DEFAULT_CONF_DIR: &str = "/etc/cni/net.d";

/// Bytes present in every cni-multi binary that contains this module. A file that carries them
/// is an (older or newer) copy of cni-multi, which we may replace without `--force`.
static MARKER: [u8; 41] = *b"cni-multi/install-marker/3b9e61d0c4a2f7e5";

/// Files bigger than this are never ours (and never read whole).
const MAX_OURS_SIZE: u64 = 256 << 20;

/// The marker bytes, read through `black_box` so the static stays whole in the binary.
pub fn marker() -> &'static [u8] {
    std::hint::black_box(&MARKER[..])
}

#[derive(FromArgs, Debug, Clone, PartialEq, Eq)]
/// Install cni-multi into a CNI bin directory: copy this binary atomically, create or repair one
/// symlink per applet, and optionally install a network config. Idempotent; prints what changed.
pub struct InstallArgs {
    /// CNI bin directory to install into (default /opt/cni/bin)
    #[argh(option, default = "String::from(DEFAULT_DIR)")]
    pub dir: String,
    /// replace regular files and symlinks that were not installed by cni-multi
    #[argh(switch)]
    pub force: bool,
    /// a network config (.conflist, .conf or .json) to install into --conf-dir
    #[argh(option)]
    pub conf: Option<String>,
    /// CNI config directory for --conf (default /etc/cni/net.d)
    #[argh(option)]
    pub conf_dir: Option<String>,
    /// binary to install instead of the running one (/proc/self/exe)
    #[argh(option)]
    pub src: Option<String>,
    /// the node's pod CIDR: replaces every __POD_CIDR__ in --conf
    #[argh(option)]
    pub pod_cidr: Option<String>,
    /// read the node's pod CIDR from this file (as written by `kubectl get node -o jsonpath=...`)
    #[argh(option)]
    pub pod_cidr_file: Option<String>,
}

/// Parse the arguments that follow `install` (not including the program name or `install`).
pub fn parse_args(args: &[&str]) -> Result<InstallArgs, argh::EarlyExit> {
    InstallArgs::from_args(&["cni-multi install"], args)
}

/// Validated options of one install run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub dir: PathBuf,
    pub force: bool,
    pub src: PathBuf,
    pub conf: Option<PathBuf>,
    pub conf_dir: PathBuf,
    /// where the value for `__POD_CIDR__` in the config comes from
    pub pod_cidr: Option<PodCidr>,
}

/// The placeholder in a config that `--pod-cidr`/`--pod-cidr-file` fills in.
pub const POD_CIDR_PLACEHOLDER: &str = "__POD_CIDR__";

/// Source of the node's pod CIDR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodCidr {
    Value(String),
    File(PathBuf),
}

impl Options {
    pub fn from_args(a: &InstallArgs) -> anyhow::Result<Options> {
        if a.conf_dir.is_some() && a.conf.is_none() {
            bail!("--conf-dir needs --conf");
        }
        if (a.pod_cidr.is_some() || a.pod_cidr_file.is_some()) && a.conf.is_none() {
            bail!("--pod-cidr and --pod-cidr-file need --conf");
        }
        let pod_cidr = match (&a.pod_cidr, &a.pod_cidr_file) {
            (Some(_), Some(_)) => bail!("give --pod-cidr or --pod-cidr-file, not both"),
            (Some(v), None) => Some(PodCidr::Value(v.clone())),
            (None, Some(f)) => Some(PodCidr::File(PathBuf::from(f))),
            (None, None) => None,
        };
        if a.dir.is_empty() {
            bail!("--dir must not be empty");
        }
        Ok(Options {
            dir: PathBuf::from(&a.dir),
            force: a.force,
            src: PathBuf::from(a.src.as_deref().unwrap_or("/proc/self/exe")),
            conf: a.conf.as_ref().map(PathBuf::from),
            conf_dir: PathBuf::from(a.conf_dir.as_deref().unwrap_or(DEFAULT_CONF_DIR)),
            pod_cidr,
        })
    }
}

/// What happened to one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// it did not exist and was created
    Created,
    /// it was already right
    Unchanged,
    /// an older version of ours was replaced
    Updated,
    /// a broken or foreign-looking entry of ours was repaired
    Repaired,
    /// something not ours was replaced because of `--force`
    Forced,
    /// a stale applet link of ours was removed
    Removed,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Unchanged => "unchanged",
            Action::Updated => "updated",
            Action::Repaired => "repaired",
            Action::Forced => "replaced (--force)",
            Action::Removed => "removed",
        }
    }
}

/// One line of the install report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub path: PathBuf,
    pub action: Action,
    pub detail: String,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<9} {}", self.action.as_str(), self.path.display())?;
        if !self.detail.is_empty() {
            write!(f, " ({})", self.detail)?;
        }
        Ok(())
    }
}

/// What is at a path before we install there.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Found {
    Missing,
    /// exactly what we would write
    Same,
    /// ours, but different (older binary, absolute or dangling link to a cni-multi, a copy)
    Ours(String),
    /// not ours: replacing it needs --force
    Foreign(String),
}

/// `cni-multi install ARGS...`: `args` are the words after `install`. Returns the exit status
/// (0 done, 1 failed with nothing or part changed, 2 bad usage).
pub fn main(args: &[String]) -> i32 {
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    let parsed = match parse_args(&words) {
        Ok(p) => p,
        Err(early) => {
            return match early.status {
                Ok(()) => {
                    let _ = writeln!(io::stdout(), "{}", early.output);
                    0
                }
                Err(()) => {
                    let _ = writeln!(io::stderr(), "{}", early.output);
                    2
                }
            };
        }
    };
    let applets: Vec<&str> = crate::applets::names().collect();
    let result = Options::from_args(&parsed).and_then(|o| install(&o, &applets));
    match result {
        Ok(changes) => {
            let mut out = io::stdout().lock();
            let changed = changes.iter().filter(|c| c.action != Action::Unchanged).count();
            for c in changes.iter().filter(|c| c.action != Action::Unchanged) {
                let _ = writeln!(out, "{c}");
            }
            let _ = writeln!(
                out,
                "cni-multi install: {changed} changed, {} unchanged",
                changes.len().saturating_sub(changed)
            );
            0
        }
        Err(e) => {
            let _ = writeln!(io::stderr(), "cni-multi install: error: {e:#}");
            1
        }
    }
}

/// Install `opts.src` as `opts.dir/cni-multi`, one symlink per name in `applets`, and the
/// config if asked. Returns one [`Change`] per path looked at (including unchanged ones).
pub fn install(opts: &Options, applets: &[&str]) -> anyhow::Result<Vec<Change>> {
    for name in applets {
        check_applet_name(name)?;
    }
    let src_meta =
        fs::metadata(&opts.src).with_context(|| format!("cannot read source binary {}", opts.src.display()))?;
    if !src_meta.is_file() {
        bail!("source {} is not a regular file", opts.src.display());
    }
    if !file_has_marker(&opts.src)? {
        bail!("source {} is not a cni-multi binary", opts.src.display());
    }
    let conf = match &opts.conf {
        Some(path) => Some(load_conf(path, opts.pod_cidr.as_ref())?),
        None => None,
    };

    let mut changes = Vec::new();
    let mut conflicts = Vec::new();

    // ---- plan: look at everything before touching anything
    let dir_exists = match fs::metadata(&opts.dir) {
        Ok(m) if m.is_dir() => true,
        Ok(_) => bail!("{} exists and is not a directory", opts.dir.display()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(anyhow!(e).context(format!("cannot inspect {}", opts.dir.display()))),
    };
    let bin_path = opts.dir.join(BINARY_NAME);
    let bin_found = if dir_exists { inspect_binary(&bin_path, &opts.src)? } else { Found::Missing };
    if let Found::Foreign(why) = &bin_found {
        conflicts.push(format!("{}: {why}", bin_path.display()));
    }
    let mut links = Vec::new();
    for name in applets {
        let path = opts.dir.join(name);
        let found = if dir_exists { inspect_link(&path)? } else { Found::Missing };
        if let Found::Foreign(why) = &found {
            conflicts.push(format!("{}: {why}", path.display()));
        }
        links.push((path, found));
    }
    let stale = if dir_exists { stale_links(&opts.dir, applets)? } else { Vec::new() };
    let conf_plan = match &conf {
        Some(c) => {
            let dest = opts.conf_dir.join(&c.file_name);
            let found = inspect_conf(&dest, c)?;
            if let Found::Foreign(why) = &found {
                conflicts.push(format!("{}: {why}", dest.display()));
            }
            Some((dest, found, c))
        }
        None => None,
    };
    if !conflicts.is_empty() && !opts.force {
        bail!("refusing to replace what cni-multi did not install (use --force): {}", conflicts.join("; "));
    }

    // ---- act: binary first, so no link ever dangles
    if !dir_exists {
        create_dirs(&opts.dir).with_context(|| format!("cannot create {}", opts.dir.display()))?;
        changes.push(Change { path: opts.dir.clone(), action: Action::Created, detail: "directory".into() });
    }
    let action = action_for(&bin_found);
    if action != Action::Unchanged {
        let mut src = File::open(&opts.src).with_context(|| format!("cannot open {}", opts.src.display()))?;
        write_atomic(&opts.dir, BINARY_NAME, 0o755, &mut src)
            .with_context(|| format!("cannot install {}", bin_path.display()))?;
    }
    changes.push(Change { path: bin_path, action, detail: detail_for(&bin_found, src_meta.len()) });

    for (path, found) in links {
        let action = action_for(&found);
        if action != Action::Unchanged {
            let name = file_name_str(&path)?;
            symlink_atomic(&opts.dir, name, BINARY_NAME)
                .with_context(|| format!("cannot link {} -> {BINARY_NAME}", path.display()))?;
        }
        let detail = match &found {
            Found::Missing | Found::Same => format!("-> {BINARY_NAME}"),
            Found::Ours(why) | Found::Foreign(why) => format!("-> {BINARY_NAME}; was {why}"),
        };
        changes.push(Change { path, action, detail });
    }
    for path in stale {
        match fs::remove_file(&path) {
            // another installer got there first
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            r => r.with_context(|| format!("cannot remove stale link {}", path.display()))?,
        }
        changes.push(Change { path, action: Action::Removed, detail: "no such applet any more".into() });
    }
    sync_dir(&opts.dir)?;

    if let Some((dest, found, c)) = conf_plan {
        let action = action_for(&found);
        if action != Action::Unchanged {
            if !opts.conf_dir.is_dir() {
                create_dirs(&opts.conf_dir).with_context(|| format!("cannot create {}", opts.conf_dir.display()))?;
            }
            write_atomic(&opts.conf_dir, &c.file_name, 0o644, &mut c.bytes.as_slice())
                .with_context(|| format!("cannot install {}", dest.display()))?;
            sync_dir(&opts.conf_dir)?;
        }
        let detail = match &found {
            Found::Foreign(why) => format!("network {:?}; was {why}", c.network),
            _ => format!("network {:?}", c.network),
        };
        changes.push(Change { path: dest, action, detail });
    }
    Ok(changes)
}

fn action_for(found: &Found) -> Action {
    match found {
        Found::Missing => Action::Created,
        Found::Same => Action::Unchanged,
        Found::Ours(why) if why.starts_with("an older") => Action::Updated,
        Found::Ours(_) => Action::Repaired,
        Found::Foreign(_) => Action::Forced,
    }
}

fn detail_for(found: &Found, size: u64) -> String {
    match found {
        Found::Foreign(why) => format!("{size} bytes; was {why}"),
        _ => format!("{size} bytes"),
    }
}

/// Applet names become file names in the bin directory.
fn check_applet_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && name != BINARY_NAME
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        bail!("invalid applet name {name:?}")
    }
}

fn file_name_str(path: &Path) -> anyhow::Result<&str> {
    path.file_name().and_then(OsStr::to_str).ok_or_else(|| anyhow!("bad file name in {}", path.display()))
}

fn lstat(path: &Path) -> anyhow::Result<Option<fs::Metadata>> {
    match fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow!(e).context(format!("cannot inspect {}", path.display()))),
    }
}

fn inspect_binary(path: &Path, src: &Path) -> anyhow::Result<Found> {
    let Some(meta) = lstat(path)? else { return Ok(Found::Missing) };
    let ft = meta.file_type();
    if ft.is_dir() {
        bail!("{} is a directory", path.display());
    }
    if ft.is_symlink() {
        let target = fs::read_link(path).map(|t| t.display().to_string()).unwrap_or_default();
        return Ok(Found::Foreign(format!("a symlink to {target}")));
    }
    if !ft.is_file() {
        return Ok(Found::Foreign("not a regular file".into()));
    }
    if same_content(path, src)? {
        return Ok(Found::Same);
    }
    if file_has_marker(path)? {
        return Ok(Found::Ours("an older or other build of cni-multi".into()));
    }
    Ok(Found::Foreign("a regular file that is not cni-multi".into()))
}

fn inspect_link(path: &Path) -> anyhow::Result<Found> {
    let Some(meta) = lstat(path)? else { return Ok(Found::Missing) };
    let ft = meta.file_type();
    if ft.is_dir() {
        bail!("{} is a directory", path.display());
    }
    if ft.is_symlink() {
        let target = match fs::read_link(path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Found::Missing), // just removed
            Err(e) => return Err(anyhow!(e).context(format!("cannot read link {}", path.display()))),
        };
        if target.as_os_str() == BINARY_NAME {
            return Ok(Found::Same);
        }
        if target.file_name() == Some(OsStr::new(BINARY_NAME)) {
            return Ok(Found::Ours(format!("a link to {}", target.display())));
        }
        return Ok(Found::Foreign(format!("a symlink to {}", target.display())));
    }
    if ft.is_file() && file_has_marker(path)? {
        return Ok(Found::Ours("a copy of cni-multi".into()));
    }
    if ft.is_file() {
        return Ok(Found::Foreign("a regular file that is not cni-multi".into()));
    }
    Ok(Found::Foreign("not a regular file or symlink".into()))
}

/// Links in `dir` that point at exactly `cni-multi` but are not an applet (any more) nor a
/// name the dispatcher answers to ([`crate::applets::is_alias`]: a `cnitool` link works).
fn stale_links(dir: &Path, applets: &[&str]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let entries = fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        // another installer's temp link is not stale: it is about to be renamed into place
        if name == BINARY_NAME || applets.contains(&name) || crate::applets::is_alias(name) || is_temp_name(name) {
            continue;
        }
        let path = entry.path();
        let is_link = entry.file_type().map(|t| t.is_symlink()).unwrap_or(false);
        if is_link && fs::read_link(&path).map(|t| t.as_os_str() == BINARY_NAME).unwrap_or(false) {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// A config file to install, validated.
#[derive(Debug, Clone)]
struct Conf {
    file_name: String,
    network: String,
    bytes: Vec<u8>,
}

fn load_conf(path: &Path, pod_cidr: Option<&PodCidr>) -> anyhow::Result<Conf> {
    let file_name = file_name_str(path)?.to_string();
    let is_list = file_name.ends_with(".conflist");
    if !(is_list || file_name.ends_with(".conf") || file_name.ends_with(".json")) || file_name.starts_with('.') {
        bail!("{file_name}: a CNI config file name must end in .conflist, .conf or .json (runtimes ignore others)");
    }
    let mut bytes = read_limited(path, 1 << 20).with_context(|| format!("cannot read {}", path.display()))?;
    if let Some(src) = pod_cidr {
        let cidr = resolve_pod_cidr(src)?;
        let text = String::from_utf8(bytes).map_err(|_| anyhow!("{} is not UTF-8", path.display()))?;
        bytes = text.replace(POD_CIDR_PLACEHOLDER, &cidr).into_bytes();
    }
    if contains(&bytes, POD_CIDR_PLACEHOLDER.as_bytes()) {
        bail!("{} contains {POD_CIDR_PLACEHOLDER}: give --pod-cidr or --pod-cidr-file", path.display());
    }
    let network =
        conf_network_name(&bytes, is_list).with_context(|| format!("{} is not a CNI config", path.display()))?;
    Ok(Conf { file_name, network, bytes })
}

/// The pod CIDR to put into the config: one IPv4 or IPv6 network in CIDR notation.
fn resolve_pod_cidr(src: &PodCidr) -> anyhow::Result<String> {
    let raw = match src {
        PodCidr::Value(v) => v.clone(),
        PodCidr::File(f) => {
            String::from_utf8(read_limited(f, 4096).with_context(|| format!("cannot read {}", f.display()))?)
                .map_err(|_| anyhow!("{} is not UTF-8", f.display()))?
        }
    };
    let cidr = raw.trim();
    if cidr.is_empty() {
        bail!("the pod CIDR is empty (is the node's spec.podCIDR set? kube-controller-manager --allocate-node-cidrs)");
    }
    let net: ipnet::IpNet =
        cidr.parse().map_err(|_| anyhow!("pod CIDR {cidr:?} is not an IP network in CIDR notation"))?;
    if net.addr() != net.network() {
        // host-local refuses such a subnet on every ADD (code 7): refuse it here, before the node
        // gets a config that cannot work
        bail!("pod CIDR {cidr:?} has host bits set: its network is {}", net.trunc());
    }
    Ok(net.to_string())
}

/// Validate a network config and return its `name`: a JSON object with a non-empty `name`, and
/// either a non-empty `plugins` list of objects with a `type` (conflist) or a `type` (single
/// plugin config; not allowed when `want_list`).
pub fn conf_network_name(bytes: &[u8], want_list: bool) -> anyhow::Result<String> {
    let v: serde_json::Value = serde_json::from_slice(bytes).context("invalid JSON")?;
    let obj = v.as_object().ok_or_else(|| anyhow!("not a JSON object"))?;
    let name = obj.get("name").and_then(|n| n.as_str()).unwrap_or_default();
    if name.is_empty() {
        bail!("missing network \"name\"");
    }
    if name.contains('/') || name == "." || name == ".." {
        bail!("network name {name:?} cannot be used as a directory name");
    }
    match obj.get("plugins") {
        Some(plugins) => {
            let list = plugins.as_array().ok_or_else(|| anyhow!("\"plugins\" is not a list"))?;
            if list.is_empty() {
                bail!("\"plugins\" is empty");
            }
            for (i, p) in list.iter().enumerate() {
                if p.get("type").and_then(|t| t.as_str()).unwrap_or_default().is_empty() {
                    bail!("plugin {i} has no \"type\"");
                }
            }
        }
        None if want_list => bail!("a .conflist needs a \"plugins\" list"),
        None => {
            if obj.get("type").and_then(|t| t.as_str()).unwrap_or_default().is_empty() {
                bail!("missing \"type\" (or a \"plugins\" list)");
            }
        }
    }
    Ok(name.to_string())
}

fn inspect_conf(dest: &Path, conf: &Conf) -> anyhow::Result<Found> {
    let Some(meta) = lstat(dest)? else { return Ok(Found::Missing) };
    if !meta.file_type().is_file() {
        if meta.is_dir() {
            bail!("{} is a directory", dest.display());
        }
        return Ok(Found::Foreign("not a regular file".into()));
    }
    let old = read_limited(dest, 1 << 20).with_context(|| format!("cannot read {}", dest.display()))?;
    if old == conf.bytes {
        return Ok(Found::Same);
    }
    match conf_network_name(&old, false) {
        Ok(name) if name == conf.network => Ok(Found::Ours("an older version of this network config".into())),
        Ok(name) => Ok(Found::Foreign(format!("the config of network {name:?}"))),
        Err(_) => Ok(Found::Foreign("not a valid CNI config".into())),
    }
}

fn read_limited(path: &Path, limit: u64) -> anyhow::Result<Vec<u8>> {
    let f = File::open(path)?;
    let mut bytes = Vec::new();
    f.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        bail!("larger than {limit} bytes");
    }
    Ok(bytes)
}

/// Does the file carry the cni-multi marker?
pub fn file_has_marker(path: &Path) -> anyhow::Result<bool> {
    let meta = fs::metadata(path).with_context(|| format!("cannot inspect {}", path.display()))?;
    if !meta.is_file() || meta.len() > MAX_OURS_SIZE {
        return Ok(false);
    }
    let data = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(contains(&data, marker()))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    let Some(&first) = needle.first() else { return true };
    hay.windows(needle.len()).any(|w| w.first() == Some(&first) && w == needle)
}

/// Byte-for-byte equality of two files.
fn same_content(a: &Path, b: &Path) -> anyhow::Result<bool> {
    let (ma, mb) = (fs::metadata(a)?, fs::metadata(b)?);
    if ma.len() != mb.len() {
        return Ok(false);
    }
    let (mut fa, mut fb) = (File::open(a)?, File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 64 << 10], vec![0u8; 64 << 10]);
    loop {
        let na = read_full(&mut fa, &mut ba)?;
        let nb = read_full(&mut fb, &mut bb)?;
        if ba.get(..na) != bb.get(..nb) {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while let Some(rest) = buf.get_mut(n..) {
        if rest.is_empty() {
            break;
        }
        match f.read(rest) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp-")
}

/// A fresh temp name in `dir` that runtimes ignore (leading dot, no config extension).
fn temp_name(name: &str) -> String {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!(".{name}.tmp-{}-{nanos}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed))
}

/// Write `content` to `dir/name` atomically with `mode`: temp file, fsync, rename.
fn write_atomic(dir: &Path, name: &str, mode: u32, content: &mut dyn Read) -> anyhow::Result<()> {
    let (tmp, mut file) = create_temp(dir, name, mode)?;
    let result = (|| -> anyhow::Result<()> {
        io::copy(content, &mut file)?;
        // umask may have narrowed the mode given at creation
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, dir.join(name))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn create_temp(dir: &Path, name: &str, mode: u32) -> anyhow::Result<(PathBuf, File)> {
    let mut last = None;
    for _ in 0..16 {
        let tmp = dir.join(temp_name(name));
        match OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(anyhow!(e).context(format!("cannot create a temp file in {}", dir.display()))),
        }
    }
    Err(anyhow!("cannot create a temp file in {}: {last:?}", dir.display()))
}

/// Point `dir/name` at `target` atomically (a temp link renamed over whatever is there).
fn symlink_atomic(dir: &Path, name: &str, target: &str) -> anyhow::Result<()> {
    let mut last = None;
    for _ in 0..16 {
        let tmp = dir.join(temp_name(name));
        match std::os::unix::fs::symlink(target, &tmp) {
            Ok(()) => {
                if let Err(e) = fs::rename(&tmp, dir.join(name)) {
                    let _ = fs::remove_file(&tmp);
                    return Err(e.into());
                }
                return Ok(());
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e.into()),
        }
    }
    Err(anyhow!("cannot create a temp link in {}: {last:?}", dir.display()))
}

/// Mode of the directories install creates (the bin and config directories and their missing
/// parents), whatever the umask: runtimes and the kubelet list them, and the files in them are
/// 0755/0644 too.
const DIR_MODE: u32 = 0o755;

/// `mkdir -p` with [`DIR_MODE`] for every directory it creates (set again after the mkdir, which
/// the umask narrows); directories that exist keep their mode.
fn create_dirs(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let missing: Vec<&Path> = dir.ancestors().take_while(|a| !a.as_os_str().is_empty() && !a.is_dir()).collect();
    for d in missing.into_iter().rev() {
        match fs::DirBuilder::new().mode(DIR_MODE).create(d) {
            Ok(()) => fs::set_permissions(d, fs::Permissions::from_mode(DIR_MODE))
                .with_context(|| format!("cannot set the mode of {}", d.display()))?,
            // another installer made it (and sets its mode)
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && d.is_dir() => {}
            Err(e) => return Err(anyhow!(e).context(format!("cannot create {}", d.display()))),
        }
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("cannot sync {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_defaults_and_flags() {
        let a = parse_args(&[]).unwrap();
        assert_eq!(a.dir, "/opt/cni/bin");
        assert!(!a.force && a.conf.is_none() && a.conf_dir.is_none());
        let a = parse_args(&["--dir", "/x", "--force", "--conf", "/c/1.conflist", "--conf-dir", "/n"]).unwrap();
        assert_eq!(Options::from_args(&a).unwrap().conf_dir, PathBuf::from("/n"));
        assert!(parse_args(&["--bogus"]).is_err());
        assert!(parse_args(&["--dir"]).is_err());
        let a = parse_args(&["--conf-dir", "/n"]).unwrap();
        assert!(Options::from_args(&a).is_err(), "--conf-dir without --conf");
        let a = parse_args(&["--pod-cidr", "198.18.0.0/24"]).unwrap();
        assert!(Options::from_args(&a).is_err(), "--pod-cidr without --conf");
        let a = parse_args(&["--conf", "/c", "--pod-cidr", "x", "--pod-cidr-file", "/f"]).unwrap();
        assert!(Options::from_args(&a).is_err(), "both cidr sources");
        let a = parse_args(&["--conf", "/c", "--pod-cidr-file", "/f"]).unwrap();
        assert_eq!(Options::from_args(&a).unwrap().pod_cidr, Some(PodCidr::File("/f".into())));
    }

    #[test]
    fn conf_validation() {
        let ok = br#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge"}]}"#;
        assert_eq!(conf_network_name(ok, true).unwrap(), "n");
        assert!(conf_network_name(br#"{"name":"n","type":"bridge"}"#, false).is_ok());
        assert!(conf_network_name(br#"{"name":"n","type":"bridge"}"#, true).is_err());
        assert!(conf_network_name(br#"{"plugins":[{"type":"bridge"}]}"#, true).is_err());
        assert!(conf_network_name(br#"{"name":"../x","type":"b"}"#, false).is_err());
        assert!(conf_network_name(br#"{"name":"n","plugins":[]}"#, true).is_err());
        assert!(conf_network_name(br#"{"name":"n","plugins":[{}]}"#, true).is_err());
        assert!(conf_network_name(b"[1]", false).is_err());
        assert!(conf_network_name(b"{", false).is_err());
    }

    #[test]
    fn pod_cidr_is_validated() {
        assert_eq!(resolve_pod_cidr(&PodCidr::Value(" 198.18.4.0/24\n".into())).unwrap(), "198.18.4.0/24");
        assert_eq!(resolve_pod_cidr(&PodCidr::Value("fd00:1::/64".into())).unwrap(), "fd00:1::/64");
        for bad in ["", "  ", "198.18.4.0", "nonsense", "198.18.4.0/33", "1.2.3.4/24,fd00::/64"] {
            assert!(resolve_pod_cidr(&PodCidr::Value(bad.into())).is_err(), "{bad:?}");
        }
        for (bad, net) in [("198.18.4.7/24", "198.18.4.0/24"), ("fd00:1::5/64", "fd00:1::/64")] {
            let e = resolve_pod_cidr(&PodCidr::Value(bad.into())).unwrap_err().to_string();
            assert!(e.contains("host bits set") && e.ends_with(&format!("its network is {net}")), "{e}");
        }
    }

    #[test]
    fn applet_names_must_be_file_names() {
        for bad in ["", ".", "..", "a/b", "cni-multi", "x y"] {
            assert!(check_applet_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_applet_name("host-local").is_ok());
    }

    #[test]
    fn contains_finds_needle_anywhere() {
        assert!(contains(b"xxabcxx", b"abc"));
        assert!(contains(b"abc", b"abc"));
        assert!(!contains(b"ab", b"abc"));
        assert!(!contains(b"abxabd", b"abc"));
    }
}
