//! `podmesh install`, as its user runs it: the manifests printed for the committed CA fixture are exactly the
//! golden file (set `PODMESH_UPDATE_GOLDEN=1` to write it again, then read the diff); every object is a valid
//! Kubernetes object (a round trip through k8s-openapi's types leaves it unchanged); the CA travels in the Secret
//! and the webhook trusts its root; the ClusterRole grants exactly what the control plane needs; the CA state is
//! created once and reused; the Deployment's arguments are flags `podmesh control` has; and `--apply` against a
//! small fake API server applies every object but keeps a CA Secret the cluster already has.
//!
//! Every run of the binary is bounded by [`WAIT`].
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::{admissionregistration, apps, core, rbac};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);
const CA_FILES: [&str; 3] = ["root.pem", "root-key.pem", "token-key"];
const CRDS: [&str; 3] = [
    "CustomResourceDefinition virtualservices.networking.istio.io",
    "CustomResourceDefinition destinationrules.networking.istio.io",
    "CustomResourceDefinition peerauthentications.security.istio.io",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/install-ca")
}

/// A fresh directory of this test's own (removed when dropped).
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("podmesh-install-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// A copy of the committed CA fixture (the fixture itself may not be writable).
    fn with_fixture(name: &str) -> TempDir {
        let dir = TempDir::new(name);
        for f in CA_FILES {
            std::fs::copy(fixture().join(f), dir.0.join(f)).unwrap();
        }
        dir
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `podmesh ARGS` with `env`, killed after [`WAIT`].
fn podmesh_with(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_podmesh"));
    cmd.args(args).current_dir(root()).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    // Never the cluster this test may happen to run in.
    cmd.env_remove("KUBERNETES_SERVICE_HOST").env_remove("KUBERNETES_SERVICE_PORT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut b = Vec::new();
        stdout.read_to_end(&mut b).map(|_| b)
    });
    let err = std::thread::spawn(move || {
        let mut b = Vec::new();
        stderr.read_to_end(&mut b).map(|_| b)
    });
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("podmesh {args:?} did not finish within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output { status, stdout: out.join().unwrap().unwrap(), stderr: err.join().unwrap().unwrap() }
}

fn podmesh(args: &[&str]) -> Output {
    podmesh_with(args, &[])
}

/// `podmesh install ARGS`, which must succeed: its stdout.
fn install(args: &[&str]) -> String {
    let out = podmesh(&[&["install"], args].concat());
    assert!(out.status.success(), "install {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The documents of `install`'s YAML, each with its key ("Kind namespace/name", "Namespace name").
fn documents(yaml: &str) -> Vec<(String, Value)> {
    let docs = podmesh_model::objects(yaml, false);
    assert_eq!(docs.len(), yaml.matches("---\n").count(), "every document read");
    docs.into_iter()
        .map(|(k, v)| {
            // The model keys cluster-scoped objects as if in `default`; here they have no namespace.
            let k = if v["metadata"]["namespace"].is_null() { k.replace(" default/", " ") } else { k };
            (k, v)
        })
        .collect()
}

fn find<'a>(docs: &'a [(String, Value)], key: &str) -> &'a Value {
    &docs.iter().find(|(k, _)| k == key).unwrap_or_else(|| panic!("no {key}")).1
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

// ------------------------------------------------------------------------------------------ the golden manifests

#[test]
fn the_manifests_are_the_golden_file_in_order() {
    let state = TempDir::with_fixture("golden");
    let yaml = install(&["--state", path(&state.0), "--image", "podmesh:test"]);
    let golden = root().join("crates/cli/tests/golden/install.yaml");
    if std::env::var_os("PODMESH_UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &yaml).unwrap();
    }
    let expected = std::fs::read_to_string(&golden).unwrap();
    assert!(yaml == expected, "differs from {} (PODMESH_UPDATE_GOLDEN=1 writes it):\n{yaml}", golden.display());

    let keys: Vec<String> = documents(&yaml).into_iter().map(|(k, _)| k).collect();
    let mut expected: Vec<&str> = CRDS.to_vec();
    expected.extend([
        "Namespace podmesh-system",
        "ServiceAccount podmesh-system/podmesh-control",
        "ClusterRole podmesh-control",
        "ClusterRoleBinding podmesh-control",
        "Secret podmesh-system/podmesh-ca",
        "Deployment podmesh-system/podmesh-control",
        "Service podmesh-system/podmesh-control",
        "MutatingWebhookConfiguration podmesh-sidecar-injector",
    ]);
    assert_eq!(keys, expected);
    for (key, object) in documents(&yaml) {
        assert_eq!(
            object["metadata"]["labels"],
            json!({"app.kubernetes.io/managed-by": "podmesh", "app.kubernetes.io/name": "podmesh"}),
            "{key}"
        );
    }

    // `-o json`: one v1 List of the same objects.
    let list: Value =
        serde_json::from_str(&install(&["--state", path(&state.0), "--image", "podmesh:test", "-o", "json"])).unwrap();
    assert_eq!((list["apiVersion"].as_str(), list["kind"].as_str()), (Some("v1"), Some("List")));
    let yaml_objects: Vec<Value> = documents(&yaml).into_iter().map(|(_, v)| v).collect();
    assert_eq!(list["items"].as_array().unwrap(), &yaml_objects);
}

// ------------------------------------------------------------------------------- valid Kubernetes objects

fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(what: &str, v: &Value) -> Result<(), String> {
    let typed: T = serde_path_to_error::deserialize(v.clone()).map_err(|e| format!("{what}: {e}"))?;
    let back = serde_json::to_value(&typed).unwrap();
    if &back != v {
        return Err(format!(
            "{what}: changed by the Kubernetes types (a field they do not know, or a wrong type):\n{back:#}\nwas\n{v:#}"
        ));
    }
    Ok(())
}

fn check(what: &str, v: &Value) -> Result<(), String> {
    match v["kind"].as_str().unwrap() {
        "CustomResourceDefinition" => round_trip::<CustomResourceDefinition>(what, v),
        "Namespace" => round_trip::<core::v1::Namespace>(what, v),
        "ServiceAccount" => round_trip::<core::v1::ServiceAccount>(what, v),
        "ClusterRole" => round_trip::<rbac::v1::ClusterRole>(what, v),
        "ClusterRoleBinding" => round_trip::<rbac::v1::ClusterRoleBinding>(what, v),
        "Secret" => round_trip::<core::v1::Secret>(what, v),
        "Deployment" => round_trip::<apps::v1::Deployment>(what, v),
        "Service" => round_trip::<core::v1::Service>(what, v),
        "MutatingWebhookConfiguration" => {
            round_trip::<admissionregistration::v1::MutatingWebhookConfiguration>(what, v)
        }
        other => Err(format!("{what}: unexpected kind {other}")),
    }
}

#[test]
fn every_object_survives_the_kubernetes_types_unchanged() {
    let state = TempDir::with_fixture("openapi");
    let docs = documents(&install(&["--state", path(&state.0)]));
    assert_eq!(docs.len(), 11);
    for (key, object) in &docs {
        check(key, object).unwrap();
    }

    // The check catches a misspelt field (dropped by the types), a misplaced one, and a wrong type.
    let deployment = find(&docs, "Deployment podmesh-system/podmesh-control");
    let mut misspelt = deployment.clone();
    let spec = misspelt["spec"]["template"]["spec"].as_object_mut().unwrap();
    let account = spec.remove("serviceAccountName").unwrap();
    spec.insert("serviceAcountName".into(), account);
    let e = check("misspelt", &misspelt).unwrap_err();
    assert!(e.contains("changed by the Kubernetes types"), "{e}");
    let mut misplaced = find(&docs, CRDS[0]).clone();
    misplaced["spec"]["shortNames"] = json!(["vs"]);
    assert!(check("misplaced", &misplaced).is_err());
    let mut wrong = deployment.clone();
    wrong["spec"]["replicas"] = json!("1");
    let e = check("wrong type", &wrong).unwrap_err();
    assert!(e.contains("spec.replicas"), "{e}");
}

// ----------------------------------------------------------------------------------------------- the CA

#[test]
fn the_ca_travels_in_the_secret_and_the_webhook_trusts_its_root() {
    let state = TempDir::with_fixture("ca");
    let docs = documents(&install(&["--state", path(&state.0)]));
    let secret: core::v1::Secret =
        serde_json::from_value(find(&docs, "Secret podmesh-system/podmesh-ca").clone()).unwrap();
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));
    let data: BTreeMap<String, Vec<u8>> = secret.data.unwrap().into_iter().map(|(k, v)| (k, v.0)).collect();
    assert_eq!(data.keys().map(String::as_str).collect::<Vec<_>>(), ["root-key.pem", "root.pem", "token-key"]);
    for f in CA_FILES {
        assert_eq!(data[f], std::fs::read(fixture().join(f)).unwrap(), "{f}");
    }

    let webhooks: admissionregistration::v1::MutatingWebhookConfiguration =
        serde_json::from_value(find(&docs, "MutatingWebhookConfiguration podmesh-sidecar-injector").clone()).unwrap();
    let webhooks = webhooks.webhooks.unwrap();
    assert_eq!(webhooks.len(), 1);
    let hook = &webhooks[0];
    assert_eq!(hook.name, "sidecar-injector.podmesh.io");
    assert_eq!(hook.client_config.ca_bundle.as_ref().unwrap().0, std::fs::read(fixture().join("root.pem")).unwrap());
    let service = hook.client_config.service.as_ref().unwrap();
    assert_eq!(
        (service.name.as_str(), service.namespace.as_str(), service.path.as_deref(), service.port),
        ("podmesh-control", "podmesh-system", Some("/inject"), Some(443))
    );
    assert_eq!(hook.failure_policy.as_deref(), Some("Fail"));
    assert_eq!(hook.side_effects, "None");

    // The Deployment mounts that Secret where its --state points, readable by its group only.
    let deployment = find(&docs, "Deployment podmesh-system/podmesh-control");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["volumes"], json!([{"name": "ca", "secret": {"secretName": "podmesh-ca", "defaultMode": 0o440}}]));
    let container = &pod["containers"][0];
    assert_eq!(
        container["volumeMounts"],
        json!([{"name": "ca", "mountPath": "/var/run/podmesh/ca", "readOnly": true}])
    );
    let args = strings(&container["args"]);
    let state_arg = args.iter().position(|a| a == "--state").unwrap();
    assert_eq!(args[state_arg + 1], "/var/run/podmesh/ca");
}

#[test]
fn a_second_run_reuses_the_ca_and_an_empty_state_directory_gets_a_new_one() {
    let state = TempDir::with_fixture("reuse");
    let first = install(&["--state", path(&state.0)]);
    let second = install(&["--state", path(&state.0)]);
    assert!(first == second, "a second run on the same state printed other manifests");

    let fresh = TempDir::new("fresh");
    let dir = fresh.0.join("nested/state");
    let out = podmesh(&["install", "--state", path(&dir)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("created a CA for cluster.local"), "{said}");
    for f in CA_FILES {
        assert!(dir.join(f).is_file(), "{f} was not created");
    }
    use std::os::unix::fs::PermissionsExt;
    for key in ["root-key.pem", "token-key"] {
        let mode = std::fs::metadata(dir.join(key)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{key}: mode {mode:o}");
    }
    let root = std::fs::read_to_string(dir.join("root.pem")).unwrap();
    assert!(root.starts_with("-----BEGIN CERTIFICATE-----"), "{root}");
    assert_ne!(root, std::fs::read_to_string(fixture().join("root.pem")).unwrap());
    let docs = documents(&String::from_utf8(out.stdout).unwrap());
    let secret: core::v1::Secret =
        serde_json::from_value(find(&docs, "Secret podmesh-system/podmesh-ca").clone()).unwrap();
    assert_eq!(secret.data.unwrap()["root.pem"].0, root.as_bytes());
    // And again: reused, not made anew.
    let again = podmesh(&["install", "--state", path(&dir)]);
    assert!(again.status.success() && again.stderr.is_empty(), "{}", String::from_utf8_lossy(&again.stderr));
    assert_eq!(std::fs::read_to_string(dir.join("root.pem")).unwrap(), root);
}

// ------------------------------------------------------------------------------------------------ options

#[test]
fn no_crds_leaves_out_exactly_the_three_crds_and_the_image_is_the_control_plane_s() {
    let state = TempDir::with_fixture("no-crds");
    let all = documents(&install(&["--state", path(&state.0), "--image", "registry.local/podmesh:dev"]));
    let without =
        documents(&install(&["--state", path(&state.0), "--image", "registry.local/podmesh:dev", "--no-crds"]));
    let expected: Vec<(String, Value)> = all.iter().filter(|(k, _)| !CRDS.contains(&k.as_str())).cloned().collect();
    assert_eq!(all.len() - 3, expected.len());
    assert_eq!(without, expected);

    let deployment = find(&all, "Deployment podmesh-system/podmesh-control");
    assert_eq!(deployment["spec"]["template"]["spec"]["containers"][0]["image"], "registry.local/podmesh:dev");
    // The default image is the one `inject` puts in the sidecars.
    let default = documents(&install(&["--state", path(&state.0), "--no-crds"]));
    let image = find(&default, "Deployment podmesh-system/podmesh-control")["spec"]["template"]["spec"]["containers"]
        [0]["image"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(image, format!("ghcr.io/podmesh/podmesh:{}", env!("CARGO_PKG_VERSION")));

    // Usage errors: --context is for --apply, and --apply prints no manifests.
    for args in [vec!["install", "--context", "kind-kind"], vec!["install", "--apply", "-o", "json"]] {
        let out = podmesh(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

// ------------------------------------------------------------------------------------------------- RBAC

#[test]
fn the_cluster_role_grants_exactly_what_the_control_plane_needs() {
    let state = TempDir::with_fixture("rbac");
    let docs = documents(&install(&["--state", path(&state.0)]));
    let role = find(&docs, "ClusterRole podmesh-control");
    // (apiGroup, resource, resourceName or "", verb), every combination the rules grant.
    let mut granted = Vec::new();
    for rule in role["rules"].as_array().unwrap() {
        let names = if rule["resourceNames"].is_null() { vec![String::new()] } else { strings(&rule["resourceNames"]) };
        assert!(rule.get("nonResourceURLs").is_none(), "{rule}");
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for name in &names {
                    for verb in strings(&rule["verbs"]) {
                        assert!(
                            ![&group, &resource, name, &verb].iter().any(|s| s.contains('*')),
                            "a wildcard: {rule}"
                        );
                        granted.push((group.clone(), resource.clone(), name.clone(), verb));
                    }
                }
            }
        }
    }
    granted.sort();
    let mut expected = Vec::new();
    for (group, resource) in [
        ("", "namespaces"),
        ("", "services"),
        ("", "pods"),
        ("discovery.k8s.io", "endpointslices"),
        ("networking.istio.io", "virtualservices"),
        ("networking.istio.io", "destinationrules"),
        ("security.istio.io", "peerauthentications"),
    ] {
        for verb in ["get", "list", "watch"] {
            expected.push((group.to_string(), resource.to_string(), String::new(), verb.to_string()));
        }
    }
    expected.push(("authentication.k8s.io".into(), "tokenreviews".into(), String::new(), "create".into()));
    expected.push((String::new(), "configmaps".into(), String::new(), "create".into()));
    for verb in ["get", "patch"] {
        expected.push((String::new(), "configmaps".into(), "podmesh-root".into(), verb.into()));
    }
    expected.sort();
    assert_eq!(granted, expected);
    assert!(!granted.iter().any(|(_, r, _, _)| r == "secrets"), "the control plane reads no Secrets");

    let binding = find(&docs, "ClusterRoleBinding podmesh-control");
    assert_eq!(
        binding["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                          "name": "podmesh-control"})
    );
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "podmesh-control",
                                            "namespace": "podmesh-system"}])
    );
    let deployment = find(&docs, "Deployment podmesh-system/podmesh-control");
    assert_eq!(deployment["spec"]["template"]["spec"]["serviceAccountName"], "podmesh-control");
}

// ------------------------------------------------------------------------------- the control plane's arguments

#[test]
fn the_deployment_s_arguments_are_flags_of_podmesh_control() {
    let state = TempDir::with_fixture("args");
    let docs = documents(&install(&["--state", path(&state.0)]));
    let container =
        &find(&docs, "Deployment podmesh-system/podmesh-control")["spec"]["template"]["spec"]["containers"][0];
    let args = strings(&container["args"]);
    assert_eq!(
        args.join(" "),
        "control --kube --state /var/run/podmesh/ca --listen 0.0.0.0:15012 --monitoring 0.0.0.0:15014 \
         --webhook 0.0.0.0:15017 --proxy-image ghcr.io/podmesh/podmesh:0.1.0"
    );
    let help = podmesh(&["control", "--help"]);
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout).unwrap();
    let flags: Vec<&String> = args.iter().filter(|a| a.starts_with("--")).collect();
    assert_eq!(flags.len(), 6);
    let missing: Vec<&&String> =
        flags.iter().filter(|f| !help.contains(&format!("{f} ")) && !help.contains(&format!("{f}\n"))).collect();
    assert!(missing.is_empty(), "`podmesh control` has no {missing:?}:\n{help}");
    // Its ports are the container's and the Service's.
    let ports: Vec<(String, u64)> = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_string(), p["containerPort"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        ports,
        [("grpc-xds".to_string(), 15012), ("http-monitoring".into(), 15014), ("https-webhook".into(), 15017)]
    );
    let service = find(&docs, "Service podmesh-system/podmesh-control");
    assert_eq!(
        service["spec"]["ports"],
        json!([{"name": "grpc-xds", "port": 15012, "targetPort": 15012},
               {"name": "http-monitoring", "port": 15014, "targetPort": 15014},
               {"name": "https-webhook", "port": 443, "targetPort": 15017}])
    );
    assert_eq!(container["readinessProbe"]["httpGet"], json!({"path": "/ready", "port": 15014}));
}

// ------------------------------------------------------------------------------------------------ --apply

/// Without the `kube` feature there is no Kubernetes client: `--apply` says so and fails.
#[cfg(not(feature = "kube"))]
#[test]
fn apply_needs_the_kube_feature() {
    let state = TempDir::with_fixture("apply-no-kube");
    let out = podmesh(&["install", "--state", path(&state.0), "--apply"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && out.stdout.is_empty(), "{stderr}");
    assert!(stderr.contains("this podmesh was built without the `kube` feature"), "{stderr}");
}

#[cfg(feature = "kube")]
mod apply {
    use podmesh_testkit::kube_api::{FakeApi, Recorded};

    use super::*;

    /// The fake API server (`podmesh_testkit::kube_api`) on a runtime of its own, which lives as long as it.
    struct Api {
        api: FakeApi,
        _runtime: tokio::runtime::Runtime,
    }

    impl Api {
        /// A server holding `objects` (by path); every other object is absent, and every PATCH answered with
        /// the object sent, as a server-side apply is.
        fn start(objects: BTreeMap<String, Value>) -> Api {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
            let answers = objects.into_iter().map(|(path, v)| (path, vec![(200, v.to_string())])).collect();
            let api = runtime.block_on(FakeApi::start(answers));
            api.objects_absent();
            Api { api, _runtime: runtime }
        }

        /// A kubeconfig file in `dir` whose context `fake` is this server.
        fn kubeconfig(&self, dir: &Path) -> PathBuf {
            let file = dir.join("kubeconfig");
            std::fs::write(&file, self.api.kubeconfig()).unwrap();
            file
        }
    }

    #[test]
    fn apply_applies_every_object_and_keeps_the_running_ca() {
        let state = TempDir::with_fixture("apply");
        let printed = documents(&install(&["--state", path(&state.0), "--image", "podmesh:test"]));

        // A cluster where podmesh runs already, with another CA, and where Istio installed its VirtualService CRD.
        let running_root = "-----BEGIN CERTIFICATE-----\nthe running root\n-----END CERTIFICATE-----\n";
        let b64 = |s: &str| serde_json::to_value(k8s_openapi::ByteString(s.as_bytes().to_vec())).unwrap();
        let running = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "podmesh-ca", "namespace": "podmesh-system"}, "type": "Opaque",
            "data": {"root.pem": b64(running_root), "root-key.pem": b64("its key"),
                     "token-key": b64("its token key")}});
        let istio_vs = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "virtualservices.networking.istio.io", "labels": {"app": "istio-pilot"}}});
        let secret_path = "/api/v1/namespaces/podmesh-system/secrets/podmesh-ca";
        let vs_path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/virtualservices.networking.istio.io";
        let api = Api::start(BTreeMap::from([(secret_path.to_string(), running), (vs_path.to_string(), istio_vs)]));
        let tmp = TempDir::new("apply-kubeconfig");
        let config = api.kubeconfig(&tmp.0);

        let out = podmesh_with(
            &["install", "--state", path(&state.0), "--image", "podmesh:test", "--apply", "--context", "fake"],
            &[("KUBECONFIG", path(&config)), ("HOME", path(&tmp.0))],
        );
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{stderr}");
        assert!(stderr.contains("holds another CA than"), "{stderr}");
        assert_eq!(
            stdout.lines().collect::<Vec<_>>(),
            [
                "left alone: CustomResourceDefinition virtualservices.networking.istio.io (installed by someone else)",
                "created CustomResourceDefinition destinationrules.networking.istio.io",
                "created CustomResourceDefinition peerauthentications.security.istio.io",
                "created Namespace podmesh-system",
                "created ServiceAccount podmesh-system/podmesh-control",
                "created ClusterRole podmesh-control",
                "created ClusterRoleBinding podmesh-control",
                "left alone: Secret podmesh-system/podmesh-ca (exists: the running CA's keys are kept)",
                "created Deployment podmesh-system/podmesh-control",
                "created Service podmesh-system/podmesh-control",
                "created MutatingWebhookConfiguration podmesh-sidecar-injector",
            ]
        );
        let patches: Vec<Recorded> = api.api.recorded().into_iter().filter(|r| r.method == "PATCH").collect();
        assert_eq!(patches.len(), printed.len() - 2, "{patches:#?}");
        for p in &patches {
            let (path, query) = p.target.split_once('?').unwrap();
            assert!(query.contains("fieldManager=podmesh-install") && query.contains("force=true"), "{p:?}");
            assert!(path != secret_path && path != vs_path, "{p:?}");
        }
        // What was applied is what is printed, but for the webhook, which trusts the running root.
        for p in &patches {
            let body: Value = serde_json::from_str(&p.body).unwrap();
            let name = body["metadata"]["name"].as_str().unwrap();
            let same =
                printed.iter().find(|(_, v)| v["kind"] == body["kind"] && v["metadata"]["name"] == name).unwrap();
            if body["kind"] == "MutatingWebhookConfiguration" {
                assert_eq!(body["webhooks"][0]["clientConfig"]["caBundle"], b64(running_root));
                let mut expected = same.1.clone();
                expected["webhooks"][0]["clientConfig"]["caBundle"] = b64(running_root);
                assert_eq!(body, expected);
            } else {
                assert_eq!(&body, &same.1, "{}", same.0);
            }
        }
    }

    #[test]
    fn apply_without_a_cluster_fails_and_says_why() {
        let state = TempDir::with_fixture("apply-nowhere");
        let tmp = TempDir::new("apply-nowhere-home");
        let missing = tmp.0.join("no-such-kubeconfig");
        let out = podmesh_with(
            &["install", "--state", path(&state.0), "--apply", "--context", "fake"],
            &[("KUBECONFIG", path(&missing)), ("HOME", path(&tmp.0))],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && out.stdout.is_empty(), "{stderr}");
        assert!(stderr.contains("kubeconfig"), "{stderr}");
    }
}

/// The image's default user is not the sidecar's uid: the capture rules let uid 1337's traffic out uncaptured, so
/// an application container of the image (the quickstart's `podmesh echo`, `kubectl exec … curl`) running as it
/// would bypass its sidecar.
#[test]
fn the_image_does_not_run_applications_as_the_sidecar_s_uid() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let users: Vec<&str> = dockerfile.lines().filter_map(|l| l.trim().strip_prefix("USER ")).collect();
    assert_eq!(users.len(), 1, "{users:?}");
    let uid: u64 = users[0].split(':').next().unwrap().trim().parse().unwrap();
    assert_ne!(uid, podmesh_inject::PROXY_UID);
    assert_ne!(uid, 0);
}
