//! The lease daemon: serves the unix socket, acquires leases inside container netnses,
//! keeps one maintenance thread per lease (renew at T1, rebind at T2, re-acquire after
//! expiry or NAK), persists leases so a restart resumes them, and drops leases whose
//! netns or link vanished.

use super::client::{
    deadline_in, now_unix, release_message, Backoff, Client, ClientOptions, Lease, Reacquired, Renewal, SERVER_PORT,
};
use super::ns;
use super::rpc::{self, Method, Request, Response};
use super::store::{Record, Store};
use super::v6::{self, Client6, Lease6};
use crate::cni::code;
use anyhow::{anyhow, bail, Context};
use ipnet::{IpNet, Ipv6Net};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const DEFAULT_SOCKET: &str = "/run/cni/dhcp.sock";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/cni/dhcp";

/// Daemon settings (the reference's flags plus `-statedir`).
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub socket_path: PathBuf,
    pub pidfile: Option<PathBuf>,
    /// prepended to netns paths (and the socket path) when the daemon runs in a container
    pub hostprefix: String,
    /// accepted for compatibility: the BROADCAST flag is always set while the interface is unconfigured
    pub broadcast: bool,
    /// bound on one acquisition (ADD); also the per-exchange bound during maintenance
    pub timeout: Duration,
    /// cap of the retransmission backoff
    pub resend_max: Duration,
    /// how long maintenance keeps retrying after errors before giving the lease up
    pub resend_timeout: Duration,
    pub state_dir: PathBuf,
    /// how often a bound lease checks that its link still exists
    pub link_check: Duration,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            socket_path: PathBuf::from(DEFAULT_SOCKET),
            pidfile: None,
            hostprefix: String::new(),
            broadcast: false,
            timeout: Duration::from_secs(10),
            resend_max: Duration::from_secs(62),
            resend_timeout: Duration::from_secs(208),
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            link_check: Duration::from_secs(10),
        }
    }
}

/// What a daemon flag holds, as Go's flag package names it in the usage.
#[derive(Clone, Copy, PartialEq, Eq)]
enum FlagKind {
    Bool,
    Str,
    Duration,
}

/// One flag of `dhcp daemon`: the reference's, plus `-statedir` and `-linkcheck`.
struct FlagDef {
    name: &'static str,
    kind: FlagKind,
    usage: &'static str,
    /// the default as Go prints it; "" for Go's zero value (not printed)
    default: &'static str,
}

/// Sorted by name, as Go's `PrintDefaults` lists them.
const FLAGS: &[FlagDef] = &[
    FlagDef {
        name: "broadcast",
        kind: FlagKind::Bool,
        usage: "broadcast DHCP leases (accepted; no effect: the flag is always set while the interface has no address)",
        default: "",
    },
    FlagDef { name: "hostprefix", kind: FlagKind::Str, usage: "optional prefix to host root", default: "" },
    FlagDef {
        name: "linkcheck",
        kind: FlagKind::Duration,
        usage: "how often a lease checks that its link still exists",
        default: "10s",
    },
    FlagDef { name: "pidfile", kind: FlagKind::Str, usage: "optional path to write daemon PID to", default: "" },
    FlagDef {
        name: "resendmax",
        kind: FlagKind::Duration,
        usage: "optional dhcp client max resend delay between the packets",
        default: "1m2s",
    },
    FlagDef {
        name: "resendtimeout",
        kind: FlagKind::Duration,
        usage: "optional dhcp client resend timeout",
        default: "3m28s",
    },
    FlagDef {
        name: "socketpath",
        kind: FlagKind::Str,
        usage: "optional dhcp server socketpath",
        default: DEFAULT_SOCKET,
    },
    FlagDef { name: "statedir", kind: FlagKind::Str, usage: "where leases are persisted", default: DEFAULT_STATE_DIR },
    FlagDef {
        name: "timeout",
        kind: FlagKind::Duration,
        usage: "how long one acquisition (ADD) may take",
        default: "10s",
    },
];

/// The usage Go's flag package prints for the reference's `daemon` flag set (`PrintDefaults`).
pub fn usage() -> String {
    let mut s = String::from("Usage of daemon:\n");
    for f in FLAGS {
        s.push_str("  -");
        s.push_str(f.name);
        match f.kind {
            FlagKind::Bool => {}
            FlagKind::Str => s.push_str(" string"),
            FlagKind::Duration => s.push_str(" duration"),
        }
        s.push_str("\n    \t");
        s.push_str(f.usage);
        match (f.kind, f.default) {
            (_, "") => {}
            (FlagKind::Str, d) => s.push_str(&format!(" (default {d:?})")),
            (_, d) => s.push_str(&format!(" (default {d})")),
        }
        s.push('\n');
    }
    s
}

/// Parse a Go duration ("10s", "1m30s", "500ms", "1.5h"). Fixed-point (nanoseconds), so no
/// float parsing is linked in for a handful of flags.
pub fn parse_go_duration(s: &str) -> anyhow::Result<Duration> {
    let bad = || anyhow!("invalid duration {s:?}");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(bad());
    }
    let mut rest = s;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        // "5", "5.", ".5" and "5.25" are numbers; "", "." and "1..5" are not
        if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
            return Err(bad());
        }
        let unit_len = tail.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad()),
        };
        let digits =
            |d: &str| d.bytes().try_fold(0u128, |acc, b| acc.checked_mul(10)?.checked_add(u128::from(b - b'0')));
        total = total.checked_add(digits(int).and_then(|i| i.checked_mul(nanos)).ok_or_else(bad)?).ok_or_else(bad)?;
        // the fraction counts to the nanosecond (Go drops what is below it too)
        let mut scale = nanos;
        for b in frac.bytes() {
            scale /= 10;
            total = total.saturating_add(u128::from(b - b'0') * scale);
        }
        rest = tail;
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| bad())?;
    Ok(Duration::new(secs, (total % 1_000_000_000) as u32))
}

/// What the daemon's command line asks for.
#[derive(Debug)]
pub enum Flags {
    Run(DaemonConfig),
    /// `-h`, `-help` (any number of dashes): print the usage, exit 0
    Help,
}

/// Parse the words after `daemon` as Go's `flag` package parses the reference's flag set:
/// `-name value`, `-name=value`, `--name…`; a bool as `-broadcast` or `-broadcast=false` (never
/// `-broadcast false`); `--` ends the flags; `-h`/`-help` ask for the usage. An error is Go's
/// message (the caller prints it with the usage and exits 2). Stricter than Go: an argument
/// after the flags is refused (Go ignores it) and `-timeout` must be positive.
pub fn parse_flags(args: &[String]) -> Result<Flags, String> {
    let mut cfg = DaemonConfig::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if arg == "--" {
            if let Some(extra) = it.next() {
                return Err(format!("unexpected argument {extra:?} after the flags"));
            }
            break;
        }
        let Some(flag) = arg.strip_prefix('-').filter(|f| !f.is_empty()) else {
            // Go stops at the first non-flag argument and ignores the rest
            return Err(format!("unexpected argument {arg:?} (flags start with -)"));
        };
        let flag = flag.strip_prefix('-').unwrap_or(flag);
        if flag.is_empty() || flag.starts_with(['-', '=']) {
            return Err(format!("bad flag syntax: {arg}"));
        }
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (flag, None),
        };
        let Some(def) = FLAGS.iter().find(|f| f.name == name) else {
            if matches!(name, "h" | "help") {
                return Ok(Flags::Help);
            }
            return Err(format!("flag provided but not defined: -{name}"));
        };
        if def.kind == FlagKind::Bool {
            cfg.broadcast = match inline.unwrap_or("true") {
                "1" | "t" | "T" | "TRUE" | "true" | "True" => true,
                "0" | "f" | "F" | "FALSE" | "false" | "False" => false,
                v => return Err(format!("invalid boolean value {v:?} for -{name}: parse error")),
            };
            continue;
        }
        let value = match inline {
            Some(v) => v,
            None => it.next().map(String::as_str).ok_or_else(|| format!("flag needs an argument: -{name}"))?,
        };
        let duration =
            || parse_go_duration(value).map_err(|_| format!("invalid value {value:?} for flag -{name}: parse error"));
        match name {
            "socketpath" => cfg.socket_path = PathBuf::from(value),
            "pidfile" => cfg.pidfile = Some(PathBuf::from(value)).filter(|p| !p.as_os_str().is_empty()),
            "hostprefix" => cfg.hostprefix = value.to_string(),
            "statedir" => cfg.state_dir = PathBuf::from(value),
            "timeout" => {
                cfg.timeout = duration()?;
                if cfg.timeout.is_zero() {
                    return Err(format!("invalid value {value:?} for flag -timeout: must be positive"));
                }
            }
            "resendmax" => cfg.resend_max = duration()?,
            "resendtimeout" => cfg.resend_timeout = duration()?,
            "linkcheck" => cfg.link_check = duration()?,
            _ => return Err(format!("flag provided but not defined: -{name}")),
        }
    }
    if cfg.link_check.is_zero() {
        cfg.link_check = Duration::from_secs(10);
    }
    Ok(Flags::Run(cfg))
}

/// `hostprefix + path`, the way the reference joins them (plain concatenation).
fn prefixed(prefix: &str, path: &str) -> PathBuf {
    PathBuf::from(format!("{prefix}{path}"))
}

struct Entry {
    rec: Mutex<Record>,
    /// a DHCPv6 Solicit for the expired lease's address, carried from one attempt to the next
    soliciting: Mutex<Option<v6::Soliciting>>,
    stopped: Mutex<bool>,
    cv: Condvar,
    thread: Mutex<Option<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Entry {
    fn is_stopped(&self) -> bool {
        *lock(&self.stopped)
    }
    /// Sleep up to `d`; true when asked to stop.
    fn wait(&self, d: Duration) -> bool {
        let g = lock(&self.stopped);
        if *g {
            return true;
        }
        let (g, _) = self.cv.wait_timeout(g, d).unwrap_or_else(|p| p.into_inner());
        *g
    }
    fn stop(&self) {
        *lock(&self.stopped) = true;
        self.cv.notify_all();
    }
    fn join(&self) {
        if let Some(h) = lock(&self.thread).take() {
            let _ = h.join();
        }
    }
}

/// The daemon state, shared by the connection threads and the lease threads.
pub struct Daemon {
    cfg: DaemonConfig,
    store: Store,
    leases: Mutex<HashMap<String, Arc<Entry>>>,
    /// One lock per attachment (record key): the two families' attempts to re-acquire expired
    /// leases on one link take turns, so one's "link down again" never cuts the other's send.
    link_turns: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    pending: Mutex<HashSet<String>>,
    shutting_down: AtomicBool,
}

/// A failure with the CNI code the plugin should report.
struct Failure(u32, String);

/// The end of an attempt whose exchange goes on (a DHCPv6 Solicit carried from one attempt to
/// the next): the next attempt is due at this time, when its next transmission is.
#[derive(Debug)]
struct NextAttempt(Instant);

impl std::fmt::Display for NextAttempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the next attempt in {:?}", self.0.saturating_duration_since(Instant::now()))
    }
}
impl std::error::Error for NextAttempt {}

fn next_attempt(e: &anyhow::Error) -> Option<Instant> {
    e.chain().find_map(|c| c.downcast_ref::<NextAttempt>()).map(|n| n.0)
}

/// Where a lease stands; renew/rebind carry the time left until the next phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Renew(Duration),
    Rebind(Duration),
    Expired,
}

/// One address family's client as the daemon drives it: DHCPv4's [`Client`] and DHCPv6's
/// [`Client6`] acquire, renew, rebind and re-acquire through the same steps
/// ([`Daemon::acquire`], [`Daemon::step`]); this is what differs between them.
trait Family {
    type Lease: Clone;
    /// "DHCP" or "DHCPv6", in logs and errors
    const NAME: &'static str;
    /// Whether a renewal, a rebinding and a re-acquisition each run as one exchange to its end
    /// (DHCPv6, RFC 8415 §15: one transaction until its MRD), the link watched from inside it;
    /// else (DHCPv4) each runs for an attempt window ([`Daemon::window`], `-timeout`), a new
    /// transaction every time.
    const WHOLE_EXCHANGES: bool;
    fn address(lease: &Self::Lease) -> IpAddr;
    /// the lease's lifetime in seconds, for logs
    fn lifetime(lease: &Self::Lease) -> u32;
    /// put `lease` in the record, as its lease of this family
    fn keep(rec: &mut Record, lease: Self::Lease);
    /// the interface's MAC, recorded with the lease
    fn mac(&self) -> [u8; 6];
    fn acquire(&self, deadline: Instant) -> anyhow::Result<Option<Self::Lease>>;
    /// get the address of `lease` back, and no other; `watch` is polled while waiting (its error
    /// ends the exchange). `carry`: DHCPv6's Solicit carried on from one attempt to the next
    /// (left to carry on when the attempt ends at `deadline` without an answer); DHCPv4 makes
    /// each attempt a new transaction.
    fn reacquire(
        &self,
        lease: &Self::Lease,
        carry: &mut Option<v6::Soliciting>,
        deadline: Instant,
        watch: Watch<'_>,
    ) -> anyhow::Result<Reacquired<Self::Lease>>;
    fn renew(
        &self,
        lease: &Self::Lease,
        rebind: bool,
        deadline: Instant,
        watch: Watch<'_>,
    ) -> anyhow::Result<Renewal<Self::Lease>>;
    /// release a lease the daemon does not keep (best effort)
    fn give_back(&self, lease: &Self::Lease) -> anyhow::Result<()>;
}

/// What a long exchange polls: an error ends it (the lease's link vanished).
type Watch<'w> = &'w dyn Fn() -> anyhow::Result<()>;

impl Family for Client<'_> {
    type Lease = Lease;
    const NAME: &'static str = "DHCP";
    const WHOLE_EXCHANGES: bool = false;
    fn address(lease: &Lease) -> IpAddr {
        IpAddr::V4(lease.address)
    }
    fn lifetime(lease: &Lease) -> u32 {
        lease.lease_secs
    }
    fn keep(rec: &mut Record, lease: Lease) {
        rec.lease = Some(lease);
    }
    fn mac(&self) -> [u8; 6] {
        self.mac
    }
    fn acquire(&self, deadline: Instant) -> anyhow::Result<Option<Lease>> {
        Client::acquire(self, deadline)
    }
    // (an attempt window is short: the link is checked between windows)
    fn reacquire(
        &self,
        lease: &Lease,
        _: &mut Option<v6::Soliciting>,
        deadline: Instant,
        _: Watch<'_>,
    ) -> anyhow::Result<Reacquired<Lease>> {
        Client::reacquire(self, lease.address, deadline)
    }
    fn renew(&self, lease: &Lease, rebind: bool, deadline: Instant, _: Watch<'_>) -> anyhow::Result<Renewal<Lease>> {
        Client::renew(self, lease, rebind, deadline)
    }
    fn give_back(&self, lease: &Lease) -> anyhow::Result<()> {
        Client::release(self, lease)
    }
}

impl Family for Client6<'_> {
    type Lease = Lease6;
    const NAME: &'static str = "DHCPv6";
    const WHOLE_EXCHANGES: bool = true;
    fn address(lease: &Lease6) -> IpAddr {
        IpAddr::V6(lease.address)
    }
    fn lifetime(lease: &Lease6) -> u32 {
        lease.valid_secs
    }
    fn keep(rec: &mut Record, lease: Lease6) {
        rec.lease6 = Some(lease);
    }
    fn mac(&self) -> [u8; 6] {
        self.mac
    }
    fn acquire(&self, deadline: Instant) -> anyhow::Result<Option<Lease6>> {
        Client6::acquire(self, deadline)
    }
    fn reacquire(
        &self,
        lease: &Lease6,
        carry: &mut Option<v6::Soliciting>,
        deadline: Instant,
        watch: Watch<'_>,
    ) -> anyhow::Result<Reacquired<Lease6>> {
        Client6::reacquire(self, lease, carry, deadline, watch)
    }
    fn renew(
        &self,
        lease: &Lease6,
        rebind: bool,
        deadline: Instant,
        watch: Watch<'_>,
    ) -> anyhow::Result<Renewal<Lease6>> {
        Client6::renew(self, lease, rebind, deadline, watch)
    }
    fn give_back(&self, lease: &Lease6) -> anyhow::Result<()> {
        Client6::release(self, lease, deadline_in(Duration::from_secs(1))).map(|_| ())
    }
}

impl Daemon {
    /// Open the store and resume every persisted lease.
    pub fn start(cfg: DaemonConfig) -> anyhow::Result<Arc<Daemon>> {
        let store = Store::open(&cfg.state_dir)?;
        let records = store.load_all()?;
        let d = Arc::new(Daemon {
            cfg,
            store,
            leases: Mutex::new(HashMap::new()),
            link_turns: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashSet::new()),
            shutting_down: AtomicBool::new(false),
        });
        // every lease is in the map before any is maintained: a lease looks at its attachment's
        // other family's (`other_family_valid`) from its first step on
        let entries: Vec<Arc<Entry>> = records
            .into_iter()
            .map(|rec| {
                tracing::info!(id = %rec.id(), address = %rec.address(), "resuming persisted lease");
                d.insert(rec)
            })
            .collect();
        for e in &entries {
            d.spawn_maintainer(e);
        }
        Ok(d)
    }

    pub fn config(&self) -> &DaemonConfig {
        &self.cfg
    }

    /// Ids of the leases being maintained: the attachment key for a v4 lease, `<key>#6` for v6.
    pub fn lease_keys(&self) -> Vec<String> {
        let mut v: Vec<String> = lock(&self.leases).keys().cloned().collect();
        v.sort();
        v
    }

    /// The current v4 lease of an attachment key.
    pub fn lease(&self, key: &str) -> Option<Lease> {
        lock(&self.leases).get(key).and_then(|e| lock(&e.rec).lease.clone())
    }

    /// The current v6 lease of an attachment key.
    pub fn lease6(&self, key: &str) -> Option<Lease6> {
        lock(&self.leases).get(&format!("{key}#6")).and_then(|e| lock(&e.rec).lease6.clone())
    }

    fn netns_path(&self, netns: &str) -> PathBuf {
        prefixed(&self.cfg.hostprefix, netns)
    }

    fn backoff(&self) -> Backoff {
        Backoff { initial: Duration::from_secs(2).min(self.cfg.resend_max), max: self.cfg.resend_max }
    }

    /// Handle one request.
    pub fn handle(self: &Arc<Self>, req: &Request) -> Response {
        let res = match req.method {
            Method::Ping => Ok((None, None)),
            Method::Allocate => self.allocate(req),
            Method::Release => self.release(req).map(|_| (None, None)),
            Method::Gc => self.gc(req).map(|_| (None, None)),
            Method::Check => self.check(req),
        };
        match res {
            Ok((l4, l6)) => Response::ok(l4, l6),
            Err(Failure(c, m)) => {
                tracing::warn!(method = ?req.method, key = %req.key(), "{m}");
                Response::err(c, m)
            }
        }
    }

    fn allocate(self: &Arc<Self>, req: &Request) -> Result<(Option<Lease>, Option<Lease6>), Failure> {
        let key = req.key();
        if req.container_id.is_empty() || req.ifname.is_empty() || req.netns.is_empty() {
            return Err(Failure(code::INVALID_ENV, "allocate needs a container id, netns and interface".into()));
        }
        if !req.ipv4 && !req.ipv6 {
            return Err(Failure(code::INVALID_CONFIG, "ipv4 and ipv6 are both false: nothing to lease".into()));
        }
        let have4 = if req.ipv4 { self.lease(&key) } else { None };
        let have6 = if req.ipv6 { self.lease6(&key) } else { None };
        let need4 = req.ipv4 && have4.is_none();
        let need6 = req.ipv6 && have6.is_none();
        if !need4 && !need6 {
            return Ok((have4, have6));
        }
        if !lock(&self.pending).insert(key.clone()) {
            return Err(Failure(code::TRY_AGAIN, format!("an allocation for {key} is already in progress")));
        }
        let netns = self.netns_path(&req.netns);
        let lower = match ns::lower_device(&netns, &req.ifname) {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(%key, "no lower device: {e:#}");
                None
            }
        };
        // both families at once (DHCPv6 first waits for the link-local address to pass DAD)
        let (r4, r6) = std::thread::scope(|s| {
            let h6 = need6.then(|| s.spawn(|| self.acquire6(req, &key, &lower)));
            let r4 = need4.then(|| self.acquire4(req, &key, &lower));
            let r6 =
                h6.map(|h| h.join().unwrap_or_else(|_| Err(Failure(code::INTERNAL, "DHCPv6 worker panicked".into()))));
            (r4, r6)
        });
        lock(&self.pending).remove(&key);
        let (r4, r6) = (r4.transpose(), r6.transpose());
        let failed = match (&r4, &r6) {
            (Err(Failure(c, m)), _) | (_, Err(Failure(c, m))) => Some(Failure(*c, m.clone())),
            _ => None,
        };
        if let Some(f) = failed {
            // all or nothing: give back what the other family got
            for rec in [r4.ok().flatten(), r6.ok().flatten()].into_iter().flatten() {
                self.send_release(&rec);
            }
            return Err(f);
        }
        let mut out = (have4, have6);
        for rec in [r4.ok().flatten(), r6.ok().flatten()].into_iter().flatten() {
            if let Err(e) = self.store.save(&rec) {
                self.send_release(&rec);
                return Err(Failure(code::INTERNAL, format!("{e:#}")));
            }
            tracing::info!(id = %rec.id(), address = %rec.address(), lower = ?rec.lower, "lease acquired");
            if let Some(l) = &rec.lease {
                out.0 = Some(l.clone());
            }
            if let Some(l) = &rec.lease6 {
                out.1 = Some(l.clone());
            }
            self.insert_and_maintain(rec);
        }
        Ok(out)
    }

    fn record_for(&self, req: &Request, key: &str, options: ClientOptions, lower: &Option<String>) -> Record {
        Record {
            key: key.to_string(),
            container_id: req.container_id.clone(),
            network: req.network.clone(),
            ifname: req.ifname.clone(),
            netns: req.netns.clone(),
            options,
            lease: None,
            lease6: None,
            lower: lower.clone(),
            mac: None,
            link_down: false,
        }
    }

    fn no_answer(&self, req: &Request, what: &str) -> Failure {
        Failure(
            code::TRY_AGAIN,
            format!(
                "no {what} lease for {} in {}: no answer from a {what} server within {:?}",
                req.ifname,
                self.netns_path(&req.netns).display(),
                self.cfg.timeout
            ),
        )
    }

    fn acquire4(&self, req: &Request, key: &str, lower: &Option<String>) -> Result<Record, Failure> {
        let mut options = req.options.clone();
        if options.client_id.is_empty() {
            options.client_id = ClientOptions::client_id_for(key);
        }
        let deadline = deadline_in(self.cfg.timeout);
        let never = || false;
        let client = self.client4(&self.netns_path(&req.netns), &req.ifname, true, &options, &never);
        self.acquire(req, key, lower, client, options.clone(), deadline)
    }

    fn acquire6(&self, req: &Request, key: &str, lower: &Option<String>) -> Result<Record, Failure> {
        // the deadline covers the wait for the link-local address too
        let deadline = deadline_in(self.cfg.timeout);
        let never = || false;
        let client = self.client6(key, &self.netns_path(&req.netns), &req.ifname, true, &never);
        self.acquire(req, key, lower, client, ClientOptions::default(), deadline)
    }

    /// A new lease of `C`'s family for the attachment of `req`, as a record to maintain.
    fn acquire<C: Family>(
        &self,
        req: &Request,
        key: &str,
        lower: &Option<String>,
        client: anyhow::Result<C>,
        options: ClientOptions,
        deadline: Instant,
    ) -> Result<Record, Failure> {
        let failed = |e: anyhow::Error| Failure(code::INTERNAL, format!("{} on {}: {e:#}", C::NAME, req.ifname));
        let client = client.map_err(failed)?;
        match client.acquire(deadline) {
            Ok(Some(lease)) => {
                let mut rec = self.record_for(req, key, options, lower);
                C::keep(&mut rec, lease);
                rec.mac = Some(client.mac());
                Ok(rec)
            }
            Ok(None) => Err(self.no_answer(req, C::NAME)),
            Err(e) => Err(failed(e)),
        }
    }

    /// A DHCPv4 client on `ifname` in `netns`, sending `opts`.
    fn client4<'a>(
        &self,
        netns: &Path,
        ifname: &str,
        bring_up: bool,
        opts: &'a ClientOptions,
        cancel: &'a (dyn Fn() -> bool + Sync),
    ) -> anyhow::Result<Client<'a>> {
        let (sock, raw, info) = ns::open_client_socket(netns, ifname, bring_up)?;
        Ok(Client {
            sock,
            raw,
            mac: info.mac,
            local_addrs: info.addrs,
            ifname: ifname.to_string(),
            opts,
            backoff: self.backoff(),
            cancel,
        })
    }

    fn client6<'a>(
        &self,
        rec_key: &str,
        netns: &Path,
        ifname: &str,
        bring_up: bool,
        cancel: &'a (dyn Fn() -> bool + Sync),
    ) -> anyhow::Result<Client6<'a>> {
        let (sock, info) = ns::open_client_socket6(netns, ifname, bring_up, self.cfg.timeout)?;
        Ok(Client6 {
            mac: info.mac,
            sock,
            ifindex: info.index,
            ifname: ifname.to_string(),
            duid: v6::duid_for(rec_key),
            iaid: v6::iaid_for(rec_key),
            backoff: self.backoff(),
            cancel,
        })
    }

    fn check(&self, req: &Request) -> Result<(Option<Lease>, Option<Lease6>), Failure> {
        let key = req.key();
        let now = now_unix();
        let mut out = (None, None);
        if req.ipv4 {
            let l =
                self.lease(&key).ok_or_else(|| Failure(code::INTERNAL, format!("no DHCP lease known for {key}")))?;
            if l.expiry_at() <= now {
                return Err(Failure(code::INTERNAL, format!("the DHCP lease for {key} has expired")));
            }
            out.0 = Some(l);
        }
        if req.ipv6 {
            let l =
                self.lease6(&key).ok_or_else(|| Failure(code::INTERNAL, format!("no DHCPv6 lease known for {key}")))?;
            if l.expiry_at() <= now {
                return Err(Failure(code::INTERNAL, format!("the DHCPv6 lease for {key} has expired")));
            }
            out.1 = Some(l);
        }
        Ok(out)
    }

    /// Release both families' leases of the attachment (whatever the config says now).
    fn release(&self, req: &Request) -> Result<(), Failure> {
        let key = req.key();
        let r4 = self.release_id(&key);
        let r6 = self.release_id(&format!("{key}#6"));
        r4.and(r6)
    }

    /// GC: release every lease (both families) of `req.network` whose (container id, ifname)
    /// is not in `req.valid`. Without a list nothing is touched (absent is not empty).
    fn gc(&self, req: &Request) -> Result<(), Failure> {
        let Some(valid) = &req.valid else { return Ok(()) };
        let stale: Vec<String> = lock(&self.leases)
            .values()
            .map(|e| lock(&e.rec).clone())
            .filter(|r| r.network == req.network)
            .filter(|r| !valid.iter().any(|(c, i)| *c == r.container_id && *i == r.ifname))
            .map(|r| r.id())
            .collect();
        let mut errors = Vec::new();
        for id in stale {
            tracing::info!(%id, "GC: releasing the lease of a stale attachment");
            if let Err(Failure(_, m)) = self.release_id(&id) {
                errors.push(m);
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Failure(code::INTERNAL, errors.join("; ")))
        }
    }

    fn release_id(&self, id: &str) -> Result<(), Failure> {
        let entry = lock(&self.leases).remove(id);
        let Some(entry) = entry else {
            tracing::debug!(%id, "release of an unknown lease");
            return Ok(());
        };
        entry.stop();
        entry.join();
        let rec = lock(&entry.rec).clone();
        self.send_release(&rec);
        self.store.remove(id).map_err(|e| Failure(code::INTERNAL, format!("{e:#}")))
    }

    /// Tell the server the lease is free. While the container link exists, the address is
    /// taken off it first (so nobody gets it while the device still holds it) and the
    /// release goes out on it. When the link is gone (bridge deletes it before IPAM DEL),
    /// it goes out from the daemon's own netns: on the lower device recorded at ADD (the
    /// bridge, the macvlan parent) and, for v4, also unicast to the server identifier.
    fn send_release(&self, rec: &Record) {
        let id = rec.id();
        let netns = self.netns_path(&rec.netns);
        let addr =
            rec.lease.as_ref().map(|l| IpAddr::V4(l.address)).or(rec.lease6.as_ref().map(|l| IpAddr::V6(l.address)));
        let link = ns::link_exists(&netns, &rec.ifname).ok();
        if let (Some(_), Some(a)) = (&link, addr) {
            if let Err(e) = ns::remove_addr(&netns, &rec.ifname, a) {
                tracing::warn!(%id, "cannot remove {a} before releasing it: {e:#}");
            }
        }
        // a link this daemon set down (expired lease) cannot send: the host side can
        if link.is_some_and(|l| l.up) {
            match self.release_in_container(rec, &netns) {
                Ok(()) => {
                    tracing::info!(%id, address = %rec.address(), "lease released");
                    return;
                }
                Err(e) => tracing::info!(%id, "release from the container failed ({e:#}); trying the host side"),
            }
        }
        match self.release_from_host(rec) {
            Ok(how) => tracing::info!(%id, address = %rec.address(), "lease released ({how})"),
            Err(e) => tracing::warn!(%id, "DHCP release not sent: {e:#}"),
        }
    }

    fn release_in_container(&self, rec: &Record, netns: &Path) -> anyhow::Result<()> {
        let never = || false;
        if let Some(lease) = &rec.lease {
            self.client4(netns, &rec.ifname, false, &rec.options, &never)?.release(lease)?;
        }
        if let Some(lease) = &rec.lease6 {
            let client = self.client6(&rec.key, netns, &rec.ifname, false, &never)?;
            client.release(lease, deadline_in(Duration::from_secs(2)))?;
        }
        Ok(())
    }

    fn release_from_host(&self, rec: &Record) -> anyhow::Result<String> {
        let mut how = Vec::new();
        let mut errors = Vec::new();
        if let Some(lease) = &rec.lease {
            let bytes = release_message(lease, rec.mac.unwrap_or_default(), &rec.options.client_id);
            if let Some(dev) = &rec.lower {
                match ns::host_socket_on(Some(dev))
                    .and_then(|s| Ok(s.send_to(&bytes, SocketAddrV4::new(Ipv4Addr::BROADCAST, SERVER_PORT))?))
                {
                    Ok(_) => how.push(format!("broadcast on {dev}")),
                    Err(e) => errors.push(format!("broadcast on {dev}: {e:#}")),
                }
            }
            match ns::host_socket_on(None)
                .and_then(|s| Ok(s.send_to(&bytes, SocketAddrV4::new(lease.server_id, SERVER_PORT))?))
            {
                Ok(_) => how.push(format!("unicast to {}", lease.server_id)),
                Err(e) => errors.push(format!("unicast to {}: {e:#}", lease.server_id)),
            }
        }
        if let Some(lease) = &rec.lease6 {
            match &rec.lower {
                Some(dev) => {
                    let never = || false;
                    match ns::host_socket6_on(dev).and_then(|(sock, ifindex)| {
                        let c = Client6 {
                            mac: rec.mac.unwrap_or_default(),
                            sock,
                            ifindex,
                            ifname: dev.clone(),
                            duid: v6::duid_for(&rec.key),
                            iaid: v6::iaid_for(&rec.key),
                            backoff: self.backoff(),
                            cancel: &never,
                        };
                        c.release(lease, deadline_in(Duration::from_secs(2)))
                    }) {
                        Ok(true) => how.push(format!("DHCPv6 on {dev}, answered")),
                        Ok(false) => how.push(format!("DHCPv6 on {dev}, unanswered")),
                        Err(e) => errors.push(format!("DHCPv6 on {dev}: {e:#}")),
                    }
                }
                None => errors.push("no device to send the DHCPv6 release from".into()),
            }
        }
        if how.is_empty() {
            bail!("{}", errors.join("; "));
        }
        Ok(how.join(", "))
    }

    fn insert_and_maintain(self: &Arc<Self>, rec: Record) {
        let entry = self.insert(rec);
        self.spawn_maintainer(&entry);
    }

    /// Put `rec` in the lease map (stopping the entry it replaces).
    fn insert(&self, rec: Record) -> Arc<Entry> {
        let id = rec.id();
        let entry = Arc::new(Entry {
            rec: Mutex::new(rec),
            soliciting: Mutex::new(None),
            stopped: Mutex::new(false),
            cv: Condvar::new(),
            thread: Mutex::new(None),
        });
        if let Some(old) = lock(&self.leases).insert(id, Arc::clone(&entry)) {
            old.stop();
        }
        entry
    }

    /// Start the thread that maintains `entry`'s lease.
    fn spawn_maintainer(self: &Arc<Self>, entry: &Arc<Entry>) {
        let (d, e) = (Arc::clone(self), Arc::clone(entry));
        let spawned =
            std::thread::Builder::new().name("dhcp-lease".into()).stack_size(512 * 1024).spawn(move || d.maintain(&e));
        match spawned {
            Ok(h) => *lock(&entry.thread) = Some(h),
            Err(err) => tracing::error!(id = %lock(&entry.rec).id(), "cannot start lease thread: {err}"),
        }
    }

    /// Forget a lease whose link or netns vanished.
    fn drop_lease(&self, entry: &Arc<Entry>, why: &str) {
        let id = lock(&entry.rec).id();
        tracing::info!(%id, "stopping lease maintenance: {why}");
        let mut map = lock(&self.leases);
        if map.get(&id).is_some_and(|e| Arc::ptr_eq(e, entry)) {
            map.remove(&id);
            drop(map);
            if let Err(e) = self.store.remove(&id) {
                tracing::warn!(%id, "{e:#}");
            }
        }
    }

    /// Update the record (and its file, unless a release is under way).
    fn update(&self, entry: &Entry, f: impl FnOnce(&mut Record)) {
        let rec = {
            let mut r = lock(&entry.rec);
            f(&mut r);
            r.clone()
        };
        // hold the stop lock so a concurrent release cannot lose the race and leave a file behind
        let stopped = lock(&entry.stopped);
        if !*stopped {
            if let Err(e) = self.store.save(&rec) {
                tracing::warn!(id = %rec.id(), "{e:#}");
            }
        }
    }

    /// One lease's life: sleep until T1, renew until T2, rebind until expiry; at expiry the
    /// address comes off the link and the link goes down, and the daemon keeps trying to get
    /// the same address back (which puts it back on the link and the link up; see
    /// [`Daemon::maintain_step`]); checks the link every `link_check`.
    fn maintain(self: &Arc<Self>, entry: &Arc<Entry>) {
        let mut failures_since: Option<Instant> = None;
        let mut retry = Duration::from_secs(1);
        self.learn_link_facts(entry);
        loop {
            if entry.is_stopped() || self.shutting_down.load(Ordering::Relaxed) {
                return;
            }
            let rec = lock(&entry.rec).clone();
            let netns = self.netns_path(&rec.netns);
            let step = self.maintain_step(entry, &rec, &netns, now_unix());
            match step {
                Ok(Some(wait)) => {
                    failures_since = None;
                    retry = Duration::from_secs(1);
                    if entry.wait(wait) {
                        return;
                    }
                }
                Ok(None) => {
                    failures_since = None;
                    retry = Duration::from_secs(1);
                }
                Err(e) if ns::is_gone(&e) => {
                    self.drop_lease(entry, &format!("{e:#}"));
                    return;
                }
                Err(e) => {
                    if entry.is_stopped() {
                        return;
                    }
                    if let Some(at) = next_attempt(&e) {
                        // an exchange carried on: no failure, its next transmission is due then
                        tracing::info!(id = %rec.id(), address = %rec.address(), "{e:#}");
                        match self.wait_for_attempt(entry, &rec, at) {
                            Ok(false) => continue,
                            Ok(true) => return,
                            Err(e) => {
                                self.drop_lease(entry, &format!("{e:#}"));
                                return;
                            }
                        }
                    }
                    let since = *failures_since.get_or_insert_with(Instant::now);
                    tracing::warn!(id = %rec.id(), address = %rec.address(), "lease maintenance: {e:#}");
                    if since.elapsed() > self.cfg.resend_timeout && rec.expiry_at() <= now_unix() {
                        // still failing long after expiry: keep trying, but slowly
                        retry = self.cfg.resend_max.max(Duration::from_secs(1));
                    }
                    if entry.wait(retry) {
                        return;
                    }
                    retry = retry.saturating_mul(2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// Wait until `at` (the next attempt of an exchange carried on), checking the link every
    /// `-linkcheck`: `Ok(true)` when asked to stop, `Err` (`Gone`) when the link vanished.
    fn wait_for_attempt(&self, entry: &Entry, rec: &Record, at: Instant) -> anyhow::Result<bool> {
        let watch = self.link_watch(rec);
        loop {
            let left = at.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            if entry.wait(left.min(self.cfg.link_check)) {
                return Ok(true);
            }
            watch()?;
        }
    }

    /// A lease file written before lower devices and MACs were recorded learns them on
    /// resume, so a later release after the link is gone still finds the host-side path.
    fn learn_link_facts(&self, entry: &Entry) {
        let rec = lock(&entry.rec).clone();
        let netns = self.netns_path(&rec.netns);
        let lower = match rec.lower {
            Some(_) => None,
            None => ns::lower_device(&netns, &rec.ifname).ok().flatten(),
        };
        let mac = match rec.mac {
            Some(_) => None,
            None => ns::link_exists(&netns, &rec.ifname).ok().map(|i| i.mac),
        };
        if lower.is_some() || mac.is_some() {
            tracing::debug!(id = %rec.id(), ?lower, "link facts learned");
            self.update(entry, |r| {
                r.lower = r.lower.take().or(lower);
                r.mac = r.mac.or(mac);
            });
        }
    }

    /// Do whatever is due now. `Ok(Some(d))`: sleep `d` then look again; `Ok(None)`: look again now.
    ///
    /// An expired lease (not renewed or rebound in time) is no longer ours: like the reference,
    /// the daemon sets the link down, and it also takes the address off the link, since each
    /// attempt to get the address back has to set the link up to send. Only the same address
    /// brings the link back: it is put back on the link (routes the kernel removed are not
    /// restored) and the link set up. A server that has another address for the attachment
    /// leaves the link down and the other address unbound (the pod needs a new ADD).
    ///
    /// On a dual-stack link the link goes down only when no lease of it is valid: while the
    /// other family's lease runs, an expired family's address comes off and the link stays up
    /// (that lease still renews through it). The two families' re-acquiring attempts take turns
    /// (`link_turns`), so one attempt's "down again" never falls inside the other's.
    fn maintain_step(
        &self,
        entry: &Arc<Entry>,
        rec: &Record,
        netns: &Path,
        now: u64,
    ) -> anyhow::Result<Option<Duration>> {
        ns::link_exists(netns, &rec.ifname)?;
        if now < rec.t1_at() {
            let until = Duration::from_secs(rec.t1_at() - now);
            return Ok(Some(until.min(self.cfg.link_check)));
        }
        let secs_until = |t: u64| Duration::from_secs(t.saturating_sub(now));
        let phase = if now < rec.t2_at() {
            Phase::Renew(secs_until(rec.t2_at()))
        } else if now < rec.expiry_at() {
            Phase::Rebind(secs_until(rec.expiry_at()))
        } else {
            Phase::Expired
        };
        let expired = phase == Phase::Expired;
        let turn = expired.then(|| self.link_turn(&rec.key));
        let _turn = turn.as_ref().map(|t| lock(t));
        if expired {
            self.take_down(entry, rec, netns)?;
        }
        // an expired lease is re-acquired on the link taken down (without the address)
        let cancel = || entry.is_stopped();
        let res = match (&rec.lease, &rec.lease6) {
            (Some(l), _) => self
                .client4(netns, &rec.ifname, expired, &rec.options, &cancel)
                .and_then(|c| self.step(entry, rec, &c, l, phase)),
            (_, Some(l)) => self
                .client6(&rec.key, netns, &rec.ifname, expired, &cancel)
                .and_then(|c| self.step(entry, rec, &c, l, phase)),
            _ => bail!("record without a lease"),
        };
        if expired {
            match &res {
                Ok(_) => self.bring_back(entry, netns)?,
                Err(e) if !ns::is_gone(e) && !self.other_family_valid(rec) => ns::set_link(netns, &rec.ifname, false)?,
                Err(_) => {}
            }
        }
        res
    }

    /// The lock under which expired leases of attachment `key` (both families) are re-acquired.
    /// The map keeps only the locks a step holds (the others are dropped here), so it does not
    /// grow with every attachment the daemon ever saw.
    fn link_turn(&self, key: &str) -> Arc<Mutex<()>> {
        let mut turns = lock(&self.link_turns);
        turns.retain(|_, t| Arc::strong_count(t) > 1);
        Arc::clone(turns.entry(key.to_string()).or_default())
    }

    /// Whether the other family's lease of `rec`'s attachment (the same link) has not expired.
    fn other_family_valid(&self, rec: &Record) -> bool {
        let entry = lock(&self.leases).get(&rec.other_family_id()).cloned();
        entry.is_some_and(|e| {
            let r = lock(&e.rec);
            (r.lease.is_some() || r.lease6.is_some()) && r.expiry_at() > now_unix()
        })
    }

    /// An expired lease: its address off the link and the link down (both idempotent; the link
    /// stays up while the other family's lease of it is valid), the record marked `link_down`.
    fn take_down(&self, entry: &Entry, rec: &Record, netns: &Path) -> anyhow::Result<()> {
        let address =
            rec.lease.as_ref().map(|l| IpAddr::V4(l.address)).or(rec.lease6.as_ref().map(|l| IpAddr::V6(l.address)));
        let other_valid = self.other_family_valid(rec);
        if !rec.link_down {
            let what = if other_valid { "leaving it up: the other family's lease is valid" } else { "setting it down" };
            tracing::warn!(id = %rec.id(), address = %rec.address(), "lease expired unrenewed; taking the address off {} and {what}", rec.ifname);
        }
        if let Some(a) = address {
            ns::remove_addr(netns, &rec.ifname, a)?;
        }
        if !other_valid {
            ns::set_link(netns, &rec.ifname, false)?;
        }
        if !rec.link_down {
            self.update(entry, |r| r.link_down = true);
        }
        Ok(())
    }

    /// The expired lease's address is ours again: back on the link, the link up, the record no
    /// longer `link_down`.
    fn bring_back(&self, entry: &Entry, netns: &Path) -> anyhow::Result<()> {
        let rec = lock(&entry.rec).clone();
        let net = match (&rec.lease, &rec.lease6) {
            (Some(l), _) => l.net().map(IpNet::V4),
            (_, Some(l)) => Ipv6Net::new(l.address, 128).ok().map(IpNet::V6),
            _ => None,
        };
        tracing::info!(id = %rec.id(), address = %rec.address(), "lease re-acquired; putting the address back on {} and setting it up", rec.ifname);
        if let Some(net) = net {
            ns::add_addr(netns, &rec.ifname, net)?;
        }
        ns::set_link(netns, &rec.ifname, true)?;
        self.update(entry, |r| r.link_down = false);
        Ok(())
    }

    /// The attempt window of a DHCPv4 renew/rebind: up to the next phase, but re-check the link
    /// regularly.
    fn window(&self, left: Duration) -> Instant {
        deadline_in(left.min(self.cfg.link_check.max(self.cfg.timeout)).max(Duration::from_secs(1)))
    }

    /// What a whole exchange of `rec` polls ([`Family::WHOLE_EXCHANGES`]): every `-linkcheck`,
    /// whether the lease's link and netns still exist (`Gone` ends the exchange; another
    /// failure to look is no reason to). The transaction goes on meanwhile.
    fn link_watch(&self, rec: &Record) -> impl Fn() -> anyhow::Result<()> + '_ {
        let (netns, ifname) = (self.netns_path(&rec.netns), rec.ifname.clone());
        let checked = std::cell::Cell::new(Instant::now());
        move || {
            if checked.get().elapsed() < self.cfg.link_check {
                return Ok(());
            }
            checked.set(Instant::now());
            match ns::link_exists(&netns, &ifname) {
                Err(e) if ns::is_gone(&e) => Err(e),
                Err(e) => {
                    tracing::debug!(%ifname, "link check: {e:#}");
                    Ok(())
                }
                Ok(_) => Ok(()),
            }
        }
    }

    /// Renew or rebind `lease` in its phase; re-acquire it when the server refused or it expired.
    /// Only the lease's own address is ever kept: a renewal or re-acquisition that gives another
    /// one is released (or, offered only, not taken) and fails the step, so the link never
    /// carries an address the record does not hold; the lease runs on to its expiry. A renewal
    /// that withdraws the address (DHCPv6) ends the lease at once: the next step finds it
    /// expired.
    ///
    /// DHCPv6 runs each exchange whole (RFC 8415 §15, [`Family::WHOLE_EXCHANGES`]): a Renew
    /// until T2, a Rebind until the lease ends, a Solicit for the address until the lease ends
    /// (after a refused renewal) or without end (after the expiry), each one transaction.
    fn step<C: Family>(
        &self,
        entry: &Entry,
        rec: &Record,
        client: &C,
        lease: &C::Lease,
        phase: Phase,
    ) -> anyhow::Result<Option<Duration>> {
        let (id, family, address) = (rec.id(), C::NAME, C::address(lease));
        let watch = self.link_watch(rec);
        let secs_left = |t: u64| Duration::from_secs(t.saturating_sub(now_unix()));
        match phase {
            Phase::Renew(left) | Phase::Rebind(left) => {
                let rebind = matches!(phase, Phase::Rebind(_));
                let until = if C::WHOLE_EXCHANGES { deadline_in(left) } else { self.window(left) };
                match client.renew(lease, rebind, until, &watch)? {
                    Renewal::Bound(l) if C::address(&l) == address => {
                        let lifetime = C::lifetime(&l);
                        tracing::info!(%id, %address, lifetime, rebind, "{family} lease renewed");
                        self.update(entry, |r| C::keep(r, l));
                        return Ok(None);
                    }
                    Renewal::Bound(l) => {
                        let other = C::address(&l);
                        if let Err(e) = client.give_back(&l) {
                            tracing::warn!(%id, %other, "{e:#}");
                        }
                        bail!("the {family} server renewed {address} as {other}: {other} released, {address} kept until it expires");
                    }
                    Renewal::Withdrawn(l) => {
                        tracing::warn!(%id, %address, rebind, "the {family} server withdrew {address}: the lease ends now");
                        self.update(entry, |r| C::keep(r, l));
                        return Ok(None);
                    }
                    Renewal::NoReply => return Ok(None),
                    Renewal::Refused(why) => tracing::warn!(%id, %address, rebind, "{family} renewal refused: {why}"),
                }
            }
            Phase::Expired => tracing::info!(%id, %address, "trying to get the expired {family} lease back"),
        }
        let reacquired = match phase {
            // DHCPv6 after the expiry: one Solicit without end, carried from one attempt to the
            // next; each attempt (the link up, without the address) lasts `-timeout`, and the
            // next is due with the next transmission
            Phase::Expired if C::WHOLE_EXCHANGES => {
                let mut carry = lock(&entry.soliciting);
                let r = client.reacquire(lease, &mut carry, deadline_in(self.cfg.timeout), &watch)?;
                if let (Reacquired::NoAnswer, Some(going_on)) = (&r, carry.as_ref()) {
                    return Err(anyhow::Error::new(NextAttempt(going_on.next_at()))
                        .context(format!("no {family} server answered yet while re-acquiring {address}")));
                }
                r
            }
            // DHCPv6 after a refused renewal: one Solicit until the lease ends
            _ if C::WHOLE_EXCHANGES => {
                client.reacquire(lease, &mut None, deadline_in(secs_left(rec.expiry_at())), &watch)?
            }
            _ => client.reacquire(lease, &mut None, deadline_in(self.cfg.timeout), &watch)?,
        };
        match reacquired {
            Reacquired::Same(l) => {
                tracing::info!(%id, %address, lifetime = C::lifetime(&l), "{family} lease re-acquired");
                self.update(entry, |r| C::keep(r, l));
                Ok(None)
            }
            Reacquired::Other(other) => bail!(
                "the {family} server has {other} for this attachment, not {address}: {other} not taken (the attachment needs a new ADD)"
            ),
            Reacquired::Refused(why) => bail!("re-acquiring {address}: {why}"),
            Reacquired::NoAnswer => bail!("no {family} server answered while re-acquiring {address}"),
        }
    }

    /// Serve connections until `stop` is called.
    pub fn serve(self: &Arc<Self>, listener: UnixListener) {
        for conn in listener.incoming() {
            if self.shutting_down.load(Ordering::Relaxed) {
                return;
            }
            let stream = match conn {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            let d = Arc::clone(self);
            let spawned = std::thread::Builder::new().name("dhcp-conn".into()).spawn(move || d.serve_conn(&stream));
            if let Err(e) = spawned {
                tracing::error!("cannot start connection thread: {e}");
            }
        }
    }

    fn serve_conn(self: &Arc<Self>, stream: &UnixStream) {
        let resp = match rpc::read_request(stream) {
            Ok(req) => self.handle(&req),
            Err(e) => Response::err(code::DECODE, format!("{e:#}")),
        };
        if let Err(e) = rpc::write_response(stream, &resp) {
            tracing::debug!("writing response: {e:#}");
        }
    }

    /// Stop every lease thread (leases stay persisted, nothing is released) and make
    /// `serve` return at its next wake-up (`wake` = the socket to poke).
    pub fn stop(&self, wake: Option<&Path>) {
        self.shutting_down.store(true, Ordering::Relaxed);
        let entries: Vec<Arc<Entry>> = lock(&self.leases).values().cloned().collect();
        for e in &entries {
            e.stop();
        }
        for e in &entries {
            e.join();
        }
        if let Some(p) = wake {
            let _ = UnixStream::connect(p);
        }
    }
}

/// Bind the listening socket at `path`: create the directory (0700), replace a stale
/// socket file, refuse when another daemon answers there. The socket is bound and listening
/// under a temporary name first and then linked into place (never over an existing file), so
/// a plugin that finds the path always finds a daemon accepting: binding at the path itself
/// leaves it refusing connections until `listen`.
pub fn bind_socket(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        refuse_if_served(path)?;
        std::fs::remove_file(path).with_context(|| format!("removing stale socket {}", path.display()))?;
    }
    let name = path.file_name().ok_or_else(|| anyhow!("socket path {} has no file name", path.display()))?;
    let tmp = path.with_file_name(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp).with_context(|| format!("listening on {}", tmp.display()))?;
    // a hard link never replaces an existing name (EEXIST), as rename(2) would
    let placed = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match placed {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            bail!("another dhcp daemon is already listening on {}", path.display());
        }
        Err(e) => return Err(anyhow!("placing the socket at {}: {e}", path.display())),
    }
    Ok(listener)
}

/// Fail when a daemon answers on the socket at `path`.
fn refuse_if_served(path: &Path) -> anyhow::Result<()> {
    if UnixStream::connect(path).is_ok() {
        bail!("another dhcp daemon is already listening on {}", path.display());
    }
    Ok(())
}

/// Write our pid to `-pidfile` as the reference does: the path must be absolute (the
/// reference's message otherwise), the pid without a newline.
fn write_pidfile(pf: &Path) -> anyhow::Result<()> {
    if !pf.is_absolute() {
        bail!("Error writing pidfile \"{}\": path not absolute", pf.display());
    }
    std::fs::write(pf, std::process::id().to_string())
        .with_context(|| format!("Error writing pidfile \"{}\"", pf.display()))
}

/// `dhcp daemon [flags]`: `args` are the words after `daemon`. Returns the exit status.
pub fn daemon_main(args: &[String]) -> i32 {
    // Go's flag.ExitOnError: the error and the usage on stderr, exit 2; the usage alone for -h, exit 0
    let cfg = match parse_flags(args) {
        Ok(Flags::Run(cfg)) => cfg,
        Ok(Flags::Help) => {
            eprint!("{}", usage());
            return 0;
        }
        Err(e) => {
            eprint!("{e}\n{}", usage());
            return 2;
        }
    };
    match run(cfg) {
        Ok(()) => 0,
        Err(e) => {
            // once on stderr; the log file (when there is one) records it too
            eprintln!("dhcp daemon: {e:#}");
            if crate::logging::writes_to_file() {
                tracing::error!("dhcp daemon: {e:#}");
            }
            1
        }
    }
}

/// The daemon: the pidfile is written before the socket is bound, as the reference writes it
/// (a relative `-pidfile` is refused before anything is made), but never over the pidfile of a
/// daemon that answers on the socket, and it is removed again when the start fails after it.
fn run(cfg: DaemonConfig) -> anyhow::Result<()> {
    use nix::sys::signal::{SigSet, Signal};
    if let Some(pf) = cfg.pidfile.as_deref().filter(|p| !p.is_absolute()) {
        return write_pidfile(pf);
    }
    // block the stop signals before any thread exists, so only the main thread takes them
    let mut sigs = SigSet::empty();
    sigs.add(Signal::SIGINT);
    sigs.add(Signal::SIGTERM);
    sigs.thread_block().context("blocking signals")?;

    let activated = crate::sys::listen_fds::take_unix_listener()?;
    let path = prefixed(&cfg.hostprefix, &cfg.socket_path.to_string_lossy());
    if activated.is_none() {
        refuse_if_served(&path)?;
    }
    if let Some(pf) = &cfg.pidfile {
        write_pidfile(pf)?;
    }
    let remove_pidfile = || {
        if let Some(pf) = &cfg.pidfile {
            let _ = std::fs::remove_file(pf);
        }
    };
    let (listener, owned_path) = match activated {
        Some(l) => {
            tracing::info!("using the socket passed by systemd (LISTEN_FDS)");
            (l, None)
        }
        None => (bind_socket(&path).inspect_err(|_| remove_pidfile())?, Some(path)),
    };
    let daemon = Daemon::start(cfg.clone()).inspect_err(|_| {
        remove_pidfile();
        if let Some(p) = &owned_path {
            let _ = std::fs::remove_file(p);
        }
    })?;
    let d = Arc::clone(&daemon);
    std::thread::Builder::new().name("dhcp-accept".into()).spawn(move || d.serve(listener))?;
    tracing::info!(socket = ?owned_path, state_dir = %cfg.state_dir.display(), "dhcp daemon running");

    let sig = sigs.wait().context("waiting for signals")?;
    tracing::info!("dhcp daemon: {sig:?}, shutting down (leases stay persisted)");
    daemon.stop(None);
    if let Some(p) = &owned_path {
        let _ = std::fs::remove_file(p);
    }
    if let Some(pf) = &cfg.pidfile {
        let _ = std::fs::remove_file(pf);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    /// The socket appears at its path already listening (bound under a temporary name, then
    /// linked to the path), a second daemon is refused, a stale socket file is replaced, and no temporary
    /// name is left behind.
    #[test]
    fn socket_is_placed_listening_and_exclusive() {
        let dir = std::env::temp_dir().join(format!("cm-dsock-{}", std::process::id()));
        let path = dir.join("sub").join("d.sock");
        let listener = bind_socket(&path).unwrap();
        assert!(UnixStream::connect(&path).is_ok(), "accepting at the path");
        let names = |d: &Path| -> Vec<String> {
            std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
        };
        assert_eq!(names(path.parent().unwrap()), ["d.sock"]);
        let e = bind_socket(&path).unwrap_err().to_string();
        assert!(e.contains("already listening"), "{e}");
        assert_eq!(names(path.parent().unwrap()), ["d.sock"]);
        // the daemon is gone, its socket file stays: the next one takes the path over
        drop(listener);
        assert!(UnixStream::connect(&path).is_err());
        let again = bind_socket(&path).unwrap();
        assert!(UnixStream::connect(&path).is_ok());
        drop(again);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_go_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_go_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_go_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_go_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_go_duration(".5s").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_go_duration("5.s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_go_duration("1.000000001s").unwrap(), Duration::new(1, 1));
        assert_eq!(parse_go_duration("2h45m0.5s").unwrap(), Duration::new(9900, 500_000_000));
        assert_eq!(parse_go_duration("1µs").unwrap(), Duration::from_micros(1));
        for bad in ["", "10", "s", "10x", "1..5s", ".s", "1.2.3s", "99999999999999999999999999999999999999999h"] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
    }

    fn cfg(args: &[&str]) -> DaemonConfig {
        match parse_flags(&s(args)) {
            Ok(Flags::Run(c)) => c,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    /// The per-attachment re-acquire locks live only while a step holds one: taken twice for one
    /// attachment, it is the same lock; once let go, the next look drops it from the map.
    #[test]
    fn link_turns_are_kept_only_while_held() {
        let dir = std::env::temp_dir().join(format!("cm-turns-{}", std::process::id()));
        let d = Daemon::start(cfg(&["-statedir", dir.to_str().unwrap()])).unwrap();
        let a = d.link_turn("c1/net/eth0");
        let b = d.link_turn("c1/net/eth0");
        assert!(Arc::ptr_eq(&a, &b));
        drop((a, b));
        let _c = d.link_turn("c2/net/eth0");
        assert_eq!(lock(&d.link_turns).keys().collect::<Vec<_>>(), ["c2/net/eth0"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn err(args: &[&str]) -> String {
        match parse_flags(&s(args)) {
            Err(e) => e,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn flags_like_go() {
        let c =
            cfg(&["-socketpath", "/tmp/x.sock", "--pidfile=/tmp/p", "-broadcast", "-timeout", "3s", "-resendmax=5s"]);
        assert_eq!(c.socket_path, PathBuf::from("/tmp/x.sock"));
        assert_eq!(c.pidfile, Some(PathBuf::from("/tmp/p")));
        assert!(c.broadcast);
        assert_eq!(c.timeout, Duration::from_secs(3));
        assert_eq!(c.resend_max, Duration::from_secs(5));
        let c = cfg(&["--hostprefix", "/host", "--statedir=/s", "-linkcheck", "1m", "-resendtimeout=1s", "--"]);
        assert_eq!(c.hostprefix, "/host");
        assert_eq!(
            (c.state_dir, c.link_check, c.resend_timeout),
            ("/s".into(), Duration::from_secs(60), Duration::from_secs(1))
        );
        assert_eq!(prefixed(&c.hostprefix, "/var/run/netns/a"), PathBuf::from("/host/var/run/netns/a"));
        let d = cfg(&[]);
        assert_eq!(d.socket_path, PathBuf::from("/run/cni/dhcp.sock"));
        assert_eq!(d.resend_timeout, Duration::from_secs(208));
        assert!(!d.broadcast);
        // bools: Go's strconv.ParseBool spellings, only with `=`
        for (v, want) in [("true", true), ("T", true), ("1", true), ("false", false), ("F", false), ("0", false)] {
            assert_eq!(cfg(&["-broadcast", &format!("--broadcast={v}")]).broadcast, want, "{v}");
        }
        assert!(!cfg(&["-broadcast=false"]).broadcast);
        // the usage for -h, -help, --help, also after other flags
        for h in [&["-h"][..], &["-help"], &["--help"], &["--h"], &["-timeout", "5s", "-h"], &["-h=1"]] {
            assert!(matches!(parse_flags(&s(h)), Ok(Flags::Help)), "{h:?}");
        }
    }

    /// Go's messages, word for word (flag.FlagSet.parseOne and failf).
    #[test]
    fn flag_errors_are_go_s() {
        assert_eq!(err(&["-bogus"]), "flag provided but not defined: -bogus");
        assert_eq!(err(&["--bogus=1"]), "flag provided but not defined: -bogus");
        assert_eq!(err(&["-bogus", "1"]), "flag provided but not defined: -bogus");
        assert_eq!(err(&["-timeout"]), "flag needs an argument: -timeout");
        assert_eq!(err(&["-timeout", "10"]), "invalid value \"10\" for flag -timeout: parse error");
        assert_eq!(err(&["-linkcheck=soon"]), "invalid value \"soon\" for flag -linkcheck: parse error");
        assert_eq!(err(&["-broadcast=maybe"]), "invalid boolean value \"maybe\" for -broadcast: parse error");
        assert_eq!(err(&["-broadcast="]), "invalid boolean value \"\" for -broadcast: parse error");
        for bad in ["---x", "-=x", "--=x"] {
            assert_eq!(err(&[bad]), format!("bad flag syntax: {bad}"));
        }
        // stricter than Go, which ignores what follows the flags
        assert!(err(&["-broadcast", "false"]).starts_with("unexpected argument \"false\""));
        assert!(err(&["-"]).starts_with("unexpected argument \"-\""));
        assert!(err(&["--", "x"]).starts_with("unexpected argument \"x\""));
        assert_eq!(err(&["-timeout=0s"]), "invalid value \"0s\" for flag -timeout: must be positive");
    }

    #[test]
    fn usage_is_go_s_print_defaults() {
        let u = usage();
        assert!(u.starts_with("Usage of daemon:\n  -broadcast\n    \tbroadcast DHCP leases"), "{u}");
        assert!(
            u.contains(
                "\n  -socketpath string\n    \toptional dhcp server socketpath (default \"/run/cni/dhcp.sock\")\n"
            ),
            "{u}"
        );
        assert!(
            u.contains("\n  -timeout duration\n    \thow long one acquisition (ADD) may take (default 10s)\n"),
            "{u}"
        );
        assert!(u.contains("\n  -pidfile string\n    \toptional path to write daemon PID to\n"), "{u}");
        // every flag, in name order, each default what DaemonConfig::default() holds
        let names: Vec<&str> = FLAGS.iter().map(|f| f.name).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
        let d = DaemonConfig::default();
        for f in FLAGS.iter().filter(|f| f.kind == FlagKind::Duration) {
            let got = cfg(&[&format!("-{}={}", f.name, f.default)]);
            let want = cfg(&[]);
            assert_eq!(
                (got.timeout, got.resend_max, got.resend_timeout, got.link_check),
                (want.timeout, want.resend_max, want.resend_timeout, want.link_check),
                "{}",
                f.name
            );
        }
        assert_eq!((d.socket_path.to_str(), d.state_dir.to_str()), (Some(DEFAULT_SOCKET), Some(DEFAULT_STATE_DIR)));
    }
}
