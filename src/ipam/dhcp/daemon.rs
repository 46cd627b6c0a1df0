//! The lease daemon: serves the unix socket, acquires leases inside container netnses,
//! keeps one maintenance thread per lease (renew at T1, rebind at T2, re-acquire after
//! expiry or NAK), persists leases so a restart resumes them, and drops leases whose
//! netns or link vanished.

use super::client::{deadline_in, now_unix, Backoff, Client, ClientOptions, Lease, Renewal};
use super::ns;
use super::rpc::{self, Method, Request, Response};
use super::store::{Record, Store};
use crate::cni::code;
use anyhow::{anyhow, bail, Context};
use std::collections::{HashMap, HashSet};
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

const USAGE: &str = "usage: dhcp daemon [-socketpath PATH] [-pidfile PATH] [-hostprefix PREFIX] [-broadcast] \
[-timeout 10s] [-resendmax 62s] [-resendtimeout 208s] [-statedir /var/lib/cni/dhcp] [-linkcheck 10s]";

/// Parse a Go duration ("10s", "1m30s", "500ms", "1.5h").
pub fn parse_go_duration(s: &str) -> anyhow::Result<Duration> {
    let bad = || anyhow!("invalid duration {s:?}");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        let n: f64 = num.parse().map_err(|_| bad())?;
        let unit_len = tail.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let mult = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += n * mult;
        rest = tail;
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad())
}

/// Go `flag`-style parsing: `-name value`, `-name=value`, `--name…`; bools as `-broadcast`
/// or `-broadcast=false`. `args` are the words after `daemon`.
pub fn parse_flags(args: &[String]) -> anyhow::Result<DaemonConfig> {
    let mut cfg = DaemonConfig::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let Some(flag) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            bail!("unexpected argument {arg:?}\n{USAGE}");
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (flag, None),
        };
        if name == "broadcast" {
            cfg.broadcast = match inline.as_deref() {
                None | Some("true" | "1" | "t" | "T" | "TRUE" | "True") => true,
                Some("false" | "0" | "f" | "F" | "FALSE" | "False") => false,
                Some(v) => bail!("invalid boolean value {v:?} for -broadcast"),
            };
            continue;
        }
        if matches!(name, "h" | "help") {
            bail!("{USAGE}");
        }
        let value = match inline {
            Some(v) => v,
            None => it.next().cloned().ok_or_else(|| anyhow!("flag needs an argument: -{name}\n{USAGE}"))?,
        };
        match name {
            "socketpath" => cfg.socket_path = PathBuf::from(value),
            "pidfile" => cfg.pidfile = Some(PathBuf::from(value)).filter(|p| !p.as_os_str().is_empty()),
            "hostprefix" => cfg.hostprefix = value,
            "timeout" => cfg.timeout = parse_go_duration(&value)?,
            "resendmax" => cfg.resend_max = parse_go_duration(&value)?,
            "resendtimeout" => cfg.resend_timeout = parse_go_duration(&value)?,
            "statedir" => cfg.state_dir = PathBuf::from(value),
            "linkcheck" => cfg.link_check = parse_go_duration(&value)?,
            _ => bail!("flag provided but not defined: -{name}\n{USAGE}"),
        }
    }
    if cfg.timeout.is_zero() {
        bail!("-timeout must be positive");
    }
    if cfg.link_check.is_zero() {
        cfg.link_check = Duration::from_secs(10);
    }
    Ok(cfg)
}

/// `hostprefix + path`, the way the reference joins them (plain concatenation).
fn prefixed(prefix: &str, path: &str) -> PathBuf {
    PathBuf::from(format!("{prefix}{path}"))
}

struct Entry {
    rec: Mutex<Record>,
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
    pending: Mutex<HashSet<String>>,
    shutting_down: AtomicBool,
}

/// A failure with the CNI code the plugin should report.
struct Failure(u32, String);

impl Daemon {
    /// Open the store and resume every persisted lease.
    pub fn start(cfg: DaemonConfig) -> anyhow::Result<Arc<Daemon>> {
        let store = Store::open(&cfg.state_dir)?;
        let records = store.load_all()?;
        let d = Arc::new(Daemon {
            cfg,
            store,
            leases: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashSet::new()),
            shutting_down: AtomicBool::new(false),
        });
        for rec in records {
            tracing::info!(key = %rec.key, address = %rec.lease.address, "resuming persisted lease");
            d.insert_and_maintain(rec);
        }
        Ok(d)
    }

    pub fn config(&self) -> &DaemonConfig {
        &self.cfg
    }

    /// Keys of the leases being maintained.
    pub fn lease_keys(&self) -> Vec<String> {
        let mut v: Vec<String> = lock(&self.leases).keys().cloned().collect();
        v.sort();
        v
    }

    /// The current lease for a key.
    pub fn lease(&self, key: &str) -> Option<Lease> {
        lock(&self.leases).get(key).map(|e| lock(&e.rec).lease.clone())
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
            Method::Ping => Ok(None),
            Method::Allocate => self.allocate(req).map(Some),
            Method::Release => self.release(req).map(|_| None),
            Method::Gc => self.gc(req).map(|_| None),
            Method::Check => self.check(req).map(Some),
        };
        match res {
            Ok(l) => Response::ok(l),
            Err(Failure(c, m)) => {
                tracing::warn!(method = ?req.method, key = %req.key(), "{m}");
                Response::err(c, m)
            }
        }
    }

    fn allocate(self: &Arc<Self>, req: &Request) -> Result<Lease, Failure> {
        let key = req.key();
        if req.container_id.is_empty() || req.ifname.is_empty() || req.netns.is_empty() {
            return Err(Failure(code::INVALID_ENV, "allocate needs a container id, netns and interface".into()));
        }
        if let Some(l) = self.lease(&key) {
            return Ok(l);
        }
        if !lock(&self.pending).insert(key.clone()) {
            return Err(Failure(code::TRY_AGAIN, format!("an allocation for {key} is already in progress")));
        }
        let res = self.acquire_new(req, &key);
        lock(&self.pending).remove(&key);
        let rec = res?;
        let lease = rec.lease.clone();
        self.store.save(&rec).map_err(|e| Failure(code::INTERNAL, format!("{e:#}")))?;
        tracing::info!(%key, address = %lease.address, "lease acquired");
        self.insert_and_maintain(rec);
        Ok(lease)
    }

    fn acquire_new(&self, req: &Request, key: &str) -> Result<Record, Failure> {
        let mut options = req.options.clone();
        if options.client_id.is_empty() {
            options.client_id = ClientOptions::client_id_for(key);
        }
        let netns = self.netns_path(&req.netns);
        let (sock, info) =
            ns::open_client_socket(&netns, &req.ifname, true).map_err(|e| Failure(code::INTERNAL, format!("{e:#}")))?;
        let never = || false;
        let client = Client {
            sock,
            mac: info.mac,
            local_addrs: info.addrs.clone(),
            ifname: req.ifname.clone(),
            opts: &options,
            backoff: self.backoff(),
            cancel: &never,
        };
        let deadline = deadline_in(self.cfg.timeout);
        match client.acquire(None, deadline) {
            Ok(Some(lease)) => Ok(Record {
                key: key.to_string(),
                container_id: req.container_id.clone(),
                network: req.network.clone(),
                ifname: req.ifname.clone(),
                netns: req.netns.clone(),
                options,
                lease,
            }),
            Ok(None) => Err(Failure(
                code::TRY_AGAIN,
                format!(
                    "no DHCP lease for {} in {}: no answer from a DHCP server within {:?}",
                    req.ifname,
                    netns.display(),
                    self.cfg.timeout
                ),
            )),
            Err(e) => Err(Failure(code::INTERNAL, format!("DHCP on {}: {e:#}", req.ifname))),
        }
    }

    fn check(&self, req: &Request) -> Result<Lease, Failure> {
        let key = req.key();
        let lease =
            self.lease(&key).ok_or_else(|| Failure(code::INTERNAL, format!("no DHCP lease known for {key}")))?;
        if lease.expiry_at() <= now_unix() {
            return Err(Failure(code::INTERNAL, format!("the DHCP lease for {key} has expired")));
        }
        Ok(lease)
    }

    fn release(&self, req: &Request) -> Result<(), Failure> {
        self.release_key(&req.key())
    }

    /// GC: release every lease of `req.network` whose (container id, ifname) is not in
    /// `req.valid`. Without a list nothing is touched (absent is not empty).
    fn gc(&self, req: &Request) -> Result<(), Failure> {
        let Some(valid) = &req.valid else { return Ok(()) };
        let stale: Vec<String> = lock(&self.leases)
            .values()
            .map(|e| lock(&e.rec).clone())
            .filter(|r| r.network == req.network)
            .filter(|r| !valid.iter().any(|(c, i)| *c == r.container_id && *i == r.ifname))
            .map(|r| r.key)
            .collect();
        let mut errors = Vec::new();
        for key in stale {
            tracing::info!(%key, "GC: releasing the lease of a stale attachment");
            if let Err(Failure(_, m)) = self.release_key(&key) {
                errors.push(m);
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Failure(code::INTERNAL, errors.join("; ")))
        }
    }

    fn release_key(&self, key: &str) -> Result<(), Failure> {
        let key = key.to_string();
        let entry = lock(&self.leases).remove(&key);
        let Some(entry) = entry else {
            tracing::debug!(%key, "release of an unknown lease");
            return Ok(());
        };
        entry.stop();
        entry.join();
        let rec = lock(&entry.rec).clone();
        let netns = self.netns_path(&rec.netns);
        match ns::open_client_socket(&netns, &rec.ifname, false) {
            Ok((sock, info)) => {
                let never = || false;
                let client = Client {
                    sock,
                    mac: info.mac,
                    local_addrs: info.addrs.clone(),
                    ifname: rec.ifname.clone(),
                    opts: &rec.options,
                    backoff: self.backoff(),
                    cancel: &never,
                };
                match client.release(&rec.lease) {
                    Ok(()) => tracing::info!(%key, address = %rec.lease.address, "lease released"),
                    Err(e) => tracing::warn!(%key, "DHCPRELEASE not sent: {e:#}"),
                }
            }
            Err(e) => tracing::info!(%key, "not sending DHCPRELEASE: {e:#}"),
        }
        self.store.remove(&key).map_err(|e| Failure(code::INTERNAL, format!("{e:#}")))
    }

    fn insert_and_maintain(self: &Arc<Self>, rec: Record) {
        let key = rec.key.clone();
        let entry = Arc::new(Entry {
            rec: Mutex::new(rec),
            stopped: Mutex::new(false),
            cv: Condvar::new(),
            thread: Mutex::new(None),
        });
        let (d, e) = (Arc::clone(self), Arc::clone(&entry));
        let spawned =
            std::thread::Builder::new().name("dhcp-lease".into()).stack_size(512 * 1024).spawn(move || d.maintain(&e));
        match spawned {
            Ok(h) => *lock(&entry.thread) = Some(h),
            Err(err) => tracing::error!(%key, "cannot start lease thread: {err}"),
        }
        if let Some(old) = lock(&self.leases).insert(key, entry) {
            old.stop();
        }
    }

    /// Forget a lease whose link or netns vanished.
    fn drop_lease(&self, entry: &Arc<Entry>, why: &str) {
        let key = lock(&entry.rec).key.clone();
        tracing::info!(%key, "stopping lease maintenance: {why}");
        let mut map = lock(&self.leases);
        if map.get(&key).is_some_and(|e| Arc::ptr_eq(e, entry)) {
            map.remove(&key);
            drop(map);
            if let Err(e) = self.store.remove(&key) {
                tracing::warn!(%key, "{e:#}");
            }
        }
    }

    fn save_if_live(&self, entry: &Entry, lease: Lease) {
        let rec = {
            let mut r = lock(&entry.rec);
            r.lease = lease;
            r.clone()
        };
        // hold the stop lock so a concurrent release cannot lose the race and leave a file behind
        let stopped = lock(&entry.stopped);
        if !*stopped {
            if let Err(e) = self.store.save(&rec) {
                tracing::warn!(key = %rec.key, "{e:#}");
            }
        }
    }

    /// One lease's life: sleep until T1, renew (unicast) until T2, rebind (broadcast) until
    /// expiry, then re-acquire; checks the link every `link_check`.
    fn maintain(self: &Arc<Self>, entry: &Arc<Entry>) {
        let mut failures_since: Option<Instant> = None;
        let mut retry = Duration::from_secs(1);
        loop {
            if entry.is_stopped() || self.shutting_down.load(Ordering::Relaxed) {
                return;
            }
            let rec = lock(&entry.rec).clone();
            let netns = self.netns_path(&rec.netns);
            let now = now_unix();
            let lease = &rec.lease;
            let step = self.maintain_step(entry, &rec, &netns, now);
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
                    let since = *failures_since.get_or_insert_with(Instant::now);
                    tracing::warn!(key = %rec.key, address = %lease.address, "lease maintenance: {e:#}");
                    if since.elapsed() > self.cfg.resend_timeout && lease.expiry_at() <= now_unix() {
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

    /// Do whatever is due now. `Ok(Some(d))`: sleep `d` then look again; `Ok(None)`: look again now.
    fn maintain_step(
        &self,
        entry: &Arc<Entry>,
        rec: &Record,
        netns: &Path,
        now: u64,
    ) -> anyhow::Result<Option<Duration>> {
        let lease = &rec.lease;
        ns::link_exists(netns, &rec.ifname)?;
        if now < lease.t1_at() {
            let until = Duration::from_secs(lease.t1_at() - now);
            return Ok(Some(until.min(self.cfg.link_check)));
        }
        let (sock, info) = ns::open_client_socket(netns, &rec.ifname, false)?;
        let cancel = || entry.is_stopped();
        let client = Client {
            sock,
            mac: info.mac,
            local_addrs: info.addrs.clone(),
            ifname: rec.ifname.clone(),
            opts: &rec.options,
            backoff: self.backoff(),
            cancel: &cancel,
        };
        let secs_until = |t: u64| Duration::from_secs(t.saturating_sub(now));
        let (phase, window) = if now < lease.t2_at() {
            ("renew", secs_until(lease.t2_at()))
        } else if now < lease.expiry_at() {
            ("rebind", secs_until(lease.expiry_at()))
        } else {
            ("expired", Duration::ZERO)
        };
        if phase != "expired" {
            // one attempt window: up to the next phase, but re-check the link regularly
            let deadline =
                deadline_in(window.min(self.cfg.link_check.max(self.cfg.timeout)).max(Duration::from_secs(1)));
            match client.renew(lease, phase == "rebind", deadline)? {
                Renewal::Ack(l) => {
                    tracing::info!(key = %rec.key, address = %l.address, lease_secs = l.lease_secs, "lease {phase}ed");
                    self.save_if_live(entry, l);
                    return Ok(None);
                }
                Renewal::NoReply => return Ok(None),
                Renewal::Nak => tracing::warn!(key = %rec.key, address = %lease.address, "DHCP NAK on {phase}"),
            }
        } else {
            tracing::warn!(key = %rec.key, address = %lease.address, "lease expired; re-acquiring");
        }
        let prefer = if phase == "expired" { Some(lease.address) } else { None };
        match client.acquire(prefer, deadline_in(self.cfg.timeout))? {
            Some(l) => {
                if l.address != lease.address {
                    tracing::warn!(key = %rec.key, old = %lease.address, new = %l.address, "re-acquired a different address");
                }
                self.save_if_live(entry, l);
                Ok(None)
            }
            None => bail!("no DHCP server answered while re-acquiring"),
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
/// socket file, refuse when another daemon answers there.
pub fn bind_socket(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            bail!("another dhcp daemon is already listening on {}", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale socket {}", path.display()))?;
    }
    UnixListener::bind(path).with_context(|| format!("listening on {}", path.display()))
}

/// `dhcp daemon [flags]`: `args` are the words after `daemon`. Returns the exit status.
pub fn daemon_main(args: &[String]) -> i32 {
    match run(args) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("dhcp daemon: {e:#}");
            eprintln!("dhcp daemon: {e:#}");
            1
        }
    }
}

fn run(args: &[String]) -> anyhow::Result<()> {
    use nix::sys::signal::{SigSet, Signal};
    let cfg = parse_flags(args)?;
    // block the stop signals before any thread exists, so only the main thread takes them
    let mut sigs = SigSet::empty();
    sigs.add(Signal::SIGINT);
    sigs.add(Signal::SIGTERM);
    sigs.thread_block().context("blocking signals")?;

    let (listener, owned_path) = match crate::sys::listen_fds::take_unix_listener()? {
        Some(l) => {
            tracing::info!("using the socket passed by systemd (LISTEN_FDS)");
            (l, None)
        }
        None => {
            let path = prefixed(&cfg.hostprefix, &cfg.socket_path.to_string_lossy());
            (bind_socket(&path)?, Some(path))
        }
    };
    if let Some(pf) = &cfg.pidfile {
        std::fs::write(pf, format!("{}\n", std::process::id()))
            .with_context(|| format!("writing pidfile {}", pf.display()))?;
    }
    let daemon = Daemon::start(cfg.clone())?;
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

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_go_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_go_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_go_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_go_duration("0").unwrap(), Duration::ZERO);
        for bad in ["", "10", "s", "10x", "1..5s"] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn flags_like_go() {
        let c = parse_flags(&s(&[
            "-socketpath",
            "/tmp/x.sock",
            "--pidfile=/tmp/p",
            "-broadcast",
            "-timeout",
            "3s",
            "-resendmax=5s",
            "-hostprefix",
            "/host",
        ]))
        .unwrap();
        assert_eq!(c.socket_path, PathBuf::from("/tmp/x.sock"));
        assert_eq!(c.pidfile, Some(PathBuf::from("/tmp/p")));
        assert!(c.broadcast);
        assert_eq!(c.timeout, Duration::from_secs(3));
        assert_eq!(c.resend_max, Duration::from_secs(5));
        assert_eq!(c.hostprefix, "/host");
        assert_eq!(prefixed(&c.hostprefix, "/var/run/netns/a"), PathBuf::from("/host/var/run/netns/a"));
        let d = parse_flags(&[]).unwrap();
        assert_eq!(d.socket_path, PathBuf::from("/run/cni/dhcp.sock"));
        assert_eq!(d.resend_timeout, Duration::from_secs(208));
        assert!(!d.broadcast);
        assert!(parse_flags(&s(&["-bogus", "1"])).is_err());
        assert!(parse_flags(&s(&["-timeout"])).is_err());
        assert!(parse_flags(&s(&["-broadcast=maybe"])).is_err());
        assert!(!parse_flags(&s(&["-broadcast=false"])).unwrap().broadcast);
    }
}
