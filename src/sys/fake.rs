//! The root-free seam under the plugins (unit tests only): a per-thread world of fake network
//! namespaces, known by path, with a "current" one, fake sysctls, and one event log that
//! `netlink::fake` appends its requests to. While a world is installed on the thread,
//! [`super::netns::NetNs`] opens, enters and compares these fake namespaces (no setns) and
//! [`super::sysctl`] reads and writes the fake values (no /proc). Plugin code does not change.

use std::cell::RefCell;
use std::collections::HashMap;

/// The fake world of one test thread.
#[derive(Debug, Default)]
pub struct World {
    /// Namespace names by id; id 0 is the namespace the plugin runs in ("host").
    pub names: Vec<String>,
    /// The namespace the thread is "in".
    pub cur: usize,
    /// Open fds of fake NetNs handles → namespace id (what IFLA_NET_NS_FD names).
    pub fds: HashMap<i32, usize>,
    /// Every recorded request: netlink requests and sysctl writes, "<ns>: <what>".
    pub log: Vec<String>,
    /// Sysctl values by (namespace, path under /proc/sys).
    pub sysctls: HashMap<(usize, String), String>,
}

thread_local! {
    static WORLD: RefCell<Option<World>> = const { RefCell::new(None) };
}

/// Install a world with the "host" namespace and `others` (paths a plugin may open).
pub fn install(others: &[&str]) {
    let mut w = World { names: vec!["host".to_string()], ..World::default() };
    w.names.extend(others.iter().map(|s| s.to_string()));
    WORLD.with(|c| *c.borrow_mut() = Some(w));
}

/// Remove the thread's world (the real kernel is used again).
pub fn uninstall() {
    WORLD.with(|c| *c.borrow_mut() = None);
}

/// Run `f` on the thread's world, when one is installed.
pub fn with<R>(f: impl FnOnce(&mut World) -> R) -> Option<R> {
    WORLD.with(|c| c.try_borrow_mut().ok()?.as_mut().map(f))
}

/// Append to the event log.
pub fn record(entry: String) {
    with(|w| w.log.push(entry));
}

/// The short name of namespace `id` (the last path component).
pub fn ns_name(w: &World, id: usize) -> String {
    let n = w.names.get(id).map(String::as_str).unwrap_or("?");
    n.rsplit('/').next().unwrap_or(n).to_string()
}

/// A sysctl read in the current fake namespace ("0" when never written).
pub(crate) fn sysctl_read(path: &str) -> Option<std::io::Result<String>> {
    with(|w| {
        let key = path.trim_start_matches("/proc/sys/").to_string();
        Ok(w.sysctls.get(&(w.cur, key)).cloned().unwrap_or_else(|| "0".to_string()))
    })
}

/// A sysctl write in the current fake namespace, recorded in the log.
pub(crate) fn sysctl_write(path: &str, value: &str) -> Option<std::io::Result<()>> {
    with(|w| {
        let key = path.trim_start_matches("/proc/sys/").to_string();
        let entry = format!("{}: sysctl {key}={value}", ns_name(w, w.cur));
        w.log.push(entry);
        w.sysctls.insert((w.cur, key), value.to_string());
        Ok(())
    })
}
