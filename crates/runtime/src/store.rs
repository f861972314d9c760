//! The local cluster's object store: what `podmesh up` keeps of the manifests applied to it, the way the API
//! server keeps what `kubectl apply`, `kubectl delete -f` and `kubectl scale` did.
//!
//! The runtime does not patch a running cluster object by object: each apply, delete or scale changes the store,
//! and the cluster is rebuilt by loading the store's [`Store::sources`] with [`podmesh_model::load`], so it is
//! validated, expanded and addressed exactly as `podmesh check` would read the same manifests from files. Objects
//! are kept by their identity ("Kind namespace/name", as [`podmesh_model::objects`] names them) with the file they
//! were last applied from, so a rebuilt cluster's diagnostics still name the user's file.

use std::collections::{BTreeMap, HashMap};

use podmesh_model::Source;
use serde_json::Value;

/// The applied objects: by key ("Kind namespace/name", "Kind name" for cluster-scoped kinds), the name of the file
/// each was last applied from and its content as written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Store {
    objects: BTreeMap<String, (String, Value)>,
}

impl Store {
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates or replaces every object of the file `name` (JSON when the name ends with `.json`, else YAML), as
    /// `kubectl apply -f` does; objects applied before and missing from this file stay. Returns the keys of the
    /// objects created or changed, in the file's order: an object applied again as it was, from the same file, is
    /// not listed; one applied unchanged from another file is, since its origin changed. Documents that do not
    /// parse or name no kind and name are not stored (loading the file reports them).
    pub fn apply(&mut self, name: &str, text: &str) -> Vec<String> {
        let objects = podmesh_model::objects(text, name.ends_with(".json"));
        // An object written twice in one file is its last version, as loading would take it.
        let last: HashMap<&str, usize> = objects.iter().enumerate().map(|(i, (key, _))| (key.as_str(), i)).collect();
        let keep: Vec<bool> =
            objects.iter().enumerate().map(|(i, (key, _))| last.get(key.as_str()) == Some(&i)).collect();
        let mut changed = Vec::new();
        for ((key, object), keep) in objects.into_iter().zip(keep) {
            if !keep {
                continue;
            }
            let entry = (name.to_string(), object);
            if self.objects.get(&key) != Some(&entry) {
                self.objects.insert(key.clone(), entry);
                changed.push(key);
            }
        }
        changed
    }

    /// Removes the objects `text` names (by key, whatever their content and the file they came from), as
    /// `kubectl delete -f` does. Returns the keys removed; objects not in the store are skipped.
    pub fn delete(&mut self, text: &str, json: bool) -> Vec<String> {
        podmesh_model::objects(text, json)
            .into_iter()
            .filter_map(|(key, _)| self.objects.remove(&key).map(|_| key))
            .collect()
    }

    /// Sets a Deployment's or StatefulSet's `spec.replicas`, as `kubectl scale` does. `kind` is any of kubectl's
    /// names for the two, in any case (`deployment`, `deployments`, `deploy`, `statefulset`, `statefulsets`, `sts`).
    /// The error names what is missing and what there is instead.
    pub fn scale(&mut self, kind: &str, namespace: &str, name: &str, replicas: u32) -> Result<(), String> {
        let kind = scalable(kind)?;
        if i64::from(replicas) > podmesh_model::MAX_REPLICAS {
            return Err(format!(
                "cannot scale {kind} {namespace}/{name} to {replicas}: podmesh runs 0 to {} replicas",
                podmesh_model::MAX_REPLICAS
            ));
        }
        let key = format!("{kind} {namespace}/{name}");
        let Some((_, object)) = self.objects.get_mut(&key) else {
            return Err(self.missing(kind, namespace, name));
        };
        let Some(object) = object.as_object_mut() else {
            return Err(format!("{kind} {namespace}/{name} is not a mapping"));
        };
        match object.get_mut("spec") {
            Some(Value::Object(spec)) => {
                spec.insert("replicas".to_string(), Value::from(replicas));
            }
            None | Some(Value::Null) => {
                let spec = serde_json::Map::from_iter([("replicas".to_string(), Value::from(replicas))]);
                object.insert("spec".to_string(), Value::Object(spec));
            }
            Some(_) => return Err(format!("cannot scale {kind} {namespace}/{name}: its spec is not a mapping")),
        }
        Ok(())
    }

    /// A Deployment's or StatefulSet's `spec.replicas` (1 when not written, as Kubernetes defaults it); `None` when
    /// there is no such object or its `spec.replicas` is not a replica count.
    pub fn replicas(&self, kind: &str, namespace: &str, name: &str) -> Option<u32> {
        let kind = scalable(kind).ok()?;
        let (_, object) = self.objects.get(&format!("{kind} {namespace}/{name}"))?;
        match &object["spec"]["replicas"] {
            Value::Null => Some(1),
            n => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        }
    }

    /// The whole store as manifests for [`podmesh_model::load`]: one [`Source::Text`] per file objects were applied
    /// from, named after it, so diagnostics name the user's file (their document numbers and lines are those of
    /// this text, not the original's). YAML files are written as one document per object; JSON files, which hold
    /// one value, as a `kind: List` of their objects.
    pub fn sources(&self) -> Vec<Source> {
        let mut files: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
        for (origin, object) in self.objects.values() {
            files.entry(origin).or_default().push(object);
        }
        files
            .into_iter()
            .map(|(name, objects)| {
                let text = if name.ends_with(".json") {
                    let items: Vec<String> = objects.iter().map(|o| o.to_string()).collect();
                    format!(r#"{{"apiVersion":"v1","kind":"List","items":[{}]}}"#, items.join(","))
                } else {
                    // `yaml::to_string` quotes every string that would read back as anything else ("8080", "true").
                    objects.iter().map(|o| format!("---\n{}", podmesh_model::yaml::to_string(o))).collect()
                };
                Source::Text { name: name.to_string(), text }
            })
            .collect()
    }

    /// The number of objects stored.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Why `kind namespace/name` cannot be scaled: it is not there; these of its kind are.
    fn missing(&self, kind: &str, namespace: &str, name: &str) -> String {
        let prefix = format!("{kind} {namespace}/");
        let names: Vec<&str> = self.objects.keys().filter_map(|k| k.strip_prefix(&prefix)).collect();
        if names.is_empty() {
            format!("no {kind} {namespace}/{name}; no {kind}s in {namespace}")
        } else {
            format!("no {kind} {namespace}/{name}; {kind}s in {namespace}: {}", names.join(", "))
        }
    }
}

/// The kind a `kubectl scale` kind name stands for, as keys name it.
fn scalable(kind: &str) -> Result<&'static str, String> {
    match kind.to_ascii_lowercase().as_str() {
        "deployment" | "deployments" | "deploy" => Ok("Deployment"),
        "statefulset" | "statefulsets" | "sts" => Ok("StatefulSet"),
        _ => Err(format!("cannot scale a {kind:?}: only deployments (deploy) and statefulsets (sts) have replicas")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::collections::BTreeMap;
    use std::net::IpAddr;
    use std::path::PathBuf;

    use podmesh_model::{Cluster, EnvValue, ObjectKey, load};

    use super::*;

    const QUICKSTART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/quickstart");
    const FILES: [&str; 6] = ["00-namespace.yaml", "clients.yaml", "db.yaml", "echo.yaml", "greeter.yaml", "web.yaml"];

    fn read(file: &str) -> String {
        std::fs::read_to_string(format!("{QUICKSTART}/{file}")).unwrap()
    }

    fn quickstart() -> Store {
        let mut store = Store::new();
        for file in FILES {
            assert!(!store.apply(file, &read(file)).is_empty(), "{file}");
        }
        store
    }

    fn cluster(store: &Store) -> Cluster {
        match load(&store.sources()) {
            Ok(loaded) => loaded.cluster,
            Err(e) => panic!("{e}\n{:#?}", store.sources()),
        }
    }

    /// The cluster without where each object was read from: file names, document numbers and lines differ
    /// between the store's text and the files.
    fn without_origins(mut c: Cluster) -> Cluster {
        c.namespaces.values_mut().for_each(|o| o.origin = None);
        c.services.values_mut().for_each(|o| o.origin = None);
        c.pods.values_mut().for_each(|o| o.origin = None);
        c.workloads.values_mut().for_each(|o| o.origin = None);
        c.endpoint_slices.values_mut().for_each(|o| o.origin = None);
        c.virtual_services.values_mut().for_each(|o| o.origin = None);
        c.destination_rules.values_mut().for_each(|o| o.origin = None);
        c.peer_authentications.values_mut().for_each(|o| o.origin = None);
        c
    }

    fn pod_ips(c: &Cluster) -> BTreeMap<ObjectKey, IpAddr> {
        c.pods.iter().map(|(k, p)| (k.clone(), p.ip)).collect()
    }

    fn web_pods(c: &Cluster) -> BTreeMap<ObjectKey, IpAddr> {
        c.pods.iter().filter(|(_, p)| p.workload_name() == "web").map(|(k, p)| (k.clone(), p.ip)).collect()
    }

    #[test]
    fn the_store_loads_as_the_directory_does() {
        let direct = load(&[Source::Path(PathBuf::from(QUICKSTART))]).unwrap().cluster;
        let store = quickstart();
        let rebuilt = cluster(&store);
        assert!(direct.pods.len() >= 9, "{:?}", direct.pods.keys());
        assert_eq!(pod_ips(&rebuilt), pod_ips(&direct));
        let service_ips = |c: &Cluster| c.services.iter().map(|(k, s)| (k.clone(), s.cluster_ips.clone())).collect();
        let (got, want): (BTreeMap<_, _>, BTreeMap<_, _>) = (service_ips(&rebuilt), service_ips(&direct));
        assert_eq!(got, want);
        assert_eq!(without_origins(rebuilt.clone()), without_origins(direct));
        // Each object still names the file it was applied from.
        let web = rebuilt.services.get(&ObjectKey::new("shop", "web")).unwrap();
        assert_eq!(web.origin.as_ref().map(|o| &*o.file), Some("web.yaml"));
        assert_eq!(store.sources().len(), FILES.len());
        assert_eq!(store.len(), 12);
        assert!(!store.is_empty() && Store::new().is_empty());
    }

    #[test]
    fn applying_again_changes_nothing() {
        let mut store = Store::new();
        let web = read("web.yaml");
        assert_eq!(store.apply("web.yaml", &web), ["Deployment shop/web", "Service shop/web"]);
        assert!(store.apply("web.yaml", &web).is_empty());
        let edited = web.replace("replicas: 2", "replicas: 4");
        assert_eq!(store.apply("web.yaml", &edited), ["Deployment shop/web"]);
        assert_eq!(store.replicas("deployment", "shop", "web"), Some(4));
        // The same objects from another file have a new origin.
        assert_eq!(store.apply("copy.yaml", &edited).len(), 2);
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn scaling_adds_pods_and_keeps_the_existing_ones() {
        let mut store = quickstart();
        let before = web_pods(&cluster(&store));
        assert_eq!(before.len(), 2);
        store.scale("Deploy", "shop", "web", 3).unwrap();
        assert_eq!(store.replicas("deployments", "shop", "web"), Some(3));
        let after = web_pods(&cluster(&store));
        assert_eq!(after.len(), 3, "{after:?}");
        for (pod, ip) in &before {
            assert_eq!(after.get(pod), Some(ip), "{pod}");
        }
        // A StatefulSet scales down to its first ordinals.
        store.scale("STS", "shop", "db", 1).unwrap();
        let c = cluster(&store);
        let db: Vec<&str> =
            c.pods.values().filter(|p| p.workload_name() == "db").map(|p| &*p.key.name).collect::<Vec<_>>();
        assert_eq!(db, ["db-0"]);
        assert_eq!(store.replicas("statefulset", "shop", "db"), Some(1));
    }

    #[test]
    fn scaling_a_workload_without_spec_or_replicas() {
        let mut store = Store::new();
        let bare = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: bare}\n";
        store.apply("bare.yaml", bare);
        assert_eq!(store.replicas("deployment", "default", "bare"), Some(1));
        store.scale("deployment", "default", "bare", 0).unwrap();
        assert_eq!(store.replicas("deployment", "default", "bare"), Some(0));
    }

    #[test]
    fn deleting_a_file_removes_its_objects() {
        let mut store = quickstart();
        let web = read("web.yaml");
        assert_eq!(store.delete(&web, false), ["Deployment shop/web", "Service shop/web"]);
        let c = cluster(&store);
        assert!(web_pods(&c).is_empty());
        assert!(!c.services.contains_key(&ObjectKey::new("shop", "web")));
        assert!(c.services.contains_key(&ObjectKey::new("shop", "echo")));
        assert!(store.delete(&web, false).is_empty());
        assert_eq!(store.sources().len(), FILES.len() - 1);
    }

    #[test]
    fn scale_errors_name_what_is_missing() {
        let mut store = quickstart();
        let err = store.scale("deployment", "shop", "nope", 3).unwrap_err();
        assert_eq!(err, "no Deployment shop/nope; Deployments in shop: echo, greeter, web");
        let err = store.scale("sts", "shop", "web", 3).unwrap_err();
        assert_eq!(err, "no StatefulSet shop/web; StatefulSets in shop: db");
        let err = store.scale("deploy", "default", "web", 3).unwrap_err();
        assert_eq!(err, "no Deployment default/web; no Deployments in default");
        let err = store.scale("service", "shop", "web", 3).unwrap_err();
        assert!(err.contains("cannot scale a \"service\""), "{err}");
        let err = store.scale("deploy", "shop", "web", 1_000_000).unwrap_err();
        assert!(err.contains("0 to 10000 replicas"), "{err}");
        assert_eq!(store.replicas("deploy", "shop", "web"), Some(2));
        assert_eq!(store.replicas("deploy", "shop", "nope"), None);
        assert_eq!(store.replicas("service", "shop", "web"), None);
    }

    /// Strings that look like numbers, booleans or null stay strings; numbers and booleans stay what they are.
    #[test]
    fn strings_numbers_and_booleans_round_trip() {
        let yaml = r##"
apiVersion: v1
kind: Pod
metadata:
  name: typed
  labels: {port: "8080", bool: "true", none: "null", yes-no: "yes", hex: "0x1F", float: "1.5", exp: "1e3",
           octal: "010", empty: "", date: "2001-12-14"}
  annotations: {"8080": "80", tilde: "~", dash: "-", colon: "a: b", lead: " x", multi: "a\n---\nb", hash: "# x"}
spec:
  containers:
    - name: app
      command: ["podmesh", "echo", "--http", "8080"]
      env:
        - {name: PORT, value: "8080"}
        - {name: DEBUG, value: "true"}
        - {name: MODE, value: "off"}
      ports:
        - {name: http, containerPort: 8080}
---
apiVersion: example.com/v1
kind: Widget
metadata: {name: w, namespace: shop}
spec: {count: 3, ratio: 0.5, big: 12345678901234567890, neg: -1, enabled: true, off: false, nothing: null,
       text: "3", list: [1, "1", true, "true", null, "null"], nested: {"---": "...", "#": "# x"}}
"##;
        let json = r#"{"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "j", "labels": {"v": "1", "b": "false"}},
             "spec": {"containers": [{"name": "c", "command": ["x"], "env": [{"name": "N", "value": "42"}]}]}}]}"#;
        let mut store = Store::new();
        assert_eq!(store.apply("typed.yaml", yaml).len(), 2);
        assert_eq!(store.apply("list.json", json), ["Pod default/j"]);

        // What the store writes reads back as the very values stored.
        let mut read_back = Store::new();
        for source in store.sources() {
            let Source::Text { name, text } = source else { panic!("not text") };
            read_back.apply(&name, &text);
        }
        assert_eq!(read_back, store);
        let pod = &store.objects["Pod default/typed"].1;
        assert_eq!(pod["metadata"]["labels"]["port"], Value::from("8080"));
        assert_eq!(pod["spec"]["containers"][0]["ports"][0]["containerPort"], Value::from(8080));
        let widget = &store.objects["Widget shop/w"].1;
        assert_eq!(widget["spec"]["enabled"], Value::Bool(true));
        assert_eq!(widget["spec"]["text"], Value::from("3"));

        // And loads as the typed cluster.
        let c = load(&store.sources()).unwrap().cluster;
        let typed = &c.pods[&ObjectKey::new("default", "typed")];
        assert_eq!(typed.labels.get("port").map(String::as_str), Some("8080"));
        assert_eq!(typed.labels.get("bool").map(String::as_str), Some("true"));
        assert_eq!(typed.labels.get("none").map(String::as_str), Some("null"));
        assert_eq!(typed.annotations.get("8080").map(String::as_str), Some("80"));
        assert_eq!(typed.annotations.get("multi").map(String::as_str), Some("a\n---\nb"));
        let env: Vec<_> = typed.containers[0].env.iter().map(|e| (e.name.as_str(), e.value.clone())).collect();
        let value = |s: &str| EnvValue::Value(s.to_string());
        assert_eq!(env, [("PORT", value("8080")), ("DEBUG", value("true")), ("MODE", value("off"))]);
        assert_eq!(typed.containers[0].command, ["podmesh", "echo", "--http", "8080"]);
        let j = &c.pods[&ObjectKey::new("default", "j")];
        assert_eq!(j.labels.get("b").map(String::as_str), Some("false"));
        assert_eq!(j.containers[0].env[0].value, value("42"));
        assert_eq!(j.origin.as_ref().map(|o| &*o.file), Some("list.json"));
    }
}
