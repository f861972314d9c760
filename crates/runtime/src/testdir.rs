//! A directory of its own for one unit test, under the system's temp directory, removed when dropped (also when
//! the test fails).
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

pub(crate) struct TestDir(pub PathBuf);

impl TestDir {
    pub(crate) fn new(tag: &str) -> TestDir {
        let d = std::env::temp_dir().join(format!("podmesh-runtime-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TestDir(d)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
