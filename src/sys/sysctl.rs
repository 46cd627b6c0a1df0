//! /proc/sys access. Acts on the network namespace of the calling thread at open time,
//! so wrap calls in `ns.run(..)` to touch a container's settings.
//!
//! The paths are opened in /proc. A procfs instance of the plugin's own (a detached
//! `fsopen`/`fsmount` mount) was tried on 2026-12-06 and removed the same day: its lookups are
//! cheaper than the node's /proc at 1000 pods (whose `sys/net` entries sit once per network
//! namespace on one dentry hash chain), but the kernel tears a detached mount down when the
//! process exits with an expedited RCU grace period that the runtime waits for, and in A/B runs
//! on fresh pods that cost more than it saved, at 100 pods and at 800 (`docs/bench.md`).

use std::io;

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

fn read(path: &str) -> io::Result<String> {
    #[cfg(test)]
    if let Some(r) = super::fake::sysctl_read(path) {
        return r;
    }
    let s = std::fs::read_to_string(path).map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
    Ok(s.trim_end_matches('\n').to_string())
}

fn write(path: &str, value: &str) -> io::Result<()> {
    #[cfg(test)]
    if let Some(r) = super::fake::sysctl_write(path, value) {
        return r;
    }
    // no O_CREAT: a key the kernel does not have is ENOENT, as for a read
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| io::Write::write_all(&mut f, value.as_bytes()))
        .map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))
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
        assert!(e.to_string().contains("/proc/sys/net/ipv4/conf/nope0/arp_notify"), "{e}");
        // a write to a key the kernel does not have creates nothing and is NotFound too
        let e = set("net/ipv4/conf/nope0/arp_notify", "1").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
    }
}
