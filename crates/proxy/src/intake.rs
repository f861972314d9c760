//! Config intake: where a sidecar's [`ProxyConfig`] comes from. Every source feeds one [`ConfigHandle`]; the data
//! path reads the current config once per connection and once per request, so a swap applies to new work and
//! never disturbs requests in flight. Sources: a file (what `podmesh routes -o json` prints) now, the control
//! plane's stream next.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use podmesh_compute::ProxyConfig;

/// The current config, replaced whole and atomically.
#[derive(Debug, Clone)]
pub struct ConfigHandle(Arc<ArcSwap<ProxyConfig>>);

impl ConfigHandle {
    pub fn new(config: ProxyConfig) -> Self {
        Self(Arc::new(ArcSwap::from_pointee(config)))
    }

    pub fn current(&self) -> Arc<ProxyConfig> {
        self.0.load_full()
    }

    pub fn replace(&self, config: ProxyConfig) {
        self.0.store(Arc::new(config));
    }
}

/// Reads a config file: JSON as `podmesh routes -o json` prints it.
pub fn read_config(path: &Path) -> Result<ProxyConfig, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: not a sidecar config: {e}", path.display()))
}

/// Watches a config file and swaps in each new version that parses; a bad version is reported and the last good
/// config stays in force. Polling (every `interval`) rather than inotify: it sees edits, renames over the file
/// (how editors and `kubectl cp` replace files) and files on any filesystem.
#[derive(Debug)]
pub struct FileSource {
    path: PathBuf,
    interval: Duration,
    /// The version of the file last read; set before reading, so no change can slip between read and watch.
    seen: Option<(SystemTime, u64, u64)>,
}

impl FileSource {
    /// Reads the file and returns its config with the source that watches for the next version.
    pub fn open(path: impl Into<PathBuf>, interval: Duration) -> Result<(Self, ProxyConfig), String> {
        let path = path.into();
        let seen = stamp(&path);
        let config = read_config(&path)?;
        Ok((Self { path, interval, seen }, config))
    }

    /// Runs until the task is dropped. `on_event` hears each reload and each rejected version.
    pub async fn run(self, handle: ConfigHandle, on_event: impl Fn(Result<(), String>) + Send) {
        let mut seen = self.seen;
        loop {
            tokio::time::sleep(self.interval).await;
            let now = stamp(&self.path);
            if now == seen {
                continue;
            }
            seen = now;
            match read_config(&self.path) {
                Ok(config) => {
                    handle.replace(config);
                    on_event(Ok(()));
                }
                Err(e) => on_event(Err(e)),
            }
        }
    }
}

/// What changes when a file is written or replaced.
fn stamp(path: &Path) -> Option<(SystemTime, u64, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some((meta.modified().ok()?, meta.len(), inode))
}
