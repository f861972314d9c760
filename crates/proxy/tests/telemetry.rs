#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Metrics, readiness and admin endpoints (R7, R8) over real traffic through real sidecars on 127.0.0.1 (see
//! `support`): what `/stats/prometheus` says after known requests and connections, label by label; the merged
//! application metrics and a failing scrape; readiness; `/config_dump`, `/clusters` with live load, `/logging`.
//!
//! In this tier a client's source address is 127.0.0.1, not its pod IP, so a destination sidecar knows the
//! client's namespace from its mTLS identity but not its workload: `source_workload="unknown"` on inbound samples.

mod support;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use podmesh_compute::ProxyConfig;
use podmesh_model::ObjectKey;
use podmesh_proxy::probe::AppProbes;
use podmesh_proxy::{AppMetrics, Proxy, serve_admin, serve_readiness, serve_stats};
use serde_json::Value;
use support::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;

const STRICT: &[&str] = &["examples/quickstart", "examples/quickstart/strict"];
const CLIENT_ID: &str = "spiffe://cluster.local/ns/shop/sa/client";
const WEB_ID: &str = "spiffe://cluster.local/ns/shop/sa/web";
const WEB_SVC: &str = "web.shop.svc.cluster.local";
/// Every wait in this file ends by then.
const WAIT: Duration = Duration::from_secs(10);

// ------------------------------------------------------------------------------------------------ helpers

/// Aborts the servers a test started, however it ends.
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

async fn listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

async fn scrape(addr: SocketAddr) -> String {
    let r = get(addr, "/stats/prometheus").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.content_type.as_deref(), Some("text/plain; version=0.0.4; charset=utf-8"));
    r.body
}

/// Scrapes until `done` holds of the page (records are written as connections close, just after the client
/// saw the end), or the wait is over; returns the last page either way, for the assertions to explain.
async fn scrape_until(addr: SocketAddr, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let page = scrape(addr).await;
        if done(&page) || Instant::now() >= deadline {
            return page;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One sample line: `name{k="v",...} value`.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn samples(page: &str) -> Vec<Sample> {
    page.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).map(parse_sample).collect()
}

fn parse_sample(line: &str) -> Sample {
    let (head, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line:?}"));
    let value = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
    let Some((name, rest)) = head.split_once('{') else {
        return Sample { name: head.to_string(), labels: BTreeMap::new(), value };
    };
    let mut labels = BTreeMap::new();
    let mut chars = rest.strip_suffix('}').unwrap_or_else(|| panic!("unterminated labels: {line:?}")).chars();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        assert_eq!(chars.next(), Some('"'), "{line:?}");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c) => value.push(c),
                    None => panic!("{line:?}"),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(key.trim_start_matches(',').to_string(), value);
        if chars.clone().next() == Some(',') {
            chars.next();
        }
    }
    Sample { name: name.to_string(), labels, value }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// The sum over `pages` of the samples named `name` with exactly the label set `want` (0 when none).
fn total(pages: &[String], name: &str, want: &BTreeMap<String, String>) -> f64 {
    pages.iter().flat_map(|p| samples(p)).filter(|s| s.name == name && s.labels == *want).map(|s| s.value).sum()
}

/// The value of the one sample named `name` with exactly the labels `want`; the failure lists that metric's
/// samples, which is what one needs to see when a label is off.
fn value(page: &str, name: &str, want: &BTreeMap<String, String>) -> f64 {
    let all = samples(page);
    let found: Vec<&Sample> = all.iter().filter(|s| s.name == name && s.labels == *want).collect();
    if found.len() != 1 {
        let same_name: Vec<&Sample> = all.iter().filter(|s| s.name == name).collect();
        panic!("{} samples {name}{want:?}; the samples of {name}: {same_name:#?}", found.len());
    }
    found[0].value
}

/// The sum of every sample named `name` on `pages`, whatever its labels.
fn sum_of(pages: &[String], name: &str) -> f64 {
    pages.iter().flat_map(|p| samples(p)).filter(|s| s.name == name).map(|s| s.value).sum()
}

/// The `le` bounds of the buckets of histogram `name` for the series with the labels `series`, in order. Compared
/// as numbers: the encoder writes the shortest form (`1.8e+06`), which Prometheus reads as the number it is.
fn buckets(page: &str, name: &str, series: &BTreeMap<String, String>) -> Vec<f64> {
    let bucket = format!("{name}_bucket");
    samples(page)
        .into_iter()
        .filter(|s| s.name == bucket)
        .filter_map(|mut s| {
            let le = s.labels.remove("le")?;
            (s.labels == *series).then(|| if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap() })
        })
        .collect()
}

fn with(base: &BTreeMap<String, String>, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut m = base.clone();
    m.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    m
}

/// A tiny application metrics endpoint: `/metrics` in OpenMetrics style (ending in `# EOF`), `/broken` a 500.
async fn app_metrics_server() -> (SocketAddr, JoinHandle<()>) {
    let (l, addr) = listener().await;
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = l.accept().await else { continue };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: http::Request<Incoming>| async move {
                    let (status, body) = match req.uri().path() {
                        "/metrics" => (
                            200,
                            "# HELP app_orders Orders taken.\n# TYPE app_orders counter\napp_orders_total 42\n\
                             app_queue_depth{queue=\"a\"} 3\n# EOF\n",
                        ),
                        "/broken" => (500, "internal error\n"),
                        _ => (404, "no\n"),
                    };
                    let resp =
                        http::Response::builder().status(status).body(Full::new(Bytes::from_static(body.as_bytes())));
                    Ok::<_, Infallible>(resp.unwrap())
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    (addr, task)
}

/// Starts `/stats/prometheus` for `proxy` on a fresh port.
async fn stats(tasks: &mut Tasks, proxy: &Arc<Proxy>, app: Option<AppMetrics>) -> SocketAddr {
    let (l, addr) = listener().await;
    tasks.0.push(serve_stats(proxy, l, app, AppProbes::default()));
    addr
}

async fn clusters(admin: SocketAddr) -> Value {
    let r = get(admin, "/clusters").await;
    assert_eq!((r.status, r.content_type.as_deref()), (200, Some("application/json")), "{r:?}");
    serde_json::from_str(&r.body).unwrap()
}

/// Reads one answer line of the echo's line protocol.
async fn line(reader: &mut BufReader<TcpStream>) -> String {
    let mut s = String::new();
    tokio::time::timeout(WAIT, reader.read_line(&mut s)).await.expect("no answer line").unwrap();
    s
}

// ------------------------------------------------------------------------------------------------ tests

#[tokio::test]
async fn stats_count_real_traffic_with_istio_labels_and_merge_the_application_metrics() {
    let mut mesh = Mesh::start(STRICT).await;
    let mut tasks = Tasks(vec![]);
    const OK: usize = 7;
    const NR: usize = 3;
    const TCP: usize = 4;

    // HTTP through Service web: OK requests served, NR rejected by the source for their Host (R9 row 11).
    let mut conn = h1(mesh.via_sidecar("client", mesh.service("web", 80)).await).await;
    for _ in 0..OK {
        assert_eq!(get1(&mut conn, "web.shop", "/").await.status, 200);
    }
    for _ in 0..NR {
        let g = get1(&mut conn, "nothing.example", "/").await;
        assert_eq!((g.status, g.reason.as_deref()), (404, Some("no_route; side=source; rule=R3.1")));
    }
    // TCP through Service web:7000.
    let tcp = mesh.via_sidecar("client", mesh.service("web", 7000)).await;
    let (mut up, mut down) = (0, 0);
    for i in 0..TCP {
        let sent = format!("hello {i}\n");
        let answer = tcp_exchange(tcp, sent.as_bytes()).await.unwrap();
        assert!(answer.ends_with(&format!(" {sent}")), "{answer}");
        (up, down) = (up + sent.len(), down + answer.len());
    }

    let (app, app_task) = app_metrics_server().await;
    tasks.0.push(app_task);
    let client = Arc::clone(&mesh.sidecars["client"]);
    let client_stats = stats(&mut tasks, &client, Some(AppMetrics::new(app.port(), "/metrics"))).await;
    let mut web_stats = Vec::new();
    for pod in mesh.pods_of("web") {
        web_stats.push(stats(&mut tasks, &Arc::clone(&mesh.sidecars[&pod]), None).await);
    }
    let tcp_closed = "istio_tcp_connections_closed_total";
    let page = scrape_until(client_stats, |p| sum_of(&[p.to_string()], tcp_closed) >= TCP as f64).await;

    // --- the source's view (reporter="source")
    let source = labels(&[
        ("reporter", "source"),
        ("source_workload", "client"),
        ("source_workload_namespace", "shop"),
        ("source_principal", CLIENT_ID),
        ("destination_workload", "web"),
        ("destination_workload_namespace", "shop"),
        ("destination_service", WEB_SVC),
        ("destination_principal", WEB_ID),
        ("request_protocol", "http"),
        ("response_flags", "-"),
        ("connection_security_policy", "unknown"),
    ]);
    let ok = with(&source, &[("response_code", "200")]);
    assert_eq!(value(&page, "istio_requests_total", &ok), OK as f64);
    // Rejected at the source: no destination was chosen, and no mTLS connection made.
    let no_route = labels(&[
        ("reporter", "source"),
        ("source_workload", "client"),
        ("source_workload_namespace", "shop"),
        ("source_principal", "unknown"),
        ("destination_workload", "unknown"),
        ("destination_workload_namespace", "unknown"),
        ("destination_service", "unknown"),
        ("destination_principal", "unknown"),
        ("request_protocol", "http"),
        ("response_flags", "NR"),
        ("connection_security_policy", "unknown"),
        ("response_code", "404"),
    ]);
    assert_eq!(value(&page, "istio_requests_total", &no_route), NR as f64);
    let requests: f64 = samples(&page).iter().filter(|s| s.name == "istio_requests_total").map(|s| s.value).sum();
    assert_eq!(requests, (OK + NR) as f64, "nothing else was counted");

    // Histograms: Istio's buckets, one observation per request.
    assert_eq!(value(&page, "istio_request_duration_milliseconds_count", &ok), OK as f64);
    let istio_le = [
        0.5,
        1.0,
        5.0,
        10.0,
        25.0,
        50.0,
        100.0,
        250.0,
        500.0,
        1000.0,
        2500.0,
        5000.0,
        10000.0,
        30000.0,
        60000.0,
        300000.0,
        600000.0,
        1800000.0,
        3600000.0,
        f64::INFINITY,
    ];
    assert_eq!(buckets(&page, "istio_request_duration_milliseconds", &ok), istio_le);
    assert_eq!(value(&page, "istio_request_duration_milliseconds_bucket", &with(&ok, &[("le", "+Inf")])), OK as f64);
    for name in ["istio_request_bytes", "istio_response_bytes"] {
        assert_eq!(value(&page, &format!("{name}_count"), &ok), OK as f64, "{name}");
        let size_le = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, f64::INFINITY];
        assert_eq!(buckets(&page, name, &ok), size_le, "{name}");
    }

    // TCP, counted when each connection closed.
    let tcp_source = with(&source, &[("request_protocol", "tcp")]);
    for name in ["istio_tcp_connections_opened_total", tcp_closed] {
        assert_eq!(value(&page, name, &tcp_source), TCP as f64, "{name}");
    }
    assert_eq!(value(&page, "istio_tcp_received_bytes_total", &tcp_source), up as f64);
    assert_eq!(value(&page, "istio_tcp_sent_bytes_total", &tcp_source), down as f64);

    // podmesh's counters by reason code.
    let reason = |direction: &str, reason: &str, side: &str| {
        labels(&[("direction", direction), ("reason", reason), ("side", side)])
    };
    assert_eq!(value(&page, "podmesh_requests_total", &reason("outbound", "ok", "-")), OK as f64);
    assert_eq!(value(&page, "podmesh_requests_total", &reason("outbound", "no_route", "source")), NR as f64);
    assert_eq!(value(&page, "podmesh_connections_total", &reason("outbound", "ok", "-")), TCP as f64);

    // The application's own metrics follow the proxy's, its `# EOF` dropped; the scrape did not fail.
    let app_at = page.find("app_orders_total 42\n").expect("the application's metrics are merged");
    assert!(app_at > page.find("istio_requests_total{").unwrap(), "the proxy's metrics come first");
    assert!(
        page.contains("# TYPE app_orders counter\n") && page.contains("app_queue_depth{queue=\"a\"} 3\n"),
        "{page}"
    );
    assert!(!page.contains("# EOF"), "{page}");
    assert_eq!(value(&page, "podmesh_app_scrape_errors_total", &BTreeMap::new()), 0.0);

    // --- the destinations' view (reporter="destination"), summed over both web pods.
    // A web pod writes its TCP record when its side of the connection is done: wait for all of them.
    let deadline = Instant::now() + WAIT;
    let web_pages = loop {
        let mut pages = Vec::new();
        for addr in &web_stats {
            pages.push(scrape(*addr).await);
        }
        if sum_of(&pages, tcp_closed) >= TCP as f64 || Instant::now() >= deadline {
            break pages;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let destination = labels(&[
        ("reporter", "destination"),
        ("source_workload", "unknown"),
        ("source_workload_namespace", "shop"),
        ("source_principal", CLIENT_ID),
        ("destination_workload", "web"),
        ("destination_workload_namespace", "shop"),
        ("destination_service", WEB_SVC),
        ("destination_principal", WEB_ID),
        ("request_protocol", "http"),
        ("response_flags", "-"),
        ("connection_security_policy", "mutual_tls"),
    ]);
    let served = with(&destination, &[("response_code", "200")]);
    assert_eq!(total(&web_pages, "istio_requests_total", &served), OK as f64, "{web_pages:#?}");
    assert_eq!(sum_of(&web_pages, "istio_requests_total"), OK as f64, "the rejected requests never reached a web pod");
    let tcp_destination = with(&destination, &[("request_protocol", "tcp")]);
    assert_eq!(total(&web_pages, tcp_closed, &tcp_destination), TCP as f64);
    assert_eq!(total(&web_pages, "istio_tcp_received_bytes_total", &tcp_destination), up as f64);
    assert_eq!(total(&web_pages, "istio_tcp_sent_bytes_total", &tcp_destination), down as f64);
    assert_eq!(total(&web_pages, "podmesh_requests_total", &reason("inbound", "ok", "-")), OK as f64);
    assert_eq!(total(&web_pages, "podmesh_connections_total", &reason("inbound", "ok", "-")), TCP as f64);

    // --- a failing application scrape never fails the page: the proxy's metrics, a comment, the error count.
    let (gone, gone_addr) = listener().await;
    drop(gone);
    for (i, broken) in
        [AppMetrics::new(gone_addr.port(), "/metrics"), AppMetrics::new(app.port(), "/broken")].into_iter().enumerate()
    {
        let url = broken.url();
        let failing = stats(&mut tasks, &client, Some(broken)).await;
        let page = scrape(failing).await;
        assert_eq!(value(&page, "istio_requests_total", &ok), OK as f64);
        let comment = format!("# podmesh: the application's metrics at {url} could not be scraped: ");
        assert!(page.contains(&comment), "{page}");
        assert_eq!(value(&page, "podmesh_app_scrape_errors_total", &BTreeMap::new()), (i + 1) as f64);
        assert!(!page.contains("app_orders_total"), "{page}");
    }

    // --- what an operator's curl sees, when curl is installed.
    let url = format!("http://{client_stats}/stats/prometheus");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl").args(["-sS", "--max-time", "10", "-D", "-", &url]).output()
    })
    .await
    .unwrap();
    match out {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
            assert!(text.starts_with("HTTP/1.1 200"), "{text}");
            assert!(text.contains("istio_requests_total{reporter=\"source\""), "{text}");
            assert!(text.contains("app_orders_total 42"), "{text}");
        }
        Err(e) => eprintln!("note: curl is not available ({e}); the curl check was skipped"),
    }

    // Wrong method, unknown path.
    assert_eq!(call(client_stats, "POST", "/stats/prometheus").await.status, 405);
    let r = get(client_stats, "/nothing").await;
    assert_eq!(r.status, 404);
    assert!(r.body.contains("/stats/prometheus /healthz/ready"), "{r:?}");
}

#[tokio::test]
async fn readiness_answers_503_until_the_proxy_is_marked_ready() {
    let mesh = Mesh::start(STRICT).await;
    let mut tasks = Tasks(vec![]);
    let proxy = Arc::clone(&mesh.sidecars[&mesh.pods_of("web")[0]]);
    let stats_addr = stats(&mut tasks, &proxy, None).await;
    let (l, ready_addr) = listener().await;
    tasks.0.push(serve_readiness(&proxy, l));
    for addr in [stats_addr, ready_addr] {
        let r = get(addr, "/healthz/ready").await;
        assert_eq!(r.status, 503, "{r:?}");
    }
    proxy.set_ready(true);
    for addr in [stats_addr, ready_addr] {
        let r = get(addr, "/healthz/ready").await;
        assert_eq!((r.status, r.body.as_str()), (200, "ready\n"));
        assert_eq!(call(addr, "HEAD", "/healthz/ready").await.status, 200);
    }
    // 15021 serves readiness only.
    let r = get(ready_addr, "/stats/prometheus").await;
    assert_eq!(r.status, 404);
    assert!(r.body.contains("/healthz/ready"), "{r:?}");
    assert_eq!(call(ready_addr, "DELETE", "/healthz/ready").await.status, 405);
}

#[tokio::test]
async fn admin_dumps_the_config_shows_live_clusters_and_switches_the_access_log() {
    let mut mesh = Mesh::start(STRICT).await;
    let mut tasks = Tasks(vec![]);
    let client = Arc::clone(&mesh.sidecars["client"]);
    let (l, admin) = listener().await;
    tasks.0.push(serve_admin(&client, l));

    // /config_dump: the config in force, which parses back into the very same ProxyConfig.
    let r = get(admin, "/config_dump").await;
    assert_eq!((r.status, r.content_type.as_deref()), (200, Some("application/json")));
    let dumped: ProxyConfig = serde_json::from_str(&r.body).unwrap();
    assert_eq!(dumped, *client.config.current());
    assert_eq!(dumped, mesh.index.proxy_config(&ObjectKey::new("shop", "client")).unwrap());
    // The pod table names each pod's workload (the peer's metrics label).
    let web_pods = mesh.pods_of("web");
    for pod in &web_pods {
        assert_eq!(dumped.outbound.pods[&mesh.pod_ip(pod)].workload, "web");
    }

    // /clusters: the web endpoints, ready, with the identity required of them, and nothing in flight.
    let endpoints = |v: &Value, name: &str| -> Vec<Value> {
        let c = v["clusters"].as_array().unwrap().iter().find(|c| c["name"] == name);
        c.unwrap_or_else(|| panic!("no cluster {name} in {v:#}"))["endpoints"].as_array().unwrap().clone()
    };
    let http_cluster = format!("outbound|80||{WEB_SVC}");
    let tcp_cluster = format!("outbound|7000||{WEB_SVC}");
    let v = clusters(admin).await;
    let c = v["clusters"].as_array().unwrap().iter().find(|c| c["name"] == http_cluster.as_str()).unwrap();
    assert_eq!((c["service"].as_str(), c["port"].as_u64()), (Some("shop/web"), Some(80)));
    let eps = endpoints(&v, &http_cluster);
    let mut addrs: Vec<String> = eps.iter().map(|e| e["address"].as_str().unwrap().to_string()).collect();
    addrs.sort();
    let mut want: Vec<String> = web_pods.iter().map(|p| format!("{}:8080", mesh.pod_ip(p))).collect();
    want.sort();
    assert_eq!(addrs, want);
    for e in &eps {
        assert_eq!(e["ready"], true);
        assert_eq!(e["identity"], WEB_ID);
        assert!(web_pods.iter().any(|p| e["pod"] == format!("shop/{p}").as_str()), "{e}");
        assert_eq!((e["requests_in_flight"].as_u64(), e["open_connections"].as_u64()), (Some(0), Some(0)));
    }
    let sum = |eps: &[Value], field: &str| eps.iter().map(|e| e[field].as_u64().unwrap()).sum::<u64>();

    // Live load: a slow request is in flight on one endpoint while it is served…
    let web80 = mesh.via_sidecar("client", mesh.service("web", 80)).await;
    let slow = tokio::spawn(async move {
        let mut conn = h1(web80).await;
        get1(&mut conn, "web.shop", "/slow/1500").await
    });
    let deadline = Instant::now() + WAIT;
    while sum(&endpoints(&clusters(admin).await, &http_cluster), "requests_in_flight") != 1 {
        assert!(Instant::now() < deadline, "the slow request never showed as in flight");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(tokio::time::timeout(WAIT, slow).await.unwrap().unwrap().status, 200);
    assert_eq!(sum(&endpoints(&clusters(admin).await, &http_cluster), "requests_in_flight"), 0);
    // …and an open TCP connection counts on its endpoint until it closes.
    let tcp = mesh.via_sidecar("client", mesh.service("web", 7000)).await;
    let mut open = BufReader::new(TcpStream::connect(tcp).await.unwrap());
    open.get_mut().write_all(b"hold\n").await.unwrap();
    assert!(line(&mut open).await.ends_with(" hold\n"));
    assert_eq!(sum(&endpoints(&clusters(admin).await, &tcp_cluster), "open_connections"), 1);
    drop(open);
    let deadline = Instant::now() + WAIT;
    while sum(&endpoints(&clusters(admin).await, &tcp_cluster), "open_connections") != 0 {
        assert!(Instant::now() < deadline, "the closed connection still counts");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // /logging: off stops new access-log records (metrics go on counting), on brings them back.
    let r = get(admin, "/logging").await;
    let state: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(state, serde_json::json!({"access_log": "on", "sink": "memory"}));
    let mut conn = h1(web80).await;
    let requests = |p: &Proxy| {
        let mut page = String::new();
        p.metrics().encode(&mut page).unwrap();
        samples(&page).iter().filter(|s| s.name == "istio_requests_total").map(|s| s.value).sum::<f64>()
    };
    let (logged, counted) = (mesh.log("client").len(), requests(&client));
    let r = call(admin, "POST", "/logging?level=off").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(serde_json::from_str::<Value>(&r.body).unwrap()["access_log"], "off");
    for _ in 0..3 {
        assert_eq!(get1(&mut conn, "web.shop", "/").await.status, 200);
    }
    assert_eq!(mesh.log("client").len(), logged, "no record while the access log is off");
    assert_eq!(requests(&client), counted + 3.0, "metrics are recorded either way");
    assert!(get(admin, "/logging").await.body.contains("\"access_log\": \"off\""));
    let r = call(admin, "POST", "/logging?level=on").await;
    assert_eq!(serde_json::from_str::<Value>(&r.body).unwrap()["access_log"], "on");
    assert_eq!(get1(&mut conn, "web.shop", "/").await.status, 200);
    assert_eq!(mesh.log("client").len(), logged + 1);
    // A change needs POST and a known level.
    assert_eq!(call(admin, "GET", "/logging?level=off").await.status, 405);
    assert_eq!(call(admin, "POST", "/logging?level=debug").await.status, 400);
    assert_eq!(call(admin, "POST", "/logging").await.status, 400);
    assert_eq!(mesh.log("client").len(), logged + 1);

    let r = get(admin, "/stats").await;
    assert_eq!(r.status, 404);
    assert!(r.body.contains("/config_dump /clusters /logging"), "{r:?}");
    assert_eq!(call(admin, "POST", "/config_dump").await.status, 405);

    // R7: localhost only, even on a listener bound wider.
    let wide = TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = wide.local_addr().unwrap().port();
    tasks.0.push(serve_admin(&client, wide));
    assert_eq!(get(SocketAddr::from(([127, 0, 0, 1], port)), "/logging").await.status, 200);
    match outside_address() {
        Some(ip) => {
            let answer = tcp_exchange(SocketAddr::new(ip, port), b"GET /config_dump HTTP/1.1\r\nhost: x\r\n\r\n").await;
            // Closed unanswered (or reset): never an answer.
            if let Ok(text) = &answer {
                assert!(text.is_empty(), "answered from {ip}: {}", text.lines().next().unwrap_or_default());
            }
        }
        None => eprintln!("note: this machine has no non-loopback address; the admin peer check was skipped"),
    }
}

/// One of this machine's own non-loopback addresses, if it has one: the source address of a route out. (A UDP
/// `connect` sends nothing.)
fn outside_address() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}
