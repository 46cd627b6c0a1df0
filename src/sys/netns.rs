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
    /// The namespace this thread is in, once asked (see the module doc): a descriptor this
    /// thread owns, or -1. A plain integer, so that the plugin's one thread registers no
    /// thread-local destructor: std keeps that list with the C allocator, which a run otherwise
    /// never sets up (four system calls and two page faults). Other threads close it at exit
    /// through [`CLOSE_AT_THREAD_EXIT`].
    static HERE: std::cell::Cell<std::os::fd::RawFd> = const { std::cell::Cell::new(-1) };
    /// Touched by threads other than the process's first: its destructor closes [`HERE`]'s
    /// descriptor when the thread ends (a dhcp daemon's lease threads come and go).
    static CLOSE_AT_THREAD_EXIT: CloseHere = const { CloseHere };
    /// Whether this thread has made sure [`CLOSE_AT_THREAD_EXIT`] runs (or needs not: the
    /// process's first thread, whose descriptors the exit closes).
    static EXIT_CLOSE_SETTLED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

struct CloseHere;

impl Drop for CloseHere {
    fn drop(&mut self) {
        if let Ok(fd) = HERE.try_with(|h| h.replace(-1)) {
            drop(owned(fd));
        }
    }
}

/// The descriptor `fd` of [`HERE`], owned again (None for -1).
fn owned(fd: std::os::fd::RawFd) -> Option<File> {
    use std::os::fd::FromRawFd;
    // SAFETY: a descriptor taken out of HERE, which owned it alone (it came from a File's
    // into_raw_fd and was never closed while there)
    (fd >= 0).then(|| unsafe { File::from_raw_fd(fd) })
}

/// Remember `file` as the namespace this thread is in now.
fn remember(file: File) {
    use std::os::fd::IntoRawFd;
    if !EXIT_CLOSE_SETTLED.with(|s| s.replace(true)) && nix::unistd::gettid() != nix::unistd::getpid() {
        CLOSE_AT_THREAD_EXIT.with(|_| ());
    }
    drop(owned(HERE.with(|h| h.replace(file.into_raw_fd()))));
}

/// The remembered handle, taken out (the caller is about to move the thread), or the path
/// opened when none is remembered.
fn take_here() -> Result<File, NsError> {
    match owned(HERE.with(|h| h.replace(-1))) {
        Some(f) => Ok(f),
        None => NetNs::open(CURRENT).map(|ns| ns.file),
    }
}

/// The remembered handle, borrowed.
fn with_here<T>(f: impl FnOnce(BorrowedFd<'_>) -> T) -> Option<T> {
    let fd = HERE.with(std::cell::Cell::get);
    // SAFETY: HERE's descriptor stays open while this thread uses it (only this thread's
    // remember, take_here and forget close or take it, and none runs inside `f`)
    (fd >= 0).then(|| f(unsafe { BorrowedFd::borrow_raw(fd) }))
}

/// The calling thread's namespace: a duplicate of the remembered handle, or the path opened
/// (and then remembered).
fn here() -> Result<File, NsError> {
    if let Some(Ok(f)) = with_here(|fd| fd.try_clone_to_owned()) {
        return Ok(File::from(f));
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
    drop(owned(HERE.with(|h| h.replace(-1))));
}

/// (device, inode) of the calling thread's network namespace.
pub fn current_id() -> Option<(u64, u64)> {
    #[cfg(test)]
    if let Some(id) = super::fake::with(|w| w.cur) {
        return Some((0, id as u64));
    }
    if let Some(Ok(st)) = with_here(|fd| nix::sys::stat::fstat(fd)) {
        return Some((st.st_dev, st.st_ino));
    }
    let m = here().ok()?.metadata().ok()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread other than the first closes its remembered namespace handle when it ends: here a
    /// pipe's read end stands in for it, so the write end sees the reader gone (EPIPE).
    #[test]
    fn another_thread_closes_its_remembered_handle_at_exit() {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        std::thread::spawn(move || {
            remember(File::from(r));
            assert!(HERE.with(std::cell::Cell::get) >= 0);
        })
        .join()
        .unwrap();
        let e = nix::unistd::write(&w, b"x").unwrap_err();
        assert_eq!(e, Errno::EPIPE, "the exited thread's handle is closed");
    }
}
