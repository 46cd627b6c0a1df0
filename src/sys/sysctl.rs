//! /proc/sys access. Acts on the network namespace of the calling thread at open time,
//! so wrap calls in `ns.run(..)` to touch a container's settings.
//!
//! Where the kernel runs the unix socket garbage collector in a worker (Linux >= 6.9), the
//! paths are opened in a procfs instance of this process's own (a detached `fsopen`/`fsmount`
//! mount; every procfs mount is its own instance since 5.8), else in /proc. Why: the node's
//! /proc keeps `sys/net/ipv6` (and `ipv4`, ...) in the dentry cache once per network namespace
//! that ever used them, all on one hash chain, and every lookup walks the chain: at 1000 pods
//! one open of a pod's `accept_dad` took 160-220 µs inside an ADD (`strace -T`), against
//! ~20 µs in a fresh instance at any node size. Nothing is mounted anywhere: the instance is
//! reachable only through its descriptor, and the kernel resolves `sys/net` by the calling
//! thread's network namespace in any procfs instance, so the values read and written are the
//! same.
//!
//! The instance goes away with its last descriptor, and the kernel's teardown of a detached
//! mount waits for an expedited RCU grace period (`namespace_unlock`). Made at exit, that wait
//! fell inside the runtime's time and cost more than the lookups saved (tried and removed on
//! 2026-12-06 12:06, `docs/bench.md`); so [`release_at_exit`] parks the descriptor for the
//! unix garbage collector (`sys::detach`), whose worker makes the last close. Kernels whose
//! collector runs in the closing process (before 6.9) would pay it at exit, so they use /proc.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Mutex;

fn key_path(key: &str) -> io::Result<String> {
    let rel = if key.contains('/') { key.trim_start_matches('/').to_string() } else { key.replace('.', "/") };
    if rel.is_empty() || rel.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("invalid sysctl key {key:?}")));
    }
    Ok(format!("/proc/sys/{rel}"))
}

fn if_path(family: &str, ifname: &str, leaf: &str) -> io::Result<String> {
    let bad = |s: &str| s.is_empty() || s.contains('/') || s == "." || s == "..";
    if !matches!(family, "ipv4" | "ipv6") || bad(ifname) || bad(leaf) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid sysctl net.{family}.conf.{ifname}.{leaf}"),
        ));
    }
    Ok(format!("/proc/sys/net/{family}/conf/{ifname}/{leaf}"))
}

/// The process's own procfs instance: not tried yet, its root, or not to be used.
enum Instance {
    Untried,
    Root(OwnedFd),
    Unused,
}

static INSTANCE: Mutex<Instance> = Mutex::new(Instance::Untried);

/// fsopen("proc") + FSCONFIG_CMD_CREATE + fsmount: a detached procfs mount, as a descriptor.
fn mount_proc() -> io::Result<OwnedFd> {
    use nix::libc::{c_uint, syscall, SYS_fsconfig, SYS_fsmount, SYS_fsopen};
    const FSOPEN_CLOEXEC: c_uint = 1;
    const FSCONFIG_CMD_CREATE: c_uint = 6;
    const FSMOUNT_CLOEXEC: c_uint = 1;
    let check = |r: i64| if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r) };
    // SAFETY: a NUL-terminated file system name and a flag; returns a new descriptor or -1
    let fs = check(unsafe { syscall(SYS_fsopen, c"proc".as_ptr(), FSOPEN_CLOEXEC) })?;
    // SAFETY: fsopen returned a descriptor that nothing else owns
    let fs = unsafe { OwnedFd::from_raw_fd(fs as i32) };
    // SAFETY: CMD_CREATE takes no key, value or aux (NULL, NULL, 0)
    check(unsafe {
        syscall(SYS_fsconfig, fs.as_raw_fd(), FSCONFIG_CMD_CREATE, std::ptr::null::<u8>(), std::ptr::null::<u8>(), 0)
    })?;
    // SAFETY: the configured context's descriptor, flags, no mount attributes; returns a new
    // descriptor of the mount's root or -1
    let root = check(unsafe { syscall(SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, 0) })?;
    // SAFETY: fsmount returned a descriptor that nothing else owns
    Ok(unsafe { OwnedFd::from_raw_fd(root as i32) })
}

/// Open `path` (under /proc/sys) in the process's own procfs instance, made on first use, or
/// in /proc.
fn open(path: &str, write: bool) -> io::Result<std::fs::File> {
    use nix::fcntl::{openat, OFlag};
    use nix::sys::stat::Mode;
    let flags = if write { OFlag::O_WRONLY } else { OFlag::O_RDONLY } | OFlag::O_CLOEXEC;
    if let (Ok(mut inst), Some(rel)) = (INSTANCE.lock(), path.strip_prefix("/proc/")) {
        if matches!(*inst, Instance::Untried) {
            *inst = match super::detach::collector_in_a_worker().then(mount_proc) {
                Some(Ok(root)) => Instance::Root(root),
                Some(Err(e)) => {
                    tracing::debug!("own procfs instance: {e}; using /proc");
                    Instance::Unused
                }
                None => Instance::Unused,
            };
        }
        if let Instance::Root(root) = &*inst {
            match openat(root, rel, flags, Mode::empty()) {
                Ok(fd) => return Ok(std::fs::File::from(fd)),
                // a missing key is missing in /proc too; anything else (an LSM's rule for this
                // mount, say) is tried again in /proc
                Err(nix::errno::Errno::ENOENT) => return Err(nix::errno::Errno::ENOENT.into()),
                Err(e) => tracing::debug!("own procfs instance: {rel}: {e}; trying /proc"),
            }
        }
    }
    std::fs::OpenOptions::new().read(!write).write(write).open(path)
}

/// Call once the plugin has answered, right before the process exits: the procfs instance's
/// descriptor, if one was made, is parked for the kernel's unix garbage collector, whose worker
/// makes its last close and with it the mount's teardown (module doc).
pub fn release_at_exit() {
    let root = match INSTANCE.lock() {
        Ok(mut inst) => match std::mem::replace(&mut *inst, Instance::Unused) {
            Instance::Root(root) => root,
            _ => return,
        },
        Err(_) => return,
    };
    if !super::detach::close_after_exit(root.as_raw_fd(), move || drop(root)) {
        tracing::debug!("procfs instance not parked: its close waited");
    }
}

fn read(path: &str) -> io::Result<String> {
    #[cfg(test)]
    if let Some(r) = super::fake::sysctl_read(path) {
        return r;
    }
    let mut s = String::new();
    let mut f = open(path, false).map_err(|e| path_error("open", path, e))?;
    io::Read::read_to_string(&mut f, &mut s).map_err(|e| path_error("read", path, e))?;
    Ok(s.trim_end_matches('\n').to_string())
}

/// `e` (of the same kind) in the words of Go's `*PathError`, as the reference's `os.ReadFile`
/// and `os.WriteFile` fail: `open /proc/sys/net/…: no such file or directory`,
/// `write /proc/sys/net/…: invalid argument`.
fn path_error(op: &str, path: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{op} {path}: {}", super::go_errno(&e)))
}

fn write(path: &str, value: &str) -> io::Result<()> {
    #[cfg(test)]
    if let Some(r) = super::fake::sysctl_write(path, value) {
        return r;
    }
    // no O_CREAT: a key the kernel does not have is ENOENT, as for a read
    let mut f = open(path, true).map_err(|e| path_error("open", path, e))?;
    io::Write::write_all(&mut f, value.as_bytes()).map_err(|e| path_error("write", path, e))
}

/// Read a sysctl; `key` is dotted ("net.ipv4.ip_forward") or a path ("net/ipv4/ip_forward").
pub fn get(key: &str) -> io::Result<String> {
    read(&key_path(key)?)
}

/// Write a sysctl; `key` as for [`get`].
pub fn set(key: &str, value: &str) -> io::Result<()> {
    write(&key_path(key)?, value)
}

/// Write `net.<family>.conf.<ifname>.<leaf>`; safe for interface names containing dots.
pub fn set_if(family: &str, ifname: &str, leaf: &str, value: &str) -> io::Result<()> {
    write(&if_path(family, ifname, leaf)?, value)
}

/// Read `net.<family>.conf.<ifname>.<leaf>`.
pub fn get_if(family: &str, ifname: &str, leaf: &str) -> io::Result<String> {
    read(&if_path(family, ifname, leaf)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_forms() {
        assert_eq!(key_path("net.ipv4.ip_forward").unwrap(), "/proc/sys/net/ipv4/ip_forward");
        assert_eq!(key_path("net/ipv4/conf/eth0.1/rp_filter").unwrap(), "/proc/sys/net/ipv4/conf/eth0.1/rp_filter");
        assert!(key_path("net/../../etc/passwd").is_err());
        assert!(key_path("").is_err());
        assert_eq!(if_path("ipv6", "eth0.100", "accept_ra").unwrap(), "/proc/sys/net/ipv6/conf/eth0.100/accept_ra");
        assert!(if_path("ipv4", "..", "x").is_err());
        assert!(if_path("ipx", "eth0", "x").is_err());
    }

    /// Reads answer what /proc/sys holds; a missing key is NotFound and names its path (this
    /// test runs in the machine's namespace: it reads, and writes only a key that does not exist).
    #[test]
    fn reads_proc_sys() {
        for key in ["net/ipv4/ip_forward", "net/ipv6/conf/lo/accept_dad", "kernel/ostype"] {
            let direct = std::fs::read_to_string(format!("/proc/sys/{key}")).unwrap();
            assert_eq!(get(key).unwrap(), direct.trim_end_matches('\n'), "{key}");
        }
        let e = get("net/ipv4/conf/nope0/arp_notify").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        // Go's words (the reference's os.ReadFile), through the own procfs instance or /proc
        assert_eq!(e.to_string(), "open /proc/sys/net/ipv4/conf/nope0/arp_notify: no such file or directory");
        // a write to a key the kernel does not have creates nothing and is NotFound too
        let e = set("net/ipv4/conf/nope0/arp_notify", "1").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        assert_eq!(e.to_string(), "open /proc/sys/net/ipv4/conf/nope0/arp_notify: no such file or directory");
    }

    /// On a kernel whose unix collector runs in a worker, a root process reads through its own
    /// procfs instance (made on first use) what /proc shows; at exit the instance is parked,
    /// after which reads go to /proc and still answer. Elsewhere /proc is used from the start.
    #[test]
    fn own_procfs_instance_is_used_and_parked_at_exit() {
        let key = "net/ipv6/conf/lo/accept_dad";
        let direct = || std::fs::read_to_string(format!("/proc/sys/{key}")).unwrap().trim_end().to_string();
        assert_eq!(get(key).unwrap(), direct());
        let made = matches!(*INSTANCE.lock().unwrap(), Instance::Root(_));
        let expected = nix::unistd::geteuid().is_root() && super::super::detach::collector_in_a_worker();
        assert_eq!(made, expected, "own procfs instance made: {made}, expected: {expected}");
        release_at_exit();
        assert!(matches!(*INSTANCE.lock().unwrap(), Instance::Unused));
        assert_eq!(get(key).unwrap(), direct());
    }
}
