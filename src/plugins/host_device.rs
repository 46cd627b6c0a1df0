//! host-device: move an existing host interface into the container (by name, MAC, sysfs path,
//! PCI address or auxiliary-bus device), renamed to CNI_IFNAME, and give it back under its
//! original name on DEL (checklist §2.7). Moves go through a temporary namespace, so the rename
//! never clashes with names in the host or the container.

use super::steps::{self, NsOrGone, Undo};
use crate::cni::plugin::{cap, config_fields, k, Doc, Kind, Plugin, Version, DNS_KEY};
use crate::cni::result::Interface;
use crate::cni::{CniError, CniResult, Ctx};
use crate::netlink::{Link, Netlink};
use crate::sys::netns::NetNs;
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

pub const APPLET: Plugin = Plugin {
    name: "host-device",
    about: "move an existing host interface into the container",
    min_version: Version::new(0, 1, 0),
    cni_args: None,
    add,
    del,
    check,
    gc: Some(gc),
    status: Some(status),
    subcommands: &[],
    doc: &DOC,
};

pub const DOC: Doc = Doc {
    kind: Kind::Interface,
    summary: "Moves an existing host interface into the container, renamed to CNI_IFNAME; DEL \
              moves it back under its old name.",
    section: "",
    keys: &[
        k("device", "string", "", "host interface name"),
        k(
            "hwaddr",
            "string",
            "",
            "find the interface by hardware address, in any form Go's net.ParseMAC takes \
             (`aa:bb:cc:dd:ee:ff`, `aa-bb-…`, `aabb.ccdd.eeff`; 6, 8 or 20 octets)",
        ),
        k("kernelpath", "string", "", "find it by its /sys/devices/... path"),
        k(
            "pciBusID",
            "string",
            "",
            "find it by PCI address; a device bound to a userspace driver (vfio-pci, uio_pci_generic, \
             igb_uio: DPDK) is left in place, and the result names CNI_IFNAME in CNI_NETNS",
        ),
        k("ipam", "object", "", "optional"),
        DNS_KEY,
        cap("deviceID", "string", "PCI or auxiliary-bus device id; wins over pciBusID"),
    ],
    notes: &[
        "Exactly one way of naming the device is needed; one that names no device is a configuration \
         error (code 7).",
        "Whether a PCI device is left in place (DPDK) is decided by its driver alone: `DPDKMode` in the \
         config is overridden, as in the reference.",
    ],
    example: r#"{
  "cniVersion": "1.0.0",
  "name": "passthrough",
  "type": "host-device",
  "device": "enp3s0f1"
}"#,
    config: Some(config_fields::<Conf>),
};

const SYS_BUS_PCI: &str = "/sys/bus/pci/devices";
const SYS_BUS_AUX: &str = "/sys/bus/auxiliary/devices";
/// Drivers that hand the device to userspace (DPDK): then nothing is moved.
const USERSPACE_DRIVERS: [&str; 3] = ["vfio-pci", "uio_pci_generic", "igb_uio"];

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct Conf {
    device: String,
    hwaddr: String,
    #[serde(rename = "kernelpath")]
    kernel_path: String,
    #[serde(rename = "pcibusid")]
    pci_bus_id: String,
    /// undocumented but settable in the reference (its Go field has no JSON tag)
    #[serde(rename = "dpdkmode")]
    dpdk_mode: bool,
}

fn load(ctx: &Ctx) -> Result<Conf> {
    let mut c: Conf = ctx.plugin_conf()?;
    if let Some(id) = ctx.runtime_config("deviceid").and_then(|v| v.as_str()).filter(|s| !s.is_empty()) {
        c.pci_bus_id = id.to_string();
    }
    if c.device.is_empty() && c.hwaddr.is_empty() && c.kernel_path.is_empty() && c.pci_bus_id.is_empty() {
        return Err(CniError::config(r#"specify either "device", "hwaddr", "kernelpath" or "pciBusID""#).into());
    }
    if !c.pci_bus_id.is_empty() {
        if c.pci_bus_id.contains('/') || c.pci_bus_id == ".." {
            return Err(CniError::config(format!("invalid PCI address {:?}", c.pci_bus_id)).into());
        }
        // the device's driver decides, whatever `DPDKMode` says (the reference overwrites it too)
        c.dpdk_mode = has_dpdk_driver(&c.pci_bus_id)?;
    }
    Ok(c)
}

/// PCI devices bound to a userspace driver are DPDK devices; auxiliary devices never are.
fn has_dpdk_driver(id: &str) -> Result<bool> {
    let pci = Path::new(SYS_BUS_PCI).join(id);
    if !pci.exists() {
        if Path::new(SYS_BUS_AUX).join(id).exists() {
            return Ok(false);
        }
        return Err(CniError::config(format!("error with host device: no PCI or auxiliary device {id:?}")).into());
    }
    let driver = std::fs::read_link(pci.join("driver"))
        .map_err(|e| CniError::config(format!("error with host device: driver of {id}: {e}")))?;
    let name = driver.file_name().and_then(|n| n.to_str()).unwrap_or("");
    Ok(USERSPACE_DRIVERS.contains(&name))
}

/// The first entry of a sysfs `net/` directory that is a link in our namespace. A directory
/// that does not exist names no device: a configuration error (code 7), as every other way of
/// naming a device that is not there.
fn first_net_entry(host: &mut Netlink, dir: &Path) -> Result<Option<Link>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) => {
            return Err(CniError::config(format!("failed to find network devices at {:?}", dir.display())).into());
        }
        Err(e) => return Err(e).with_context(|| format!("failed to find network devices at {:?}", dir.display())),
    };
    let mut names: Vec<String> =
        entries.filter_map(|e| e.ok().and_then(|e| e.file_name().into_string().ok())).collect();
    names.sort();
    for n in names {
        if let Some(l) = host.link_by_name(&n)? {
            return Ok(Some(l));
        }
    }
    Ok(None)
}

/// Find the host device named by the config.
fn find_device(host: &mut Netlink, c: &Conf) -> Result<Link> {
    let found = if !c.device.is_empty() {
        host.link_by_name(&c.device)?
    } else if !c.hwaddr.is_empty() {
        // every form Go's net.ParseMAC takes (dotted, EUI-64, IPoIB), matched against the
        // device's hardware address whatever its length
        let mac = crate::netlink::parse_hwaddr(&c.hwaddr)
            .map_err(|e| CniError::config(format!("failed to parse MAC address {:?}: {e}", c.hwaddr)))?;
        host.links()?.into_iter().find(|l| l.hw_addr() == Some(&mac[..]))
    } else if !c.kernel_path.is_empty() {
        let p = Path::new(&c.kernel_path);
        // no `..` anywhere (a trailing `/..` too), so the path stays under /sys/devices
        let climbs = p.components().any(|c| c == std::path::Component::ParentDir);
        if !p.is_absolute() || !c.kernel_path.starts_with("/sys/devices/") || climbs {
            return Err(CniError::config(format!(
                "kernel device path {:?} must be absolute and begin with /sys/devices/",
                c.kernel_path
            ))
            .into());
        }
        first_net_entry(host, &p.join("net"))?
    } else {
        let pci = Path::new(SYS_BUS_PCI).join(&c.pci_bus_id);
        let dir = if pci.exists() {
            let direct = pci.join("net");
            if direct.exists() {
                direct
            } else {
                virtio_net_dir(&pci)
                    .ok_or_else(|| CniError::config(format!("no net directory under pci device {}", c.pci_bus_id)))?
            }
        } else {
            Path::new(SYS_BUS_AUX).join(&c.pci_bus_id).join("net")
        };
        first_net_entry(host, &dir)?
    };
    found.ok_or_else(|| {
        let what = [&c.device, &c.hwaddr, &c.kernel_path, &c.pci_bus_id].into_iter().find(|s| !s.is_empty());
        CniError::config(format!("failed to find host device: {}: Link not found", what.map_or("", |s| s.as_str())))
            .into()
    })
}

/// `<pci>/virtio*/net`, for virtio-net devices.
fn virtio_net_dir(pci: &Path) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(pci)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("virtio"))
        .map(|e| e.path().join("net"))
        .filter(|p| p.exists())
        .collect();
    dirs.sort();
    dirs.into_iter().next()
}

/// Host → temporary namespace (down, alias = host name, renamed) → container (up).
/// Every failure puts the device back as it was.
fn move_in(host: &mut Netlink, host_ns: &NetNs, cont_ns: &NetNs, dev: &Link, ifname: &str) -> Result<()> {
    let tmp_ns = NetNs::new_anonymous()?;
    let mut tmp = Netlink::in_netns(&tmp_ns)?;
    host.link_set_netns(dev.index, tmp_ns.fd()).with_context(|| format!("failed to move {:?}", dev.name))?;
    let step = (|| -> Result<()> {
        let l = tmp.link_by_name(&dev.name)?.with_context(|| format!("failed to find {:?}", dev.name))?;
        tmp.link_set_up(l.index, false).with_context(|| format!("failed to set {:?} down", dev.name))?;
        tmp.link_set_alias(l.index, &dev.name).with_context(|| format!("failed to set alias to {:?}", dev.name))?;
        tmp.link_set_name(l.index, ifname)
            .with_context(|| format!("failed to rename device {:?} to {ifname:?}", dev.name))?;
        tmp.link_set_netns(l.index, cont_ns.fd()).with_context(|| format!("failed to move {ifname:?} to the container"))
    })();
    if let Err(e) = step {
        // give it back: whatever name it has now, restore the host name and state
        for name in [ifname, dev.name.as_str()] {
            if let Ok(Some(l)) = tmp.link_by_name(name) {
                let _ = tmp.link_set_name(l.index, &dev.name);
                let _ = tmp.link_set_alias(l.index, "");
                let _ = tmp.link_set_netns(l.index, host_ns.fd());
                if dev.is_up() {
                    if let Ok(Some(h)) = host.link_by_name(&dev.name) {
                        let _ = host.link_set_up(h.index, true);
                    }
                }
                break;
            }
        }
        return Err(e);
    }
    Ok(())
}

/// Container → temporary namespace (renamed to the alias, alias cleared) → host.
/// Returns false when the container has no `ifname` (already moved out).
fn move_out(cont_ns: &NetNs, host_ns: &NetNs, ifname: &str, set_up: bool) -> Result<bool> {
    let cont = &mut Netlink::in_netns(cont_ns)?;
    let Some(l) = cont.link_by_name(ifname)? else { return Ok(false) };
    let alias = cont.link_details(l.index)?.and_then(|d| d.alias).filter(|a| !a.is_empty());
    let Some(alias) = alias else {
        bail!("failed to restore {ifname:?}: it has no alias holding its original name");
    };
    cont.link_set_up(l.index, false).with_context(|| format!("failed to set {ifname:?} down"))?;
    // On failure the device goes back into the container under its container name, so DEL can
    // be retried, and up again if it was up (moving a device between namespaces sets it down).
    let restore_up = |cont: &mut Netlink| {
        if l.is_up() {
            if let Ok(Some(c)) = cont.link_by_name(ifname) {
                let _ = cont.link_set_up(c.index, true);
            }
        }
    };
    let moved = NetNs::new_anonymous().and_then(|tmp_ns| {
        cont.link_set_netns(l.index, tmp_ns.fd()).with_context(|| format!("failed to move {ifname:?} out"))?;
        Ok(tmp_ns)
    });
    let tmp_ns = match moved {
        Ok(t) => t,
        Err(e) => {
            restore_up(cont);
            return Err(e);
        }
    };
    let mut tmp = Netlink::in_netns(&tmp_ns)?;
    let t = tmp.link_by_name(ifname)?.with_context(|| format!("failed to find {ifname:?}"))?;
    let step = (|| -> Result<()> {
        tmp.link_set_name(t.index, &alias)
            .with_context(|| format!("failed to restore {ifname:?} to original name {alias:?}"))?;
        tmp.link_set_alias(t.index, "")?;
        tmp.link_set_netns(t.index, host_ns.fd()).with_context(|| format!("failed to move {alias:?} to host netns"))
    })();
    if let Err(e) = step {
        let _ = tmp.link_set_name(t.index, ifname);
        let _ = tmp.link_set_alias(t.index, &alias);
        let _ = tmp.link_set_netns(t.index, cont_ns.fd());
        restore_up(cont);
        return Err(e);
    }
    if set_up {
        let mut host = Netlink::in_netns(host_ns)?;
        if let Some(h) = host.link_by_name(&alias)? {
            host.link_set_up(h.index, true)?;
        }
    }
    Ok(true)
}

fn add(ctx: &Ctx) -> Result<CniResult> {
    let conf = load(ctx)?;
    let ns = steps::ns::open(ctx)?;
    // CNI_IFNAME in CNI_NETNS, also in DPDK mode where nothing is moved (so `ips[].interface`
    // points at an entry, as in v1.9.1); a moved device fills in its name and MAC below
    let mut result = CniResult {
        interfaces: vec![Interface { name: ctx.ifname.clone(), sandbox: ctx.netns.clone(), ..Default::default() }],
        ..Default::default()
    };
    let mut cont = Netlink::in_netns(&ns)?;
    let mut undo = Undo::default();

    if !conf.dpdk_mode {
        let mut host = Netlink::new()?;
        let host_ns = NetNs::current()?;
        let dev = find_device(&mut host, &conf)?;
        if cont.link_by_name(&ctx.ifname)?.is_some() {
            bail!("interface {:?} already exists in the container", ctx.ifname);
        }
        move_in(&mut host, &host_ns, &ns, &dev, &ctx.ifname).context("failed to move link")?;
        let (path, ifname, was_up) = (ns.path().to_string(), ctx.ifname.clone(), dev.is_up());
        undo.push("moved device", move || {
            move_out(&steps::ns::reopen(&path)?, &NetNs::current()?, &ifname, was_up).map(|_| ())
        });
        let l = cont.link_by_name(&ctx.ifname)?.with_context(|| format!("failed to find {:?}", ctx.ifname))?;
        cont.link_set_up(l.index, true).with_context(|| format!("failed to set {:?} up", ctx.ifname))?;
        let l = cont.link_by_index(l.index)?.unwrap_or(l);
        // the hardware address whatever its length, as the reference prints it
        result.interfaces = vec![Interface { mac: l.hw_addr_string(), ..steps::link::container_iface(ctx, &l) }];
    }

    if ctx.ipam_type().is_some() {
        let ipam = steps::ipam::add(ctx, &mut undo)?;
        (result.ips, result.routes) = (ipam.ips, ipam.routes);
        if !conf.dpdk_mode {
            steps::ipam::configure_iface(&ns, &mut cont, &ctx.ifname, 0, &result)?;
        }
        result.dns = steps::ipam::conf_dns(ctx).unwrap_or_default();
    }
    undo.commit();
    Ok(result)
}

fn del(ctx: &Ctx) -> Result<()> {
    let conf = load(ctx)?;
    steps::ipam::del_if_set(ctx)?;
    if conf.dpdk_mode {
        return Ok(());
    }
    let NsOrGone::Ns(ns) = steps::ns::open_for_del(ctx)? else { return Ok(()) };
    let host_ns = NetNs::current()?;
    if !move_out(&ns, &host_ns, &ctx.ifname, false)? {
        tracing::debug!("{} is not in the container: already given back", ctx.ifname);
    }
    Ok(())
}

fn check(ctx: &Ctx) -> Result<()> {
    let conf = load(ctx)?;
    let ns = steps::ns::open(ctx)?;
    steps::ipam::check_if_set(ctx)?;
    let prev = steps::check::require_prev(ctx)?;
    if conf.dpdk_mode {
        return Ok(());
    }
    let (idx, want) = steps::check::prev_iface(ctx, prev)?;
    let mut cont = Netlink::in_netns(&ns)?;
    let Some(link) = cont.link_by_name(&ctx.ifname)? else {
        bail!("Container Interface name in prevResult: {} not found", ctx.ifname)
    };
    steps::check::link_mac(&link, want)?;
    steps::check::addrs_and_routes(&mut cont, &ctx.ifname, idx, prev)
}

/// GC: passed on to IPAM. The device is not touched: when a netns dies without DEL the kernel
/// itself hands a physical device back to the root namespace (under its container name, the
/// original one in its alias), and a virtual one is gone.
fn gc(ctx: &Ctx) -> Result<()> {
    // GC uses no key of the plugin's own: one that does not decode stops nothing
    steps::ipam::gc_if_set(ctx)
}

/// STATUS: the config must decode (a mistyped key fails, as the reference's cmdStatus
/// unmarshals its NetConf); then IPAM's STATUS. Which device is named is not looked at.
fn status(ctx: &Ctx) -> Result<()> {
    let _conf: Conf = ctx.plugin_conf()?;
    steps::ipam::status_if_set(ctx)
}
