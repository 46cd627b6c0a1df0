//! Firewall layer: one façade per feature, each choosing its backend; plugins call only the
//! façades and never see a backend (`nft`, `iptables`) or its text.
//!
//! Backends:
//! - [`nft`]: nf_tables spoken over NETLINK_NETFILTER — no `nft` or `iptables` binary needed, one
//!   kernel transaction (one datagram) per change.
//! - [`iptables`]: the reference's default, in the reference's layout. Where iptables-nft holds
//!   the table, it is read and changed over netlink ([`iptables_nft`], encoded as iptables-nft
//!   encodes it); else one `iptables-restore --noflush -w` (and/or `ip6tables-restore`) exec per
//!   change, plus one `*-save` read.
//!
//! Both write exactly the reference plugins' layouts (tables, chains, comments), so a node can
//! switch between the reference binaries and ours and each cleans up after the other (tested
//! against the reference 1.1.1 binaries for ipMasq, portmap and macspoofchk).
//!
//! Façades (typed spec; `ensure` / `remove` / `check` / `gc`):
//! - [`ipmasq`] (bridge, ptp `ipMasq`);
//! - [`portmap`] (the portmap plugin), plus [`conntrack::delete_by_dport`] for the UDP flush;
//! - [`filter`] (the firewall plugin; GC for its nftables rules, whose tag names the attachment);
//! - [`macspoof`] (bridge `macspoofchk`, always nftables as the reference).
//!
//! Names derived the reference's way (chain hashes, comments) live in [`crate::names`].
//!
//! Every nftables change is one netlink transaction on a per-thread cached socket (see
//! [`nft::sock::NftSocket::cached`]): an ipMasq ADD+DEL costs ~0.2 ms against ~40 ms for the
//! iptables backend's save+restore execs. ADDs after the first attachment only append (no table/
//! chain re-declaration, no flush of shared chains that are already right; see [`nft::plan`]),
//! committed guarded by the ruleset generation, so the socket's close() stays free as well.
//!
//! ## Backend choice ([`BackendKind::choose`]), made here and nowhere else
//! 1. `CNI_MULTI_FIREWALL_BACKEND=nftables|iptables` (node operator override) wins;
//! 2. else the config value (`ipMasqBackend`, portmap's / the firewall plugin's `backend`);
//! 3. else (unset) the reference's rule ([`default_backend`]): **iptables when an `iptables`
//!    binary on PATH works** (`iptables -t filter -S INPUT 1 -w` succeeds, as the reference's
//!    `utils.SupportsIPTables`), otherwise nftables over netlink when the kernel has nf_tables,
//!    otherwise iptables (which then reports why it cannot work).
//!
//! The reference's nftables path needs the `nft` binary; ours needs nothing but the kernel, so
//! a minimal node image without any binary still gets masquerading and port mappings.
//!
//! Teardown always tries both backends (as the reference); errors are reported only for a backend
//! that is usable on this node.

pub mod conntrack;
pub mod filter;
pub mod firewalld;
pub mod ipmasq;
pub mod iptables;
pub mod iptables_nft;
pub mod macspoof;
pub mod nft;
pub mod portmap;

use anyhow::{bail, Result};

/// Environment override for the backend choice.
pub const ENV_BACKEND: &str = "CNI_MULTI_FIREWALL_BACKEND";

/// The two backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Nftables,
    Iptables,
}

impl BackendKind {
    /// Parses a config/env value (`"nftables"` or `"iptables"`, as the reference's keys).
    pub fn parse(s: &str) -> Result<BackendKind> {
        match s {
            "nftables" => Ok(BackendKind::Nftables),
            "iptables" => Ok(BackendKind::Iptables),
            other => bail!("unknown firewall backend {other:?} (expected \"iptables\" or \"nftables\")"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Nftables => "nftables",
            BackendKind::Iptables => "iptables",
        }
    }

    /// Env override > config value > the reference's default ([`default_backend`]).
    pub fn choose(config_value: Option<&str>) -> Result<BackendKind> {
        Self::choose_with(env_override().as_deref(), config_value, default_backend)
    }

    /// [`BackendKind::choose`] with the environment and the default injected (for tests).
    pub fn choose_with(
        env_value: Option<&str>,
        config_value: Option<&str>,
        default: impl FnOnce() -> BackendKind,
    ) -> Result<BackendKind> {
        if let Some(v) = env_value.filter(|v| !v.is_empty()) {
            return BackendKind::parse(v).map_err(|e| anyhow::anyhow!("{ENV_BACKEND}: {e}"));
        }
        if let Some(v) = config_value.filter(|v| !v.is_empty()) {
            return BackendKind::parse(v);
        }
        Ok(default())
    }
}

/// An IP protocol by the name nft and iptables use for it, or by number: what portmap
/// mappings, nft-syntax conditions and iptables `-p` all read (one table).
pub fn ip_proto_number(name: &str) -> Option<u8> {
    Some(match name {
        "icmp" => 1,
        "tcp" => 6,
        "udp" => 17,
        "dccp" => 33,
        "gre" => 47,
        "esp" => 50,
        "ah" => 51,
        "icmpv6" | "ipv6-icmp" => 58,
        "sctp" => 132,
        "udplite" => 136,
        n => n.parse().ok()?,
    })
}

/// `CNI_MULTI_FIREWALL_BACKEND`, when set and not empty.
pub fn env_override() -> Option<String> {
    std::env::var(ENV_BACKEND).ok().filter(|v| !v.is_empty())
}

/// The reference's default ("prefer iptables, unless only nftables is available"): iptables
/// when an `iptables` binary on PATH works, else nftables when the kernel has nf_tables, else
/// iptables.
pub fn default_backend() -> BackendKind {
    default_backend_with(iptables::binary_works, nft_available)
}

/// [`default_backend`] with the probes injected (the nft probe runs only when iptables fails).
pub fn default_backend_with(ipt: impl FnOnce() -> bool, nft: impl FnOnce() -> bool) -> BackendKind {
    if ipt() {
        BackendKind::Iptables
    } else if nft() {
        BackendKind::Nftables
    } else {
        BackendKind::Iptables
    }
}

/// True when the kernel answers nf_tables requests in this network namespace.
pub fn nft_available() -> bool {
    match nft::sock::NftSocket::cached() {
        Ok(mut s) => nft::decode::list_tables(&mut s, Some(nft::Family::Ip)).is_ok(),
        Err(_) => false,
    }
}

/// One attachment (container id + interface), e.g. from `cni.dev/valid-attachments`.
pub use crate::cni::Attachment;

/// The teardown policy of every feature, written once (as the reference's ipMasq teardown): both
/// backends are cleaned — the attachment may have been made by another version or config — and
/// an error counts only for a backend that is usable on this node.
pub fn teardown_both(iptables: impl FnOnce() -> Result<()>, nftables: impl FnOnce() -> Result<()>) -> Result<()> {
    teardown_both_with(iptables, nftables, |kind| match kind {
        BackendKind::Iptables => iptables::IptablesBackend.usable(),
        BackendKind::Nftables => nft_available(),
    })
}

/// [`teardown_both`] with the usability probe injected (for tests).
pub fn teardown_both_with(
    iptables: impl FnOnce() -> Result<()>,
    nftables: impl FnOnce() -> Result<()>,
    usable: impl Fn(BackendKind) -> bool,
) -> Result<()> {
    let mut errs = Vec::new();
    for (kind, r) in [(BackendKind::Iptables, iptables()), (BackendKind::Nftables, nftables())] {
        if let Err(e) = r {
            if usable(kind) {
                errs.push(format!("{}: {e:#}", kind.name()));
            } else {
                tracing::debug!(backend = kind.name(), "ignoring error of unusable backend: {e:#}");
            }
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        bail!("{}", errs.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_choice_rules() {
        let nft = || BackendKind::Nftables;
        let ipt = || BackendKind::Iptables;
        assert_eq!(BackendKind::choose_with(None, None, nft).unwrap(), BackendKind::Nftables);
        assert_eq!(BackendKind::choose_with(None, None, ipt).unwrap(), BackendKind::Iptables);
        assert_eq!(BackendKind::choose_with(None, Some("iptables"), nft).unwrap(), BackendKind::Iptables);
        assert_eq!(BackendKind::choose_with(None, Some("nftables"), ipt).unwrap(), BackendKind::Nftables);
        assert_eq!(BackendKind::choose_with(Some("iptables"), Some("nftables"), nft).unwrap(), BackendKind::Iptables);
        assert_eq!(BackendKind::choose_with(Some(""), Some(""), nft).unwrap(), BackendKind::Nftables);
        assert!(BackendKind::choose_with(None, Some("firewalld"), nft).is_err());
        assert!(BackendKind::choose_with(Some("bogus"), None, nft).is_err());
    }

    /// The layering rule: plugins reach the firewall only through the façades — no backend
    /// module, no netlink decoding, no iptables-save text.
    #[test]
    fn plugins_use_only_the_facades() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/plugins");
        let mut files = vec![];
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    files.push(p);
                }
            }
        }
        assert!(files.len() > 10);
        let banned = ["firewall::nft", "firewall::iptables", "nft::decode", "nft::sock", "iptables-save", "parse_save"];
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            for b in banned {
                assert!(!text.contains(b), "{} uses {b}: go through a firewall façade", f.display());
            }
        }
    }

    #[test]
    fn teardown_reports_errors_of_usable_backends_only() {
        let fail = || -> Result<()> { bail!("boom") };
        let ok = || -> Result<()> { Ok(()) };
        assert!(teardown_both_with(fail, ok, |_| false).is_ok());
        assert!(teardown_both_with(ok, ok, |_| true).is_ok());
        let e = teardown_both_with(fail, fail, |k| k == BackendKind::Nftables).unwrap_err().to_string();
        assert_eq!(e, "nftables: boom");
        let e = teardown_both_with(fail, fail, |_| true).unwrap_err().to_string();
        assert_eq!(e, "iptables: boom; nftables: boom");
    }

    #[test]
    fn default_is_the_references_rule() {
        // iptables works: iptables, whatever the kernel has (the nft probe is not even asked)
        assert_eq!(default_backend_with(|| true, || panic!("not asked")), BackendKind::Iptables);
        // no working iptables binary: nftables over netlink
        assert_eq!(default_backend_with(|| false, || true), BackendKind::Nftables);
        // neither: iptables, which then says why it cannot work
        assert_eq!(default_backend_with(|| false, || false), BackendKind::Iptables);
    }
}
