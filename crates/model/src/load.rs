//! Reading manifests: files, directories and stdin of multi-document YAML (or JSON) into a [`Cluster`].
//!
//! Each document is parsed on its own, so one malformed document is reported (file, index, line) and the others
//! are still checked: `podmesh check` reports every error at once. Nothing here panics on any input.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::build::{Builder, Step, convert};
use crate::cluster::Cluster;
use crate::diag::{Diagnostic, LoadErrors, Origin};

/// Where manifests come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A file, or a directory whose `*.yaml`, `*.yml` and `*.json` files are read in name order (not recursive,
    /// like `kubectl apply -f DIR`).
    Path(PathBuf),
    /// Standard input (`-f -`).
    Stdin,
    /// Text already in memory, with the name to use in messages.
    Text { name: String, text: String },
}

impl Source {
    /// `-` is stdin, anything else a path.
    pub fn from_arg(arg: &str) -> Self {
        if arg == "-" { Source::Stdin } else { Source::Path(PathBuf::from(arg)) }
    }
}

#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Files (and stdin) larger than this are refused before reading, with an error naming the file.
    pub max_file_bytes: u64,
}

/// 64 MiB: four times the manifests of the 100,000-pod synthetic cluster of the scale benchmark.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 64 << 20;

impl Default for LoadOptions {
    fn default() -> Self {
        Self { max_file_bytes: DEFAULT_MAX_FILE_BYTES }
    }
}

/// A loaded cluster and the warnings found on the way (skipped kinds, unsupported fields).
#[derive(Debug)]
pub struct Loaded {
    pub cluster: Cluster,
    pub warnings: Vec<Diagnostic>,
}

/// Loads manifests with default options. Errors carry every problem found, warnings included.
pub fn load(sources: &[Source]) -> Result<Loaded, LoadErrors> {
    load_with(sources, &LoadOptions::default())
}

pub fn load_with(sources: &[Source], options: &LoadOptions) -> Result<Loaded, LoadErrors> {
    let mut builder = Builder::default();
    let files: Vec<File> = sources.iter().flat_map(|s| read_source(s, options, &mut builder.diagnostics)).collect();
    let documents: Vec<Document<'_>> = files.iter().flat_map(documents_of).collect();
    // Parsing dominates loading, and documents parse independently: parse a batch on every core, then add its
    // documents in their original order, so the result is the same as a sequential load. Batches bound the
    // memory held in parsed-but-not-yet-added documents.
    for batch in documents.chunks(PARSE_BATCH) {
        for (doc, steps) in batch.iter().zip(parse_parallel(batch)) {
            builder.add_converted(&doc.origin, steps);
        }
    }
    builder.finish()
}

/// Documents parsed together, spread over the available cores.
const PARSE_BATCH: usize = 1024;

/// One document to parse: where it is, its text, and whether the file is JSON.
struct Document<'a> {
    origin: Origin,
    text: &'a str,
    json: bool,
}

fn documents_of(file: &File) -> Vec<Document<'_>> {
    if file.json {
        let origin = Origin { file: file.name.clone(), document: 1, line: 1 };
        return vec![Document { origin, text: &file.text, json: true }];
    }
    split_documents(&file.text)
        .into_iter()
        .map(|d| Document {
            origin: Origin { file: file.name.clone(), document: d.index, line: d.line },
            text: d.text,
            json: false,
        })
        .collect()
}

/// Parses and converts one document: what it adds to the cluster, and its diagnostics, in order.
fn parse(doc: &Document<'_>) -> Vec<Step> {
    let parsed = if doc.json {
        // serde_json's message ends with "at line L column C" already.
        serde_json::from_str(doc.text)
            .map_err(|e| Diagnostic::error("invalid-yaml", format!("invalid JSON: {e}")).at(Some(&doc.origin)))
    } else {
        // yaml-rust2 has not panicked on any input the properties tried; should it ever, this document is reported
        // as unreadable and the others are still loaded.
        match std::panic::catch_unwind(|| crate::yaml::parse(doc.text, crate::yaml::Limits::default())) {
            Ok(parsed) => parsed.map_err(|e| yaml_error(&e, &doc.origin)),
            Err(_) => Err(Diagnostic::error("invalid-yaml", "invalid YAML: the YAML parser failed on this document")
                .at(Some(&doc.origin))),
        }
    };
    match parsed {
        Ok(serde_json::Value::Null) => vec![],
        Ok(value) => convert(&doc.origin, value),
        Err(d) => vec![Step::Diagnostic(d)],
    }
}

/// Parses documents on up to `available_parallelism` threads, each taking a contiguous share; results in order.
fn parse_parallel(docs: &[Document<'_>]) -> Vec<Vec<Step>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    if threads == 1 || docs.len() < 32 {
        return docs.iter().map(parse).collect();
    }
    let share = docs.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let mut chunks = docs.chunks(share);
        let first = chunks.next().unwrap_or_default();
        let handles: Vec<_> =
            chunks.map(|chunk| (chunk, scope.spawn(move || chunk.iter().map(parse).collect::<Vec<_>>()))).collect();
        let mut out: Vec<_> = first.iter().map(parse).collect();
        for (chunk, handle) in handles {
            match handle.join() {
                Ok(parsed) => out.extend(parsed),
                // The parser does not panic on any input (the bad-input properties check it); should it ever,
                // report the documents rather than lose them or abort the load.
                Err(_) => out.extend(chunk.iter().map(|d| {
                    let e = Diagnostic::error("invalid-yaml", "the YAML parser failed on this document");
                    vec![Step::Diagnostic(e.at(Some(&d.origin)))]
                })),
            }
        }
        out
    })
}

/// Loads from strings, each `(name, text)` treated as one file. For tests and tools.
pub fn load_str(files: &[(&str, &str)]) -> Result<Loaded, LoadErrors> {
    let sources: Vec<Source> =
        files.iter().map(|(n, t)| Source::Text { name: (*n).to_string(), text: (*t).to_string() }).collect();
    load(&sources)
}

struct File {
    name: Arc<str>,
    text: String,
    json: bool,
}

fn read_source(source: &Source, options: &LoadOptions, diags: &mut Vec<Diagnostic>) -> Vec<File> {
    match source {
        Source::Text { name, text } => {
            vec![File { name: name.as_str().into(), text: text.clone(), json: name.ends_with(".json") }]
        }
        Source::Stdin => {
            let limit = options.max_file_bytes;
            match read_limited(std::io::stdin().lock(), limit) {
                Ok(Some(bytes)) => match String::from_utf8(bytes) {
                    Ok(text) => vec![File { name: "<stdin>".into(), text, json: false }],
                    Err(e) => {
                        diags.push(Diagnostic::error("invalid-yaml", format!("<stdin>: not UTF-8 text ({e})")));
                        vec![]
                    }
                },
                Ok(None) => {
                    diags.push(too_large("<stdin>", limit));
                    vec![]
                }
                Err(e) => {
                    diags.push(Diagnostic::error("unreadable", format!("<stdin>: cannot read: {e}")));
                    vec![]
                }
            }
        }
        Source::Path(path) => read_path(path, options, diags),
    }
}

fn read_path(path: &Path, options: &LoadOptions, diags: &mut Vec<Diagnostic>) -> Vec<File> {
    let shown = path.display().to_string();
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            diags.push(Diagnostic::error("unreadable", format!("{shown}: cannot read: {e}")));
            return vec![];
        }
    };
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = match std::fs::read_dir(path) {
            Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file() && is_manifest(p)).collect(),
            Err(e) => {
                diags.push(Diagnostic::error("unreadable", format!("{shown}: cannot read directory: {e}")));
                return vec![];
            }
        };
        if entries.is_empty() {
            diags.push(
                Diagnostic::error(
                    "no-manifests",
                    format!("{shown}: no *.yaml, *.yml or *.json files in this directory"),
                )
                .hint("point -f at a manifest file or a directory of them (directories are not read recursively)"),
            );
        }
        entries.sort();
        return entries.iter().flat_map(|p| read_path(p, options, diags)).collect();
    }
    if meta.len() > options.max_file_bytes {
        diags.push(too_large(&shown, options.max_file_bytes));
        return vec![];
    }
    // The limit is applied while reading too: the size of a FIFO or device (`-f /dev/stdin`) is not known in
    // advance, and a file may grow after `metadata`.
    match std::fs::File::open(path).and_then(|f| read_limited(f, options.max_file_bytes)) {
        Ok(Some(bytes)) => match String::from_utf8(bytes) {
            Ok(text) => vec![File { name: shown.as_str().into(), text, json: has_ext(path, "json") }],
            Err(e) => {
                diags.push(Diagnostic::error("invalid-yaml", format!("{shown}: not UTF-8 text ({e})")));
                vec![]
            }
        },
        Ok(None) => {
            diags.push(too_large(&shown, options.max_file_bytes));
            vec![]
        }
        Err(e) => {
            diags.push(Diagnostic::error("unreadable", format!("{shown}: cannot read: {e}")));
            vec![]
        }
    }
}

/// Reads at most `limit` bytes; `None` when there is more.
fn read_limited(reader: impl Read, limit: u64) -> std::io::Result<Option<Vec<u8>>> {
    let mut bytes = Vec::new();
    reader.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= limit).then_some(bytes))
}

fn too_large(name: &str, limit: u64) -> Diagnostic {
    // Whole MiB as MiB (the default is 64 MiB), anything else in bytes: a 1000-byte limit is not "0 MiB".
    let shown = if limit >= 1 << 20 && limit.is_multiple_of(1 << 20) {
        format!("{} MiB", limit >> 20)
    } else {
        format!("{limit}-byte")
    };
    Diagnostic::error("file-too-large", format!("{name}: larger than the {shown} limit for one manifest file"))
        .hint("split the manifests into several files")
}

fn has_ext(p: &Path, ext: &str) -> bool {
    p.extension().is_some_and(|e| e.eq_ignore_ascii_case(ext))
}

fn is_manifest(p: &Path) -> bool {
    has_ext(p, "yaml") || has_ext(p, "yml") || has_ext(p, "json")
}

fn yaml_error(e: &crate::yaml::YamlError, origin: &Origin) -> Diagnostic {
    // The error's lines count from the document's first line; say the file's lines.
    let d = Diagnostic::error("invalid-yaml", format!("invalid YAML: {}", e.render(origin.line))).at(Some(origin));
    if e.over_limit {
        return d.hint(
            "put one object in each document (---) and write out what aliases (*name) refer to: every copy an \
             alias makes counts against the limits, so a few lines of aliases can expand to billions of values",
        );
    }
    d
}

/// The objects of a manifest file by identity ("Kind namespace/name"; no namespace for cluster-scoped kinds and
/// "default" assumed for the rest as Kubernetes does), each with a fingerprint of its content: what a watcher
/// compares between two versions of a file to name the objects an edit added, changed or deleted. Documents that
/// do not parse, or name no kind and name, are left out (loading reports them). An object named twice counts as
/// its last version, as [`objects`] lists them.
pub fn object_fingerprints(text: &str, json: bool) -> std::collections::BTreeMap<String, u64> {
    use std::hash::{Hash, Hasher};
    objects(text, json)
        .into_iter()
        .map(|(key, v)| {
            let mut h = std::hash::DefaultHasher::new();
            v.to_string().hash(&mut h);
            (key, h.finish())
        })
        .collect()
}

/// The objects of a manifest file in document order, each with its identity key as [`object_fingerprints`] names
/// it: what a store of applied manifests (`kubectl apply`, `kubectl delete -f`) keys objects by. A JSON file is one
/// document; a `kind: List` (in JSON or YAML) stands for its `items`, as loading reads it. Documents that do not
/// parse, or name no kind and name, are left out (loading reports them).
pub fn objects(text: &str, json: bool) -> Vec<(String, serde_json::Value)> {
    let values: Vec<serde_json::Value> = if json {
        serde_json::from_str(text).into_iter().collect()
    } else {
        split_documents(text)
            .iter()
            .filter_map(|d| crate::yaml::parse(d.text, crate::yaml::Limits::default()).ok())
            .collect()
    };
    let mut out = Vec::new();
    for v in values {
        keyed(v, &mut out);
    }
    out
}

/// Adds `v` to `out` with its key, or the items of a List (nested Lists too, as loading expands them).
fn keyed(mut v: serde_json::Value, out: &mut Vec<(String, serde_json::Value)>) {
    if v["kind"].as_str() == Some("List") && v["apiVersion"].is_string() {
        if let Some(items) = v.get_mut("items").and_then(serde_json::Value::as_array_mut) {
            for item in std::mem::take(items) {
                keyed(item, out);
            }
        }
        return;
    }
    let (Some(kind), Some(name)) = (v["kind"].as_str(), v["metadata"]["name"].as_str()) else { return };
    let key = match (kind, v["metadata"]["namespace"].as_str()) {
        ("Namespace" | "MeshConfig", _) => format!("{kind} {name}"),
        (_, Some(ns)) => format!("{kind} {ns}/{name}"),
        (_, None) => format!("{kind} default/{name}"),
    };
    out.push((key, v));
}

/// One document of a YAML stream: its 1-based index, the line it starts on, and its text.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Split<'a> {
    pub index: usize,
    pub line: usize,
    pub text: &'a str,
}

/// Splits a YAML stream at `---` and `...` markers (at column 0, as the YAML spec requires). A marker cannot
/// occur inside a scalar at column 0, so this split agrees with the parser, and lets each document fail alone.
/// Blank or comment-only text before the first `---` is not counted as a document.
pub(crate) fn split_documents(text: &str) -> Vec<Split<'_>> {
    // (start byte, end byte, first line, opened by a `---` marker)
    let mut chunks: Vec<(usize, usize, usize, bool)> = Vec::new();
    let (mut start, mut start_line, mut opened, mut offset) = (0usize, 1usize, false, 0usize);
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let body = line.trim_end_matches(['\n', '\r']);
        let marker = |m: &str| body.starts_with(m) && body[3..].chars().next().is_none_or(char::is_whitespace);
        let (is_start, is_end) = (marker("---"), marker("..."));
        if is_start || is_end {
            chunks.push((start, offset, start_line, opened));
            // A `---` line belongs to the document it opens; a `...` line to none.
            (start, start_line, opened) =
                if is_start { (offset, i + 1, true) } else { (offset + line.len(), i + 2, false) };
        }
        offset += line.len();
    }
    chunks.push((start, text.len(), start_line, opened));

    let mut docs = Vec::new();
    let mut index = 0usize;
    for (s, e, line, opened) in chunks {
        let chunk = &text[s..e];
        // The marker line itself is not content, but text after `---` on it is (`--- {a: 1}`).
        let content = if opened { chunk.get(3..).unwrap_or_default() } else { chunk };
        let blank = content.lines().all(|l| {
            let t = l.trim();
            t.is_empty() || t.starts_with('#') || t.starts_with('%')
        });
        // Only a `---` makes an empty document; blank text before the first marker or after `...` is none.
        if blank && !opened {
            continue;
        }
        index += 1;
        if !blank {
            docs.push(Split { index, line, text: chunk });
        }
    }
    docs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(text: &str) -> Vec<(usize, usize)> {
        split_documents(text).iter().map(|d| (d.index, d.line)).collect()
    }

    #[test]
    fn splits_at_markers() {
        assert_eq!(idx("a: 1\n---\nb: 2\n"), vec![(1, 1), (2, 2)]);
        assert_eq!(idx("---\na: 1\n---\nb: 2\n"), vec![(1, 1), (2, 3)]);
        assert_eq!(idx("# header\n---\na: 1\n"), vec![(1, 2)]);
        // Empty documents count, so indexes match what a reader counts between markers.
        assert_eq!(idx("---\n---\nb: 2\n"), vec![(2, 2)]);
        assert_eq!(idx("a: 1\n...\n"), vec![(1, 1)]);
        assert_eq!(idx("a: |\n  ---\n  x\n"), vec![(1, 1)]);
        assert_eq!(idx("a: 1\n----\n"), vec![(1, 1)]);
        assert_eq!(idx("--- {a: 1}\n"), vec![(1, 1)]);
        assert_eq!(idx(""), vec![]);
    }

    #[test]
    fn objects_are_keyed_in_order_and_lists_expanded() {
        let keys = |text: &str, json: bool| objects(text, json).into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        let yaml = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\n\
                    apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\n---\n\
                    apiVersion: v1\nkind: List\nitems:\n\
                    - {apiVersion: v1, kind: Pod, metadata: {name: p}}\n\
                    - {apiVersion: v1, kind: List, items: [{apiVersion: v1, kind: Pod, metadata: {name: q}}]}\n\
                    ---\nnot: [an, object\n---\nkind: Pod\n";
        assert_eq!(keys(yaml, false), ["Namespace shop", "Service shop/web", "Pod default/p", "Pod default/q"]);
        let list = r#"{"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "podmesh.io/v1alpha1", "kind": "MeshConfig", "metadata": {"name": "mesh"}},
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "a"}}]}"#;
        assert_eq!(keys(list, true), ["MeshConfig mesh", "Pod a/p"]);
        assert_eq!(keys(r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}"#, true), ["Pod default/p"]);
        assert!(keys("{", true).is_empty());
        // The fingerprints name the same objects; a List's items are compared one by one.
        let prints = object_fingerprints(list, true);
        assert_eq!(prints.keys().collect::<Vec<_>>(), ["MeshConfig mesh", "Pod a/p"]);
        assert_eq!(load_str(&[("l.json", list)]).map(|l| l.cluster.pods.len()).ok(), Some(1));
    }
}
