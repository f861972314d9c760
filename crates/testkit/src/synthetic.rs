//! A synthetic cluster for benchmarks: `namespaces` × `services_per_ns` Services of mixed shapes (HTTP, HTTP+TCP,
//! detected, gRPC, headless StatefulSets), their Deployments of 10 replicas (two Deployments and subsets where a
//! VirtualService routes), DestinationRules, PeerAuthentications, a few plain workloads — generated as YAML text,
//! so benchmarks measure the real parse path. At full scale (100 × 100) it is 10,000 Services and 100,000 pods.
//! The route crate's scale benchmark checks explanations against the plan; the control plane's benchmark serves it.

use std::fmt::Write as _;

use podmesh_model::ObjectKey;

/// At full scale: 100 namespaces of 100 Services, 10 replicas each.
pub const FULL_NAMESPACES: usize = 100;
pub const FULL_SERVICES: usize = 10_000;
pub const REPLICAS: u32 = 10;

// ---------------------------------------------------------------- the synthetic cluster

/// What a Service looks like; chosen by its index in the namespace, so every namespace has the same mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Port 80 → 8080, HTTP (by port name, or appProtocol).
    Http,
    /// Port 80 → 8080 HTTP, and port 7000 TCP (name `tcp-stream`).
    HttpTcp,
    /// Port 9000, no name, no appProtocol: detected per connection (R1.3).
    Auto,
    /// Port 50051 named `grpc`: HTTP/2.
    Grpc,
    /// Headless (clusterIP: None), StatefulSet-backed: 8080 http, 5000 tcp.
    Headless,
}

pub fn shape(i: usize) -> Shape {
    match i % 20 {
        9 | 19 => Shape::Headless,         // 10%
        3 | 6 | 13 | 16 => Shape::HttpTcp, // 20%
        4 => Shape::Auto,                  // 5%
        14 => Shape::Grpc,                 // 5%
        _ => Shape::Http,                  // 60%
    }
}

#[derive(Debug, Clone)]
pub struct VsPlan {
    /// Whether the VirtualService ends with a route without match; without it, unmatched requests are no_route.
    pub default_route: bool,
    /// An extra literal host routed by the VirtualService.
    pub literal_host: Option<String>,
    /// The `api` route matches a regex rather than a prefix.
    pub regex: bool,
}

#[derive(Debug, Clone)]
pub struct SvcPlan {
    pub key: ObjectKey,
    pub ns_index: usize,
    pub shape: Shape,
    /// A VirtualService + DestinationRule (subsets v1/v2) route it; its pods come from two Deployments.
    pub vs: Option<VsPlan>,
    /// Its pods have no sidecar.
    pub plain: bool,
    /// A workload PeerAuthentication selects its pods: (mode, a target port, that port's mode).
    pub workload_pa: Option<(&'static str, u16, &'static str)>,
}

impl SvcPlan {
    pub fn strict_ns(&self) -> bool {
        self.ns_index.is_multiple_of(2)
    }
    pub fn short(&self) -> String {
        format!("{}.{}", self.key.name, self.key.namespace)
    }
}

pub const WORDS: [&str; 20] = [
    "cart",
    "checkout",
    "catalog",
    "payments",
    "users",
    "search",
    "ads",
    "reviews",
    "ledger",
    "orders",
    "shipping",
    "inventory",
    "email",
    "auth",
    "pricing",
    "recs",
    "media",
    "profile",
    "billing",
    "quotes",
];

pub fn plan(namespaces: usize, services_per_ns: usize) -> Vec<SvcPlan> {
    let mut out = Vec::with_capacity(namespaces * services_per_ns);
    for n in 0..namespaces {
        let ns = format!("team-{n:03}");
        for i in 0..services_per_ns {
            let shape = shape(i);
            let name = format!("{}-{i:03}", WORDS[i % WORDS.len()]);
            let vs = (shape == Shape::Http && i % 30 == 1).then(|| VsPlan {
                default_route: (i / 30) % 4 != 0,
                literal_host: ((i / 30) % 4 == 1).then(|| format!("{name}.{ns}.example.com")),
                regex: (i / 30) % 4 == 2,
            });
            let plain = shape == Shape::Http && vs.is_none() && i % 50 == 27;
            let workload_pa = match (i % 25 == 9, shape) {
                (true, Shape::Headless) => Some(("STRICT", 5000, "PERMISSIVE")),
                (true, Shape::Grpc) => Some(("STRICT", 50051, "PERMISSIVE")),
                (true, Shape::Auto) => Some(("PERMISSIVE", 9000, "DISABLE")),
                _ => None,
            };
            out.push(SvcPlan { key: ObjectKey::new(ns.clone(), name), ns_index: n, shape, vs, plain, workload_pa });
        }
    }
    out
}

/// Appends one `---` document.
macro_rules! doc {
    ($out:expr, $docs:expr, $($arg:tt)*) => {{
        $out.push_str("---\n");
        let _ = write!($out, $($arg)*);
        *$docs += 1;
    }};
}

pub fn mesh_yaml(docs: &mut usize) -> String {
    let mut s = String::new();
    doc!(
        s,
        docs,
        "apiVersion: podmesh.io/v1alpha1
kind: MeshConfig
metadata:
  name: mesh
spec:
  # 100,000 pods do not fit the default /16.
  podCIDR: 10.128.0.0/14
  serviceCIDR: 10.96.0.0/12
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: podmesh-system
spec:
  mtls:
    mode: PERMISSIVE
"
    );
    *docs += 1;
    s
}

pub fn namespace_yaml(n: usize, plans: &[SvcPlan], docs: &mut usize) -> String {
    let ns = format!("team-{n:03}");
    let mut s = String::with_capacity(plans.len() * 2600);
    let mode = if n.is_multiple_of(2) { "STRICT" } else { "PERMISSIVE" };
    doc!(
        s,
        docs,
        "# Namespace {ns}: {} Services.
apiVersion: v1
kind: Namespace
metadata:
  name: {ns}
  labels:
    team: {ns}
    environment: production
",
        plans.len()
    );
    doc!(
        s,
        docs,
        "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: {ns}
spec:
  mtls:
    mode: {mode}
"
    );
    for p in plans {
        service_yaml(&mut s, docs, p);
    }
    s
}

pub fn service_yaml(s: &mut String, docs: &mut usize, p: &SvcPlan) {
    let (ns, name) = (&p.key.namespace, &p.key.name);
    let i: usize = name.rsplit('-').next().and_then(|x| x.parse().ok()).unwrap_or(0);
    // The Service.
    let cluster_ip = if p.shape == Shape::Headless { "  clusterIP: None\n" } else { "" };
    let ports = match p.shape {
        // Alternate a numeric and a named targetPort, and port-name vs appProtocol declarations.
        Shape::Http if i.is_multiple_of(2) => "    - name: http\n      port: 80\n      targetPort: 8080\n".to_string(),
        Shape::Http => "    - name: web\n      port: 80\n      targetPort: http\n      appProtocol: http\n".to_string(),
        Shape::HttpTcp => "    - name: http\n      port: 80\n      targetPort: 8080\n      appProtocol: http
    - name: tcp-stream\n      port: 7000\n      targetPort: 7000\n"
            .to_string(),
        Shape::Auto => "    - port: 9000\n".to_string(),
        Shape::Grpc => "    - name: grpc\n      port: 50051\n      targetPort: grpc\n".to_string(),
        Shape::Headless => "    - name: http\n      port: 8080\n      appProtocol: http
    - name: tcp\n      port: 5000\n      appProtocol: tcp\n"
            .to_string(),
    };
    doc!(
        s,
        docs,
        "apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: {ns}
  labels:
    app: {name}
    team: {ns}
spec:
{cluster_ip}  selector:
    app: {name}
  ports:
{ports}"
    );
    // Its workloads.
    let container_ports = match p.shape {
        Shape::Http | Shape::HttpTcp => {
            let mut c = "            - name: http\n              containerPort: 8080\n".to_string();
            if p.shape == Shape::HttpTcp {
                c.push_str("            - name: stream\n              containerPort: 7000\n");
            }
            c
        }
        Shape::Auto => "            - containerPort: 9000\n".to_string(),
        Shape::Grpc => "            - name: grpc\n              containerPort: 50051\n".to_string(),
        Shape::Headless => "            - name: http\n              containerPort: 8080
            - name: tcp\n              containerPort: 5000\n"
            .to_string(),
    };
    let versions: Vec<(&str, u32)> = match &p.vs {
        Some(_) => vec![("v1", REPLICAS * 8 / 10), ("v2", REPLICAS - REPLICAS * 8 / 10)],
        None => vec![("v1", REPLICAS)],
    };
    let inject = if p.plain { "        sidecar.podmesh.io/inject: \"false\"\n" } else { "" };
    for (version, replicas) in &versions {
        let (kind, wname, service_name) = match (p.shape, &p.vs) {
            (Shape::Headless, _) => ("StatefulSet", name.to_string(), format!("  serviceName: {name}\n")),
            (_, Some(_)) => ("Deployment", format!("{name}-{version}"), String::new()),
            _ => ("Deployment", name.to_string(), String::new()),
        };
        doc!(
            s,
            docs,
            "apiVersion: apps/v1
kind: {kind}
metadata:
  name: {wname}
  namespace: {ns}
  labels:
    app: {name}
    version: {version}
spec:
{service_name}  replicas: {replicas}
  selector:
    matchLabels:
      app: {name}
      version: {version}
  template:
    metadata:
      labels:
        app: {name}
        version: {version}
        team: {ns}
      annotations:
        prometheus.io/scrape: \"true\"
        prometheus.io/port: \"9090\"
{inject}    spec:
      serviceAccountName: {name}
      containers:
        - name: app
          image: registry.example.com/{ns}/{name}:1.{}.{}
          args: [\"--log-format=json\", \"--metrics=:9090\"]
          env:
            - name: LOG_LEVEL
              value: info
            - name: POD_NAME
              valueFrom:
                fieldRef:
                  fieldPath: metadata.name
          ports:
{container_ports}            - name: metrics
              containerPort: 9090
          resources:
            requests:
              cpu: 100m
              memory: 128Mi
            limits:
              memory: 256Mi
          readinessProbe:
            httpGet:
              path: /healthz
              port: 9090
            periodSeconds: 5
",
            i % 7,
            i % 3
        );
    }
    if let Some(vs) = &p.vs {
        let hosts = match &vs.literal_host {
            Some(h) => format!("    - {name}\n    - {h}\n"),
            None => format!("    - {name}\n"),
        };
        let api_match = if vs.regex {
            "        - uri:\n            regex: \"/api/v[0-9]+/.*\"\n"
        } else {
            "        - uri:\n            prefix: /api/\n"
        };
        let default = if vs.default_route {
            format!(
                "    - name: default\n      route:\n        - destination:\n            host: {name}\n            subset: v1\n"
            )
        } else {
            String::new()
        };
        doc!(
            s,
            docs,
            "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: {name}
  namespace: {ns}
spec:
  hosts:
{hosts}  http:
    - name: canary
      match:
        - headers:
            x-canary:
              exact: \"true\"
      route:
        - destination:
            host: {name}
            subset: v2
    - name: api
      match:
{api_match}      route:
        - destination:
            host: {name}
            subset: v1
          weight: 80
        - destination:
            host: {name}.{ns}.svc.cluster.local
            subset: v2
          weight: 20
      timeout: 5s
      retries:
        attempts: 3
{default}"
        );
        doc!(
            s,
            docs,
            "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: {name}
  namespace: {ns}
spec:
  host: {name}
  subsets:
    - name: v1
      labels:
        version: v1
    - name: v2
      labels:
        version: v2
"
        );
    }
    if let Some((mode, port, port_mode)) = p.workload_pa {
        doc!(
            s,
            docs,
            "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: {name}
  namespace: {ns}
spec:
  selector:
    matchLabels:
      app: {name}
  mtls:
    mode: {mode}
  portLevelMtls:
    {port}:
      mode: {port_mode}
"
        );
    }
}

/// The whole cluster as files, (name, YAML text): the mesh settings first, then one file per namespace of
/// `services_per_ns` plans each; and the number of documents.
pub fn files(plans: &[SvcPlan], services_per_ns: usize) -> (Vec<(String, String)>, usize) {
    let mut docs = 0usize;
    let mut texts: Vec<(String, String)> = vec![("mesh.yaml".into(), mesh_yaml(&mut docs))];
    for (n, ns_plans) in plans.chunks(services_per_ns.max(1)).enumerate() {
        texts.push((format!("team-{n:03}.yaml"), namespace_yaml(n, ns_plans, &mut docs)));
    }
    (texts, docs)
}

/// The counts at `scale` (1.0 = 100 namespaces, 10,000 Services): (namespaces, Services per namespace).
pub fn dimensions(scale: f64) -> (usize, usize) {
    let namespaces = ((FULL_NAMESPACES as f64 * scale).round() as usize).max(1);
    let services_total = ((FULL_SERVICES as f64 * scale).round() as usize).max(20);
    (namespaces, (services_total / namespaces).max(20))
}

/// A benchmark's scale and the command that reproduces its run: `PODMESH_BENCH_SCALE` if set; else 1.0 under
/// `cargo bench` (which passes `--bench`) and 0.01 otherwise (`cargo test --benches`: a smoke run).
pub fn scale_and_command(crate_name: &str, max: f64) -> (f64, String) {
    let args: Vec<String> = std::env::args().collect();
    let under_cargo_bench = args.iter().any(|a| a == "--bench");
    let env_scale = std::env::var("PODMESH_BENCH_SCALE").ok();
    let scale: f64 = match &env_scale {
        Some(s) => s.parse().unwrap_or(f64::NAN),
        None if under_cargo_bench => 1.0,
        None => 0.01,
    };
    if !(scale > 0.0 && scale <= max) {
        eprintln!("PODMESH_BENCH_SCALE={env_scale:?}: must be a number in (0, {max}]");
        std::process::exit(2);
    }
    let command = match (&env_scale, under_cargo_bench) {
        (Some(s), true) => format!("PODMESH_BENCH_SCALE={s} cargo bench -p {crate_name} --bench scale"),
        (None, true) => format!("cargo bench -p {crate_name} --bench scale"),
        (Some(s), false) => format!("PODMESH_BENCH_SCALE={s} {}", args.join(" ")),
        (None, false) => {
            format!("{} (no --bench: smoke run at scale 0.01, as under cargo test --benches)", args.join(" "))
        }
    };
    (scale, command)
}
