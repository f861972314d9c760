//! JSON Patch (RFC 6902) as the Kubernetes API server applies an admission webhook's patch: here only what
//! podmesh's webhook sends, `add` and `remove` of object members, each path decoded as a JSON Pointer (RFC 6901).
//! Being test support, it panics on anything else, naming the operation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::Value;

/// `doc` with `patch` (an array of operations) applied.
pub fn apply(doc: &Value, patch: &Value) -> Value {
    let mut doc = doc.clone();
    for op in patch.as_array().expect("a JSON Patch is an array") {
        let path = op["path"].as_str().unwrap();
        assert!(path.starts_with('/') && path.len() > 1, "a patch at the root: {op}");
        let tokens: Vec<String> = path[1..].split('/').map(|t| t.replace("~1", "/").replace("~0", "~")).collect();
        let (last, parents) = tokens.split_last().unwrap();
        let mut target = &mut doc;
        for t in parents {
            target = target.as_object_mut().unwrap().get_mut(t).unwrap_or_else(|| panic!("no {t} for {op}"));
        }
        let target = target.as_object_mut().unwrap_or_else(|| panic!("{op}: the parent is not an object"));
        match op["op"].as_str().unwrap() {
            "add" => {
                target.insert(last.clone(), op["value"].clone());
            }
            "remove" => {
                target.remove(last).unwrap_or_else(|| panic!("{op}: nothing to remove"));
            }
            other => panic!("unexpected op {other}"),
        }
    }
    doc
}
