//! Replays the committed seed corpus of every fuzz target (`fuzz/corpus/<target>/`) through the same property
//! functions the fuzz targets run (`fuzz/props.rs`), so the properties are checked on stable, without cargo-fuzz
//! or nightly. A missing or empty corpus directory fails, so the corpus cannot silently vanish.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../../fuzz/props.rs"]
mod props;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

/// The fuzz targets: each has `fuzz/fuzz_targets/<name>.rs`, a `[[bin]]` in `fuzz/Cargo.toml`, a corpus
/// directory and a test below.
const TARGETS: [&str; 9] = [
    "detect",
    "client_hello",
    "host",
    "config",
    "manifest",
    "http_head",
    "xds_request",
    "certificate_request",
    "resource_decode",
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn replay(target: &str, check: fn(&[u8])) {
    let dir = fuzz_dir().join("corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the seed corpus of `{target}` is missing: {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "the seed corpus of `{target}` is empty: {}", dir.display());
    for file in files {
        let data = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        if catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
            panic!("`{target}` fails on {} (its message is above)", file.display());
        }
    }
}

#[test]
fn detect() {
    replay("detect", props::detect);
}

#[test]
fn client_hello() {
    replay("client_hello", props::client_hello);
}

#[test]
fn host() {
    replay("host", props::host);
}

#[test]
fn config() {
    replay("config", props::config);
}

#[test]
fn manifest() {
    replay("manifest", props::manifest);
}

#[test]
fn http_head() {
    replay("http_head", props::http_head);
}

/// A target added to the fuzz crate without a corpus (or a corpus without a target) is caught here.
#[test]
fn every_target_has_a_corpus_and_a_test() {
    let names = |dir: &str, ext: Option<&str>| {
        let mut v: Vec<String> = std::fs::read_dir(fuzz_dir().join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| ext.is_none_or(|ext| p.extension().is_some_and(|e| e == ext)))
            .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let mut targets: Vec<String> = TARGETS.iter().map(|t| t.to_string()).collect();
    targets.sort();
    assert_eq!(names("fuzz_targets", Some("rs")), targets);
    assert_eq!(names("corpus", None), targets);
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    for t in &targets {
        assert!(manifest.contains(&format!("path = \"fuzz_targets/{t}.rs\"")), "no [[bin]] for {t} in fuzz/Cargo.toml");
    }
}

#[test]
fn xds_request() {
    replay("xds_request", props::xds_request);
}

#[test]
fn certificate_request() {
    replay("certificate_request", props::certificate_request);
}

#[test]
fn resource_decode() {
    replay("resource_decode", props::resource_decode);
}
