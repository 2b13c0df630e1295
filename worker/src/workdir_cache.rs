//! Where a run's workdir is on this worker: the submitter's directory itself
//! when this worker sees the same content at the same path, otherwise a copy
//! fetched once from the coordinator and cached by content hash.

use flotilla_wire::status::error_of;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use flotilla_shared::workdir::{bundle_hash, read_bundle, unpack_bundle, BundleFile};
use flotilla_shared::{Error, Result};
use flotilla_wire::proto;
use tokio::sync::Mutex;
use tracing::info;

use crate::connection::CoordinatorLink;

pub struct WorkdirCache {
    cache_root: PathBuf,
    link: CoordinatorLink,
    /// hash -> resolved directory. The async mutex also makes concurrent runs
    /// of one experiment wait for a single fetch instead of fetching N times.
    resolved: Mutex<HashMap<String, PathBuf>>,
}

impl WorkdirCache {
    pub fn new(cache_root: PathBuf, link: CoordinatorLink) -> Arc<Self> {
        Arc::new(WorkdirCache {
            cache_root,
            link,
            resolved: Mutex::new(HashMap::new()),
        })
    }

    pub async fn resolve(&self, submitted_path: &Path, hash: &str) -> Result<PathBuf> {
        let mut resolved = self.resolved.lock().await;
        if let Some(path) = resolved.get(hash) {
            return Ok(path.clone());
        }
        let local = submitted_path.to_path_buf();
        let expected = hash.to_string();
        let same_here = tokio::task::spawn_blocking(move || {
            local.is_dir()
                && read_bundle(&local, &[]).is_ok_and(|(local_hash, _)| local_hash == expected)
        })
        .await
        .unwrap_or(false);
        let path = if same_here {
            submitted_path.to_path_buf()
        } else {
            let cached = self.cache_root.join(hash);
            if !cached.is_dir() {
                self.fetch(hash, &cached).await?;
            }
            cached
        };
        resolved.insert(hash.to_string(), path.clone());
        Ok(path)
    }

    async fn fetch(&self, hash: &str, destination: &Path) -> Result<()> {
        info!(hash, "fetching workdir from the coordinator");
        let mut client = self.link.worker_client().await?;
        let bundle = client
            .fetch_workdir(proto::FetchWorkdirRequest {
                hash: hash.to_string(),
                token: self.link.token().to_string(),
            })
            .await
            .map_err(error_of)?
            .into_inner();
        let files: Vec<BundleFile> = bundle.files.into_iter().map(Into::into).collect();
        if bundle_hash(&files) != hash {
            return Err(Error::Protocol(format!(
                "workdir {hash} arrived with different content"
            )));
        }
        let destination = destination.to_path_buf();
        tokio::task::spawn_blocking(move || unpack_bundle(&files, &destination))
            .await
            .map_err(|e| Error::Internal(format!("unpacking failed: {e}")))?
    }
}
