#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! What a pod runs: each container's command and arguments, environment (values and the downward API),
//! readiness probe and volume mounts, and the pod's restart policy and emptyDir volumes. The local runtime
//! (`podmesh up`) runs pods from exactly this. What podmesh cannot provide (Secrets, ConfigMaps, other volume
//! sources, gRPC probes) is a warning that says what happens instead; what Kubernetes would reject is an error
//! naming the file, document and field.

use std::time::Duration;

use podmesh_model::*;

const APP: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web, tier: front}
      annotations: {owner: team-a}
    spec:
      volumes:
        - name: scratch
          emptyDir: {}
        - name: settings
          configMap: {name: web-settings}
      containers:
        - name: app
          command: [podmesh, echo]
          args: ["--port=$(PORT)", "--name=$(POD_NAME)", "$$(LITERAL)"]
          ports: [{name: http, containerPort: 8080}]
          env:
            - {name: PORT, value: "8080"}
            - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
            - {name: POD_NS, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
            - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
            - {name: NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
            - {name: SA, valueFrom: {fieldRef: {fieldPath: spec.serviceAccountName}}}
            - {name: TIER, valueFrom: {fieldRef: {fieldPath: "metadata.labels['tier']"}}}
            - {name: OWNER, valueFrom: {fieldRef: {fieldPath: "metadata.annotations['owner']"}}}
            - {name: PASSWORD, valueFrom: {secretKeyRef: {name: db, key: password}}}
            - {name: EMPTY}
          readinessProbe:
            httpGet: {path: /ready, port: http}
            periodSeconds: 2
            failureThreshold: 1
          volumeMounts:
            - {name: scratch, mountPath: /var/scratch}
            - {name: settings, mountPath: /etc/web}
        - name: helper
          command: [sh, -c, "sleep 1000"]
          readinessProbe:
            tcpSocket: {port: 9000}
        - name: checker
          command: [sh]
          readinessProbe:
            exec: {command: [test, -f, /tmp/ready]}
            initialDelaySeconds: 3
            timeoutSeconds: 5
            successThreshold: 2
        - name: grpc
          command: [sh]
          readinessProbe:
            grpc: {port: 50051}
"#;

fn load_one(text: &str) -> Loaded {
    match load_str(&[("app.yaml", text)]) {
        Ok(l) => l,
        Err(e) => panic!("expected to load, got:\n{e}"),
    }
}

fn errors(text: &str) -> Vec<Diagnostic> {
    match load_str(&[("app.yaml", text)]) {
        Ok(l) => panic!("expected errors, but it loaded (warnings: {:#?})", l.warnings),
        Err(e) => e.errors().cloned().collect(),
    }
}

#[test]
fn a_container_keeps_its_command_environment_probe_and_mounts_as_written() {
    let loaded = load_one(APP);
    let pod = loaded.cluster.pods.values().next().expect("the Deployment's pod");
    assert_eq!(pod.restart_policy, RestartPolicy::Always);
    assert_eq!(pod.volumes, vec!["scratch".to_string()]);
    let app = &pod.containers[0];
    assert_eq!(app.command, ["podmesh", "echo"]);
    // `$(VAR)` references are kept for the runtime to expand, as the kubelet does.
    assert_eq!(app.args, ["--port=$(PORT)", "--name=$(POD_NAME)", "$$(LITERAL)"]);
    let env: Vec<(&str, &EnvValue)> = app.env.iter().map(|e| (e.name.as_str(), &e.value)).collect();
    assert_eq!(
        env,
        [
            ("PORT", &EnvValue::Value("8080".into())),
            ("POD_NAME", &EnvValue::Field(PodField::Name)),
            ("POD_NS", &EnvValue::Field(PodField::Namespace)),
            ("POD_IP", &EnvValue::Field(PodField::PodIp)),
            ("NODE", &EnvValue::Field(PodField::NodeName)),
            ("SA", &EnvValue::Field(PodField::ServiceAccountName)),
            ("TIER", &EnvValue::Field(PodField::Label("tier".into()))),
            ("OWNER", &EnvValue::Field(PodField::Annotation("owner".into()))),
            // PASSWORD comes from a Secret, which podmesh does not have: left unset (and reported).
            ("EMPTY", &EnvValue::Value(String::new())),
        ]
    );
    let http = Probe {
        action: ProbeAction::HttpGet {
            path: "/ready".into(),
            port: TargetPortRef::Name("http".into()),
            https: false,
            headers: vec![],
        },
        initial_delay: Duration::ZERO,
        period: Duration::from_secs(2),
        timeout: Duration::from_secs(1),
        success_threshold: 1,
        failure_threshold: 1,
    };
    assert_eq!(app.readiness, Some(http));
    // Only the emptyDir volume is mounted.
    assert_eq!(app.mounts, [VolumeMount { volume: "scratch".into(), path: "/var/scratch".into(), read_only: false }]);

    let tcp = pod.containers[1].readiness.as_ref().unwrap();
    assert_eq!(tcp.action, ProbeAction::TcpSocket { port: TargetPortRef::Number(TargetPort(9000)) });
    assert_eq!(
        (tcp.period, tcp.timeout, tcp.success_threshold, tcp.failure_threshold),
        (Duration::from_secs(10), Duration::from_secs(1), 1, 3)
    );
    let exec = pod.containers[2].readiness.as_ref().unwrap();
    assert_eq!(exec.action, ProbeAction::Exec { command: vec!["test".into(), "-f".into(), "/tmp/ready".into()] });
    assert_eq!(
        (exec.initial_delay, exec.timeout, exec.success_threshold),
        (Duration::from_secs(3), Duration::from_secs(5), 2)
    );
    assert_eq!(pod.containers[3].readiness, None);

    // What podmesh cannot provide is said, with the field.
    let warned: Vec<(&str, &str)> =
        loaded.warnings.iter().map(|d| (d.field.as_deref().unwrap_or_default(), d.message.as_str())).collect();
    let said = |field: &str, words: &str| {
        assert!(
            warned.iter().any(|(f, m)| *f == field && m.contains(words)),
            "no warning at {field} saying {words:?}: {warned:#?}"
        );
    };
    said("spec.template.spec.containers[0].env[8].valueFrom.secretKeyRef", "PASSWORD is left unset");
    said("spec.template.spec.volumes[1].configMap", "\"settings\" is not mounted");
    said("spec.template.spec.containers[3].readinessProbe.grpc", "counts as ready");
}

#[test]
fn a_pod_without_these_fields_runs_nothing_and_restarts_always() {
    let loaded =
        load_one("apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: ns}\nspec: {containers: [{name: c}]}\n");
    let pod = loaded.cluster.pods.values().next().unwrap();
    assert_eq!(pod.restart_policy, RestartPolicy::Always);
    assert!(pod.volumes.is_empty());
    assert_eq!(pod.containers[0], Container { name: "c".into(), ..Container::default() });
    let never = load_one(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: ns}\nspec: {restartPolicy: Never, containers: [{name: c}]}\n",
    );
    assert_eq!(never.cluster.pods.values().next().unwrap().restart_policy, RestartPolicy::Never);
}

/// Each invalid field is an error naming the file, document and field path, all reported at once.
#[test]
fn what_kubernetes_would_reject_is_an_error_naming_the_field() {
    let text = r#"
apiVersion: v1
kind: Pod
metadata: {name: bad, namespace: ns}
spec:
  restartPolicy: Sometimes
  volumes: [{name: data, emptyDir: {}}, {name: data, emptyDir: {}}, {emptyDir: {}}]
  containers:
    - name: c
      command: [sh]
      env:
        - {name: A, value: x, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        - {name: B, valueFrom: {fieldRef: {fieldPath: metadata.uid}}}
        - {value: nameless}
        - {name: "C=D", value: x}
        - {name: E, valueFrom: {}}
      readinessProbe:
        httpGet: {port: 80}
        tcpSocket: {port: 80}
      volumeMounts:
        - {name: data, mountPath: relative/path}
        - {name: nothing, mountPath: /x}
        - {name: data}
    - name: d
      readinessProbe:
        tcpSocket: {port: 0}
    - name: e
      readinessProbe:
        httpGet: {port: http, scheme: FTP}
    - name: f
      readinessProbe:
        exec: {command: []}
    - name: g
      readinessProbe:
        tcpSocket: {port: 80}
        periodSeconds: 0
"#;
    let errs = errors(text);
    let c = "spec.containers[0].";
    let want = [
        ("spec.restartPolicy", "not Always, OnFailure or Never"),
        ("spec.volumes[1].name", "declared twice"),
        ("spec.volumes[2].name", "missing"),
        (&format!("{c}env[0].valueFrom") as &str, "together with value"),
        (&format!("{c}env[1].valueFrom.fieldRef.fieldPath"), "\"metadata.uid\" is not a field"),
        (&format!("{c}env[2].name"), "missing"),
        (&format!("{c}env[3].name"), "not a variable name"),
        (&format!("{c}env[4].valueFrom"), "exactly one source"),
        (&format!("{c}readinessProbe.httpGet"), "exactly one of"),
        (&format!("{c}volumeMounts[0].mountPath"), "not an absolute path"),
        (&format!("{c}volumeMounts[1].name"), "not one of the pod's volumes"),
        (&format!("{c}volumeMounts[2].mountPath"), "missing"),
        ("spec.containers[1].readinessProbe.tcpSocket.port", "0 is not a port"),
        ("spec.containers[2].readinessProbe.httpGet.scheme", "not HTTP or HTTPS"),
        ("spec.containers[3].readinessProbe.exec.command", "missing"),
        ("spec.containers[4].readinessProbe.periodSeconds", "out of range"),
    ];
    for (field, words) in want {
        let d = errs.iter().find(|d| d.field.as_deref() == Some(field)).unwrap_or_else(|| {
            panic!("no error at {field}; got:\n{}", errs.iter().map(|d| format!("{d}\n")).collect::<String>())
        });
        assert!(d.message.contains(words), "{d} lacks {words:?}");
        assert_eq!(d.origin.as_ref().map(ToString::to_string).as_deref(), Some("app.yaml: document 1 (line 1)"));
        assert_eq!(d.object.as_ref().map(ToString::to_string).as_deref(), Some("Pod ns/bad"));
    }
    assert_eq!(errs.len(), want.len(), "{}", errs.iter().map(|d| format!("{d}\n")).collect::<String>());
}

#[test]
fn a_workloads_pods_always_restart() {
    let text = APP.replace("    spec:\n      volumes:", "    spec:\n      restartPolicy: Never\n      volumes:");
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(errs[0].field.as_deref(), Some("spec.template.spec.restartPolicy"));
    assert!(errs[0].message.contains("only Always"), "{}", errs[0]);
}

#[test]
fn a_statefulsets_pod_management_policy_is_kept_and_checked() {
    let set = |policy: &str| {
        format!(
            "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: kv, namespace: store}}\nspec:\n  serviceName: kv\n  \
             {policy}replicas: 2\n  selector: {{matchLabels: {{app: kv}}}}\n  template:\n    metadata: {{labels: {{app: kv}}}}\n    \
             spec: {{containers: [{{name: kv, command: [sh]}}]}}\n"
        )
    };
    let policy_of = |text: &str| load_one(text).cluster.workloads.values().next().unwrap().pod_management;
    assert_eq!(policy_of(&set("")), PodManagement::OrderedReady);
    assert_eq!(policy_of(&set("podManagementPolicy: OrderedReady\n  ")), PodManagement::OrderedReady);
    assert_eq!(policy_of(&set("podManagementPolicy: Parallel\n  ")), PodManagement::Parallel);
    let errs = errors(&set("podManagementPolicy: Sometimes\n  "));
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(errs[0].field.as_deref(), Some("spec.podManagementPolicy"));
    assert!(errs[0].message.contains("not OrderedReady or Parallel"), "{}", errs[0]);
}
