//! `podmesh inject`, structurally: the quickstart's injected manifests are exactly the golden file (set
//! `PODMESH_UPDATE_GOLDEN=1` to write it again, then read the diff), injecting the output again changes nothing,
//! and the injected manifests still load. That every injected object is a valid Kubernetes object is checked in
//! `crates/inject/tests/openapi.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn inject(args: &[&str], stdin: Option<&str>) -> (String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_podmesh"))
        .arg("inject")
        .args(args)
        .current_dir(root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stderr}");
    (String::from_utf8(out.stdout).unwrap(), stderr)
}

#[test]
fn the_quickstart_injected_is_the_golden_file_and_injecting_again_changes_nothing() {
    let (once, said) = inject(&["-f", "examples/quickstart"], None);
    assert!(said.contains("5 workload(s) injected"), "{said}");
    assert!(said.contains("Pod shop/legacy: not injected: annotation sidecar.podmesh.io/inject"), "{said}");
    let golden = root().join("crates/cli/tests/golden/quickstart-injected.yaml");
    if std::env::var_os("PODMESH_UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &once).unwrap();
    }
    let expected = std::fs::read_to_string(&golden).unwrap();
    assert!(once == expected, "differs from {} (PODMESH_UPDATE_GOLDEN=1 writes it):\n{once}", golden.display());

    let (twice, said) = inject(&["-f", "-"], Some(&once));
    assert_eq!(twice, once, "injecting twice changed the manifests");
    assert!(said.contains("0 workload(s) injected"), "{said}");

    // The injected manifests still load, with the same Services.
    let file = std::env::temp_dir().join(format!("podmesh-injected-{}.yaml", std::process::id()));
    std::fs::write(&file, &once).unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_podmesh")).args(["check", "-f"]).arg(&file).output().unwrap();
    let _ = std::fs::remove_file(&file);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
}

#[test]
fn options_and_bad_objects() {
    let (out, _) = inject(
        &[
            "-f",
            "examples/quickstart/web.yaml",
            "--no-native-sidecar",
            "--image",
            "registry.local/podmesh:dev",
            "--control",
            "10.0.0.9:15012",
        ],
        None,
    );
    assert!(
        out.contains("image: \"registry.local/podmesh:dev\"") || out.contains("image: registry.local/podmesh:dev"),
        "{out}"
    );
    assert!(out.contains("10.0.0.9:15012") && !out.contains("restartPolicy: Always"), "{out}");
    let bad = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  template:\n    spec:\n      containers: 3\n";
    let out = Command::new(env!("CARGO_BIN_EXE_podmesh"))
        .args(["inject", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(bad.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && out.stdout.is_empty(), "{stderr}");
    assert!(stderr.contains("Deployment default/d: spec.template.spec.containers: missing or not a list"), "{stderr}");
}

/// What inject writes, the binary it starts accepts: the init container's arguments (as `capture print`, which
/// installs nothing) and the sidecar's rewritten probes (`proxy --app-probes … --check`).
#[test]
fn the_injected_arguments_are_accepted_by_podmesh() {
    let podmesh = env!("CARGO_BIN_EXE_podmesh");
    let text = std::fs::read_to_string(root().join("crates/cli/tests/golden/quickstart-injected.yaml")).unwrap();
    let objects = podmesh_model::objects(&text, false);
    let web = &objects.iter().find(|(k, _)| k == "Deployment shop/web").unwrap().1;
    let annotated = {
        let mut w = web.clone();
        let a = &mut w["spec"]["template"]["metadata"]["annotations"];
        a["traffic.sidecar.istio.io/excludeInboundPorts"] = "9090".into();
        a["traffic.sidecar.istio.io/excludeOutboundIPRanges"] = "169.254.169.254/32".into();
        a.as_object_mut().unwrap().remove("sidecar.podmesh.io/status");
        w
    };
    // The injected template again, with traffic annotations: the init container's arguments carry them.
    let dir = std::env::temp_dir().join(format!("podmesh-inject-args-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("web.json"), annotated.to_string()).unwrap();
    let out = Command::new(podmesh).args(["inject", "-f"]).arg(dir.join("web.json")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let injected = podmesh_model::objects(&String::from_utf8(out.stdout).unwrap(), false);
    let spec = &injected[0].1["spec"]["template"]["spec"];
    let init: Vec<String> =
        spec["initContainers"][0]["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().into()).collect();
    assert!(init.join(" ").contains("--exclude-inbound-ports 9090"), "{init:?}");
    let mut print: Vec<String> = init.clone();
    print[1] = "print".into();
    let rules = Command::new(podmesh).args(&print).output().unwrap();
    let rules_text = String::from_utf8_lossy(&rules.stdout);
    assert!(rules.status.success(), "{:?}: {}", print, String::from_utf8_lossy(&rules.stderr));
    assert!(rules_text.contains("--dport 9090 -j RETURN") && rules_text.contains("169.254.169.254/32"), "{rules_text}");

    // The sidecar's probes: web's readiness probe, through 15020, as the proxy reads them.
    let proxy = &spec["initContainers"][1];
    let probes = proxy["env"][0]["value"].as_str().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(podmesh).args(args).current_dir(root()).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let d = dir.to_str().unwrap();
    run(&["ca", "create", "--dir", &format!("{d}/ca")]);
    let config = run(&["routes", "-f", "examples/quickstart", "--pod", "shop/web", "-o", "json"]);
    std::fs::write(dir.join("web-config.json"), &config).unwrap();
    let identity = "spiffe://cluster.local/ns/shop/sa/web";
    run(&["ca", "issue", "--dir", &format!("{d}/ca"), "--identity", identity, "--out", &format!("{d}/web")]);
    let checked = run(&[
        "proxy",
        "--check",
        "--config",
        &format!("{d}/web-config.json"),
        "--cert",
        &format!("{d}/web/cert.pem"),
        "--key",
        &format!("{d}/web/key.pem"),
        "--roots",
        &format!("{d}/web/roots.pem"),
        "--app-probes",
        probes,
    ]);
    assert!(checked.contains("1 app probe(s)"), "{checked}");
    let _ = std::fs::remove_dir_all(&dir);
}
