//! Lease store: one JSON file per lease under the state dir (dir 0700, files 0600, written
//! to a temp file, fsynced and renamed), so a restarted daemon resumes renewing.

use super::client::{ClientOptions, Lease};
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Everything needed to maintain (and release) one lease.
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
    pub lease: Lease,
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
        let path = self.path_for(&rec.key);
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
                Ok(r) => out.push(r),
                Err(e) => tracing::warn!(path = %p.display(), "skipping unreadable lease file: {e:#}"),
            }
        }
        Ok(out)
    }
}
