//! Network namespace handles, validated by filesystem magic, and a guard that enters one
//! and restores the previous namespace when dropped (aborting the process if it cannot).
//!
//! Each thread keeps a handle on the namespace it is in ([`HERE`]), kept true by [`NetNs::enter`],
//! its guard and [`NetNs::new_anonymous`] (the only places that move a thread): the current
//! namespace is then a `dup` of that handle instead of a walk of `/proc/thread-self/ns/net`
//! (a fresh process's `/proc/<pid>` entries are looked up slowly, and a bridge ADD asked five
//! times). Only the first question of a thread opens the path. Code that moves a thread by other
//! means must call [`forget`] (clippy disallows `setns`/`unshare` outside this module).

// the one module that may move a thread: it keeps the remembered namespace true
#![allow(clippy::disallowed_methods)]

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::OpenOptionsExt;

use anyhow::Context;
use nix::errno::Errno;
use nix::sched::{setns, CloneFlags};
use nix::sys::statfs::{fstatfs, statfs, NSFS_MAGIC, PROC_SUPER_MAGIC};

nix::ioctl_none!(ns_get_nstype_raw, 0xb7, 0x3);

/// The CLONE_NEW* type of the namespace `file` refers to.
fn ns_get_nstype(file: &File) -> nix::Result<i32> {
    use std::os::fd::AsRawFd;
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the namespace the open fd refers
    // to; the fd is valid for the duration of the call (borrowed from `file`).
    unsafe { ns_get_nstype_raw(file.as_raw_fd()) }
}

/// The calling thread's network namespace.
const CURRENT: &str = "/proc/thread-self/ns/net";

thread_local! {
    /// The namespace this thread is in, once asked (see the module doc).
    static HERE: std::cell::RefCell<Option<File>> = const { std::cell::RefCell::new(None) };
}

/// Remember `file` as the namespace this thread is in now.
fn remember(file: File) {
    HERE.with(|h| *h.borrow_mut() = Some(file));
}

/// The remembered handle, taken out (the caller is about to move the thread), or the path
/// opened when none is remembered.
fn take_here() -> Result<File, NsError> {
    match HERE.with(|h| h.borrow_mut().take()) {
        Some(f) => Ok(f),
        None => NetNs::open(CURRENT).map(|ns| ns.file),
    }
}

/// The calling thread's namespace: a duplicate of the remembered handle, or the path opened
/// (and then remembered).
fn here() -> Result<File, NsError> {
    if let Some(f) = HERE.with(|h| h.borrow().as_ref().and_then(|f| f.try_clone().ok())) {
        return Ok(f);
    }
    let file = NetNs::open(CURRENT)?.file;
    if let Ok(dup) = file.try_clone() {
        remember(dup);
    }
    Ok(file)
}

/// Forget the remembered namespace of the calling thread: for code that moves a thread by other
/// means than this module (the bench, a test harness), right after it did. `setns` and
/// `unshare` are disallowed elsewhere by clippy (clippy.toml) for this reason.
pub fn forget() {
    HERE.with(|h| *h.borrow_mut() = None);
}

/// (device, inode) of the calling thread's network namespace.
pub fn current_id() -> Option<(u64, u64)> {
    #[cfg(test)]
    if let Some(id) = super::fake::with(|w| w.cur) {
        return Some((0, id as u64));
    }
    let m = HERE.with(|h| h.borrow().as_ref().and_then(|f| f.metadata().ok()));
    let m = match m {
        Some(m) => m,
        None => here().ok()?.metadata().ok()?,
    };
    Some((m.dev(), m.ino()))
}

/// An open network namespace (an nsfs or procfs file) and the path it was opened from.
#[derive(Debug)]
pub struct NetNs {
    file: File,
    path: String,
    /// Unit tests: the id of a fake namespace of [`super::fake`] (then `file` is /dev/null).
    #[cfg(test)]
    fake: Option<usize>,
}

/// Why a netns path cannot be used.
#[derive(Debug)]
pub enum NsError {
    /// The path does not exist (DEL treats this as "already gone").
    NotExist(String),
    /// The path exists but is not a namespace file.
    NotNetns(String),
    /// Any other failure to open or inspect it.
    Io(String),
}

impl fmt::Display for NsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NsError::NotExist(p) => write!(f, "failed to open netns {p:?}: no such file or directory"),
            NsError::NotNetns(p) => write!(f, "{p:?} is not a network namespace"),
            NsError::Io(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for NsError {}

impl NetNs {
    /// Open `path` and check it lives on nsfs (or procfs, for `/proc/<pid>/ns/net`).
    pub fn open(path: &str) -> Result<NetNs, NsError> {
        #[cfg(test)]
        if let Some(id) = super::fake::with(|w| w.names.iter().position(|n| n == path)) {
            return match id {
                Some(id) => NetNs::fake(id),
                None => Err(NsError::NotExist(path.to_string())),
            };
        }
        // The path's filesystem first, as the reference's IsNSorErr: a FIFO or a device is never
        // opened (opening a FIFO blocks until a writer comes, a device open may act). The open
        // itself is non-blocking in case the path changed in between; the fd is checked again.
        let not_netns = |magic| magic != NSFS_MAGIC && magic != PROC_SUPER_MAGIC;
        let st = statfs(path).map_err(|e| match e {
            Errno::ENOENT => NsError::NotExist(path.to_string()),
            e => NsError::Io(format!("failed to open netns {path:?}: {}", io::Error::from(e))),
        })?;
        if not_netns(st.filesystem_type()) {
            return Err(NsError::NotNetns(path.to_string()));
        }
        let file = OpenOptions::new().read(true).custom_flags(nix::libc::O_NONBLOCK).open(path).map_err(|e| match e
            .kind()
        {
            io::ErrorKind::NotFound => NsError::NotExist(path.to_string()),
            _ => NsError::Io(format!("failed to open netns {path:?}: {e}")),
        })?;
        let st = fstatfs(&file).map_err(|e| NsError::Io(format!("failed to statfs {path:?}: {e}")))?;
        let magic = st.filesystem_type();
        if not_netns(magic) {
            return Err(NsError::NotNetns(path.to_string()));
        }
        // procfs magic also matches /proc/self/status, and nsfs holds ipc/uts/… namespaces
        // too: ask the kernel which kind of namespace this is (NS_GET_NSTYPE, Linux 4.11+;
        // older kernels say ENOTTY for every file, so only an nsfs file is then taken on trust)
        match ns_get_nstype(&file) {
            Ok(t) if t == CloneFlags::CLONE_NEWNET.bits() => {}
            Err(nix::errno::Errno::ENOTTY) if magic == NSFS_MAGIC => {}
            _ => return Err(NsError::NotNetns(path.to_string())),
        }
        Ok(NetNs {
            file,
            path: path.to_string(),
            #[cfg(test)]
            fake: None,
        })
    }

    /// A handle on fake namespace `id`: a really open fd (what IFLA_NET_NS_FD carries), mapped
    /// to `id` in the fake world.
    #[cfg(test)]
    fn fake(id: usize) -> Result<NetNs, NsError> {
        use std::os::fd::AsRawFd;
        let file = File::open("/dev/null").map_err(|e| NsError::Io(e.to_string()))?;
        let path = super::fake::with(|w| {
            w.fds.insert(file.as_raw_fd(), id);
            w.names.get(id).cloned().unwrap_or_default()
        })
        .unwrap_or_default();
        Ok(NetNs { file, path, fake: Some(id) })
    }

    /// A new, empty network namespace that lives as long as this handle (and anything in it).
    /// The calling thread stays in its own namespace.
    pub fn new_anonymous() -> anyhow::Result<NetNs> {
        let prev = NetNs::taken()?;
        if let Err(e) = nix::sched::unshare(CloneFlags::CLONE_NEWNET) {
            drop(NsGuard { prev: Some(prev) });
            return Err(e).context("failed to create a network namespace");
        }
        let _restore = NsGuard { prev: Some(prev) };
        let file = File::open(CURRENT).context("failed to open the new network namespace")?;
        Ok(NetNs {
            file,
            path: "(anonymous)".to_string(),
            #[cfg(test)]
            fake: None,
        })
    }

    /// The calling thread's namespace, for a guard that is about to move the thread: the
    /// remembered handle itself (no duplicate; the guard remembers it again when it restores).
    fn taken() -> anyhow::Result<NetNs> {
        NetNs::here_with(take_here)
    }

    /// The calling thread's current network namespace.
    pub fn current() -> anyhow::Result<NetNs> {
        NetNs::here_with(here)
    }

    /// The calling thread's namespace as `get` hands its handle out.
    fn here_with(get: fn() -> Result<File, NsError>) -> anyhow::Result<NetNs> {
        #[cfg(test)]
        if let Some(id) = super::fake::with(|w| w.cur) {
            return Ok(NetNs::fake(id)?);
        }
        Ok(NetNs {
            file: get()?,
            path: CURRENT.to_string(),
            #[cfg(test)]
            fake: None,
        })
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// True when this handle names the namespace the calling thread is in now.
    pub fn is_current(&self) -> anyhow::Result<bool> {
        #[cfg(test)]
        if let Some(cur) = super::fake::with(|w| w.cur) {
            return Ok(self.fake == Some(cur));
        }
        let mine = self.file.metadata().with_context(|| format!("failed to stat netns {:?}", self.path))?;
        let cur = current_id().context("failed to stat the current netns")?;
        Ok((mine.dev(), mine.ino()) == cur)
    }

    /// Move the calling thread into this namespace until the guard is dropped.
    pub fn enter(&self) -> anyhow::Result<NsGuard> {
        let prev = NetNs::taken()?;
        #[cfg(test)]
        if let Some(id) = self.fake {
            super::fake::with(|w| w.cur = id);
            return Ok(NsGuard { prev: Some(prev) });
        }
        let dup = self.file.try_clone();
        if let Err(e) = setns(&self.file, CloneFlags::CLONE_NEWNET) {
            remember(prev.file);
            return Err(e).with_context(|| format!("failed to enter netns {:?}", self.path));
        }
        // not remembering (no descriptor left for a duplicate) only costs the next question a lookup
        if let Ok(f) = dup {
            remember(f);
        }
        Ok(NsGuard { prev: Some(prev) })
    }

    /// Run `f` inside this namespace, then return to the previous one.
    pub fn run<T>(&self, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
        let _guard = self.enter()?;
        f()
    }
}

/// Restores the namespace the thread was in before [`NetNs::enter`].
#[derive(Debug)]
pub struct NsGuard {
    /// Always `Some` until dropped.
    prev: Option<NetNs>,
}

impl Drop for NsGuard {
    fn drop(&mut self) {
        let Some(prev) = self.prev.take() else { return };
        #[cfg(test)]
        if let Some(id) = prev.fake {
            super::fake::with(|w| w.cur = id);
            return;
        }
        if let Err(e) = setns(&prev.file, CloneFlags::CLONE_NEWNET) {
            // Going on in the wrong namespace could configure the wrong host: stop here.
            tracing::error!("cannot restore netns {:?}: {e}; aborting", prev.path);
            std::process::abort();
        }
        remember(prev.file);
    }
}
