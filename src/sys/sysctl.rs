//! /proc/sys access. Acts on the network namespace of the calling thread at open time,
//! so wrap calls in `ns.run(..)` to touch a container's settings.
//!
//! The paths are opened in a procfs instance of this process's own when it can make one (a
//! detached mount: `fsopen`/`fsmount`, Linux ≥ 5.2; every procfs mount is its own instance since
//! 5.8), else in /proc. Why: the node's /proc keeps `sys/net/ipv4` and `sys/net/ipv6` in the
//! dentry cache once per network namespace that ever used them, all on one hash chain, and every
//! lookup walks it: with 1000 pods one open took 45 µs at best and 0.19-0.35 ms inside an ADD,
//! and each pod whose settings a plugin writes through /proc adds an entry. The private
//! instance's cache holds only what this process looked up; it costs ~35 µs to make, once per
//! process, and goes away with the process. Nothing is mounted anywhere: the instance is
//! reachable only through the descriptor. The kernel resolves `sys/net` by the calling
//! thread's network namespace in any procfs instance, so the values read and written are the
//! same.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;

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

/// The root of this process's own procfs instance, made on first use; None when the kernel or
/// the process's privileges do not allow one (then /proc is used).
fn private_proc() -> Option<BorrowedFd<'static>> {
    static ROOT: OnceLock<Option<OwnedFd>> = OnceLock::new();
    ROOT.get_or_init(|| mount_proc().map_err(|e| tracing::debug!("private procfs: {e}; using /proc")).ok())
        .as_ref()
        .map(|fd| fd.as_fd())
}

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

/// Open `path` (under /proc/sys) in the private procfs instance, or in /proc.
fn open(path: &str, write: bool) -> io::Result<std::fs::File> {
    use nix::fcntl::{openat, OFlag};
    use nix::sys::stat::Mode;
    let flags = if write { OFlag::O_WRONLY } else { OFlag::O_RDONLY } | OFlag::O_CLOEXEC;
    if let (Some(root), Some(rel)) = (private_proc(), path.strip_prefix("/proc/")) {
        match openat(root, rel, flags, Mode::empty()) {
            Ok(fd) => return Ok(std::fs::File::from(fd)),
            // a missing key is missing in /proc too; anything else (an LSM's rule for this
            // mount, say) is tried again in /proc
            Err(e) if e == nix::errno::Errno::ENOENT => return Err(e.into()),
            Err(e) => tracing::debug!("private procfs: {rel}: {e}; trying /proc"),
        }
    }
    std::fs::OpenOptions::new().read(!write).write(write).open(path)
}

fn read(path: &str) -> io::Result<String> {
    #[cfg(test)]
    if let Some(r) = super::fake::sysctl_read(path) {
        return r;
    }
    let with_path = |e: io::Error| io::Error::new(e.kind(), format!("{path}: {e}"));
    let mut s = String::new();
    io::Read::read_to_string(&mut open(path, false).map_err(with_path)?, &mut s).map_err(with_path)?;
    Ok(s.trim_end_matches('\n').to_string())
}

fn write(path: &str, value: &str) -> io::Result<()> {
    #[cfg(test)]
    if let Some(r) = super::fake::sysctl_write(path, value) {
        return r;
    }
    let with_path = |e: io::Error| io::Error::new(e.kind(), format!("{path}: {e}"));
    io::Write::write_all(&mut open(path, true).map_err(with_path)?, value.as_bytes()).map_err(with_path)
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

    /// The private procfs instance answers as /proc does (this test runs in the machine's
    /// namespace and only reads).
    #[test]
    fn private_procfs_reads_what_proc_reads() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        assert!(private_proc().is_some(), "a root process can make its own procfs instance");
        for key in ["net/ipv4/ip_forward", "net/ipv6/conf/lo/accept_dad", "kernel/ostype"] {
            let direct = std::fs::read_to_string(format!("/proc/sys/{key}")).unwrap();
            assert_eq!(get(key).unwrap(), direct.trim_end_matches('\n'), "{key}");
        }
        let e = get("net/ipv4/conf/nope0/arp_notify").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(e.to_string().contains("/proc/sys/net/ipv4/conf/nope0/arp_notify"), "{e}");
    }
}
