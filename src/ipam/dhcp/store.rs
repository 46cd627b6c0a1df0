//! Lease store: one JSON file per lease under the state dir (dir 0700, files 0600, written
//! to a temp file, fsynced and renamed), so a restarted daemon resumes renewing.

use super::client::{ClientOptions, Lease};
use super::v6::Lease6;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Everything needed to maintain (and release) one lease: a DHCPv4 lease (`lease`, the
/// only kind files written before DHCPv6 hold) or a DHCPv6 one (`lease6`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// `<containerID>/<network>/<ifname>`
    pub key: String,
    pub container_id: String,
    pub network: String,
    pub ifname: String,
    /// netns path as the runtime gave it (without the daemon's hostprefix)
    pub netns: String,
    pub options: ClientOptions,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease6: Option<Lease6>,
    /// the device in the daemon's netns behind the container link (bridge, macvlan parent),
    /// from which a release is sent once the container link is gone
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower: Option<String>,
    /// the container interface's MAC (chaddr of a release sent after the link is gone)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<[u8; 6]>,
    /// the link was set down because the lease expired unrenewed
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub link_down: bool,
}

impl Record {
    /// The daemon's id of this record: the key for a v4 lease, `<key>#6` for a v6 one.
    pub fn id(&self) -> String {
        if self.lease6.is_some() {
            format!("{}#6", self.key)
        } else {
            self.key.clone()
        }
    }
    /// The id of the attachment's other family's record ([`Record::id`] of the same key).
    pub fn other_family_id(&self) -> String {
        if self.lease6.is_some() {
            self.key.clone()
        } else {
            format!("{}#6", self.key)
        }
    }
    pub fn address(&self) -> String {
        match (&self.lease, &self.lease6) {
            (Some(l), _) => l.address.to_string(),
            (_, Some(l)) => l.address.to_string(),
            _ => String::new(),
        }
    }
    pub fn t1_at(&self) -> u64 {
        self.lease.as_ref().map(Lease::t1_at).or(self.lease6.as_ref().map(Lease6::t1_at)).unwrap_or(0)
    }
    pub fn t2_at(&self) -> u64 {
        self.lease.as_ref().map(Lease::t2_at).or(self.lease6.as_ref().map(Lease6::t2_at)).unwrap_or(0)
    }
    pub fn expiry_at(&self) -> u64 {
        self.lease.as_ref().map(Lease::expiry_at).or(self.lease6.as_ref().map(Lease6::expiry_at)).unwrap_or(0)
    }
}

pub struct Store {
    dir: PathBuf,
}

/// FNV-1a, enough to give each key a short file name
fn fnv64(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

impl Store {
    pub fn open(dir: &Path) -> anyhow::Result<Store> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating state dir {}", dir.display()))?;
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
        Ok(Store { dir: dir.to_path_buf() })
    }

    pub fn path_for(&self, key: &str) -> PathBuf {
        // readable prefix (container id, file-name safe) + hash of the whole key
        let prefix: String = key
            .chars()
            .take_while(|c| *c != '/')
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            .take(64)
            .collect();
        self.dir.join(format!("{prefix}-{:016x}.lease", fnv64(key)))
    }

    pub fn save(&self, rec: &Record) -> anyhow::Result<()> {
        let path = self.path_for(&rec.id());
        let tmp = path.with_extension("tmp");
        let data = serde_json::to_vec_pretty(rec)?;
        let res = (|| -> std::io::Result<()> {
            let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
            f.write_all(&data)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
        })();
        if res.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        res.with_context(|| format!("saving lease {}", path.display()))
    }

    pub fn remove(&self, key: &str) -> anyhow::Result<()> {
        match fs::remove_file(self.path_for(key)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).context("removing lease file"),
            _ => Ok(()),
        }
    }

    /// All readable records; unreadable files are logged and skipped (left for inspection).
    pub fn load_all(&self) -> anyhow::Result<Vec<Record>> {
        let mut out = Vec::new();
        for ent in fs::read_dir(&self.dir).with_context(|| format!("reading {}", self.dir.display()))? {
            let Ok(ent) = ent else { continue };
            let p = ent.path();
            if p.extension().and_then(|e| e.to_str()) != Some("lease") {
                continue;
            }
            match fs::read(&p).map_err(anyhow::Error::from).and_then(|d| Ok(serde_json::from_slice::<Record>(&d)?)) {
                Ok(r) if r.lease.is_some() != r.lease6.is_some() => out.push(r),
                Ok(_) => tracing::warn!(path = %p.display(), "skipping a lease file without exactly one lease"),
                Err(e) => tracing::warn!(path = %p.display(), "skipping unreadable lease file: {e:#}"),
            }
        }
        Ok(out)
    }
}
