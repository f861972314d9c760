//! The pod network for real: the bridge and the pods' network namespaces that `podmesh_runtime::net` makes, with
//! a real HTTP server (python3's) in one pod and curl in another.
//!
//! Nothing on the host changes: each test re-runs itself under `unshare --net --mount --pid --fork` (with
//! `--user --map-root-user` first when not root, where the kernel allows it) and makes everything inside that
//! private tree, which the kernel tears down when the test process ends, passed, failed or killed. Needs `ip`,
//! `unshare`, `mount`, `python3` and `curl`; where neither root nor user namespaces are available the test says
//! so and passes without running.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use podmesh_runtime::net::{NetError, Network};

/// Set in the re-run, inside the private namespaces.
const INNER: &str = "PODMESH_RUNTIME_NETNS_INNER";

/// Runs `test` inside private namespaces; false when it ran out here instead (the caller returns).
fn in_private_namespaces(test: &str) -> bool {
    if std::env::var_os(INNER).is_some() {
        return true;
    }
    let mut namespaces = vec!["--net", "--mount", "--pid", "--fork", "--mount-proc"];
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if !root {
        if !Command::new("unshare").args(["--user", "--map-root-user", "true"]).status().is_ok_and(|s| s.success()) {
            eprintln!("SKIPPED {test}: needs root, or unprivileged user namespaces, for network namespaces");
            return false;
        }
        namespaces.splice(0..0, ["--user", "--map-root-user"]);
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("unshare")
        .args(&namespaces)
        .arg("--")
        .arg(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(INNER, "1")
        .output()
        .expect("running unshare (util-linux)");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the test failed in its namespaces:\n{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "the test did not run in its namespaces:\n{stdout}\n{stderr}");
    false
}

fn addr(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn netns_list() -> String {
    String::from_utf8(Command::new("ip").args(["netns", "list"]).output().unwrap().stdout).unwrap()
}

/// curl from a pod; `Some(body)` when the request got a response within `secs`.
fn curl_from(pod: &str, url: &str, secs: u32) -> Option<String> {
    let out = Network::exec(pod, "curl").args(["-sS", "--max-time", &secs.to_string(), url]).output().unwrap();
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn pods_reach_each_other_and_the_node_over_the_bridge_and_a_removed_pod_is_gone() {
    if !in_private_namespaces("pods_reach_each_other_and_the_node_over_the_bridge_and_a_removed_pod_is_gone") {
        return;
    }
    let mut net = Network::create("pm0", "10.244.0.0/16".parse().unwrap()).unwrap();
    assert_eq!(net.gateway(), addr("10.244.0.1"));
    net.add_pod("a", addr("10.244.0.10")).unwrap();
    net.add_pod("b", addr("10.244.0.11")).unwrap();
    // An address outside the pod CIDR, or the node's own, is refused before anything is made.
    for bad in ["10.9.0.1", "10.244.0.1"] {
        assert!(matches!(net.add_pod("c", addr(bad)), Err(NetError::OutsideCidr { .. })), "{bad}");
    }
    assert!(!netns_list().contains('c'), "{}", netns_list());

    // Each pod: its host address on eth0, loopback up, the default route via the node's bridge; even another pod
    // is reached through the node (so what the node translates comes back through it).
    let show = |args: &[&str]| String::from_utf8(Command::new("ip").args(args).output().unwrap().stdout).unwrap();
    assert!(show(&["-n", "a", "-o", "addr", "show", "dev", "eth0"]).contains("inet 10.244.0.10/32"));
    assert!(show(&["-n", "a", "link", "show", "lo"]).contains("UP"));
    assert!(show(&["-n", "a", "route", "show", "default"]).contains("default via 10.244.0.1 dev eth0"));
    assert!(show(&["-n", "a", "route", "get", "10.244.0.11"]).contains("via 10.244.0.1 dev eth0"));
    // The bridge keeps its own MAC address as pods join (it would otherwise take its lowest port's, and pods that
    // cached the gateway's would send to the old one).
    assert!(
        show(&["link", "show", "pm0"]).contains("link/ether 02:70:6d:00:00:01"),
        "{}",
        show(&["link", "show", "pm0"])
    );

    // The pod's own resolver configuration and hosts file, over the machine's, for the pod's processes only.
    let files = std::env::temp_dir().join(format!("podmesh-runtime-files-{}", std::process::id()));
    std::fs::create_dir_all(&files).unwrap();
    let resolv = podmesh_runtime::net::resolv_conf(net.gateway(), "shop", "cluster.local");
    let hosts = podmesh_runtime::net::hosts_file(addr("10.244.0.10"), "a", None);
    std::fs::write(files.join("resolv.conf"), &resolv).unwrap();
    std::fs::write(files.join("hosts"), &hosts).unwrap();
    let machine = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let mounts = [(files.join("resolv.conf"), "/etc/resolv.conf".into()), (files.join("hosts"), "/etc/hosts".into())];
    let argv = ["cat".to_string(), "/etc/resolv.conf".into(), "/etc/hosts".into()];
    let out = Network::exec_with_files("a", &mounts, &argv).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("{resolv}{hosts}"));
    assert_eq!(std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(), machine, "the mount leaked out");
    // A target that does not exist: nothing runs.
    let missing = [(files.join("hosts"), "/nonexistent/podmesh/hosts".into())];
    let out = Network::exec_with_files("a", &missing, &["echo".to_string(), "ran".into()]).output().unwrap();
    assert!(!out.status.success() && out.stdout.is_empty());
    let _ = std::fs::remove_dir_all(&files);

    // A real HTTP server in pod b, on b's address only; the node reaches it over the bridge.
    let server = serve("b", "10.244.0.11", "pod b");
    // Pod a reaches pod b.
    assert_eq!(curl_from("a", "http://10.244.0.11:8080/who", 5).as_deref(), Some("pod b"));

    // Pod b removed: its namespace and address are gone, and a can no longer reach it.
    unserve(server, "b");
    net.remove_pod("b").unwrap();
    assert!(!netns_list().lines().any(|l| l.starts_with("b")), "{}", netns_list());
    assert_eq!(curl_from("a", "http://10.244.0.11:8080/who", 2), None);

    // A pod that cannot be wired (the bridge is gone) leaves no namespace behind.
    Command::new("ip").args(["link", "del", "pm0"]).status().unwrap();
    assert!(matches!(net.add_pod("d", addr("10.244.0.13")), Err(NetError::Failed { .. })));
    assert!(!netns_list().lines().any(|l| l.starts_with('d')), "{}", netns_list());
}

/// Where the HTTP server of `pod` serves from. The tests run in PID namespaces of their own, where every one is
/// process 1: the name says which test.
fn site(pod: &str) -> std::path::PathBuf {
    let test = std::thread::current().name().unwrap_or("test").replace("::", "-");
    std::env::temp_dir().join(format!("podmesh-runtime-site-{test}-{pod}"))
}

/// Stops the HTTP server of `pod` and removes what it served.
fn unserve(mut server: std::process::Child, pod: &str) {
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(site(pod));
}

/// Starts python3's HTTP server in `pod` on `ip:8080`, serving `who` with `text`; waits (at most 10 s) until it
/// answers from the node.
fn serve(pod: &str, ip: &str, text: &str) -> std::process::Child {
    let site = site(pod);
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(site.join("who"), text).unwrap();
    // (`python3 -m http.server` would first look its address up in DNS, which no pod network here answers.)
    let code = "import functools, http.server, socketserver, sys\n\
                handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[2])\n\
                socketserver.TCPServer((sys.argv[1], 8080), handler).serve_forever()";
    let child = Network::exec(pod, "python3")
        .args(["-c", code, ip])
        .arg(&site)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3");
    let addr: SocketAddr = format!("{ip}:8080").parse().unwrap();
    let start = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(10), "the server in pod {pod} never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

const WEB: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: shop, labels: {app: web}, annotations: {sidecar.podmesh.io/inject: "false"}}
spec: {containers: [{name: app, ports: [{containerPort: 8080}]}]}
status: {podIP: 10.244.0.11}
---
apiVersion: v1
kind: Pod
metadata: {name: c, namespace: shop, labels: {app: web}, annotations: {sidecar.podmesh.io/inject: "false"}}
spec: {containers: [{name: app, ports: [{containerPort: 8080}]}]}
status: {podIP: 10.244.0.12}
"#;

/// The node's Service NAT (`podmesh_runtime::nat`) loaded with `iptables-restore`: a plain pod's connections to a
/// ClusterIP reach the Service's pods, each connection one of them, and a pod reaching itself through its Service
/// gets its answer.
#[test]
fn plain_pods_reach_a_cluster_ip_balanced_per_connection_and_a_pod_reaches_itself() {
    if !in_private_namespaces("plain_pods_reach_a_cluster_ip_balanced_per_connection_and_a_pod_reaches_itself") {
        return;
    }
    let index = podmesh_compute::Index::new(podmesh_model::load_str(&[("web.yaml", WEB)]).unwrap().cluster);
    let mut net = Network::create("pm0", "10.244.0.0/16".parse().unwrap()).unwrap();
    for (pod, ip) in [("a", "10.244.0.10"), ("b", "10.244.0.11"), ("c", "10.244.0.12")] {
        net.add_pod(pod, addr(ip)).unwrap();
    }
    let rules = podmesh_runtime::nat::rules(index.outbound(), podmesh_runtime::nat::Family::V4);
    let mut restore = Command::new("iptables-restore").stdin(Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(restore.stdin.as_mut().unwrap(), rules.as_bytes()).unwrap();
    drop(restore.stdin.take());
    assert!(restore.wait().unwrap().success(), "iptables-restore refused:\n{rules}");
    let servers = [serve("b", "10.244.0.11", "pod b"), serve("c", "10.244.0.12", "pod c")];

    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..30 {
        let who = curl_from("a", "http://10.96.0.10/who", 5).expect("a connection to the ClusterIP failed");
        *seen.entry(who).or_insert(0) += 1;
    }
    assert_eq!(seen.keys().cloned().collect::<Vec<_>>(), ["pod b", "pod c"], "{seen:?}");
    // A pod whose Service sends it back to itself (about half of these do) still gets its answer.
    let mut answers = std::collections::BTreeMap::new();
    for _ in 0..16 {
        let who = curl_from("b", "http://10.96.0.10/who", 5).expect("pod b could not reach its own Service");
        *answers.entry(who).or_insert(0) += 1;
    }
    assert!(answers.contains_key("pod b"), "no connection went back to pod b itself: {answers:?}");
    // The node's own processes reach it too, once the Service CIDR is routed.
    let service: SocketAddr = "10.96.0.10:80".parse().unwrap();
    assert!(TcpStream::connect_timeout(&service, Duration::from_secs(2)).is_err(), "reached without a route");
    net.route_services("10.96.0.0/12".parse().unwrap()).unwrap();
    let node = Command::new("curl").args(["-sS", "--max-time", "5", "http://10.96.0.10/who"]).output().unwrap();
    let who = String::from_utf8_lossy(&node.stdout);
    assert!(node.status.success() && (who == "pod b" || who == "pod c"), "from the node: {who}");
    for (server, pod) in servers.into_iter().zip(["b", "c"]) {
        unserve(server, pod);
    }
}
