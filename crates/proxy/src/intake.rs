//! Config intake: where a sidecar's [`ProxyConfig`] comes from. Every source feeds one [`ConfigHandle`]; the data
//! path reads the current config once per connection and once per request, so a swap applies to new work and
//! never disturbs requests in flight. Every source implements [`Intake`]: files (what `podmesh routes -o json`
//! prints, and PEM certificates) now, the control plane's stream next.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use podmesh_compute::ProxyConfig;
use podmesh_identity::Credentials;

use crate::Proxy;

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

/// What a source hands the sidecar.
#[derive(Debug)]
pub enum Update {
    /// A new config: it applies to the next connection and request, never to one in flight.
    Config(Box<ProxyConfig>),
    /// New certificates and trust anchors: new handshakes use them; established connections keep theirs.
    Credentials(Box<Credentials>),
}

/// Where a sidecar's config and identity come from. One interface, two sources: files ([`FileSource`]) now, the
/// control plane's stream (config over xDS, certificates from its CA) next. Whatever the source, [`follow`] applies
/// what it delivers.
pub trait Intake: Send {
    /// The next update, waiting as long as it takes. `Err` is a version the source could not use (the sidecar
    /// keeps what it has and says why); `None`, that the source has ended.
    fn next(&mut self) -> impl Future<Output = Option<Result<Update, String>>> + Send;
}

/// Applies every update of `source` to `proxy` until the source ends, telling `on_event` what was applied or why
/// nothing was. A config or certificate for another identity is refused: a sidecar's identity never changes.
pub async fn follow(
    mut source: impl Intake,
    proxy: &Proxy,
    mut on_event: impl FnMut(Result<&'static str, String>) + Send,
) {
    while let Some(update) = source.next().await {
        on_event(update.and_then(|u| apply(proxy, u)));
    }
}

fn apply(proxy: &Proxy, update: Update) -> Result<&'static str, String> {
    let me = proxy.tls.identity();
    match update {
        Update::Config(config) if config.workload.identity != me => Err(format!(
            "refused a config for {} ({}): this sidecar is {}",
            config.workload.pod,
            config.workload.identity.as_str(),
            me.as_str()
        )),
        Update::Config(config) => {
            proxy.config.replace(*config);
            Ok("config reloaded")
        }
        Update::Credentials(creds) if creds.identity() != &me => {
            Err(format!("refused certificates for {}: this sidecar is {}", creds.identity().as_str(), me.as_str()))
        }
        Update::Credentials(creds) => {
            proxy.tls.update(*creds).map_err(|e| format!("refused the new certificates: {e}"))?;
            Ok("certificates reloaded")
        }
    }
}

/// The files a sidecar reads: its config (JSON, as `podmesh routes -o json` prints it), and its certificate chain
/// (leaf first), key and the mesh trust anchors (PEM).
#[derive(Debug, Clone)]
pub struct FilePaths {
    pub config: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub roots: PathBuf,
}

/// The file source: each new version of the config file, and each new set of certificate files that loads. Polling
/// (every `interval`) rather than inotify: it sees edits, renames over a file (how editors, `kubectl cp` and
/// Kubernetes secret volumes replace files) and files on any filesystem. A half-written certificate set fails to
/// load and is read again at its next change.
#[derive(Debug)]
pub struct FileSource {
    paths: FilePaths,
    interval: Duration,
    /// The versions last read; taken before reading, so no change can slip between a read and the next check.
    config_seen: Stamp,
    credentials_seen: [Stamp; 3],
}

type Stamp = Option<(SystemTime, u64, u64)>;

impl FileSource {
    /// Reads the files and returns what they hold with the source that watches for their next versions.
    pub fn open(paths: FilePaths, interval: Duration) -> Result<(Self, ProxyConfig, Credentials), String> {
        let config_seen = stamp(&paths.config);
        let credentials_seen = paths.credential_stamps();
        let config = read_config(&paths.config)?;
        let credentials = paths.credentials()?;
        Ok((Self { paths, interval, config_seen, credentials_seen }, config, credentials))
    }
}

impl FilePaths {
    fn credential_stamps(&self) -> [Stamp; 3] {
        [&self.cert, &self.key, &self.roots].map(|p| stamp(p))
    }

    fn credentials(&self) -> Result<Credentials, String> {
        Credentials::load(&self.cert, &self.key, &self.roots)
            .map_err(|e| format!("{}, {}, {}: {e}", self.cert.display(), self.key.display(), self.roots.display()))
    }
}

impl Intake for FileSource {
    async fn next(&mut self) -> Option<Result<Update, String>> {
        loop {
            let config = stamp(&self.paths.config);
            if config != self.config_seen {
                self.config_seen = config;
                return Some(read_config(&self.paths.config).map(|c| Update::Config(Box::new(c))));
            }
            let credentials = self.paths.credential_stamps();
            if credentials != self.credentials_seen {
                self.credentials_seen = credentials;
                return Some(self.paths.credentials().map(|c| Update::Credentials(Box::new(c))));
            }
            tokio::time::sleep(self.interval).await;
        }
    }
}

/// What changes when a file is written or replaced.
fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some((meta.modified().ok()?, meta.len(), inode))
}
