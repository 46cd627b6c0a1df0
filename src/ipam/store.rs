//! The host-local on-disk store, byte-compatible with the reference plugin:
//!
//! - `<dataDir>/<network>/` (0755) holds one file per reserved address, named by the
//!   canonical address text, created with `O_EXCL` (the atomic reservation), mode 0600,
//!   content `<containerID>\r\n<ifname>` without a trailing newline (files written before
//!   2018 hold only the container id);
//! - `last_reserved_ip.<N>` holds the last address reserved in range set N (no newline);
//! - `lock` is an empty file; an exclusive `flock(2)` on it is held for every operation,
//!   which is what the reference takes too, so both binaries can share one directory.
//!
//! Unlike the reference, only files named by an IP address are ever treated as
//! reservations (a container id that looks like an address can never match
//! `last_reserved_ip.*`), and a torn or foreign file is read as "held by an unknown owner".

use anyhow::Context;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::cni::CniError;

pub const LAST_IP_PREFIX: &str = "last_reserved_ip.";
pub const LOCK_FILE: &str = "lock";
pub const LINE_BREAK: &str = "\r\n";
/// files larger than this cannot be a reservation written by any host-local
const MAX_OWNER_LEN: u64 = 4096;

/// Who holds an address, as read from its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// `<id>\r\n<ifname>`
    Attachment { id: String, ifname: String },
    /// pre-2018 files: just the container id
    Legacy(String),
    /// empty, torn, oversized or unreadable content
    Unknown,
}

impl Owner {
    /// Parse file content the way the reference compares it (surrounding whitespace trimmed).
    pub fn parse(bytes: &[u8]) -> Owner {
        let Ok(text) = std::str::from_utf8(bytes) else { return Owner::Unknown };
        let text = text.trim();
        let clean = |s: &str| !s.is_empty() && !s.chars().any(|c| c.is_whitespace() || c.is_control());
        match text.split_once(LINE_BREAK) {
            Some((id, ifname)) if clean(id) && clean(ifname) => {
                Owner::Attachment { id: id.to_string(), ifname: ifname.to_string() }
            }
            Some(_) => Owner::Unknown,
            None if clean(text) => Owner::Legacy(text.to_string()),
            None => Owner::Unknown,
        }
    }

    /// Whether this owner is exactly (id, ifname).
    pub fn is(&self, id: &str, ifname: &str) -> bool {
        matches!(self, Owner::Attachment { id: i, ifname: f } if i == id.trim() && f == ifname)
    }

    /// Whether this is a legacy (id-only) file of `id`.
    pub fn is_legacy_of(&self, id: &str) -> bool {
        matches!(self, Owner::Legacy(i) if i == id.trim())
    }
}

/// One reservation file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub ip: IpAddr,
    pub owner: Owner,
    /// the file was empty (a writer died between create and write)
    pub empty: bool,
}

/// The directory of one network, locked for as long as this value lives.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    _lock: Flock<File>,
}

/// Check a network name before it becomes a path component.
pub fn validate_network_name(name: &str) -> Result<(), CniError> {
    if name.is_empty() {
        return Err(CniError::config("network name is empty"));
    }
    if name == "." || name == ".." || name.contains('/') || name.contains('\0') || name.len() > 255 {
        return Err(CniError::config(format!("network name {name:?} cannot be used as a directory name")));
    }
    Ok(())
}

/// Check a dataDir: absolute, no NUL.
pub fn validate_data_dir(dir: &Path) -> Result<(), CniError> {
    if !dir.is_absolute() {
        return Err(CniError::config(format!("dataDir {:?} must be an absolute path", dir.display())));
    }
    if dir.as_os_str().as_encoded_bytes().contains(&0) {
        return Err(CniError::config("dataDir contains a NUL byte"));
    }
    Ok(())
}

/// The canonical file name of an address (Go's `net.IP.String()`; equals Rust's Display
/// for IPv4 and for non-mapped IPv6).
pub fn ip_file_name(ip: IpAddr) -> String {
    ip.to_canonical().to_string()
}

/// The address a file name stands for, only if the name is its canonical text.
pub fn parse_ip_file_name(name: &str) -> Option<IpAddr> {
    let ip: IpAddr = name.parse().ok()?;
    (ip_file_name(ip) == name).then_some(ip)
}

fn lock_dir(dir: &Path) -> anyhow::Result<Flock<File>> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(false)
        .create(false)
        .open(&path)
        .or_else(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                // O_CREAT needs write or append in std; append never writes anything here
                OpenOptions::new().append(true).create(true).mode(0o600).open(&path)
            } else {
                Err(e)
            }
        })
        .with_context(|| format!("failed to open lock file {}", path.display()))?;
    let mut file = file;
    loop {
        match Flock::lock(file, FlockArg::LockExclusive) {
            Ok(l) => return Ok(l),
            Err((f, Errno::EINTR)) => file = f,
            Err((_, e)) => {
                return Err(CniError::try_again(format!("failed to lock {}: {e}", path.display())).into());
            }
        }
    }
}

impl Store {
    /// Open (creating it 0755 if needed) and lock the directory of `network`.
    pub fn open(data_dir: &Path, network: &str) -> anyhow::Result<Store> {
        validate_data_dir(data_dir)?;
        validate_network_name(network)?;
        let dir = data_dir.join(network);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&dir)
            .with_context(|| format!("failed to create {}", dir.display()))?;
        let lock = lock_dir(&dir)?;
        let store = Store { dir, _lock: lock };
        store.remove_stale_temp_files();
        Ok(store)
    }

    /// Temp files (`.<name>.tmp`, `.<ip>.<pid>.tmp`) are only ever written under the lock, so
    /// any found by the lock holder belong to a plugin that died mid-write: remove them.
    fn remove_stale_temp_files(&self) {
        let Ok(rd) = fs::read_dir(&self.dir) else { return };
        for de in rd.flatten() {
            let name = de.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') && name.ends_with(".tmp") && de.file_type().is_ok_and(|t| t.is_file()) {
                let _ = fs::remove_file(de.path());
            }
        }
    }

    /// Lock the directory of `network` if it exists; `None` if there is none (nothing to
    /// release, nothing to collect — and nothing gets created).
    pub fn open_existing(data_dir: &Path, network: &str) -> anyhow::Result<Option<Store>> {
        validate_data_dir(data_dir)?;
        validate_network_name(network)?;
        let dir = data_dir.join(network);
        match fs::metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => anyhow::bail!("{} is not a directory", dir.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("failed to stat {}", dir.display())),
        }
        let lock = lock_dir(&dir)?;
        let store = Store { dir, _lock: lock };
        store.remove_stale_temp_files();
        Ok(Some(store))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reserve `ip` for (id, ifname): `Ok(false)` if the address is already held.
    /// On success `last_reserved_ip.<range_id>` is rewritten.
    pub fn reserve(&self, id: &str, ifname: &str, ip: IpAddr, range_id: usize) -> anyhow::Result<bool> {
        let path = self.dir.join(ip_file_name(ip));
        if path.symlink_metadata().is_ok() {
            return Ok(false);
        }
        // The reservation appears with its full content or not at all: write a private temp
        // file, then hard-link it to the address's name (link(2) fails with EEXIST exactly like
        // the reference's O_EXCL create). A plugin killed half-way leaves at most a temp file,
        // never an empty reservation. No fsync: like the reference, a reservation only has to
        // outlive the plugin process, not a power loss (which takes the containers with it),
        // and an fsync would cost more than the rest of an ADD.
        let tmp = self.dir.join(format!(".{}.{}.tmp", ip_file_name(ip), std::process::id()));
        let content = format!("{}{LINE_BREAK}{ifname}", id.trim());
        let written = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(content.as_bytes()));
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e).with_context(|| format!("failed to write {}", tmp.display()));
        }
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(e).with_context(|| format!("failed to create {}", path.display())),
        }
        if let Err(e) = self.write_last_reserved(ip, range_id) {
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        Ok(true)
    }

    /// Atomically replace `last_reserved_ip.<range_id>` (write a temp file, rename).
    fn write_last_reserved(&self, ip: IpAddr, range_id: usize) -> anyhow::Result<()> {
        let name = format!("{LAST_IP_PREFIX}{range_id}");
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let path = self.dir.join(&name);
        let res = (|| -> std::io::Result<()> {
            let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
            f.write_all(ip_file_name(ip).as_bytes())?;
            drop(f);
            fs::rename(&tmp, &path)
        })();
        if res.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        res.with_context(|| format!("failed to write {}", path.display()))
    }

    /// The last address reserved in range set `range_id`; `None` when absent or unreadable.
    pub fn last_reserved_ip(&self, range_id: usize) -> Option<IpAddr> {
        let path = self.dir.join(format!("{LAST_IP_PREFIX}{range_id}"));
        let bytes = read_small(&path).ok()??;
        std::str::from_utf8(&bytes).ok()?.trim().parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
    }

    /// Every reservation file (regular files named by an address), in directory order.
    pub fn entries(&self) -> anyhow::Result<Vec<Entry>> {
        let mut out = Vec::new();
        let rd = fs::read_dir(&self.dir).with_context(|| format!("failed to read {}", self.dir.display()))?;
        // one directory fd, files opened relative to it with a single read each: the walk is
        // O(leases) by the reference's layout, so keep each step to three syscalls
        let dir = File::open(&self.dir).with_context(|| format!("failed to open {}", self.dir.display()))?;
        for de in rd {
            let Ok(de) = de else { continue };
            let Some(name) = de.file_name().to_str().map(str::to_owned) else { continue };
            let Some(ip) = parse_ip_file_name(&name) else { continue };
            match de.file_type() {
                Ok(t) if t.is_file() => {}
                _ => continue,
            }
            let (owner, empty) = match read_small_at(&dir, &name) {
                Ok(Some(b)) => (Owner::parse(&b), b.is_empty()),
                Ok(None) => (Owner::Unknown, false),
                // vanished between readdir and open: not a reservation any more
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(_) => (Owner::Unknown, false),
            };
            out.push(Entry { ip, owner, empty });
        }
        Ok(out)
    }

    /// Addresses currently held (by anyone).
    pub fn held(&self) -> anyhow::Result<HashSet<IpAddr>> {
        Ok(self.entries()?.into_iter().map(|e| e.ip).collect())
    }

    /// Addresses held by (id, ifname), or by `id` in a legacy file.
    pub fn get_by_id(&self, id: &str, ifname: &str) -> anyhow::Result<Vec<IpAddr>> {
        Ok(self
            .entries()?
            .into_iter()
            .filter(|e| e.owner.is(id, ifname) || e.owner.is_legacy_of(id))
            .map(|e| e.ip)
            .collect())
    }

    /// Release one address (absent is fine).
    pub fn release(&self, ip: IpAddr) -> anyhow::Result<()> {
        let path = self.dir.join(ip_file_name(ip));
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("failed to remove {}", path.display())),
        }
    }

    /// The reference's DEL: release everything of (id, ifname); when nothing matched,
    /// release the legacy files holding just `id`. Returns the released addresses.
    pub fn release_by_id(&self, id: &str, ifname: &str) -> anyhow::Result<Vec<IpAddr>> {
        let entries = self.entries()?;
        let mut mine: Vec<IpAddr> = entries.iter().filter(|e| e.owner.is(id, ifname)).map(|e| e.ip).collect();
        if mine.is_empty() {
            mine = entries.iter().filter(|e| e.owner.is_legacy_of(id)).map(|e| e.ip).collect();
        }
        let mut errors = Vec::new();
        for ip in &mine {
            if let Err(e) = self.release(*ip) {
                errors.push(format!("{e:#}"));
            }
        }
        if !errors.is_empty() {
            anyhow::bail!(errors.join("; "));
        }
        Ok(mine)
    }

    /// Whether (id, ifname) — or, failing that, a legacy file of `id` — holds anything.
    pub fn find_by_id(&self, id: &str, ifname: &str) -> anyhow::Result<bool> {
        Ok(!self.get_by_id(id, ifname)?.is_empty())
    }

    /// Release every reservation whose owner is not a valid attachment. Legacy files stay
    /// when their id appears with any ifname; files torn empty (a writer died between
    /// create and write) are released; other unreadable content is kept (its owner is
    /// unknown). Returns the released addresses; keeps going on errors and reports them.
    pub fn gc(&self, valid: &[(String, String)]) -> anyhow::Result<Vec<IpAddr>> {
        let pairs: HashSet<(&str, &str)> = valid.iter().map(|(i, f)| (i.trim(), f.as_str())).collect();
        let ids: HashSet<&str> = valid.iter().map(|(i, _)| i.trim()).collect();
        let mut released = Vec::new();
        let mut errors = Vec::new();
        for e in self.entries()? {
            let stale = match &e.owner {
                Owner::Attachment { id, ifname } => !pairs.contains(&(id.as_str(), ifname.as_str())),
                Owner::Legacy(id) => !ids.contains(id.as_str()),
                Owner::Unknown if e.empty => true,
                Owner::Unknown => {
                    tracing::warn!(ip = %e.ip, "keeping reservation with unreadable owner");
                    false
                }
            };
            if stale {
                match self.release(e.ip) {
                    Ok(()) => released.push(e.ip),
                    Err(err) => errors.push(format!("{err:#}")),
                }
            }
        }
        if !errors.is_empty() {
            anyhow::bail!(errors.join("; "));
        }
        Ok(released)
    }
}

/// Read a file of at most MAX_OWNER_LEN bytes; `Ok(None)` if it is larger.
fn read_small_at(dir: &File, name: &str) -> std::io::Result<Option<Vec<u8>>> {
    use nix::fcntl::{openat, OFlag};
    use nix::sys::stat::Mode;
    let fd = openat(dir, name, OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW, Mode::empty())?;
    let mut buf = [0u8; MAX_OWNER_LEN as usize + 1];
    let mut len = 0;
    // regular files return everything up to the buffer size in one read; loop only on EINTR/short reads
    while len < buf.len() {
        let want = buf.len() - len;
        match nix::unistd::read(&fd, buf.get_mut(len..).unwrap_or_default()) {
            Ok(0) => break,
            // a short read of a regular file is its end: no second read for the usual tiny file
            Ok(n) if n < want => {
                len += n;
                break;
            }
            Ok(n) => len += n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok((len as u64 <= MAX_OWNER_LEN).then(|| buf.get(..len).unwrap_or_default().to_vec()))
}

fn read_small(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    let f = File::open(path)?;
    let mut buf = Vec::new();
    f.take(MAX_OWNER_LEN + 1).read_to_end(&mut buf)?;
    Ok((buf.len() as u64 <= MAX_OWNER_LEN).then_some(buf))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A unique temp dir removed on drop.
    pub(crate) struct TempDir(pub PathBuf);
    impl TempDir {
        pub(crate) fn new(tag: &str) -> TempDir {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static N: AtomicUsize = AtomicUsize::new(0);
            let p = std::env::temp_dir().join(format!(
                "cni-multi-ipam-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn exact_bytes_and_modes() {
        let t = TempDir::new("bytes");
        let s = Store::open(&t.0, "net1").unwrap();
        assert!(s.reserve(" c1 ", "eth0", ip("198.18.0.2"), 0).unwrap());
        assert!(s.reserve("c1", "eth0", ip("fd00::2"), 1).unwrap());
        let d = t.0.join("net1");
        assert_eq!(mode(&d), 0o755);
        assert_eq!(fs::read(d.join("198.18.0.2")).unwrap(), b"c1\r\neth0");
        assert_eq!(fs::read(d.join("fd00::2")).unwrap(), b"c1\r\neth0");
        assert_eq!(mode(&d.join("198.18.0.2")), 0o600);
        assert_eq!(fs::read(d.join("last_reserved_ip.0")).unwrap(), b"198.18.0.2");
        assert_eq!(fs::read(d.join("last_reserved_ip.1")).unwrap(), b"fd00::2");
        assert_eq!(mode(&d.join("last_reserved_ip.0")), 0o600);
        assert_eq!(fs::read(d.join("lock")).unwrap(), b"");
        let mut names: Vec<String> =
            fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, ["198.18.0.2", "fd00::2", "last_reserved_ip.0", "last_reserved_ip.1", "lock"]);
        // second reservation of the same address refused
        assert!(!s.reserve("c2", "eth0", ip("198.18.0.2"), 0).unwrap());
        assert_eq!(fs::read(d.join("198.18.0.2")).unwrap(), b"c1\r\neth0");
        assert_eq!(s.last_reserved_ip(0), Some(ip("198.18.0.2")));
        assert_eq!(s.last_reserved_ip(7), None);
    }

    #[test]
    fn owner_parsing_tolerates_garbage() {
        assert_eq!(Owner::parse(b"c1\r\neth0"), Owner::Attachment { id: "c1".into(), ifname: "eth0".into() });
        assert_eq!(Owner::parse(b" c1\r\neth0\n"), Owner::Attachment { id: "c1".into(), ifname: "eth0".into() });
        assert_eq!(Owner::parse(b"c1"), Owner::Legacy("c1".into()));
        assert_eq!(Owner::parse(b"c1\n"), Owner::Legacy("c1".into()));
        assert_eq!(Owner::parse(b""), Owner::Unknown);
        assert_eq!(Owner::parse(b"c1\r\n"), Owner::Legacy("c1".into()));
        assert_eq!(Owner::parse(b"\xff\xfe"), Owner::Unknown);
        assert_eq!(Owner::parse(b"c1 c2"), Owner::Unknown);
        assert_eq!(Owner::parse(b"c1\r\neth0\r\nx"), Owner::Unknown);
    }

    #[test]
    fn torn_files_are_held_by_unknown() {
        let t = TempDir::new("torn");
        let s = Store::open(&t.0, "n").unwrap();
        let d = s.dir().to_path_buf();
        fs::write(d.join("198.18.0.2"), b"").unwrap();
        fs::write(d.join("198.18.0.3"), b"\xff\x00garbage").unwrap();
        fs::write(d.join("198.18.0.4"), vec![b'a'; 10_000]).unwrap();
        fs::write(d.join("last_reserved_ip.0"), b"not an ip").unwrap();
        fs::create_dir(d.join("198.18.0.5")).unwrap();
        let mut e = s.entries().unwrap();
        e.sort_by_key(|e| e.ip);
        assert_eq!(e.len(), 3);
        assert!(e.iter().all(|e| e.owner == Owner::Unknown));
        assert!(e[0].empty && !e[1].empty);
        assert_eq!(s.last_reserved_ip(0), None);
        assert!(!s.reserve("c", "eth0", ip("198.18.0.3"), 0).unwrap());
        assert!(s.release_by_id("c", "eth0").unwrap().is_empty());
        assert!(!s.find_by_id("c", "eth0").unwrap());
    }

    #[test]
    fn release_by_id_then_legacy() {
        let t = TempDir::new("rel");
        let s = Store::open(&t.0, "n").unwrap();
        let d = s.dir().to_path_buf();
        s.reserve("c1", "eth0", ip("198.18.0.2"), 0).unwrap();
        s.reserve("c1", "eth1", ip("198.18.0.3"), 0).unwrap();
        fs::write(d.join("198.18.0.4"), b"c1").unwrap(); // legacy
                                                         // a container id that looks like an address never matches last_reserved_ip.*
        fs::write(d.join("last_reserved_ip.9"), b"c1").unwrap();
        assert_eq!(s.release_by_id("c1", "eth0").unwrap(), [ip("198.18.0.2")]);
        assert!(d.join("198.18.0.4").exists(), "legacy kept while (id, ifname) matched");
        assert_eq!(s.release_by_id("c1", "eth0").unwrap(), [ip("198.18.0.4")]);
        assert!(s.release_by_id("c1", "eth0").unwrap().is_empty());
        assert!(d.join("198.18.0.3").exists());
        assert!(d.join("last_reserved_ip.9").exists());
    }

    #[test]
    fn gc_cases() {
        let t = TempDir::new("gc");
        let s = Store::open(&t.0, "n").unwrap();
        let d = s.dir().to_path_buf();
        s.reserve("keep", "eth0", ip("198.18.0.2"), 0).unwrap();
        s.reserve("keep", "eth1", ip("198.18.0.3"), 0).unwrap();
        s.reserve("gone", "eth0", ip("fd00::2"), 1).unwrap();
        fs::write(d.join("198.18.0.10"), b"keep").unwrap(); // legacy, id still valid
        fs::write(d.join("198.18.0.11"), b"gone").unwrap(); // legacy, id gone
        fs::write(d.join("198.18.0.12"), b"").unwrap(); // torn empty
        fs::write(d.join("198.18.0.13"), b"\xff").unwrap(); // foreign content
        fs::write(d.join("unrelated"), b"gone\r\neth0").unwrap();
        let valid = vec![("keep".to_string(), "eth0".to_string())];
        let mut rel = s.gc(&valid).unwrap();
        rel.sort();
        assert_eq!(rel, [ip("198.18.0.3"), ip("198.18.0.11"), ip("198.18.0.12"), ip("fd00::2")]);
        for kept in ["198.18.0.2", "198.18.0.10", "198.18.0.13", "unrelated", "lock", "last_reserved_ip.0"] {
            assert!(d.join(kept).exists(), "{kept} must stay");
        }
        // the empty list releases every reservation with a known owner
        let rel = s.gc(&[]).unwrap();
        assert_eq!(rel.len(), 2);
        let mut names: Vec<String> =
            fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, ["198.18.0.13", "last_reserved_ip.0", "last_reserved_ip.1", "lock", "unrelated"]);
    }

    #[test]
    fn names_and_paths_validated() {
        for bad in ["", ".", "..", "a/b", "../x"] {
            assert_eq!(validate_network_name(bad).unwrap_err().code, 7, "{bad:?}");
        }
        validate_network_name("net-1.a_b").unwrap();
        assert_eq!(validate_data_dir(Path::new("rel/dir")).unwrap_err().code, 7);
        let e = Store::open(Path::new("relative"), "n").unwrap_err();
        assert_eq!(CniError::from_anyhow(&e).code, 7);
        assert!(Store::open_existing(Path::new("/nonexistent-cni-multi-dir"), "n").unwrap().is_none());
    }

    #[test]
    fn file_names_are_canonical() {
        assert_eq!(ip_file_name(ip("fd00:0:0::2")), "fd00::2");
        assert_eq!(ip_file_name(ip("::ffff:198.18.0.1")), "198.18.0.1");
        assert_eq!(parse_ip_file_name("fd00::2"), Some(ip("fd00::2")));
        assert_eq!(parse_ip_file_name("fd00:0::2"), None);
        assert_eq!(parse_ip_file_name("last_reserved_ip.0"), None);
    }

    #[test]
    fn lock_is_exclusive() {
        let t = TempDir::new("lock");
        let s = Store::open(&t.0, "n").unwrap();
        let f = File::open(s.dir().join(LOCK_FILE)).unwrap();
        assert!(matches!(Flock::lock(f, FlockArg::LockExclusiveNonblock), Err((_, Errno::EWOULDBLOCK))));
        drop(s);
        let f = File::open(t.0.join("n").join(LOCK_FILE)).unwrap();
        assert!(Flock::lock(f, FlockArg::LockExclusiveNonblock).is_ok());
    }
}
