//! The `podmesh` binary as a user runs it: explain, routes and check on the examples, output formats, exit codes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn podmesh(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_podmesh")).args(args).current_dir(root()).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn explain_text_is_readable_and_names_the_outcome() {
    let o = podmesh(&["explain", "-f", "examples/quickstart", "--from", "shop/client", "http://web.shop/"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.starts_with("HTTP web.shop/ (Host: web.shop) from shop/client (with sidecar)\n=> ok (destination decides"),
        "{out}"
    );
    assert!(out.contains("R3.1") && out.contains("R4.3"), "{out}");
    // Not a terminal: no colour codes.
    assert!(!out.contains('\x1b'));
}

#[test]
fn explain_json_has_the_documented_schema() {
    let o = podmesh(&[
        "explain",
        "-f",
        "examples/quickstart",
        "-f",
        "examples/quickstart/strict",
        "--from",
        "shop/legacy",
        "http://web.shop/",
        "-o",
        "json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["reason"], "mtls_required");
    assert_eq!(v["side"], "destination");
    assert_eq!(v["client_sees"], "reset");
    assert_eq!(v["endpoints"], serde_json::json!([]));
    assert!(v["rules"].as_array().unwrap().contains(&serde_json::json!("R4.2")));
    assert!(v["fix"].as_str().unwrap().contains("PERMISSIVE"));
    for field in [
        "from",
        "from_sidecar",
        "target",
        "protocol",
        "host",
        "address",
        "service",
        "route",
        "subset",
        "balancing",
        "mtls",
        "steps",
    ] {
        assert!(v.get(field).is_some(), "missing {field}: {v}");
    }
    let o =
        podmesh(&["explain", "-f", "examples/quickstart", "--from", "shop/client", "http://web.shop/", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["reason"], "ok");
    assert_eq!(v["fix"], serde_json::Value::Null);
    assert_eq!(v["endpoints"].as_array().unwrap().len(), 2);
    assert!(v["endpoints"][0].as_str().unwrap().starts_with("shop/web-"));
}

#[test]
fn explain_accepts_a_workload_as_the_source() {
    let o = podmesh(&["explain", "-f", "examples/quickstart", "--from", "shop/web", "--tcp", "db-0.db:5000"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("is a workload; using its first pod shop/web-"));
    assert!(stdout(&o).contains("=> ok"));
}

#[test]
fn explain_reports_user_errors_clearly() {
    let o = podmesh(&["explain", "-f", "examples/quickstart", "--from", "shop/nobody", "http://web.shop/"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no pod or workload shop/nobody; pods in namespace shop: client, db-0"),
        "{}",
        stderr(&o)
    );
    let o = podmesh(&["explain", "-f", "examples/quickstart", "--from", "shop/client", "web.shop"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("give a port (HOST:PORT) or a URL"), "{}", stderr(&o));
    let o = podmesh(&["explain", "-f", "examples/quickstart", "--from", "shop/client", "http://nothing/"]);
    assert!(stderr(&o).contains("\"nothing\" does not resolve from namespace shop"), "{}", stderr(&o));
}

#[test]
fn routes_json_is_the_sidecar_config_and_round_trips() {
    let o = podmesh(&["routes", "-f", "examples/quickstart", "--pod", "shop/db-1", "-o", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let cfg: podmesh_compute::ProxyConfig = serde_json::from_str(&stdout(&o)).unwrap();
    let loaded = podmesh_model::load(&[podmesh_model::Source::Path(root().join("examples/quickstart"))]).unwrap();
    let ix = podmesh_compute::Index::new(loaded.cluster);
    assert_eq!(cfg, ix.proxy_config(&podmesh_model::ObjectKey::new("shop", "db-1")).unwrap());
    // The YAML form carries the same config.
    let o = podmesh(&["routes", "-f", "examples/quickstart", "--pod", "shop/db-1", "-o", "yaml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = podmesh_model::yaml::parse(&stdout(&o), podmesh_model::yaml::Limits::default()).unwrap();
    let from_yaml: podmesh_compute::ProxyConfig = serde_json::from_value(v).unwrap();
    assert_eq!(from_yaml, cfg);
}

#[test]
fn routes_table_shows_every_section() {
    let o = podmesh(&["routes", "-f", "examples/quickstart", "--pod", "shop/web"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for header in
        ["INBOUND PORT", "OUTBOUND LISTENER", "ROUTE PORT", "CLUSTER", "direct pod table: 11 pods (10 with a sidecar)"]
    {
        assert!(out.contains(header), "{header}: {out}");
    }
    let o = podmesh(&["routes", "-f", "examples/quickstart", "--pod", "shop/legacy"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("has no sidecar"));
}

#[test]
fn check_is_clean_on_every_example() {
    for set in [
        vec!["examples/quickstart"],
        vec!["examples/quickstart", "examples/quickstart/strict"],
        vec!["examples/quickstart", "examples/quickstart/permissive"],
        vec!["examples/quickstart", "examples/quickstart/registry-only"],
        vec!["examples/statefulset-peers"],
    ] {
        let mut args = vec!["check"];
        for f in &set {
            args.extend(["-f", f]);
        }
        let o = podmesh(&args);
        assert!(o.status.success(), "{set:?}: {}", stdout(&o));
        assert_eq!(stdout(&o), "ok: no errors, no warnings\n", "{set:?}");
    }
}

#[test]
fn check_reports_every_error_and_pitfall_and_fails() {
    let broken = r#"apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 0}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: shop}
spec:
  replicas: "three"
"#;
    let o = run_stdin(&["check", "-f", "-"], broken);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(
        out.contains("error: <stdin>: document 1 (line 1): Service shop/web: spec.ports[0].port: 0 is not a port"),
        "{out}"
    );
    assert!(
        out.contains("error: <stdin>: document 2 (line 7): StatefulSet shop/db: spec.replicas: invalid type"),
        "{out}"
    );
    assert!(out.contains("2 error(s)"), "{out}");

    let pitfalls = r#"apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: shop}
spec:
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: db, ports: [{name: peer, containerPort: 2380}, {containerPort: 9100}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec:
  selector: {app: db}
  ports: [{name: peer, port: 2380, targetPort: peers}]
"#;
    let o = run_stdin(&["check", "-f", "-", "-o", "json"], pitfalls);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let codes: Vec<&str> = v["diagnostics"].as_array().unwrap().iter().map(|d| d["code"].as_str().unwrap()).collect();
    assert_eq!(v["errors"], 1);
    for code in ["unknown-target-port", "statefulset-without-headless-service", "undeclared-container-port"] {
        assert!(codes.contains(&code), "{code}: {codes:?}");
    }
}

fn run_stdin(args: &[&str], input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_podmesh"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn control_check_token_and_proxy_status_report_user_errors_clearly() {
    let dir = std::env::temp_dir().join(format!("podmesh-cli-control-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("bad")).unwrap();
    let state = dir.join("state");
    let state_arg = state.to_str().unwrap();
    // --check on good manifests: the CA state is created, and what would be served is said.
    let o = podmesh(&["control", "-f", "examples/quickstart", "--state", state_arg, "--check"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("ok: 11 pod(s), 5 service(s); trust domain cluster.local"), "{}", stdout(&o));
    assert!(state.join("root.pem").exists() && state.join("token-key").exists());
    // A bad manifest: the file, document and field are named, and nothing is served.
    let bad = dir.join("bad/svc.yaml");
    std::fs::write(&bad, "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  ports:\n    - port: 99999\n")
        .unwrap();
    let o = podmesh(&["control", "-f", bad.to_str().unwrap(), "--state", state_arg, "--check"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("svc.yaml") && err.contains("spec.ports[0].port"), "{err}");
    // Tokens come from the state directory, one per pod; without one there is nothing to sign them with.
    let o = podmesh(&["token", "shop/client", "--state", state_arg]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("podmesh-v1/shop/client/"), "{}", stdout(&o));
    let o = podmesh(&["token", "shop/client", "--state", dir.join("nowhere").to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no control-plane state here"), "{}", stderr(&o));
    let o = podmesh(&["token", "a/b/c", "--state", state_arg]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("is not NAMESPACE/NAME"), "{}", stderr(&o));
    // No control plane listening: proxy-status says where it looked.
    let o = podmesh(&["proxy-status", "--monitoring", "127.0.0.1:9"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("cannot reach the control plane's monitoring port at 127.0.0.1:9"), "{}", stderr(&o));
    std::fs::remove_dir_all(&dir).unwrap();
}
