//! Where the cluster comes from. One trait, [`Source`]: the file source (directories of manifests, the embedded
//! default) now, the Kubernetes API later. A source yields each new version either whole (the file source
//! re-reads its files; the control plane works out which objects changed) or as the objects that changed (as a
//! watch reports them).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use podmesh_model::{Cluster, ObjectRef, Source as ManifestSource};

/// A new version of the cluster and what made it (named in logs and in NACK reports).
#[derive(Debug)]
pub struct Version {
    pub change: Change,
    pub cause: String,
}

#[derive(Debug)]
pub enum Change {
    /// The whole cluster as it is now.
    Whole(Cluster),
    /// Only the objects that changed: `objects` holds their new versions, and one that `changed` names but
    /// `objects` does not hold was deleted.
    Objects { objects: Cluster, changed: Vec<ObjectRef> },
}

pub trait Source: Send {
    /// The next version, waiting as long as it takes. `Err` is a version that could not be read (the control plane
    /// keeps serving the last good one and says why); `None`, that the source has ended.
    fn next(&mut self) -> impl Future<Output = Option<Result<Version, String>>> + Send;
}

/// Files and directories of manifests (`*.yaml`, `*.yml`, `*.json` in a directory, as `kubectl apply -f DIR`),
/// polled every `interval`: any file added, edited, renamed over or deleted makes a new version. Polling sees
/// every way files get replaced (editors, `kubectl cp`, volume symlink swaps) on any filesystem.
#[derive(Debug)]
pub struct FileSource {
    paths: Vec<PathBuf>,
    interval: Duration,
    seen: Stamps,
    /// Each file's text as last loaded, to name the objects the next edit changes.
    texts: BTreeMap<PathBuf, String>,
}

type Stamps = BTreeMap<PathBuf, (SystemTime, u64, u64)>;

impl FileSource {
    /// Reads the manifests once: the first version (the cluster and where it came from), and the source that
    /// watches for the next.
    pub fn open(paths: Vec<PathBuf>, interval: Duration) -> Result<(FileSource, Cluster, String), String> {
        let seen = stamps(&paths);
        let texts = seen.keys().filter_map(|p| Some((p.clone(), read_text(p)?))).collect();
        let cluster = load(&paths)?;
        let cause = format!("start: {}", paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "));
        Ok((FileSource { paths, interval, seen, texts }, cluster, cause))
    }
}

impl Source for FileSource {
    async fn next(&mut self) -> Option<Result<Version, String>> {
        loop {
            tokio::time::sleep(self.interval).await;
            let now = stamps(&self.paths);
            if now == self.seen {
                continue;
            }
            let mut files: Vec<&PathBuf> = now.keys().filter(|p| self.seen.get(*p) != now.get(*p)).collect();
            files.extend(self.seen.keys().filter(|p| !now.contains_key(*p)));
            let mut changed = Vec::new();
            let mut texts = std::mem::take(&mut self.texts);
            for path in files {
                let new = read_text(path);
                let old = texts.remove(path);
                changed.extend(what_changed(path, old.as_deref(), new.as_deref()));
                if let Some(t) = new {
                    texts.insert(path.clone(), t);
                }
            }
            self.texts = texts;
            self.seen = now;
            let paths = self.paths.clone();
            let loaded = tokio::task::spawn_blocking(move || load(&paths)).await;
            let cause = changed.join("; ");
            return Some(match loaded {
                Ok(Ok(cluster)) => Ok(Version { change: Change::Whole(cluster), cause }),
                Ok(Err(e)) => Err(format!("after {cause}: {e}")),
                Err(e) => Err(format!("after {cause}: loading failed: {e}")),
            });
        }
    }
}

/// The objects an edit of `path` added, edited or deleted ("Pod shop/client edited in clients.yaml"), or the
/// file itself when no object changed (comments, formatting) or it does not parse.
fn what_changed(path: &Path, old: Option<&str>, new: Option<&str>) -> Vec<String> {
    let file = path.file_name().map_or_else(|| path.display().to_string(), |f| f.to_string_lossy().into_owned());
    let json = path.extension().is_some_and(|x| x == "json");
    let (before, after) = (
        old.map(|t| podmesh_model::object_fingerprints(t, json)).unwrap_or_default(),
        new.map(|t| podmesh_model::object_fingerprints(t, json)).unwrap_or_default(),
    );
    let mut out = Vec::new();
    for (key, fp) in &after {
        match before.get(key) {
            None => out.push(format!("{key} added in {file}")),
            Some(o) if o != fp => out.push(format!("{key} edited in {file}")),
            Some(_) => {}
        }
    }
    out.extend(before.keys().filter(|k| !after.contains_key(*k)).map(|k| format!("{k} deleted from {file}")));
    if out.is_empty() {
        let what = match (old, new) {
            (None, _) => "added",
            (_, None) => "deleted",
            _ => "edited",
        };
        out.push(format!("{} ({what}; no object changed)", path.display()));
    }
    out
}

/// A file's text, kept to name what its next edit changes; `None` when it cannot be read, is not UTF-8 or is
/// larger than the loader accepts (which the load then reports).
fn read_text(path: &Path) -> Option<String> {
    use std::io::Read;
    let limit = podmesh_model::load::DEFAULT_MAX_FILE_BYTES;
    let mut text = String::new();
    std::fs::File::open(path).ok()?.take(limit + 1).read_to_string(&mut text).ok()?;
    (text.len() as u64 <= limit).then_some(text)
}

fn load(paths: &[PathBuf]) -> Result<Cluster, String> {
    let sources: Vec<ManifestSource> = paths.iter().map(|p| ManifestSource::Path(p.clone())).collect();
    podmesh_model::load(&sources).map(|l| l.cluster).map_err(|e| e.to_string())
}

/// Every manifest file under `paths` with its modification time, size and inode.
fn stamps(paths: &[PathBuf]) -> Stamps {
    let mut out = Stamps::new();
    for p in paths {
        let files = match std::fs::read_dir(p) {
            Ok(entries) => entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "yaml" || x == "yml" || x == "json"))
                .collect(),
            Err(_) => vec![p.clone()],
        };
        for f in files {
            if let Ok(m) = std::fs::metadata(&f) {
                use std::os::unix::fs::MetadataExt;
                out.insert(f, (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len(), m.ino()));
            }
        }
    }
    out
}
