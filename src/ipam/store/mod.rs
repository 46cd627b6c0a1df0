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
//!
//! ## The index
//!
//! Finding a container's reservation in the reference's layout means reading every lease
//! file. cni-multi keeps what it read in `.cni-multi-index` beside the leases (0600, a name
//! no address and no reference file can take) and, on the next operation, reads that one
//! file instead, if and only if the directory is provably unchanged since it was written:
//!
//! - the index records the directory's device, inode, mtime and ctime (ns) and entry count,
//!   taken *after* the writer's last change to the directory (the index itself is rewritten
//!   in place, which changes the file, not the directory);
//! - any writer (the reference, an older cni-multi, `rm`, `mv`, an editor's rename) that
//!   adds, removes or replaces a lease changes the directory's mtime and ctime. Linux ≥ 6.13
//!   gives a change that follows a `stat` of the directory a fine-grained timestamp distinct
//!   from the one that `stat` saw (multigrain timestamps, ext4/xfs/btrfs/tmpfs), so equal
//!   times mean no change;
//! - with coarse timestamps (older kernels, other file systems) a change in the same clock
//!   tick as the recorded one keeps the time. The index is therefore trusted on the times
//!   alone only when it was itself written in a later tick than the directory's last change
//!   (its own mtime is greater, "racy git" rule); otherwise the directory is listed (names and
//!   inode numbers, no file opened) and only leases that are new or have a new inode are read;
//! - any mismatch, a missing, torn or foreign index (checksum, version) means
//!   one full scan, which also rewrites the index. A plugin killed between a reservation and
//!   the index update leaves an index that no longer matches the directory: the next
//!   operation rescans. Every read and write happens under the store's flock.
//!
//! In memory the leases stay index lines (see [`index`]): a lookup binary-searches them, a
//! change splices one line, so an operation does not parse every lease.
//!
//! Not seen: a lease rewritten in place (same name, same inode, e.g. `echo id > <ip>`), which
//! changes the file but not the directory. Touch the directory after such an edit (or remove
//! the index) and the next operation rescans.

use anyhow::Context;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, DirEntryExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::cni::CniError;

mod index;
use index::{DirStamp, Lease, View};

pub const LAST_IP_PREFIX: &str = "last_reserved_ip.";
pub const LOCK_FILE: &str = "lock";
pub const LINE_BREAK: &str = "\r\n";
/// cni-multi's index of the network directory (see the module doc)
pub const INDEX_FILE: &str = ".cni-multi-index";
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

/// How the in-memory view was obtained (for tests and tracing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexUse {
    /// the index matched the directory: no lease file read
    Trusted,
    /// the index matched but was written in the directory's last clock tick: names listed,
    /// new leases read
    Refreshed,
    /// no usable index: every lease read
    Rebuilt,
}

/// The directory of one network, locked for as long as this value lives.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    /// the network directory itself (stat and openat)
    dirfd: File,
    /// every reservation, loaded on first use (index or scan) and kept in step with our changes
    view: RefCell<Option<View>>,
    how: Cell<Option<IndexUse>>,
    /// the view differs from the index on disk
    dirty: Cell<bool>,
    /// the view may not match the directory (a change we could not complete or undo)
    poisoned: Cell<bool>,
    _lock: Flock<File>,
}

impl Drop for Store {
    fn drop(&mut self) {
        // still under the lock (fields drop after this)
        if self.dirty.get() && !self.poisoned.get() {
            if let Err(e) = self.save_index() {
                tracing::debug!(error = %e, "host-local: index not written (the next operation rescans)");
            }
        }
    }
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

/// Check a dataDir: no NUL byte. A relative dataDir is accepted, as the reference accepts it
/// (`filepath.Join(dataDir, network)`): it resolves against the runtime's working directory.
pub fn validate_data_dir(dir: &Path) -> Result<(), CniError> {
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

fn lock_dir(dirfd: &File, dir: &Path) -> anyhow::Result<Flock<File>> {
    use nix::fcntl::{openat, OFlag};
    use nix::sys::stat::Mode;
    // relative to the directory's descriptor: no walk of the whole path
    let file = openat(dirfd, LOCK_FILE, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
        .or_else(|e| {
            if e == Errno::ENOENT {
                // the reference's lock file, created empty (O_APPEND: nothing is ever written)
                let flags = OFlag::O_WRONLY | OFlag::O_APPEND | OFlag::O_CREAT | OFlag::O_CLOEXEC;
                openat(dirfd, LOCK_FILE, flags, Mode::from_bits_truncate(0o600))
            } else {
                Err(e)
            }
        })
        .map(File::from)
        .map_err(std::io::Error::from)
        .with_context(|| format!("failed to open lock file {}", dir.join(LOCK_FILE).display()))?;
    let mut file = file;
    loop {
        match Flock::lock(file, FlockArg::LockExclusive) {
            Ok(l) => return Ok(l),
            Err((f, Errno::EINTR)) => file = f,
            Err((_, e)) => {
                return Err(
                    CniError::try_again(format!("failed to lock {}: {e}", dir.join(LOCK_FILE).display())).into()
                );
            }
        }
    }
}

/// The directory `dir`, opened (O_DIRECTORY: a file of that name is no directory).
fn open_dir(dir: &Path) -> std::io::Result<File> {
    OpenOptions::new().read(true).custom_flags(nix::libc::O_DIRECTORY).open(dir)
}

impl Store {
    /// Open (creating it 0755 if needed) and lock the directory of `network`.
    pub fn open(data_dir: &Path, network: &str) -> anyhow::Result<Store> {
        validate_data_dir(data_dir)?;
        validate_network_name(network)?;
        let dir = data_dir.join(network);
        // the directory of a network that has run before is there: opened at once, created
        // (with its parents) only when that fails
        let dirfd = match open_dir(&dir) {
            Ok(f) => f,
            Err(_) => {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(&dir)
                    .with_context(|| format!("failed to create {}", dir.display()))?;
                File::open(&dir).with_context(|| format!("failed to open {}", dir.display()))?
            }
        };
        let lock = lock_dir(&dirfd, &dir)?;
        Ok(Store::locked(dir, dirfd, lock))
    }

    fn locked(dir: PathBuf, dirfd: File, lock: Flock<File>) -> Store {
        Store {
            dir,
            dirfd,
            view: RefCell::new(None),
            how: Cell::new(None),
            dirty: Cell::new(false),
            poisoned: Cell::new(false),
            _lock: lock,
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
        let dirfd = File::open(&dir).with_context(|| format!("failed to open {}", dir.display()))?;
        let lock = lock_dir(&dirfd, &dir)?;
        Ok(Some(Store::locked(dir, dirfd, lock)))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How the reservations were loaded (`None` before the first read).
    pub fn index_use(&self) -> Option<IndexUse> {
        self.how.get()
    }

    /// Reserve `ip` for (id, ifname): `Ok(false)` if the address is already held.
    /// On success `last_reserved_ip.<range_id>` is rewritten.
    pub fn reserve(&self, id: &str, ifname: &str, ip: IpAddr, range_id: usize) -> anyhow::Result<bool> {
        self.load()?;
        use nix::fcntl::{openat, AtFlags, OFlag};
        use nix::sys::stat::Mode;
        use nix::unistd::{linkat, unlinkat, UnlinkatFlags};
        // every path below is relative to the directory's descriptor (no walk of dataDir)
        let name = ip_file_name(ip);
        let path = || self.dir.join(&name);
        if nix::sys::stat::fstatat(&self.dirfd, name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW).is_ok() {
            return Ok(false);
        }
        // The reservation appears with its full content or not at all: write a private temp
        // file, then hard-link it to the address's name (link(2) fails with EEXIST exactly like
        // the reference's O_EXCL create). A plugin killed half-way leaves at most a temp file,
        // never an empty reservation. No fsync: like the reference, a reservation only has to
        // outlive the plugin process, not a power loss (which takes the containers with it),
        // and an fsync would cost more than the rest of an ADD.
        let tmp = format!(".{name}.{}.tmp", std::process::id());
        let content = format!("{}{LINE_BREAK}{ifname}", id.trim());
        let unlink = |n: &str| unlinkat(&self.dirfd, n, UnlinkatFlags::NoRemoveDir);
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC | OFlag::O_CLOEXEC;
        let written = openat(&self.dirfd, tmp.as_str(), flags, Mode::from_bits_truncate(0o600))
            .map_err(std::io::Error::from)
            .map(File::from)
            .and_then(|mut f| f.write_all(content.as_bytes()).and_then(|()| f.metadata()));
        let ino = match written {
            Ok(m) => m.ino(),
            Err(e) => {
                let _ = unlink(&tmp);
                return Err(e).with_context(|| format!("failed to write {}", self.dir.join(&tmp).display()));
            }
        };
        let linked = linkat(&self.dirfd, tmp.as_str(), &self.dirfd, name.as_str(), AtFlags::empty());
        if unlink(&tmp).is_err() {
            // a temp file left behind changes nothing the index describes, but be safe
            self.poisoned.set(true);
        }
        match linked {
            Ok(()) => {}
            Err(Errno::EEXIST) => return Ok(false),
            Err(e) => {
                return Err(std::io::Error::from(e)).with_context(|| format!("failed to create {}", path().display()))
            }
        }
        self.dirty.set(true);
        if let Err(e) = self.write_last_reserved(ip, range_id) {
            if unlink(&name).is_err() {
                self.poisoned.set(true);
            }
            return Err(e);
        }
        // what a scan would read back from this content
        let owner = Owner::parse(content.as_bytes());
        if let Some(view) = self.view.borrow_mut().as_mut() {
            view.insert(ip, &Lease { ino, owner, empty: false });
        }
        Ok(true)
    }

    /// Rewrite `last_reserved_ip.<range_id>` so that a reader never sees a torn address.
    ///
    /// When the new text is at least as long as the old, it is written over the old in place
    /// (one `pwrite`, which a killed writer cannot split). A shorter text (the cursor wrapped,
    /// or went from `.10` to `.9`) goes through a temp file and `rename(2)`, as does a missing
    /// file. Why not always rename: on ext4 a rename over an existing file, like the
    /// reference's truncate-and-write, starts writeback of the new data (`auto_da_alloc`),
    /// which costs 1-15 ms per ADD here, under the store's lock; an overwrite costs a few µs.
    fn write_last_reserved(&self, ip: IpAddr, range_id: usize) -> anyhow::Result<()> {
        use nix::fcntl::{openat, OFlag};
        use nix::sys::stat::Mode;
        let name = format!("{LAST_IP_PREFIX}{range_id}");
        let path = self.dir.join(&name);
        let text = ip_file_name(ip);
        let in_place =
            openat(&self.dirfd, name.as_str(), OFlag::O_WRONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW, Mode::empty())
                .map(File::from)
                .ok()
                .filter(|f| f.metadata().is_ok_and(|m| m.is_file() && m.len() <= text.len() as u64));
        if let Some(f) = in_place {
            return f.write_all_at(text.as_bytes(), 0).with_context(|| format!("failed to write {}", path.display()));
        }
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let res = (|| -> std::io::Result<()> {
            let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
            f.write_all(text.as_bytes())?;
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
        let bytes = read_small_at(&self.dirfd, &format!("{LAST_IP_PREFIX}{range_id}")).ok()??;
        std::str::from_utf8(&bytes).ok()?.trim().parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
    }

    /// Load the view once: from the index when it provably matches the directory, else by
    /// listing (and reading what is new) or by a full scan.
    fn load(&self) -> anyhow::Result<()> {
        if self.view.borrow().is_some() {
            return Ok(());
        }
        let stamp =
            DirStamp::of(&self.dirfd.metadata().with_context(|| format!("failed to stat {}", self.dir.display()))?);
        let (map, how) = match self.read_index(&stamp) {
            Some((map, true)) => (map, IndexUse::Trusted),
            Some((map, false)) => (self.scan(Some(&map))?, IndexUse::Refreshed),
            None => (self.scan(None)?, IndexUse::Rebuilt),
        };
        if how != IndexUse::Trusted {
            self.dirty.set(true);
        }
        tracing::debug!(?how, leases = map.len(), "host-local store loaded");
        self.how.set(Some(how));
        *self.view.borrow_mut() = Some(map);
        Ok(())
    }

    /// The index, if it is intact and describes this directory as it is now; the flag says
    /// whether the times alone prove it (false: written in the same clock tick as the
    /// directory's last change, so the names must be listed).
    fn read_index(&self, now: &DirStamp) -> Option<(View, bool)> {
        use nix::fcntl::{openat, OFlag};
        use nix::sys::stat::Mode;
        let fd = openat(&self.dirfd, INDEX_FILE, OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW, Mode::empty())
            .ok()?;
        let mut f = File::from(fd);
        let meta = f.metadata().ok()?;
        if !meta.is_file() || meta.len() > 64 << 20 {
            return None;
        }
        // one read of the size fstat gave (+1 to see a file that grew); a short read is its end
        let mut buf = vec![0u8; meta.len() as usize + 1];
        let mut len = 0;
        while let Some(rest) = buf.get_mut(len..).filter(|r| !r.is_empty()) {
            match f.read(rest) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return None,
            }
            if len < buf.len() {
                break;
            }
        }
        buf.truncate(len);
        let (stamp, map) = index::parse(buf)?;
        if stamp != *now {
            return None;
        }
        let written = (meta.mtime(), meta.mtime_nsec());
        Some((map, written > stamp.ctime && written > stamp.mtime))
    }

    /// Read the directory: every lease file is read unless `known` holds it with the same
    /// inode. Stale temp files (only ever written under the lock, so any found belong to a
    /// plugin that died mid-write) are removed on the way.
    fn scan(&self, known: Option<&View>) -> anyhow::Result<View> {
        // what the index says, parsed once, for lookups by address (in address order)
        let known: Vec<(IpAddr, Lease)> = known.map(View::entries).unwrap_or_default();
        let mut rows = Vec::new();
        let rd = fs::read_dir(&self.dir).with_context(|| format!("failed to read {}", self.dir.display()))?;
        for de in rd {
            let Ok(de) = de else { continue };
            let name = de.file_name();
            let Some(name) = name.to_str() else { continue };
            let is_file = || de.file_type().is_ok_and(|t| t.is_file());
            let Some(ip) = parse_ip_file_name(name) else {
                if name.starts_with('.') && name.ends_with(".tmp") && is_file() {
                    let _ = fs::remove_file(de.path());
                }
                continue;
            };
            if !is_file() {
                continue;
            }
            let ino = de.ino();
            let same = known.binary_search_by_key(&ip, |(k, _)| *k).ok().and_then(|i| known.get(i));
            if let Some((_, l)) = same.filter(|(_, l)| l.ino == ino && l.ino != 0) {
                rows.push((ip, l.clone()));
                continue;
            }
            let (owner, empty) = match read_small_at(&self.dirfd, name) {
                Ok(Some(b)) => (Owner::parse(&b), b.is_empty()),
                Ok(None) => (Owner::Unknown, false),
                // vanished between readdir and open: not a reservation any more
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(_) => (Owner::Unknown, false),
            };
            rows.push((ip, Lease { ino, owner, empty }));
        }
        // file names are canonical addresses: no two rows share one
        rows.sort_by_key(|(ip, _)| *ip);
        Ok(View::from_sorted(&rows))
    }

    /// Write the view to the index, in place (so the directory itself does not change), after
    /// taking the directory's stamp. A torn write fails the checksum: the next reader rescans.
    fn save_index(&self) -> std::io::Result<()> {
        use nix::fcntl::{openat, OFlag};
        use nix::sys::stat::Mode;
        let view = self.view.borrow();
        let Some(view) = view.as_ref() else { return Ok(()) };
        let fd = openat(
            &self.dirfd,
            INDEX_FILE,
            OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
            Mode::from_bits_truncate(0o600),
        )?;
        let f = File::from(fd);
        // after the create: the stamp must include it
        let stamp = DirStamp::of(&self.dirfd.metadata()?);
        let text = index::render(&stamp, view);
        f.write_all_at(&text, 0)?;
        // The index's own mtime must end up after the stamp's (see `read_index`). With
        // multigrain timestamps the write above may be stamped with exactly the directory's
        // time (the coarse clock is floored to the last fine-grained time handed out); a stat
        // then a second change of the file gets a fine-grained, strictly later time.
        let _ = f.metadata();
        f.set_len(text.len() as u64)?;
        Ok(())
    }

    /// Every reservation file (regular files named by an address), in address order.
    pub fn entries(&self) -> anyhow::Result<Vec<Entry>> {
        self.load()?;
        let view = self.view.borrow();
        Ok(view.iter().flat_map(View::entries).map(|(ip, l)| Entry { ip, owner: l.owner, empty: l.empty }).collect())
    }

    /// Addresses currently held (by anyone).
    pub fn held(&self) -> anyhow::Result<HashSet<IpAddr>> {
        self.load()?;
        Ok(self.view.borrow().iter().flat_map(View::entries).map(|(ip, _)| ip).collect())
    }

    /// Whether `ip` is held (by anyone).
    pub fn is_held(&self, ip: IpAddr) -> anyhow::Result<bool> {
        self.load()?;
        Ok(self.view.borrow().as_ref().is_some_and(|v| v.contains(ip)))
    }

    /// Addresses held by (id, ifname), and those held by `id` in legacy files.
    fn owned_by(&self, id: &str, ifname: &str) -> anyhow::Result<(Vec<IpAddr>, Vec<IpAddr>)> {
        self.load()?;
        Ok(self.view.borrow().as_ref().map(|v| v.owned_by(id, ifname)).unwrap_or_default())
    }

    /// Addresses held by (id, ifname), or by `id` in a legacy file.
    pub fn get_by_id(&self, id: &str, ifname: &str) -> anyhow::Result<Vec<IpAddr>> {
        let (mut mine, legacy) = self.owned_by(id, ifname)?;
        mine.extend(legacy);
        mine.sort();
        Ok(mine)
    }

    /// Release one address (absent is fine).
    pub fn release(&self, ip: IpAddr) -> anyhow::Result<()> {
        let path = self.dir.join(ip_file_name(ip));
        let res = match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("failed to remove {}", path.display())),
        };
        if res.is_ok() {
            if let Some(view) = self.view.borrow_mut().as_mut() {
                if view.remove(ip) {
                    self.dirty.set(true);
                }
            }
        }
        res
    }

    /// The reference's DEL, which releases once per range set: each round releases everything
    /// of (id, ifname) and, when nothing matched, the legacy files holding just `id`. So one
    /// range set keeps the legacy files when (id, ifname) matched; with two or more the second
    /// round finds no (id, ifname) left and releases them too. Returns the released addresses.
    pub fn release_by_id(&self, id: &str, ifname: &str, range_sets: usize) -> anyhow::Result<Vec<IpAddr>> {
        let (mut mine, legacy) = self.owned_by(id, ifname)?;
        if mine.is_empty() || range_sets >= 2 {
            mine.extend(legacy);
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
    fn last_reserved_ip_is_overwritten_in_place_unless_it_shrinks() {
        let t = TempDir::new("cursor");
        let s = Store::open(&t.0, "n").unwrap();
        let d = t.0.join("n");
        let last = d.join("last_reserved_ip.0");
        let ino = |p: &Path| fs::metadata(p).unwrap().ino();
        assert!(s.reserve("c1", "eth0", ip("198.18.0.8"), 0).unwrap());
        let first = ino(&last);
        // same length, then longer: the same file, exact bytes
        assert!(s.reserve("c2", "eth0", ip("198.18.0.9"), 0).unwrap());
        assert_eq!((fs::read(&last).unwrap(), ino(&last)), (b"198.18.0.9".to_vec(), first));
        fs::remove_file(d.join("198.18.0.9")).unwrap();
        assert!(s.reserve("c3", "eth0", ip("198.18.0.10"), 0).unwrap());
        assert_eq!((fs::read(&last).unwrap(), ino(&last)), (b"198.18.0.10".to_vec(), first));
        // shorter: replaced whole (a rename), never "198.18.0.30" on the way
        assert!(s.reserve("c4", "eth0", ip("198.18.0.3"), 0).unwrap());
        assert_eq!(fs::read(&last).unwrap(), b"198.18.0.3");
        assert_ne!(ino(&last), first);
        assert_eq!(mode(&last), 0o600);
        assert!(!d.join(".last_reserved_ip.0.tmp").exists());
        // a symlink planted at the name is replaced, never written through
        fs::remove_file(&last).unwrap();
        let target = d.join("target");
        fs::write(&target, b"x").unwrap();
        std::os::unix::fs::symlink(&target, &last).unwrap();
        assert!(s.reserve("c5", "eth0", ip("198.18.0.4"), 0).unwrap());
        assert_eq!(fs::read(&target).unwrap(), b"x");
        assert_eq!(fs::read(&last).unwrap(), b"198.18.0.4");
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
        assert!(s.release_by_id("c", "eth0", 1).unwrap().is_empty());
        assert!(!s.find_by_id("c", "eth0").unwrap());
    }

    #[test]
    fn release_by_id_then_legacy() {
        let t = TempDir::new("rel");
        let s = Store::open(&t.0, "n").unwrap();
        let d = s.dir().to_path_buf();
        s.reserve("c1", "eth0", ip("198.18.0.2"), 0).unwrap();
        s.reserve("c1", "eth1", ip("198.18.0.3"), 0).unwrap();
        drop(s);
        // hand edits happen without the lock: the store is opened again after them
        fs::write(d.join("198.18.0.4"), b"c1").unwrap(); // legacy
                                                         // a container id that looks like an address never matches last_reserved_ip.*
        fs::write(d.join("last_reserved_ip.9"), b"c1").unwrap();
        let s = Store::open(&t.0, "n").unwrap();
        assert_eq!(s.release_by_id("c1", "eth0", 1).unwrap(), [ip("198.18.0.2")]);
        assert!(d.join("198.18.0.4").exists(), "legacy kept while (id, ifname) matched");
        assert_eq!(s.release_by_id("c1", "eth0", 1).unwrap(), [ip("198.18.0.4")]);
        assert!(s.release_by_id("c1", "eth0", 1).unwrap().is_empty());
        assert!(d.join("198.18.0.3").exists());
        assert!(d.join("last_reserved_ip.9").exists());
        // two range sets: the reference's second round releases the legacy files too
        s.reserve("c1", "eth0", ip("198.18.0.2"), 0).unwrap();
        drop(s);
        fs::write(d.join("198.18.0.4"), b"c1").unwrap();
        let s = Store::open(&t.0, "n").unwrap();
        let mut rel = s.release_by_id("c1", "eth0", 2).unwrap();
        rel.sort();
        assert_eq!(rel, [ip("198.18.0.2"), ip("198.18.0.4")]);
        assert!(d.join("198.18.0.3").exists(), "another ifname's reservation stays");
    }

    #[test]
    fn gc_cases() {
        let t = TempDir::new("gc");
        let s = Store::open(&t.0, "n").unwrap();
        let d = s.dir().to_path_buf();
        s.reserve("keep", "eth0", ip("198.18.0.2"), 0).unwrap();
        s.reserve("keep", "eth1", ip("198.18.0.3"), 0).unwrap();
        s.reserve("gone", "eth0", ip("fd00::2"), 1).unwrap();
        drop(s);
        fs::write(d.join("198.18.0.10"), b"keep").unwrap(); // legacy, id still valid
        fs::write(d.join("198.18.0.11"), b"gone").unwrap(); // legacy, id gone
        fs::write(d.join("198.18.0.12"), b"").unwrap(); // torn empty
        fs::write(d.join("198.18.0.13"), b"\xff").unwrap(); // foreign content
        fs::write(d.join("unrelated"), b"gone\r\neth0").unwrap();
        let s = Store::open(&t.0, "n").unwrap();
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
        let mut names: Vec<String> = fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != INDEX_FILE)
            .collect();
        names.sort();
        assert_eq!(names, ["198.18.0.13", "last_reserved_ip.0", "last_reserved_ip.1", "lock", "unrelated"]);
    }

    #[test]
    fn names_and_paths_validated() {
        for bad in ["", ".", "..", "a/b", "../x"] {
            assert_eq!(validate_network_name(bad).unwrap_err().code, 7, "{bad:?}");
        }
        validate_network_name("net-1.a_b").unwrap();
        // relative, as the reference takes it (against the working directory); NUL refused
        validate_data_dir(Path::new("rel/dir")).unwrap();
        validate_data_dir(Path::new("../../etc")).unwrap();
        assert_eq!(validate_data_dir(Path::new("/tmp/a\0b")).unwrap_err().code, 7);
        let e = Store::open(Path::new("rel\0x"), "n").unwrap_err();
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

    fn sorted(s: &Store) -> Vec<Entry> {
        let mut e = s.entries().unwrap();
        e.sort_by_key(|e| e.ip);
        e
    }

    /// What a full scan of the directory reads (the truth the index must equal).
    fn truth(d: &Path) -> Vec<Entry> {
        let _ = fs::remove_file(d.join(INDEX_FILE));
        let s = Store::open(d.parent().unwrap(), d.file_name().unwrap().to_str().unwrap()).unwrap();
        let e = sorted(&s);
        assert_eq!(s.index_use(), Some(IndexUse::Rebuilt));
        e
    }

    fn reopen(t: &TempDir) -> Store {
        Store::open(&t.0, "n").unwrap()
    }

    #[test]
    fn index_is_trusted_only_while_the_directory_is_unchanged() {
        let t = TempDir::new("idx");
        let d = t.0.join("n");
        {
            let s = reopen(&t);
            for i in 2..12 {
                assert!(s.reserve(&format!("c{i}"), "eth0", ip(&format!("198.18.0.{i}")), 0).unwrap());
            }
            assert_eq!(s.index_use(), Some(IndexUse::Rebuilt));
        }
        assert_eq!(mode(&d.join(INDEX_FILE)), 0o600);
        let want = {
            let s = reopen(&t);
            let e = sorted(&s);
            assert_eq!(s.index_use(), Some(IndexUse::Trusted), "nothing changed: the index is used");
            assert_eq!(s.get_by_id("c5", "eth0").unwrap(), [ip("198.18.0.5")]);
            e
        };
        // our own release keeps it in step
        {
            let s = reopen(&t);
            assert_eq!(s.release_by_id("c5", "eth0", 1).unwrap(), [ip("198.18.0.5")]);
        }
        let s = reopen(&t);
        let got = sorted(&s);
        assert_eq!(s.index_use(), Some(IndexUse::Trusted));
        assert_eq!(got.len(), want.len() - 1);
        drop(s);
        // a foreign writer: a new lease, a removed one, a replaced one (new inode), a legacy file
        fs::write(d.join("198.18.0.50"), b"ref1\r\neth0").unwrap();
        fs::remove_file(d.join("198.18.0.2")).unwrap();
        fs::write(d.join(".x"), b"other\r\neth0").unwrap();
        fs::rename(d.join(".x"), d.join("198.18.0.3")).unwrap();
        fs::write(d.join("198.18.0.60"), b"old").unwrap();
        let s = reopen(&t);
        let got = sorted(&s);
        assert_eq!(s.index_use(), Some(IndexUse::Rebuilt));
        assert!(s.find_by_id("ref1", "eth0").unwrap());
        assert!(s.find_by_id("other", "eth0").unwrap());
        assert!(!s.find_by_id("c2", "eth0").unwrap() && !s.find_by_id("c3", "eth0").unwrap());
        assert_eq!(s.get_by_id("old", "eth9").unwrap(), [ip("198.18.0.60")]);
        drop(s);
        assert_eq!(got, truth(&d));
        // and the rewritten index is trusted again
        let s = reopen(&t);
        assert_eq!(sorted(&s), got);
        assert_eq!(s.index_use(), Some(IndexUse::Trusted));
    }

    #[test]
    fn torn_foreign_or_missing_index_means_a_rescan() {
        let t = TempDir::new("idxtorn");
        let d = t.0.join("n");
        {
            let s = reopen(&t);
            s.reserve("c1", "eth0", ip("198.18.0.2"), 0).unwrap();
            s.reserve("c2", "eth0", ip("fd00::2"), 1).unwrap();
        }
        let good = fs::read(d.join(INDEX_FILE)).unwrap();
        let want = truth(&d);
        let edits: Vec<Vec<u8>> = vec![
            good[..good.len() / 2].to_vec(),
            good[..good.len() - 1].to_vec(),
            [&good[..], b"198.18.0.9 1 a x eth0\n"].concat(),
            String::from_utf8(good.clone()).unwrap().replace("c1", "c9").into_bytes(),
            Vec::new(),
            b"\xff\xfe".to_vec(),
        ];
        for (i, bytes) in edits.into_iter().enumerate() {
            // written in place, so the directory stamp still matches: only the content is wrong
            let f = OpenOptions::new().write(true).open(d.join(INDEX_FILE)).unwrap();
            f.set_len(0).unwrap();
            f.write_all_at(&bytes, 0).unwrap();
            drop(f);
            let s = reopen(&t);
            assert_eq!(sorted(&s), want, "edit {i}");
            assert_eq!(s.index_use(), Some(IndexUse::Rebuilt), "edit {i}");
        }
        // an index that is a directory or a symlink is not followed
        fs::remove_file(d.join(INDEX_FILE)).unwrap();
        std::os::unix::fs::symlink(d.join("198.18.0.2"), d.join(INDEX_FILE)).unwrap();
        let s = reopen(&t);
        assert_eq!(sorted(&s), want);
        drop(s);
        assert_eq!(fs::read(d.join("198.18.0.2")).unwrap(), b"c1\r\neth0", "the symlink's target is untouched");
    }

    #[test]
    fn racy_index_lists_names_and_rereads_what_changed() {
        use nix::sys::stat::{utimensat, UtimensatFlags};
        use nix::sys::time::TimeSpec;
        let t = TempDir::new("idxracy");
        let d = t.0.join("n");
        {
            let s = reopen(&t);
            s.reserve("c1", "eth0", ip("198.18.0.2"), 0).unwrap();
            s.reserve("c2", "eth0", ip("198.18.0.3"), 0).unwrap();
        }
        // an index written in the same tick as the directory's last change (coarse clock):
        // its mtime is not after the recorded directory times
        let back = |p: &Path| {
            utimensat(
                nix::fcntl::AT_FDCWD,
                p,
                &TimeSpec::new(1, 0),
                &TimeSpec::new(1, 0),
                UtimensatFlags::NoFollowSymlink,
            )
            .unwrap()
        };
        let want = truth(&d);
        back(&d.join(INDEX_FILE));
        let s = reopen(&t);
        assert_eq!(sorted(&s), want);
        assert_eq!(s.index_use(), Some(IndexUse::Refreshed));
        drop(s);
        // a same-tick change the times cannot show: the index says c9 holds .3 under another
        // inode (as if .3 had been released and re-reserved by another writer); listing sees
        // the inode differs and rereads the file
        let text = String::from_utf8(fs::read(d.join(INDEX_FILE)).unwrap()).unwrap();
        let ino3 = fs::metadata(d.join("198.18.0.3")).unwrap().ino();
        let body: String = text
            .lines()
            .filter(|l| !l.starts_with("end "))
            .map(|l| {
                if l.starts_with("198.18.0.3 ") {
                    format!("198.18.0.3 {} a c9 eth0\n", ino3 + 1)
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        let forged = format!("{body}end {:016x}\n", index::checksum(body.as_bytes()));
        let f = OpenOptions::new().write(true).open(d.join(INDEX_FILE)).unwrap();
        f.set_len(0).unwrap();
        f.write_all_at(forged.as_bytes(), 0).unwrap();
        drop(f);
        back(&d.join(INDEX_FILE));
        let s = reopen(&t);
        assert_eq!(sorted(&s), want);
        assert_eq!(s.index_use(), Some(IndexUse::Refreshed));
        assert!(s.find_by_id("c2", "eth0").unwrap() && !s.find_by_id("c9", "eth0").unwrap());
    }

    #[test]
    fn ids_with_inner_whitespace_keep_the_index_exact() {
        let t = TempDir::new("idxws");
        {
            let s = reopen(&t);
            s.reserve("a b", "eth0", ip("198.18.0.2"), 0).unwrap();
        }
        let s = reopen(&t);
        assert_eq!(s.entries().unwrap()[0].owner, Owner::Unknown, "read as the reference would compare it");
        assert_eq!(s.index_use(), Some(IndexUse::Trusted));
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
