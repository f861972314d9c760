#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Bad input: malformed YAML, wrong types, missing fields, invalid values, duplicate names, very large files,
//! unknown kinds. Every malformed document is an error naming the file, the document's index (and first line)
//! and the field path; every error is reported at once; loading never panics.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use podmesh_model::load::DEFAULT_MAX_FILE_BYTES;
use podmesh_model::{
    Diagnostic, LoadErrors, LoadOptions, Loaded, ObjectKey, Severity, Source, load, load_str, load_with,
};
use proptest::prelude::*;

// ---------------------------------------------------------------- helpers

fn load_err(files: &[(&str, &str)]) -> LoadErrors {
    match load_str(files) {
        Ok(l) => panic!("expected errors, but it loaded (warnings: {:#?})", l.warnings),
        Err(e) => e,
    }
}

fn load_ok(files: &[(&str, &str)]) -> Loaded {
    match load_str(files) {
        Ok(l) => l,
        Err(e) => panic!("expected to load, got:\n{e}"),
    }
}

/// The errors (not warnings) of loading these files.
fn errors(files: &[(&str, &str)]) -> Vec<Diagnostic> {
    load_err(files).errors().cloned().collect()
}

/// The single error of loading one file.
#[track_caller]
fn only_error(name: &str, text: &str) -> Diagnostic {
    let errs = errors(&[(name, text)]);
    assert_eq!(errs.len(), 1, "expected exactly one error, got:\n{}", render(&errs));
    errs.into_iter().next().unwrap()
}

fn render(diags: &[Diagnostic]) -> String {
    diags.iter().map(|d| format!("{d}\n")).collect()
}

/// Checks what a user reads: code, origin (`FILE: document N (line L)`), object, field path and the key words of
/// the message; and that the one-line rendering puts them in that order.
#[track_caller]
fn expect(d: &Diagnostic, code: &str, at: &str, object: Option<&str>, field: Option<&str>, words: &[&str]) {
    assert_eq!(d.code, code, "code of: {d}");
    assert_eq!(d.origin.as_ref().map(ToString::to_string).as_deref(), Some(at), "origin of: {d}");
    assert_eq!(d.object.as_ref().map(ToString::to_string).as_deref(), object, "object of: {d}");
    assert_eq!(d.field.as_deref(), field, "field of: {d}");
    for w in words {
        assert!(d.message.contains(w), "message of `{d}` lacks {w:?}");
    }
    let mut prefix = format!("{}: {at}: ", d.severity);
    for part in [object, field].into_iter().flatten() {
        prefix.push_str(part);
        prefix.push_str(": ");
    }
    let line = d.to_string();
    assert!(line.starts_with(&prefix), "`{line}` does not start with `{prefix}`");
    assert!(!d.message.contains('\n'), "message is not one line: {d}");
}

/// The error about this field, among several.
#[track_caller]
fn with_field<'a>(errs: &'a [Diagnostic], field: &str) -> &'a Diagnostic {
    errs.iter()
        .find(|d| d.field.as_deref() == Some(field))
        .unwrap_or_else(|| panic!("no error about {field}; got:\n{}", render(errs)))
}

/// A directory under the system temp dir, unique to this process and call, removed when dropped (also when the
/// test fails).
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("podmesh-bad-input-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn load_paths(paths: &[&Path], options: &LoadOptions) -> Result<Loaded, LoadErrors> {
    let sources: Vec<Source> = paths.iter().map(|p| Source::Path(p.to_path_buf())).collect();
    load_with(&sources, options)
}

const SERVICE: &str = "\
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  selector:
    app: web
  ports:
  - name: http
    port: 80
";

// ---------------------------------------------------------------- malformed YAML

#[test]
fn malformed_yaml_in_the_second_document_names_file_document_and_line_and_the_rest_is_still_checked() {
    let text = "\
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: v1
kind: Service
metadata:
  name: web
    namespace: shop
spec:
  ports:
  - port: 80
---
apiVersion: v1
kind: Pod
metadata:
  name: api
  namespace: shop
status:
  podIP: 10.1.2.
";
    let err = load_err(&[("shop.yaml", text)]);
    let errs: Vec<Diagnostic> = err.errors().cloned().collect();
    assert_eq!(errs.len(), 2, "{}", render(&errs));

    // Line 10 of the file (`    namespace: shop`), not line 6 of the document.
    expect(&errs[0], "invalid-yaml", "shop.yaml: document 2 (line 5)", None, None, &["invalid YAML", "line 10"]);
    assert_eq!(
        errs[0].to_string(),
        "error: shop.yaml: document 2 (line 5): invalid YAML: mapping values are not allowed in this context at \
         line 10, column 14"
    );
    // Document 3 is still read and checked.
    expect(
        &errs[1],
        "invalid-field",
        "shop.yaml: document 3 (line 14)",
        Some("Pod shop/api"),
        Some("status.podIP"),
        &["\"10.1.2.\" is not an IP address"],
    );
    // The whole report ends with the count.
    assert!(err.to_string().ends_with("\n2 error(s) in the manifests"), "{err}");
}

#[test]
fn yaml_syntax_errors_give_the_absolute_line() {
    // (text, document, first line of the document, words of the message, line of the error in the file)
    let cases: &[(&str, usize, usize, &str, usize)] = &[
        // An unclosed flow sequence.
        ("a: 1\n---\nkind: [Service\nmetadata: {}\n", 2, 2, "", 4),
        // A tab used for indentation.
        ("---\napiVersion: v1\n---\napiVersion: v1\nkind: Pod\nmetadata:\n\tname: x\n", 2, 3, "tabs", 7),
        // An unterminated quoted string runs to the end of the document.
        ("apiVersion: v1\nkind: Pod\nmetadata:\n  name: \"x\n", 1, 1, "unclosed quote", 4),
        // A key given twice.
        ("a: 1\n---\n# a comment\napiVersion: v1\nkind: Pod\nkind: Service\n", 2, 2, "key `kind` appears twice", 6),
        // Blank and comment-only documents still count in the index.
        ("---\n# nothing\n---\n---\nkind: {a: 1\n", 3, 4, "", 5),
    ];
    for &(text, document, first_line, words, line) in cases {
        let errs = errors(&[("bad.yaml", text)]);
        let d = errs
            .iter()
            .find(|d| d.code == "invalid-yaml")
            .unwrap_or_else(|| panic!("no YAML error for {text:?}:\n{}", render(&errs)));
        expect(
            d,
            "invalid-yaml",
            &format!("bad.yaml: document {document} (line {first_line})"),
            None,
            None,
            &["invalid YAML: ", words, &format!("at line {line}")],
        );
        assert!(!d.message.contains("DuplicateKeyPolicy"), "message talks to the programmer: {d}");
    }
}

#[test]
fn crlf_line_endings_keep_documents_and_lines() {
    let text = "apiVersion: v1\r\nkind: Namespace\r\nmetadata:\r\n  name: a\r\n---\r\nx: [\r\n---\r\napiVersion: v1\r\n\
                kind: Pod\r\nmetadata:\r\n  name: p\r\nstatus:\r\n  podIP: nope\r\n";
    let errs = errors(&[("crlf.yaml", text)]);
    assert_eq!(errs.len(), 2, "{}", render(&errs));
    expect(&errs[0], "invalid-yaml", "crlf.yaml: document 2 (line 5)", None, None, &["unclosed", "line 6"]);
    expect(
        &errs[1],
        "invalid-field",
        "crlf.yaml: document 3 (line 7)",
        Some("Pod default/p"),
        Some("status.podIP"),
        &["\"nope\" is not an IP address"],
    );
}

// ---------------------------------------------------------------- wrong types

#[test]
fn wrong_types_name_the_exact_field_path() {
    // (document, object, field, words of the message)
    let cases: &[(&str, &str, &str, &[&str])] = &[
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports:\n  - port: \"eighty\"\n",
            "Service default/web",
            "spec.ports[0].port",
            &["invalid type", "string \"eighty\"", "expected u16"],
        ),
        (
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: [1]\n",
            "Deployment default/web",
            "spec.replicas",
            &["invalid type", "sequence", "expected i64"],
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels:\n    app: web\n    version: 2\n",
            "Pod default/web",
            "metadata.labels.version",
            &["invalid type", "integer `2`", "expected a string"],
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  annotations:\n    sidecar.podmesh.io/inject: false\n",
            "Pod default/web",
            "metadata.annotations.sidecar.podmesh.io/inject",
            &["invalid type", "boolean `false`", "expected a string"],
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports:\n  - name: a\n    port: 80\n  \
             - name: b\n    port: 81\n    targetPort: 1.5\n",
            "Service default/web",
            "spec.ports[1].targetPort",
            &["invalid type", "floating point `1.5`", "expected a port number or a port name"],
        ),
        (
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  selector: {matchLabels: {app: web}}\n  \
             template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers:\n      - name: web\n        \
             ports:\n        - containerPort: http\n",
            "Deployment default/web",
            "spec.template.spec.containers[0].ports[0].containerPort",
            &["invalid type", "string \"http\"", "expected u16"],
        ),
        (
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: web}\nspec:\n  hosts: web\n",
            "VirtualService default/web",
            "spec.hosts",
            &["invalid type", "string \"web\"", "expected a sequence"],
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: [80]\n",
            "Service default/web",
            "spec",
            &["must be a mapping, not a list"],
        ),
        (
            // Four values, as many as ObjectMeta has fields: serde alone would take this list for a mapping.
            "apiVersion: v1\nkind: Service\nmetadata: [web, shop, {}, {}]\nspec: {ports: [{port: 80}]}\n",
            "Service default/<unnamed>",
            "metadata",
            &["must be a mapping, not a list"],
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nstatus: Running\n",
            "Pod default/web",
            "status",
            &["must be a mapping, not a string"],
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nstatus:\n  conditions:\n  - type: Ready\n    status: true\n",
            "Pod default/web",
            "status.conditions[0].status",
            &["invalid type", "boolean `true`", "expected a string"],
        ),
        (
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: web}\nspec:\n  hosts: [web]\n  \
             http:\n  - route:\n    - destination: {host: web}\n      weight: ten\n",
            "VirtualService default/web",
            "spec.http[0].route[0].weight",
            &["invalid type", "string \"ten\"", "expected i64"],
        ),
    ];
    for &(text, object, field, words) in cases {
        // Behind a valid document, so the document index and line are not the trivial 1.
        let text = format!("{SERVICE}---\n{text}");
        let d = only_error("types.yaml", &text);
        expect(&d, "invalid-field", "types.yaml: document 2 (line 12)", Some(object), Some(field), words);
    }
}

#[test]
fn a_wrong_type_reads_as_one_line() {
    let d = only_error(
        "shop.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: shop\nspec:\n  ports:\n  - port: eighty\n",
    );
    assert_eq!(
        d.to_string(),
        "error: shop.yaml: document 1 (line 1): Service shop/web: spec.ports[0].port: invalid type: string \
         \"eighty\", expected u16"
    );
}

// ---------------------------------------------------------------- missing fields

#[test]
fn missing_fields_name_the_field_path() {
    // (document, object, field, words)
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "apiVersion: v1\nkind: Service\nmetadata:\n  namespace: shop\nspec:\n  ports:\n  - port: 80\n",
            "Service shop/<unnamed>",
            "metadata.name",
            "missing",
        ),
        ("apiVersion: v1\nkind: Pod\n", "Pod default/<unnamed>", "metadata.name", "missing"),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports:\n  - name: http\n    targetPort: 8080\n",
            "Service default/web",
            "spec.ports[0].port",
            "missing",
        ),
        ("apiVersion: v1\nkind: Service\nmetadata: {name: web}\n", "Service default/web", "spec", "missing"),
        (
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  template:\n    metadata: {labels: \
             {app: web}}\n",
            "Deployment default/web",
            "spec.selector.matchLabels",
            "missing; it must select the template's labels",
        ),
        (
            "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db}\nspec:\n  selector: {matchLabels: {app: db}}\n",
            "StatefulSet default/db",
            "spec.template",
            "missing",
        ),
        (
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: web}\nspec:\n  subsets: []\n",
            "DestinationRule default/web",
            "spec.host",
            "missing",
        ),
        (
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: web}\nspec:\n  hosts: [web]\n  \
             http:\n  - timeout: 1s\n",
            "VirtualService default/web",
            "spec.http[0].route",
            "missing; list at least one destination",
        ),
        (
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: web}\nspec:\n  host: web\n  \
             subsets:\n  - labels: {version: v1}\n",
            "DestinationRule default/web",
            "spec.subsets[0].name",
            "missing",
        ),
    ];
    for &(text, object, field, words) in cases {
        let d = only_error("missing.yaml", text);
        expect(&d, "invalid-field", "missing.yaml: document 1 (line 1)", Some(object), Some(field), &[words]);
    }
}

#[test]
fn virtual_service_without_hosts_or_destination_host_reports_both() {
    let text = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: web
  namespace: shop
spec:
  http:
  - route:
    - destination:
        host: web
    - destination:
        port: {number: 80}
";
    let errs = errors(&[("vs.yaml", text)]);
    assert_eq!(errs.len(), 2, "{}", render(&errs));
    let at = "vs.yaml: document 1 (line 1)";
    let vs = Some("VirtualService shop/web");
    expect(
        with_field(&errs, "spec.hosts"),
        "invalid-field",
        at,
        vs,
        Some("spec.hosts"),
        &["missing; list at least one host"],
    );
    let field = "spec.http[0].route[1].destination.host";
    expect(with_field(&errs, field), "invalid-field", at, vs, Some(field), &["missing"]);
}

#[test]
fn documents_without_api_version_or_kind() {
    let errs = errors(&[(
        "meta.yaml",
        "kind: Service\nmetadata: {name: a}\n---\napiVersion: v1\nmetadata: {name: b}\n---\napiVersion: v1\nkind: 5\n",
    )]);
    assert_eq!(errs.len(), 3, "{}", render(&errs));
    let words = ["missing or not a string", "every document needs apiVersion and kind"];
    expect(&errs[0], "invalid-field", "meta.yaml: document 1 (line 1)", None, Some("apiVersion"), &words);
    expect(&errs[1], "invalid-field", "meta.yaml: document 2 (line 3)", None, Some("kind"), &words);
    expect(&errs[2], "invalid-field", "meta.yaml: document 3 (line 6)", None, Some("kind"), &words);
}

// ---------------------------------------------------------------- invalid values

#[test]
fn invalid_values_name_the_field_path() {
    let svc =
        |spec: &str| format!("apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: shop}}\nspec:\n{spec}");
    let vs = |http: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: web, namespace: shop}}\n\
             spec:\n  hosts: [web]\n  http:\n{http}"
        )
    };
    let mesh = |spec: &str| {
        format!("apiVersion: podmesh.io/v1alpha1\nkind: MeshConfig\nmetadata: {{name: mesh}}\nspec:\n{spec}")
    };
    let pa = |spec: &str| {
        format!(
            "apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata: {{name: default, namespace: \
             shop}}\nspec:\n{spec}"
        )
    };
    // (document, object, field, words)
    let cases: Vec<(String, &str, &str, &[&str])> = vec![
        (svc("  ports:\n  - port: 0\n"), "Service shop/web", "spec.ports[0].port", &["0 is not a port: use 1-65535"]),
        (svc("  ports:\n  - port: 70000\n"), "Service shop/web", "spec.ports[0].port", &[
            "invalid value",
            "70000",
            "expected u16",
        ]),
        (svc("  ports:\n  - port: -1\n"), "Service shop/web", "spec.ports[0].port", &["invalid value", "-1"]),
        (svc("  ports:\n  - port: 80\n    targetPort: 70000\n"), "Service shop/web", "spec.ports[0].targetPort", &[
            "70000 is not a port: use 1-65535 or a container port name",
        ]),
        (svc("  ports:\n  - port: 80\n    targetPort: 0\n"), "Service shop/web", "spec.ports[0].targetPort", &[
            "0 is not a port",
        ]),
        (svc("  ports:\n  - port: 80\n    targetPort: Web_Port\n"), "Service shop/web", "spec.ports[0].targetPort", &[
            "\"Web_Port\" is not a port name",
        ]),
        (svc("  ports:\n  - port: 80\n    protocol: HTTP\n"), "Service shop/web", "spec.ports[0].protocol", &[
            "\"HTTP\" is not a protocol: use TCP, UDP or SCTP",
        ]),
        (svc("  clusterIP: 10.96.0.300\n  ports:\n  - port: 80\n"), "Service shop/web", "spec.clusterIP", &[
            "\"10.96.0.300\" is not an IP address",
        ]),
        (
            svc("  clusterIPs: [10.96.0.5, \"fd00::x\"]\n  ports:\n  - port: 80\n"),
            "Service shop/web",
            "spec.clusterIPs[1]",
            &["\"fd00::x\" is not an IP address"],
        ),
        (svc("  type: Foo\n  ports:\n  - port: 80\n"), "Service shop/web", "spec.type", &[
            "\"Foo\" is not a Service type",
        ]),
        (svc("  ports:\n  - name: a\n    port: 80\n  - name: b\n    port: 80\n"), "Service shop/web", "spec.ports[1].port", &[
            "port 80 is declared twice",
        ]),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nstatus:\n  podIP: 10.244.1.999\n".into(),
            "Pod default/p",
            "status.podIP",
            &["\"10.244.1.999\" is not an IP address"],
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nstatus:\n  podIPs:\n  - ip: pod-ip\n".into(),
            "Pod default/p",
            "status.podIPs[0].ip",
            &["\"pod-ip\" is not an IP address"],
        ),
        (
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 1000000\n  selector: \
             {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n"
                .into(),
            "Deployment default/web",
            "spec.replicas",
            &["1000000 is out of range", "0 to 10000"],
        ),
        (
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  selector: {matchLabels: {app: web}}\n  \
             template:\n    metadata: {labels: {app: api}}\n"
                .into(),
            "Deployment default/web",
            "spec.template.metadata.labels",
            &["do not match spec.selector.matchLabels"],
        ),
        (pa("  mtls:\n    mode: STRIKT\n"), "PeerAuthentication shop/default", "spec.mtls.mode", &[
            "\"STRIKT\" is not a mode: use STRICT, PERMISSIVE, DISABLE or UNSET",
        ]),
        (
            pa("  selector: {matchLabels: {app: web}}\n  portLevelMtls:\n    http:\n      mode: DISABLE\n"),
            "PeerAuthentication shop/default",
            "spec.portLevelMtls.http",
            &["\"http\" is not a port number"],
        ),
        (pa("  portLevelMtls:\n    8080:\n      mode: DISABLE\n"), "PeerAuthentication shop/default", "spec.portLevelMtls", &[
            "portLevelMtls needs a workload selector",
        ]),
        (
            vs("  - match:\n    - uri:\n        regex: \"/api/(v1\"\n    route:\n    - destination: {host: web}\n"),
            "VirtualService shop/web",
            "spec.http[0].match[0].uri.regex",
            &["\"/api/(v1\" is not a valid regular expression", "unclosed group"],
        ),
        (
            vs("  - match:\n    - headers:\n        x-user:\n          regex: \"[a-\"\n    route:\n    - destination: {host: web}\n"),
            "VirtualService shop/web",
            "spec.http[0].match[0].headers.x-user.regex",
            &["\"[a-\" is not a valid regular expression"],
        ),
        (
            vs("  - match:\n    - uri: {exact: /a, prefix: /b}\n    route:\n    - destination: {host: web}\n"),
            "VirtualService shop/web",
            "spec.http[0].match[0].uri",
            &["set exactly one of exact, prefix or regex"],
        ),
        (
            vs("  - match:\n    - method: {}\n    route:\n    - destination: {host: web}\n"),
            "VirtualService shop/web",
            "spec.http[0].match[0].method",
            &["set exactly one of exact, prefix or regex"],
        ),
        (vs("  - route:\n    - destination: {host: web}\n      weight: -5\n"), "VirtualService shop/web", "spec.http[0].route[0].weight", &[
            "-5 is out of range",
        ]),
        (vs("  - route:\n    - destination: {host: web}\n    timeout: 5 seconds\n"), "VirtualService shop/web", "spec.http[0].timeout", &[
            "\"5 seconds\" is not a duration",
        ]),
        (vs("  - route:\n    - destination: {host: web}\n      weight: 0\n"), "VirtualService shop/web", "spec.http[0].route", &[
            "every destination has weight 0",
        ]),
        (
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: web}\nspec:\n  hosts: [\"*.shop\"]\n  \
             http:\n  - route:\n    - destination: {host: web}\n"
                .into(),
            "VirtualService default/web",
            "spec.hosts[0]",
            &["\"*.shop\" is not supported", "no wildcards"],
        ),
        (mesh("  outboundTrafficPolicy:\n    mode: DENY\n"), "MeshConfig mesh", "spec.outboundTrafficPolicy.mode", &[
            "\"DENY\" is not a mode: use ALLOW_ANY or REGISTRY_ONLY",
        ]),
        (mesh("  podCIDR: 10.0.0.0/30\n"), "MeshConfig mesh", "spec.podCIDR", &["10.0.0.0/30 is too small"]),
        (mesh("  serviceCIDR: banana\n"), "MeshConfig mesh", "spec.serviceCIDR", &["\"banana\" is not a CIDR"]),
        (mesh("  protocolDetectionTimeout: soon\n"), "MeshConfig mesh", "spec.protocolDetectionTimeout", &[
            "\"soon\" is not a duration",
        ]),
        (mesh("  trustDomain: Not A Domain\n"), "MeshConfig mesh", "spec.trustDomain", &["is not a DNS name"]),
        // MeshConfig is podmesh's own kind: a misspelt field is an error, not silently ignored.
        (mesh("  outboundTrafficPolicy:\n    mode: ALLOW_ANY\n  clusterDomian: example.org\n"), "MeshConfig mesh", "spec.clusterDomian", &[
            "unknown field `clusterDomian`",
            "`clusterDomain`",
        ]),
    ];
    for (text, object, field, words) in &cases {
        let d = only_error("values.yaml", text);
        expect(&d, "invalid-field", "values.yaml: document 1 (line 1)", Some(object), Some(field), words);
    }
}

#[test]
fn invalid_names() {
    let errs = errors(&[(
        "names.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: Web_1\n  namespace: Shop\nspec:\n  ports:\n  - port: 80\n---\n\
         apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db.v1}\nspec:\n  selector: {matchLabels: {app: db}}\n  \
         template:\n    metadata: {labels: {app: db}}\n---\n\
         apiVersion: v1\nkind: Namespace\nmetadata: {name: -shop}\n---\n\
         apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web.v1}\nspec:\n  selector: {matchLabels: {app: web}}\n  \
         template:\n    metadata: {labels: {app: web}}\n    spec:\n      hostname: Web\n",
    )]);
    assert_eq!(errs.len(), 5, "{}", render(&errs));
    let svc = Some("Service Shop/Web_1");
    let at1 = "names.yaml: document 1 (line 1)";
    expect(&errs[0], "invalid-field", at1, svc, Some("metadata.name"), &["\"Web_1\" is not a valid name", "lowercase"]);
    expect(
        &errs[1],
        "invalid-field",
        at1,
        svc,
        Some("metadata.namespace"),
        &["\"Shop\" is not a valid namespace name"],
    );
    // A StatefulSet's name becomes a DNS label of its pods: no dots. A Deployment's may have them.
    expect(
        &errs[2],
        "invalid-field",
        "names.yaml: document 2 (line 9)",
        Some("StatefulSet default/db.v1"),
        Some("metadata.name"),
        &["\"db.v1\" is not a valid name"],
    );
    expect(
        &errs[3],
        "invalid-field",
        "names.yaml: document 3 (line 17)",
        Some("Namespace -shop"),
        Some("metadata.name"),
        &["\"-shop\" is not a valid name"],
    );
    // The template is checked when the pods are made, with the template's path.
    expect(
        &errs[4],
        "invalid-field",
        "names.yaml: document 4 (line 21)",
        Some("Deployment default/web.v1"),
        Some("spec.template.spec.hostname"),
        &["\"Web\" is not a DNS label"],
    );
}

#[test]
fn a_broken_template_is_reported_even_at_zero_replicas() {
    for replicas in [0, 1, 3] {
        let text = format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n  replicas: {replicas}\n  selector: \
             {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      containers:\n      \
             - name: web\n        ports:\n        - containerPort: 0\n"
        );
        // One error, not one per replica.
        let d = only_error("scaled.yaml", &text);
        expect(
            &d,
            "invalid-field",
            "scaled.yaml: document 1 (line 1)",
            Some("Deployment default/web"),
            Some("spec.template.spec.containers[0].ports[0].containerPort"),
            &["0 is not a port"],
        );
    }
    // A valid template at 0 replicas makes no pods.
    let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 0\n  selector: \
                {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n";
    let loaded = load_ok(&[("zero.yaml", text)]);
    assert_eq!(loaded.cluster.workloads.len(), 1);
    assert!(loaded.cluster.pods.is_empty());
}

#[test]
fn several_unnamed_service_ports_are_each_reported() {
    let errs = errors(&[(
        "ports.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports:\n  - port: 80\n  - port: 443\n  \
         - name: admin\n    port: 9000\n",
    )]);
    assert_eq!(errs.len(), 2, "{}", render(&errs));
    for (d, i) in errs.iter().zip([0, 1]) {
        let field = format!("spec.ports[{i}].name");
        expect(
            d,
            "invalid-field",
            "ports.yaml: document 1 (line 1)",
            Some("Service default/web"),
            Some(&field),
            &["missing; every port of a Service with several ports must be named"],
        );
    }
    // One unnamed port alone is fine.
    load_ok(&[("one.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports:\n  - port: 80\n")]);
}

// ---------------------------------------------------------------- duplicates

#[test]
fn the_same_service_in_two_files_names_both_places() {
    let second = format!("# second copy\n---\n{SERVICE}");
    let errs = errors(&[("a.yaml", SERVICE), ("b.yaml", &second)]);
    assert_eq!(errs.len(), 1, "{}", render(&errs));
    let d = &errs[0];
    expect(
        d,
        "duplicate-object",
        "b.yaml: document 1 (line 2)",
        Some("Service shop/web"),
        None,
        &["defined twice; the first definition is at a.yaml: document 1 (line 1)"],
    );
    assert_eq!(d.hint.as_deref(), Some("rename one of them or remove the duplicate"));
    assert_eq!(
        d.to_string(),
        "error: b.yaml: document 1 (line 2): Service shop/web: defined twice; the first definition is at a.yaml: \
         document 1 (line 1)\n  fix: rename one of them or remove the duplicate"
    );
}

#[test]
fn the_same_name_in_another_namespace_or_of_another_kind_is_no_duplicate() {
    let other_ns = SERVICE.replace("namespace: shop", "namespace: prod");
    let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: shop}\nspec:\n  selector: \
                      {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n";
    let loaded = load_ok(&[("a.yaml", SERVICE), ("b.yaml", &other_ns), ("c.yaml", deployment)]);
    assert_eq!(loaded.cluster.services.len(), 2);
    assert_eq!(loaded.cluster.workloads.len(), 1);
}

#[test]
fn other_duplicate_objects() {
    let ns = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n";
    let errs = errors(&[("ns.yaml", &format!("{ns}---\n{ns}"))]);
    assert_eq!(errs.len(), 1, "{}", render(&errs));
    expect(
        &errs[0],
        "duplicate-object",
        "ns.yaml: document 2 (line 4)",
        Some("Namespace shop"),
        None,
        &["defined twice; the first definition is at ns.yaml: document 1 (line 1)"],
    );

    let workload = |kind: &str| {
        format!(
            "apiVersion: apps/v1\nkind: {kind}\nmetadata: {{name: web}}\nspec:\n  selector: {{matchLabels: {{app: web}}}}\n  \
             template:\n    metadata: {{labels: {{app: web}}}}\n"
        )
    };
    let errs = errors(&[("w.yaml", &format!("{}---\n{}", workload("Deployment"), workload("StatefulSet")))]);
    assert_eq!(errs.len(), 1, "{}", render(&errs));
    expect(
        &errs[0],
        "duplicate-object",
        "w.yaml: document 2 (line 8)",
        Some("StatefulSet default/web"),
        None,
        &["a Deployment has the same name (defined at w.yaml: document 1 (line 1)); podmesh names workloads by name"],
    );
}

#[test]
fn a_statefulset_pod_that_collides_with_an_explicit_pod() {
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: db-0\n  namespace: data\n";
    let sts = "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: db\n  namespace: data\nspec:\n  replicas: 3\n  \
               serviceName: db\n  selector:\n    matchLabels: {app: db}\n  template:\n    metadata:\n      labels: {app: \
               db}\n";
    // The generated pod is the duplicate whichever comes first: explicit pods are read before workloads expand.
    for (files, sts_at, pod_at) in [
        (vec![("pod.yaml", pod), ("sts.yaml", sts)], "sts.yaml: document 1 (line 1)", "pod.yaml: document 1 (line 1)"),
        (vec![("sts.yaml", sts), ("pod.yaml", pod)], "sts.yaml: document 1 (line 1)", "pod.yaml: document 1 (line 1)"),
    ] {
        let errs = errors(&files);
        assert_eq!(errs.len(), 1, "{}", render(&errs));
        expect(
            &errs[0],
            "duplicate-object",
            sts_at,
            Some("StatefulSet data/db"),
            None,
            &[&format!("creates pod data/db-0, which is also defined at {pod_at}")],
        );
    }
}

#[test]
fn two_pods_with_the_same_ip() {
    let pod = |name: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: shop}}\nstatus:\n  podIP: 10.244.1.5\n"
        )
    };
    let errs = errors(&[("a.yaml", &pod("a")), ("b.yaml", &format!("{}---\n{}", SERVICE, pod("b")))]);
    assert_eq!(errs.len(), 1, "{}", render(&errs));
    expect(
        &errs[0],
        "duplicate-address",
        "b.yaml: document 2 (line 12)",
        Some("Pod shop/b"),
        Some("status.podIP"),
        &["pod IP 10.244.1.5 is also the IP of pod shop/a (defined at a.yaml: document 1 (line 1))"],
    );
}

#[test]
fn two_services_with_the_same_cluster_ip() {
    let svc = |name: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  clusterIP: 10.96.0.50\n  ports: [{{port: 80}}]\n"
        )
    };
    let errs = errors(&[("svc.yaml", &format!("{}---\n{}", svc("a"), svc("b")))]);
    assert_eq!(errs.len(), 1, "{}", render(&errs));
    expect(
        &errs[0],
        "duplicate-address",
        "svc.yaml: document 2 (line 7)",
        Some("Service default/b"),
        Some("spec.clusterIP"),
        &["ClusterIP 10.96.0.50 is also the ClusterIP of Service default/a (defined at svc.yaml: document 1 (line 1))"],
    );
}

#[test]
fn a_second_mesh_config() {
    let mesh = "apiVersion: podmesh.io/v1alpha1\nkind: MeshConfig\nmetadata:\n  name: mesh\nspec:\n  clusterDomain: \
                example.org\n";
    let errs = errors(&[("mesh.yaml", mesh), ("more/mesh.yaml", &format!("# again\n---\n{mesh}"))]);
    assert_eq!(errs.len(), 1, "{}", render(&errs));
    expect(
        &errs[0],
        "duplicate-object",
        "more/mesh.yaml: document 1 (line 2)",
        Some("MeshConfig mesh"),
        None,
        &["a second MeshConfig; the first is at mesh.yaml: document 1 (line 1)"],
    );
    assert!(errs[0].hint.is_some());
}

// ---------------------------------------------------------------- very large files

#[test]
fn a_file_above_the_default_limit_is_refused_before_reading() {
    let dir = TempDir::new("large");
    let big = dir.path().join("huge.yaml");
    // Sparse: no disk space is used, but the size is what the loader sees.
    std::fs::File::create(&big).unwrap().set_len(DEFAULT_MAX_FILE_BYTES + 1).unwrap();
    dir.write("small.yaml", SERVICE);

    let started = Instant::now();
    let err = load_paths(&[&big], &LoadOptions::default()).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "the file was read: {:?}", started.elapsed());
    let errs: Vec<&Diagnostic> = err.errors().collect();
    assert_eq!(errs.len(), 1, "{err}");
    let d = errs[0];
    assert_eq!(d.code, "file-too-large");
    assert_eq!(d.message, format!("{}: larger than the 64 MiB limit for one manifest file", big.display()));
    assert_eq!(d.hint.as_deref(), Some("split the manifests into several files"));

    // Through its directory, the other files are still read (and only the large one is reported).
    let err = load(&[Source::Path(dir.path().to_path_buf())]).unwrap_err();
    let errs: Vec<&Diagnostic> = err.errors().collect();
    assert_eq!(errs.len(), 1, "{err}");
    assert_eq!(errs[0].code, "file-too-large");
    assert!(errs[0].message.starts_with(&big.display().to_string()), "{}", errs[0]);

    // A file of exactly the limit is not refused for its size (it is all NUL bytes, so it is bad YAML instead).
    std::fs::File::create(&big).unwrap().set_len(4096).unwrap();
    let err = load_paths(&[&big], &LoadOptions { max_file_bytes: 4096 }).unwrap_err();
    assert!(err.errors().all(|d| d.code != "file-too-large"), "{err}");
}

#[test]
fn a_smaller_limit_applies() {
    let dir = TempDir::new("limit");
    let path = dir.write("svc.yaml", SERVICE);
    let size = SERVICE.len() as u64;

    let err = load_paths(&[&path], &LoadOptions { max_file_bytes: size - 1 }).unwrap_err();
    let errs: Vec<&Diagnostic> = err.errors().collect();
    assert_eq!(errs.len(), 1, "{err}");
    assert_eq!(errs[0].code, "file-too-large");
    // A limit below 1 MiB is shown in bytes, not as "0 MiB".
    assert_eq!(
        errs[0].message,
        format!("{}: larger than the {}-byte limit for one manifest file", path.display(), size - 1)
    );

    let loaded = load_paths(&[&path], &LoadOptions { max_file_bytes: size }).unwrap();
    assert_eq!(loaded.cluster.services.len(), 1);
    let loaded = load_paths(&[&path], &LoadOptions { max_file_bytes: u64::MAX }).unwrap();
    assert_eq!(loaded.cluster.services.len(), 1);
}

#[cfg(target_os = "linux")]
#[test]
fn an_endless_device_is_cut_at_the_limit() {
    // /dev/zero reports size 0 and never ends: the limit must hold while reading.
    let started = Instant::now();
    let err = load_paths(&[Path::new("/dev/zero")], &LoadOptions { max_file_bytes: 1 << 20 }).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10));
    let errs: Vec<&Diagnostic> = err.errors().collect();
    assert_eq!(errs.len(), 1, "{err}");
    assert_eq!(errs[0].code, "file-too-large");
    assert_eq!(errs[0].message, "/dev/zero: larger than the 1 MiB limit for one manifest file");
}

fn billion_laughs() -> String {
    let mut text = String::from(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: lol}\ndata:\n  a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n",
    );
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    for pair in names.windows(2) {
        let refs = vec![format!("*{}", pair[0]); 9].join(", ");
        text.push_str(&format!("  {}: &{} [{refs}]\n", pair[1], pair[1]));
    }
    text
}

#[test]
fn a_billion_laughs_alias_bomb_fails_cleanly() {
    let bomb = billion_laughs();
    // 9^9 = 387,420,489 strings if expanded. Surrounded by documents that are still checked.
    let text =
        format!("{SERVICE}---\n{bomb}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nstatus: {{podIP: x}}\n");
    let started = Instant::now();
    let errs = errors(&[("lol.yaml", &text)]);
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
    assert_eq!(errs.len(), 2, "{}", render(&errs));
    expect(
        &errs[0],
        "invalid-yaml",
        "lol.yaml: document 2 (line 12)",
        None,
        None,
        &[
            "invalid YAML: document too large to read safely (more than 250000 values, counting each copy an alias makes)",
        ],
    );
    assert!(!errs[0].message.contains("Nodes {"), "debug output in the message: {}", errs[0]);
    let hint = errs[0].hint.as_deref().unwrap_or_default();
    assert!(hint.contains("alias"), "{}", errs[0]);
    expect(
        &errs[1],
        "invalid-field",
        "lol.yaml: document 3 (line 26)",
        Some("Pod default/p"),
        Some("status.podIP"),
        &["\"x\" is not an IP address"],
    );
}

#[test]
fn alias_copies_of_a_long_string_fail_cleanly() {
    // 1 MiB once, 2,000 times by alias: 2 GiB if expanded.
    let mut text = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n  annotations:\n    a: &a {}\n    b: [",
        "x".repeat(1 << 20)
    );
    text.push_str(&vec!["*a"; 2000].join(","));
    text.push_str("]\n");
    let started = Instant::now();
    let d = only_error("long.yaml", &text);
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
    expect(
        &d,
        "invalid-yaml",
        "long.yaml: document 1 (line 1)",
        None,
        None,
        &["document too large to read safely (more than 64 MiB of text, counting each copy an alias makes)"],
    );
}

#[test]
fn deep_nesting_fails_cleanly() {
    let text = format!("{SERVICE}---\nx: {}1{}\n", "[".repeat(100), "]".repeat(100));
    let d = only_error("deep.yaml", &text);
    expect(
        &d,
        "invalid-yaml",
        "deep.yaml: document 2 (line 12)",
        None,
        None,
        &["document too large to read safely (nested more than 64 levels deep)", "at line 13"],
    );
    // Deeper still, the parser's own limit stops it first.
    let text = format!("{SERVICE}---\nx: {}1{}\n", "[".repeat(100_000), "]".repeat(100_000));
    let d = only_error("deeper.yaml", &text);
    expect(&d, "invalid-yaml", "deeper.yaml: document 2 (line 12)", None, None, &["limit", "at line 13"]);
    // Block nesting.
    let text: String = (0..200).map(|i| format!("{}k{i}:\n", "  ".repeat(i))).collect();
    let d = only_error("block.yaml", &text);
    expect(&d, "invalid-yaml", "block.yaml: document 1 (line 1)", None, None, &["nested more than 64 levels deep"]);
    // The same in JSON.
    let json = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
    let d = only_error("deep.json", &json);
    expect(&d, "invalid-yaml", "deep.json: document 1 (line 1)", None, None, &["invalid JSON", "recursion limit"]);
}

// ---------------------------------------------------------------- unknown kinds

#[test]
fn unknown_kinds_are_skipped_with_a_warning() {
    let text = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings}}\ndata:\n  port: 80\n---\n{SERVICE}---\n\
         apiVersion: example.com/v1\nkind: Foo\nmetadata: {{name: foo}}\nspec: [whatever, 1, {{}}]\n"
    );
    let loaded = load_ok(&[("mixed.yaml", &text)]);
    assert!(loaded.cluster.services.contains_key(&ObjectKey::new("shop", "web")));
    let w = &loaded.warnings;
    assert_eq!(w.len(), 2, "{}", render(w));
    assert!(w.iter().all(|d| d.severity == Severity::Warning));
    assert_eq!(
        w[0].to_string(),
        "warning: mixed.yaml: document 1 (line 1): v1 ConfigMap is not read by podmesh; skipped"
    );
    assert_eq!(w[0].code, "skipped-kind");
    assert_eq!(
        w[1].to_string(),
        "warning: mixed.yaml: document 3 (line 18): example.com/v1 Foo is not read by podmesh; skipped"
    );
    assert_eq!(w[1].code, "skipped-kind");
}

/// A field indented too little lands at the top of the document, where Kubernetes ignores it (kubectl warns):
/// said, naming it, and the object is read without it.
#[test]
fn an_unknown_top_level_field_is_warned_about() {
    let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: shop}\nspec:\n  containers:\n  \
                - name: c\n    image: x\ncommand: [podmesh, echo]\n---\n\
                apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
                metadata: {name: s, namespace: shop, labels: {kubernetes.io/service-name: web}}\n\
                addressType: IPv4\nendpoints: []\nports: []\n";
    let loaded = load_ok(&[("pod.yaml", text)]);
    assert!(loaded.cluster.pods.contains_key(&ObjectKey::new("shop", "p")));
    let w = &loaded.warnings;
    assert_eq!(w.len(), 1, "{}", render(w));
    expect(
        &w[0],
        "unknown-field",
        "pod.yaml: document 1 (line 1)",
        Some("Pod shop/p"),
        Some("command"),
        &["unknown field at the top of the Pod, ignored (as Kubernetes does): is it indented too little?"],
    );
}

#[test]
fn a_known_kind_with_an_unsupported_api_version_is_skipped_with_a_warning() {
    let text = "apiVersion: extensions/v1beta1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: many\n---\n\
                apiVersion: networking.istio.io/v2\nkind: VirtualService\nmetadata: {name: web}\n";
    let loaded = load_ok(&[("old.yaml", text)]);
    assert!(loaded.cluster.workloads.is_empty() && loaded.cluster.pods.is_empty());
    assert!(loaded.cluster.virtual_services.is_empty());
    let w = &loaded.warnings;
    assert_eq!(w.len(), 2, "{}", render(w));
    expect(
        &w[0],
        "skipped-kind",
        "old.yaml: document 1 (line 1)",
        None,
        None,
        &["extensions/v1beta1 Deployment is not read by podmesh; skipped"],
    );
    expect(
        &w[1],
        "skipped-kind",
        "old.yaml: document 2 (line 6)",
        None,
        None,
        &["networking.istio.io/v2 VirtualService is not read by podmesh; skipped"],
    );
}

#[test]
fn unsupported_features_are_warnings() {
    let text = "apiVersion: v1\nkind: Service\nmetadata: {name: ext}\nspec:\n  type: ExternalName\n---\n\
                apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: web}\nspec:\n  hosts: [web]\n  \
                tcp:\n  - route: []\n";
    let loaded = load_ok(&[("unsupported.yaml", text)]);
    let w = &loaded.warnings;
    assert_eq!(w.len(), 2, "{}", render(w));
    expect(
        &w[0],
        "unsupported",
        "unsupported.yaml: document 1 (line 1)",
        Some("Service default/ext"),
        Some("spec.type"),
        &["ExternalName Services are not proxied"],
    );
    expect(
        &w[1],
        "unsupported",
        "unsupported.yaml: document 2 (line 6)",
        Some("VirtualService default/web"),
        Some("spec.tcp"),
        &["not supported"],
    );
}

#[test]
fn warnings_ride_along_with_errors_but_are_not_counted_as_errors() {
    let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Service\nmetadata: \
                {name: web}\nspec:\n  ports: [{port: 0}]\n";
    let err = load_err(&[("w.yaml", text)]);
    assert_eq!(err.diagnostics.len(), 2);
    assert_eq!(err.errors().count(), 1);
    assert!(err.diagnostics.iter().any(|d| d.code == "skipped-kind" && !d.is_error()));
    let report = err.to_string();
    assert!(!report.contains("warning"), "{report}");
    assert!(report.ends_with("1 error(s) in the manifests"), "{report}");
}

// ---------------------------------------------------------------- document shapes

#[test]
fn documents_that_are_not_mappings_are_errors() {
    let text = "just a string\n---\n- a\n- list\n---\n42\n---\ntrue\n";
    let errs = errors(&[("shapes.yaml", text)]);
    assert_eq!(errs.len(), 4, "{}", render(&errs));
    for (d, (at, found)) in errs.iter().zip([
        ("shapes.yaml: document 1 (line 1)", "a string"),
        ("shapes.yaml: document 2 (line 2)", "a list"),
        ("shapes.yaml: document 3 (line 5)", "a number"),
        ("shapes.yaml: document 4 (line 7)", "a boolean"),
    ]) {
        expect(
            d,
            "invalid-field",
            at,
            None,
            None,
            &[&format!("a manifest must be a mapping with apiVersion, kind and metadata, not {found}")],
        );
    }
}

#[test]
fn empty_and_comment_only_documents_are_ignored() {
    for text in ["", "\n\n", "# just a comment\n", "---\n", "---\n---\n...\n", "---\n# a\n---\n\n---\n~\n", "--- # c\n"]
    {
        let loaded = load_ok(&[("empty.yaml", text)]);
        assert!(loaded.warnings.is_empty(), "{text:?}: {:?}", loaded.warnings);
        assert!(loaded.cluster.services.is_empty() && loaded.cluster.pods.is_empty());
    }
    // They still count, so the index matches what a reader counts between markers.
    let text =
        "---\n# only a comment\n---\n\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\nstatus: {podIP: bad}\n";
    let d = only_error("sparse.yaml", text);
    expect(
        &d,
        "invalid-field",
        "sparse.yaml: document 3 (line 5)",
        Some("Pod default/p"),
        Some("status.podIP"),
        &["\"bad\" is not an IP address"],
    );
}

#[test]
fn items_of_a_list_are_checked() {
    let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n  metadata: {name: a}\n  spec:\n    \
                ports: [{port: 0}]\n- 5\n- apiVersion: v1\n  kind: Secret\n  metadata: {name: s}\n";
    let err = load_err(&[("list.yaml", text)]);
    let errs: Vec<&Diagnostic> = err.errors().collect();
    assert_eq!(errs.len(), 2, "{err}");
    expect(
        errs[0],
        "invalid-field",
        "list.yaml: document 1 (line 1)",
        Some("Service default/a"),
        Some("spec.ports[0].port"),
        &["0 is not a port"],
    );
    expect(errs[1], "invalid-field", "list.yaml: document 1 (line 1)", None, None, &["not a number"]);
    assert!(err.diagnostics.iter().any(|d| d.code == "skipped-kind" && d.message.contains("v1 Secret")));
}

// ---------------------------------------------------------------- files and directories

#[test]
fn a_directory_without_manifests() {
    let dir = TempDir::new("empty");
    dir.write("README.md", "# not a manifest\n");
    dir.write("notes.txt", "key: [\n");
    std::fs::create_dir(dir.path().join("nested.yaml")).unwrap();
    let err = load(&[Source::Path(dir.path().to_path_buf())]).unwrap_err();
    let errs: Vec<&Diagnostic> = err.errors().collect();
    assert_eq!(errs.len(), 1, "{err}");
    let d = errs[0];
    assert_eq!(d.code, "no-manifests");
    assert_eq!(d.message, format!("{}: no *.yaml, *.yml or *.json files in this directory", dir.path().display()));
    assert!(d.hint.as_deref().unwrap_or_default().contains("not read recursively"), "{d}");
}

#[test]
fn a_path_that_does_not_exist() {
    let dir = TempDir::new("missing");
    let path = dir.path().join("nope.yaml");
    let err =
        load(&[Source::Path(path.clone()), Source::Text { name: "ok.yaml".into(), text: SERVICE.into() }]).unwrap_err();
    let errs: Vec<&Diagnostic> = err.errors().collect();
    assert_eq!(errs.len(), 1, "{err}");
    assert_eq!(errs[0].code, "unreadable");
    assert!(errs[0].message.starts_with(&format!("{}: cannot read: ", path.display())), "{}", errs[0]);
}

#[test]
fn a_json_file_with_a_syntax_error() {
    let dir = TempDir::new("json");
    let path = dir
        .write("svc.json", "{\n  \"apiVersion\": \"v1\",\n  \"kind\": \"Service\",\n  \"metadata\": {\"name\": }\n}\n");
    let err = load(&[Source::Path(path.clone())]).unwrap_err();
    let errs: Vec<&Diagnostic> = err.errors().collect();
    assert_eq!(errs.len(), 1, "{err}");
    let at = format!("{}: document 1 (line 1)", path.display());
    expect(errs[0], "invalid-yaml", &at, None, None, &["invalid JSON: expected value at line 4 column 24"]);
    // The position is given once.
    assert_eq!(errs[0].message.matches("line 4").count(), 1, "{}", errs[0]);

    // A JSON file that parses gets the same field paths as YAML.
    let path =
        dir.write("pod.json", r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"v": 1}}}"#);
    let err = load(&[Source::Path(path.clone())]).unwrap_err();
    let errs: Vec<&Diagnostic> = err.errors().collect();
    assert_eq!(errs.len(), 1, "{err}");
    let at = format!("{}: document 1 (line 1)", path.display());
    expect(
        errs[0],
        "invalid-field",
        &at,
        Some("Pod default/p"),
        Some("metadata.labels.v"),
        &["invalid type: integer `1`"],
    );
}

#[test]
fn a_file_that_is_not_utf8() {
    let dir = TempDir::new("utf8");
    let path = dir.write("latin1.yaml", b"apiVersion: v1\nkind: Pod\nmetadata: {name: caf\xe9}\n");
    let err = load(&[Source::Path(path.clone())]).unwrap_err();
    let errs: Vec<&Diagnostic> = err.errors().collect();
    assert_eq!(errs.len(), 1, "{err}");
    assert_eq!(errs[0].code, "invalid-yaml");
    assert!(errs[0].message.starts_with(&format!("{}: not UTF-8 text", path.display())), "{}", errs[0]);
}

#[test]
fn a_directory_names_each_broken_file() {
    let dir = TempDir::new("dir");
    dir.write("a.yaml", SERVICE);
    let b = dir.write("b.yml", "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nstatus: {podIP: nope}\n");
    let c = dir.write("c.json", "[");
    dir.write("d.txt", "not: [read\n");
    let err = load(&[Source::Path(dir.path().to_path_buf())]).unwrap_err();
    let errs: Vec<&Diagnostic> = err.errors().collect();
    assert_eq!(errs.len(), 2, "{err}");
    expect(
        errs[0],
        "invalid-field",
        &format!("{}: document 1 (line 1)", b.display()),
        Some("Pod default/p"),
        Some("status.podIP"),
        &["\"nope\" is not an IP address"],
    );
    expect(errs[1], "invalid-yaml", &format!("{}: document 1 (line 1)", c.display()), None, None, &["invalid JSON"]);
}

// ---------------------------------------------------------------- all errors at once

#[test]
fn every_error_is_reported_at_once() {
    let text = "\
apiVersion: v1
kind: Service
metadata: {name: a}
spec:
  ports: [{port: 0}]
---
key: [
---
just text
---
apiVersion: v1
kind: Pod
metadata: {name: p}
status: {podIP: x}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
spec:
  replicas: -1
  selector: {matchLabels: {app: d}}
  template: {metadata: {labels: {app: d}}}
";
    let err = load_err(&[("five.yaml", text)]);
    let errs: Vec<&Diagnostic> = err.errors().collect();
    assert_eq!(errs.len(), 5, "{err}");
    let documents: Vec<usize> = errs.iter().map(|d| d.origin.as_ref().unwrap().document).collect();
    assert_eq!(documents, [1, 2, 3, 4, 5]);
    let codes: Vec<&str> = errs.iter().map(|d| d.code).collect();
    assert_eq!(codes, ["invalid-field", "invalid-yaml", "invalid-field", "invalid-field", "invalid-field"]);
    assert_eq!(
        err.to_string(),
        "error: five.yaml: document 1 (line 1): Service default/a: spec.ports[0].port: 0 is not a port: use 1-65535\n\
         error: five.yaml: document 2 (line 6): invalid YAML: unclosed bracket `[`: the document ends before it is closed at line 7, column 6\n\
         error: five.yaml: document 3 (line 8): a manifest must be a mapping with apiVersion, kind and metadata, not a \
         string\n\
         error: five.yaml: document 4 (line 10): Pod default/p: status.podIP: \"x\" is not an IP address\n\
         error: five.yaml: document 5 (line 15): Deployment default/d: spec.replicas: -1 is out of range: podmesh runs \
         0 to 10000 replicas\n\
         5 error(s) in the manifests"
    );
}

#[test]
fn errors_in_several_files_are_reported_together() {
    let errs = errors(&[
        ("a.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: A}\n"),
        ("b.yaml", "{"),
        ("c.yaml", SERVICE),
        ("d.yaml", SERVICE),
    ]);
    assert_eq!(errs.len(), 3, "{}", render(&errs));
    let files: Vec<&str> = errs.iter().map(|d| &*d.origin.as_ref().unwrap().file).collect();
    assert_eq!(files, ["a.yaml", "b.yaml", "d.yaml"]);
}

// ---------------------------------------------------------------- never panics

/// A valid manifest of every kind podmesh reads, for mutation.
const VALID: &str = r#"apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels:
    podmesh.io/inject: "true"
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  selector:
    app: web
  ports:
  - name: http
    port: 80
    targetPort: http
  - name: grpc
    port: 9090
    targetPort: 9090
    appProtocol: grpc
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
        version: v1
    spec:
      containers:
      - name: web
        ports:
        - name: http
          containerPort: 8080
        - containerPort: 9090
---
apiVersion: v1
kind: Service
metadata:
  name: db
  namespace: shop
spec:
  clusterIP: None
  selector:
    app: db
  ports:
  - name: tcp-pg
    port: 5432
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db
  namespace: shop
spec:
  replicas: 2
  serviceName: db
  selector:
    matchLabels:
      app: db
  template:
    metadata:
      labels:
        app: db
    spec:
      containers:
      - name: pg
        ports:
        - containerPort: 5432
---
apiVersion: v1
kind: Pod
metadata:
  name: client
  namespace: shop
  annotations:
    sidecar.podmesh.io/inject: "false"
status:
  podIP: 10.244.3.7
  conditions:
  - type: Ready
    status: "True"
---
apiVersion: v1
kind: Service
metadata:
  name: legacy
  namespace: shop
spec:
  clusterIP: 10.96.7.7
  ports:
  - port: 8080
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: legacy-1
  namespace: shop
  labels:
    kubernetes.io/service-name: legacy
addressType: IPv4
endpoints:
- addresses: ["10.1.0.5"]
  conditions:
    ready: true
ports:
- port: 8080
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: web
  namespace: shop
spec:
  hosts: [web]
  http:
  - match:
    - uri:
        prefix: /api
      headers:
        x-user:
          regex: "a.*"
    route:
    - destination:
        host: web
        subset: v1
      weight: 90
    - destination:
        host: web
        subset: v2
        port: {number: 80}
      weight: 10
    timeout: 5s
    retries: {attempts: 3}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: web
  namespace: shop
spec:
  host: web
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: web
  namespace: shop
spec:
  selector:
    matchLabels: {app: web}
  mtls:
    mode: STRICT
  portLevelMtls:
    9090:
      mode: PERMISSIVE
---
apiVersion: podmesh.io/v1alpha1
kind: MeshConfig
metadata:
  name: mesh
spec:
  outboundTrafficPolicy:
    mode: REGISTRY_ONLY
  protocolDetectionTimeout: 100ms
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  anchors: &x [1, 2]
  again: *x
"#;

#[test]
fn the_manifest_mutated_below_is_valid() {
    let loaded = load_ok(&[("manifest.yaml", VALID)]);
    let c = &loaded.cluster;
    assert_eq!((c.services.len(), c.workloads.len(), c.pods.len()), (3, 2, 5));
    assert_eq!((c.virtual_services.len(), c.destination_rules.len(), c.peer_authentications.len()), (1, 1, 1));
    assert_eq!(c.endpoint_slices.len(), 1);
    assert_eq!(loaded.warnings.len(), 1, "{}", render(&loaded.warnings));
}

/// Loads `text` as `name` and checks what must hold for any input: no panic, errors exactly when loading
/// fails, every origin inside the file, and the same answer twice.
fn check_any(name: &str, text: &str) -> Result<(), TestCaseError> {
    let first = load_str(&[(name, text)]);
    let lines = text.split('\n').count();
    let diags = match &first {
        Ok(l) => {
            prop_assert!(l.warnings.iter().all(|d| !d.is_error()));
            &l.warnings
        }
        Err(e) => {
            prop_assert!(e.errors().count() > 0);
            let _ = e.to_string();
            &e.diagnostics
        }
    };
    for d in diags {
        prop_assert!(!d.to_string().is_empty());
        if let Some(o) = &d.origin {
            prop_assert_eq!(&*o.file, name);
            prop_assert!(o.document >= 1);
            prop_assert!(o.line >= 1 && o.line <= lines, "line {} of {} in {}", o.line, lines, d);
        }
    }
    let second = load_str(&[(name, text)]);
    let again = match &second {
        Ok(l) => &l.warnings,
        Err(e) => &e.diagnostics,
    };
    prop_assert_eq!(diags, again);
    Ok(())
}

#[derive(Debug, Clone)]
enum Mutation {
    FlipByte(usize, u8),
    Truncate(usize),
    DeleteLine(usize),
    DuplicateLine(usize),
    Insert(usize, &'static str),
}

const TOKENS: &[&str] = &[
    "---\n",
    "...\n",
    "&a ",
    "*a",
    "[",
    "]",
    "{",
    "}",
    ": ",
    "- ",
    "\t",
    "'",
    "\"",
    "<<: *a\n",
    "!!binary ",
    "0",
    "-1",
    "99999999999999999999",
    "null",
    "~",
    "\n  ",
    "\n",
    "#",
    "|\n",
    ">-\n",
    "%YAML 1.2\n",
    "? ",
    ",",
    "\u{feff}",
    "\r\n",
    "\\",
    "é",
    "1.5",
    "true",
    "*undefined",
];

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(i, x)| Mutation::FlipByte(i, x)),
        any::<usize>().prop_map(Mutation::Truncate),
        any::<usize>().prop_map(Mutation::DeleteLine),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        (any::<usize>(), prop::sample::select(TOKENS)).prop_map(|(i, t)| Mutation::Insert(i, t)),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    if bytes.is_empty() {
        return;
    }
    let line_starts = || -> Vec<usize> {
        std::iter::once(0).chain(bytes.iter().enumerate().filter(|(_, b)| **b == b'\n').map(|(i, _)| i + 1)).collect()
    };
    let line_range = |starts: &[usize], i: usize, len: usize| {
        let start = starts[i % starts.len()];
        let end = starts.get(i % starts.len() + 1).copied().unwrap_or(len);
        start..end
    };
    match m {
        Mutation::FlipByte(i, x) => {
            let n = bytes.len();
            bytes[i % n] ^= x;
        }
        Mutation::Truncate(i) => bytes.truncate(i % bytes.len()),
        Mutation::DeleteLine(i) => {
            let r = line_range(&line_starts(), *i, bytes.len());
            bytes.drain(r);
        }
        Mutation::DuplicateLine(i) => {
            let r = line_range(&line_starts(), *i, bytes.len());
            let line: Vec<u8> = bytes[r.clone()].to_vec();
            bytes.splice(r.start..r.start, line);
        }
        Mutation::Insert(i, t) => {
            let at = i % (bytes.len() + 1);
            bytes.splice(at..at, t.bytes());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_strings_never_panic(text in any::<String>()) {
        check_any("any.yaml", &text)?;
        check_any("any.json", &text)?;
    }

    #[test]
    fn yaml_like_strings_never_panic(text in "([a-z]{1,6}|[ \\n\\t:\\-\\[\\]{},#&*!|>'\"%@?~.0-9]|---\\n|apiVersion: v1\\n|kind: Pod\\n|kind: Service\\n|metadata:\\n|  name: x\\n|spec:\\n|  ports:\\n  - port: ){0,60}") {
        check_any("yamlish.yaml", &text)?;
    }

    #[test]
    fn mutated_manifests_never_panic(mutations in prop::collection::vec(mutation(), 1..8)) {
        let mut bytes = VALID.as_bytes().to_vec();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        let text = String::from_utf8_lossy(&bytes);
        check_any("manifest.yaml", &text)?;
    }
}

#[test]
fn a_subset_name_must_be_a_dns_label() {
    let dr = |subset: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: web, namespace: shop}}\n\
             spec:\n  host: web\n  subsets:\n  - name: \"{subset}\"\n    labels: {{version: v1}}\n"
        )
    };
    for bad in ["v1.0", "V1", "has space", &"a".repeat(63)] {
        let d = only_error("dr.yaml", &dr(bad));
        expect(
            &d,
            "invalid-field",
            "dr.yaml: document 1 (line 1)",
            Some("DestinationRule shop/web"),
            Some("spec.subsets[0].name"),
            &["is not a valid subset name"],
        );
    }
    load_ok(&[("dr.yaml", &dr(&"a".repeat(62)))]);
}
