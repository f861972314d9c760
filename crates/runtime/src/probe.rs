//! Readiness probes, run the way the kubelet runs them.
//!
//! [`check`] makes one attempt of a probe's action (`httpGet`, `tcpSocket` or `exec`) against a pod, [`Readiness`]
//! is the kubelet's threshold state machine over the attempts' results, and [`run`] ties them together on the
//! probe's schedule. The prober runs on the node, as the kubelet does, and reaches the pod over the pod network.
//!
//! A pod may answer anything: every attempt is bounded in time by the probe's `timeoutSeconds`, and in size (at most
//! [`MAX_HEAD`] bytes of an HTTP response head, [`MAX_OUTPUT`] bytes of an exec probe's output are kept).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;
use std::time::Duration;

use podmesh_model::{Pod, Probe, ProbeAction, TargetPort, TargetPortRef};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio::time::MissedTickBehavior;

/// The most of an HTTP response head read before the attempt fails: a pod that sends an endless head must not make
/// the prober read forever.
pub const MAX_HEAD: usize = 10 * 1024;

/// The most of an exec probe's output (stdout, then stderr) kept for the failure message.
pub const MAX_OUTPUT: usize = 1024;

/// The result of one probe attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// What failed, e.g. "HTTP 503 from 10.244.0.7:8080/ready".
    Failure(String),
}

/// What a probe attempt runs against: one pod.
pub struct Target<'a> {
    /// The pod's address on the pod network.
    pub ip: IpAddr,
    /// The address the node's probe connections come from (`None`: the kernel chooses). `podmesh up` gives them
    /// the address pods' capture rules let through, so a probe reaches the application even under STRICT, as
    /// Istio's ambient mode lets the kubelet's probes through.
    pub source: Option<IpAddr>,
    /// The pod, whose container ports name the ports that probes may refer to by name.
    pub pod: &'a Pod,
    /// Builds the command that runs an exec probe's argv in the container's context (e.g. in the pod's network
    /// namespace). The prober sets its stdio and kill-on-drop.
    pub exec: &'a (dyn Fn(&[String]) -> Command + Sync),
}

impl fmt::Debug for Target<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target").field("ip", &self.ip).field("pod", &self.pod.key).finish_non_exhaustive()
    }
}

/// Makes one attempt of `action` against `target`, bounded by `timeout` (the probe's `timeoutSeconds`).
///
/// As in the kubelet: an `httpGet` succeeds on a status from 200 to 399 (redirects are not followed, so a 3xx is a
/// success), a `tcpSocket` when a connection opens, an `exec` when the command exits 0. A named port that no
/// container port has fails the attempt. HTTPS probes fail: podmesh has no TLS client here.
pub async fn check(action: &ProbeAction, target: &Target<'_>, timeout: Duration) -> Outcome {
    let attempt = async {
        match action {
            ProbeAction::HttpGet { path, port, https, headers } => {
                let port = match resolve(port, target.pod) {
                    Ok(port) => port,
                    Err(failure) => return failure,
                };
                if *https {
                    return Outcome::Failure("HTTPS probes are not supported".into());
                }
                http_get(SocketAddr::new(target.ip, port.0), target.source, path, headers).await
            }
            ProbeAction::TcpSocket { port } => {
                let port = match resolve(port, target.pod) {
                    Ok(port) => port,
                    Err(failure) => return failure,
                };
                let addr = SocketAddr::new(target.ip, port.0);
                match connect(addr, target.source).await {
                    Ok(_) => Outcome::Success,
                    Err(e) => connect_failure(addr, &e),
                }
            }
            ProbeAction::Exec { command } => exec(command, target).await,
        }
    };
    // Dropping the attempt on timeout closes its socket, or kills its command (kill_on_drop).
    match tokio::time::timeout(timeout, attempt).await {
        Ok(outcome) => outcome,
        Err(_) => Outcome::Failure(format!("timed out after {} s", timeout.as_secs_f64())),
    }
}

fn resolve(port: &TargetPortRef, pod: &Pod) -> Result<TargetPort, Outcome> {
    match port {
        TargetPortRef::Number(n) => Ok(*n),
        TargetPortRef::Name(name) => pod
            .named_port(name)
            .ok_or_else(|| Outcome::Failure(format!("pod {} has no container port named {name:?}", pod.key))),
    }
}

fn connect_failure(addr: SocketAddr, e: &std::io::Error) -> Outcome {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => Outcome::Failure(format!("connection refused to {addr}")),
        _ => Outcome::Failure(format!("connecting to {addr}: {e}")),
    }
}

/// Opens a connection to `addr` from `source` when given.
async fn connect(addr: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let Some(source) = source else { return TcpStream::connect(addr).await };
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(addr).await
}

async fn http_get(addr: SocketAddr, source: Option<IpAddr>, path: &str, headers: &[(String, String)]) -> Outcome {
    let path = request_path(path);
    let request = match request(addr, &path, headers) {
        Ok(request) => request,
        Err(failure) => return failure,
    };
    let mut stream = match connect(addr, source).await {
        Ok(stream) => stream,
        Err(e) => return connect_failure(addr, &e),
    };
    if let Err(e) = stream.write_all(request.as_bytes()).await {
        return Outcome::Failure(format!("sending the request to {addr}: {e}"));
    }
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !head_complete(&head) {
        if head.len() >= MAX_HEAD {
            return Outcome::Failure(format!("response head from {addr}{path} is larger than 10 KiB"));
        }
        let room = (MAX_HEAD - head.len()).min(chunk.len());
        let read = match chunk.get_mut(..room) {
            Some(buf) => stream.read(buf).await,
            None => break,
        };
        match read {
            Ok(0) => return Outcome::Failure(format!("{addr} closed the connection before the end of the response")),
            Ok(n) => head.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            Err(e) => return Outcome::Failure(format!("reading the response from {addr}: {e}")),
        }
    }
    match status(&head) {
        Some(code) if (200..400).contains(&code) => Outcome::Success,
        Some(code) => Outcome::Failure(format!("HTTP {code} from {addr}{path}")),
        None => Outcome::Failure(format!("not an HTTP/1.x response from {addr}{path}")),
    }
}

/// The request target: the kubelet builds a URL from the path, which adds a leading '/' and escapes what cannot go
/// on a request line as is.
fn request_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 1);
    if !path.starts_with('/') {
        out.push('/');
    }
    for b in path.bytes() {
        if b <= b' ' || b >= 0x7f {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(char::from(b));
        }
    }
    out
}

/// The request, with the kubelet's headers: a probe's `Host` replaces the default one, its `User-Agent` and `Accept`
/// replace the defaults (an empty `Accept` removes it), and keep-alive is off.
fn request(addr: SocketAddr, path: &str, headers: &[(String, String)]) -> Result<String, Outcome> {
    let named = |name: &'static str| headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v);
    let host = named("host").filter(|v| !v.is_empty());
    let mut out = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n", host.map_or_else(|| addr.to_string(), String::clone));
    if named("user-agent").is_none() {
        out.push_str("User-Agent: kube-probe/podmesh\r\n");
    }
    if named("accept").is_none() {
        out.push_str("Accept: */*\r\n");
    }
    out.push_str("Connection: close\r\n");
    for (name, value) in headers {
        // Go's client refuses header fields that would break the request (CR, LF): so does this one.
        let token = |c: char| c.is_ascii_graphic() && !"()<>@,;:\\\"/[]?={}".contains(c);
        if name.is_empty() || !name.chars().all(token) || value.chars().any(|c| matches!(c, '\r' | '\n' | '\0')) {
            return Err(Outcome::Failure(format!("invalid probe header {name:?}")));
        }
        let skip = ["host", "connection"].iter().any(|n| name.eq_ignore_ascii_case(n))
            || (name.eq_ignore_ascii_case("accept") && value.is_empty());
        if !skip {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    out.push_str("\r\n");
    Ok(out)
}

/// Whether the buffer holds a whole response head: it ends at an empty line (Go's reader accepts bare LFs too).
fn head_complete(head: &[u8]) -> bool {
    head.windows(2).any(|w| w == b"\n\n") || head.windows(3).any(|w| w == b"\n\r\n")
}

/// The status code of an HTTP/1.x status line ("HTTP/1.1 200 OK"), or None when it is not one.
fn status(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let rest = line.strip_prefix(b"HTTP/1.")?;
    let minor_len = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let rest = rest.get(minor_len..)?.strip_prefix(b" ")?;
    if minor_len == 0 {
        return None;
    }
    // Go requires exactly three digits, then the end of the line or a space before the reason.
    let code = rest.get(..3)?;
    if !code.iter().all(u8::is_ascii_digit) || !matches!(rest.get(3), None | Some(b' ')) {
        return None;
    }
    std::str::from_utf8(code).ok()?.parse().ok()
}

async fn exec(command: &[String], target: &Target<'_>) -> Outcome {
    let Some(program) = command.first() else {
        return Outcome::Failure("the exec probe has no command".into());
    };
    let mut cmd = (target.exec)(command);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => return Outcome::Failure(format!("cannot run {program:?}: {e}")),
    };
    // Drain both pipes to the end so that a chatty command is not blocked on a full pipe; keep only their start.
    let (mut output, stderr) = tokio::join!(drain(child.stdout.take()), drain(child.stderr.take()));
    output.extend(stderr);
    output.truncate(MAX_OUTPUT);
    let status = match child.wait().await {
        Ok(status) => status,
        Err(e) => return Outcome::Failure(format!("waiting for {program:?}: {e}")),
    };
    if status.success() {
        return Outcome::Success;
    }
    let what = match status.code() {
        Some(code) => format!("exit code {code}"),
        None => status.to_string(),
    };
    // The output goes into logs and onto terminals: control characters (escape sequences) are left out.
    let text: String = String::from_utf8_lossy(&output).chars().filter(|&c| c == '\n' || !c.is_control()).collect();
    match text.lines().map(str::trim).find(|l| !l.is_empty()) {
        Some(line) => Outcome::Failure(format!("{what}: {line}")),
        None => Outcome::Failure(what),
    }
}

/// Reads a pipe to its end, keeping the first [`MAX_OUTPUT`] bytes.
async fn drain(pipe: Option<impl AsyncRead + Unpin>) -> Vec<u8> {
    let mut kept = Vec::new();
    let Some(mut pipe) = pipe else { return kept };
    let mut chunk = [0u8; 1024];
    while let Ok(n @ 1..) = pipe.read(&mut chunk).await {
        let take = n.min(MAX_OUTPUT.saturating_sub(kept.len()));
        kept.extend_from_slice(chunk.get(..take).unwrap_or_default());
    }
    kept
}

/// The kubelet's readiness state for one container: not ready at first; ready after `success_threshold`
/// consecutive successes, not ready again after `failure_threshold` consecutive failures.
#[derive(Debug, Clone)]
pub struct Readiness {
    ready: bool,
    successes: u32,
    failures: u32,
    success_threshold: u32,
    failure_threshold: u32,
}

impl Readiness {
    /// A container that is not ready yet. Thresholds of 0 count as 1 (Kubernetes' minimum).
    pub fn new(success_threshold: u32, failure_threshold: u32) -> Self {
        Readiness {
            ready: false,
            successes: 0,
            failures: 0,
            success_threshold: success_threshold.max(1),
            failure_threshold: failure_threshold.max(1),
        }
    }

    /// Counts an attempt's outcome; returns the new readiness when it changes.
    pub fn observe(&mut self, outcome: &Outcome) -> Option<bool> {
        match outcome {
            Outcome::Success => {
                self.failures = 0;
                self.successes = self.successes.saturating_add(1);
                (!self.ready && self.successes >= self.success_threshold).then(|| {
                    self.ready = true;
                    true
                })
            }
            Outcome::Failure(_) => {
                self.successes = 0;
                self.failures = self.failures.saturating_add(1);
                (self.ready && self.failures >= self.failure_threshold).then(|| {
                    self.ready = false;
                    false
                })
            }
        }
    }

    /// Whether the container is ready.
    pub fn ready(&self) -> bool {
        self.ready
    }
}

/// Runs a readiness probe forever: waits its initial delay, then makes an attempt every period (counted from the
/// start of each attempt), and calls `report(ready, outcome)` each time readiness changes. The caller aborts the task
/// when the container stops.
pub async fn run(probe: &Probe, target: &Target<'_>, mut report: impl FnMut(bool, &Outcome)) {
    tokio::time::sleep(probe.initial_delay).await;
    // An interval panics on a zero period; Kubernetes' minimum is one second, but the model may carry anything.
    let mut ticks = tokio::time::interval(probe.period.max(Duration::from_millis(1)));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut readiness = Readiness::new(probe.success_threshold, probe.failure_threshold);
    loop {
        ticks.tick().await;
        let outcome = check(&probe.action, target, probe.timeout).await;
        if let Some(ready) = readiness.observe(&outcome) {
            report(ready, &outcome);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use std::net::Ipv4Addr;
    use std::sync::atomic::{AtomicU16, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Instant;
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    const WAIT: Duration = Duration::from_secs(5);

    fn pod(port: u16) -> Pod {
        let text = format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: web-0, namespace: shop}}\nspec:\n  containers:\n    - name: app\n      image: app\n      ports: [{{name: http, containerPort: {port}}}]\n"
        );
        let loaded = podmesh_model::load_str(&[("pod.yaml", &text)]).unwrap();
        loaded.cluster.pods.into_values().next().unwrap()
    }

    fn direct(argv: &[String]) -> Command {
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        cmd
    }

    async fn attempt(action: ProbeAction, pod: &Pod, timeout: Duration) -> Outcome {
        let target = Target { ip: LOCAL, source: None, pod, exec: &direct };
        tokio::time::timeout(WAIT, check(&action, &target, timeout)).await.expect("check is bounded by its timeout")
    }

    fn get(path: &str, port: TargetPortRef, headers: &[(&str, &str)]) -> ProbeAction {
        let headers = headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        ProbeAction::HttpGet { path: path.into(), port, https: false, headers }
    }

    /// A server on loopback that reads each request's head, sends it on the channel, and answers `response()`.
    async fn serve(response: impl Fn() -> Vec<u8> + Send + 'static) -> (u16, mpsc::UnboundedReceiver<String>) {
        let listener = TcpListener::bind((LOCAL, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut request = Vec::new();
                let mut chunk = [0u8; 1024];
                while !request.ends_with(b"\r\n\r\n") && request.len() < 64 * 1024 {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = tx.send(String::from_utf8_lossy(&request).into_owned());
                let _ = stream.write_all(&response()).await;
            }
        });
        (port, rx)
    }

    async fn http_answering(raw: &'static str) -> Outcome {
        let (port, _rx) = serve(move || raw.as_bytes().to_vec()).await;
        attempt(get("/ready", TargetPortRef::Number(TargetPort(port)), &[]), &pod(1), WAIT).await
    }

    fn failure(outcome: &Outcome) -> &str {
        match outcome {
            Outcome::Failure(message) => message,
            Outcome::Success => panic!("expected a failure"),
        }
    }

    #[tokio::test]
    async fn http_status_decides() {
        assert_eq!(http_answering("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await, Outcome::Success);
        assert_eq!(http_answering("HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\n\r\n").await, Outcome::Success);
        assert_eq!(http_answering("HTTP/1.0 204\n\n").await, Outcome::Success);
        let unavailable = http_answering("HTTP/1.1 503 Service Unavailable\r\n\r\n").await;
        assert!(failure(&unavailable).contains("HTTP 503 from 127.0.0.1:"), "{unavailable:?}");
        assert!(failure(&unavailable).ends_with("/ready"), "{unavailable:?}");
        for garbage in
            ["hello", "hello\r\n\r\n", "HTTP/2 200\r\n\r\n", "HTTP/1.1 20x OK\r\n\r\n", "HTTP/1.1 2000\r\n\r\n"]
        {
            let outcome = http_answering(garbage).await;
            assert!(matches!(outcome, Outcome::Failure(_)), "{garbage:?} gave {outcome:?}");
        }
        assert!(failure(&http_answering("HTTP/1.1 199 Early\r\n\r\n").await).contains("HTTP 199"));
    }

    #[tokio::test]
    async fn http_silence_times_out() {
        let listener = TcpListener::bind((LOCAL, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (_stream, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        let start = Instant::now();
        let action = get("/", TargetPortRef::Number(TargetPort(port)), &[]);
        let outcome = attempt(action, &pod(1), Duration::from_millis(300)).await;
        assert_eq!(outcome, Outcome::Failure("timed out after 0.3 s".into()));
        assert!(start.elapsed() < Duration::from_secs(2));
        server.abort();
    }

    #[tokio::test]
    async fn http_endless_head_fails_without_hanging() {
        let listener = TcpListener::bind((LOCAL, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nX-Endless: ").await;
            while stream.write_all(&[b'a'; 4096]).await.is_ok() {}
        });
        let outcome = attempt(get("/", TargetPortRef::Number(TargetPort(port)), &[]), &pod(1), WAIT).await;
        assert!(failure(&outcome).contains("larger than 10 KiB"), "{outcome:?}");
        server.abort();
    }

    #[tokio::test]
    async fn http_request_carries_path_and_headers() {
        let (port, mut rx) = serve(|| b"HTTP/1.1 200 OK\r\n\r\n".to_vec()).await;
        let number = TargetPortRef::Number(TargetPort(port));
        let headers = [("X-Probe", "yes"), ("host", "web.shop.test")];
        let outcome = attempt(get("/healthz?full=1", number.clone(), &headers), &pod(1), WAIT).await;
        assert_eq!(outcome, Outcome::Success);
        let request = tokio::time::timeout(WAIT, rx.recv()).await.unwrap().unwrap();
        assert!(request.starts_with("GET /healthz?full=1 HTTP/1.1\r\n"), "{request}");
        for line in ["Host: web.shop.test", "User-Agent: kube-probe/podmesh", "Accept: */*", "Connection: close"] {
            assert!(request.contains(&format!("\r\n{line}\r\n")), "{line} missing from {request}");
        }
        assert!(request.contains("\r\nX-Probe: yes\r\n"), "{request}");
        assert_eq!(request.to_ascii_lowercase().matches("\r\nhost:").count(), 1, "{request}");

        // Without a probe Host header, the default names the pod's address; a bare path gets its '/'.
        assert_eq!(attempt(get("ready", number, &[]), &pod(1), WAIT).await, Outcome::Success);
        let request = tokio::time::timeout(WAIT, rx.recv()).await.unwrap().unwrap();
        assert!(request.starts_with("GET /ready HTTP/1.1\r\n"), "{request}");
        assert!(request.contains(&format!("\r\nHost: 127.0.0.1:{port}\r\n")), "{request}");
    }

    #[tokio::test]
    async fn named_ports_resolve_from_the_pod() {
        let (port, _rx) = serve(|| b"HTTP/1.1 200 OK\r\n\r\n".to_vec()).await;
        let pod = pod(port);
        assert_eq!(attempt(get("/", TargetPortRef::Name("http".into()), &[]), &pod, WAIT).await, Outcome::Success);
        let tcp = ProbeAction::TcpSocket { port: TargetPortRef::Name("http".into()) };
        assert_eq!(attempt(tcp, &pod, WAIT).await, Outcome::Success);
        let unknown = attempt(get("/", TargetPortRef::Name("metrics".into()), &[]), &pod, WAIT).await;
        assert_eq!(unknown, Outcome::Failure("pod shop/web-0 has no container port named \"metrics\"".into()));
        let https = ProbeAction::HttpGet {
            path: "/".into(),
            port: TargetPortRef::Name("http".into()),
            https: true,
            headers: Vec::new(),
        };
        assert_eq!(attempt(https, &pod, WAIT).await, Outcome::Failure("HTTPS probes are not supported".into()));
    }

    #[tokio::test]
    async fn tcp_socket_needs_a_listener() {
        let listener = TcpListener::bind((LOCAL, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let tcp = |port| ProbeAction::TcpSocket { port: TargetPortRef::Number(TargetPort(port)) };
        assert_eq!(attempt(tcp(port), &pod(1), WAIT).await, Outcome::Success);
        drop(listener);
        let closed = attempt(tcp(port), &pod(1), WAIT).await;
        assert_eq!(closed, Outcome::Failure(format!("connection refused to 127.0.0.1:{port}")));
    }

    fn exec_action(argv: &[&str]) -> ProbeAction {
        ProbeAction::Exec { command: argv.iter().map(|a| a.to_string()).collect() }
    }

    #[tokio::test]
    async fn exec_exit_code_decides() {
        assert_eq!(attempt(exec_action(&["sh", "-c", "exit 0"]), &pod(1), WAIT).await, Outcome::Success);
        let nope = attempt(exec_action(&["sh", "-c", "echo nope; exit 1"]), &pod(1), WAIT).await;
        assert_eq!(nope, Outcome::Failure("exit code 1: nope".into()));
        let stderr = attempt(exec_action(&["sh", "-c", "echo broken >&2; exit 3"]), &pod(1), WAIT).await;
        assert_eq!(stderr, Outcome::Failure("exit code 3: broken".into()));
        // Output beyond what is kept is drained, so the command still finishes.
        let chatty = attempt(exec_action(&["sh", "-c", "head -c 1000000 /dev/zero; exit 2"]), &pod(1), WAIT).await;
        assert_eq!(chatty, Outcome::Failure("exit code 2".into()));
        let escapes = attempt(exec_action(&["sh", "-c", "printf '\\033[31mred\\n'; exit 1"]), &pod(1), WAIT).await;
        assert_eq!(escapes, Outcome::Failure("exit code 1: [31mred".into()));
        let missing = attempt(exec_action(&["/nonexistent/probe-tool", "x"]), &pod(1), WAIT).await;
        assert!(failure(&missing).contains("/nonexistent/probe-tool"), "{missing:?}");
        let empty = attempt(exec_action(&[]), &pod(1), WAIT).await;
        assert!(matches!(empty, Outcome::Failure(_)));
    }

    #[tokio::test]
    async fn exec_is_killed_at_the_timeout() {
        let start = Instant::now();
        let slow = attempt(exec_action(&["sleep", "5"]), &pod(1), Duration::from_millis(300)).await;
        assert_eq!(slow, Outcome::Failure("timed out after 0.3 s".into()));
        assert!(start.elapsed() < Duration::from_secs(1), "took {:?}", start.elapsed());
    }

    #[test]
    fn readiness_follows_the_thresholds() {
        let ok = Outcome::Success;
        let bad = Outcome::Failure("x".into());
        let mut r = Readiness::new(2, 3);
        assert!(!r.ready());
        // Not ready: failures change nothing, and a failure resets the run of successes.
        assert_eq!(r.observe(&bad), None);
        assert_eq!(r.observe(&ok), None);
        assert_eq!(r.observe(&bad), None);
        assert_eq!(r.observe(&ok), None);
        assert!(!r.ready());
        assert_eq!(r.observe(&ok), Some(true));
        assert!(r.ready());
        assert_eq!(r.observe(&ok), None);
        // Ready: two failures, then a success resets them; three in a row make it not ready.
        assert_eq!(r.observe(&bad), None);
        assert_eq!(r.observe(&bad), None);
        assert_eq!(r.observe(&ok), None);
        assert_eq!(r.observe(&bad), None);
        assert_eq!(r.observe(&bad), None);
        assert!(r.ready());
        assert_eq!(r.observe(&bad), Some(false));
        assert!(!r.ready());
        assert_eq!(r.observe(&bad), None);
        assert_eq!(r.observe(&ok), None);
        assert_eq!(r.observe(&ok), Some(true));
    }

    #[tokio::test]
    async fn run_reports_each_change() {
        let status = Arc::new(AtomicU16::new(503));
        let answer = Arc::clone(&status);
        let (port, _rx) =
            serve(move || format!("HTTP/1.1 {} X\r\n\r\n", answer.load(Ordering::SeqCst)).into_bytes()).await;
        let probe = Probe {
            action: get("/ready", TargetPortRef::Number(TargetPort(port)), &[]),
            initial_delay: Duration::ZERO,
            period: Duration::from_millis(100),
            timeout: Duration::from_secs(1),
            success_threshold: 1,
            failure_threshold: 1,
        };
        let pod = pod(port);
        let target = Target { ip: LOCAL, source: None, pod: &pod, exec: &direct };
        let reports = &Mutex::new(Vec::new());
        let wait_for = |n: usize| async move {
            let deadline = Instant::now() + WAIT;
            while reports.lock().unwrap().len() < n && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let script = async {
            tokio::time::sleep(Duration::from_millis(350)).await;
            assert!(reports.lock().unwrap().is_empty(), "not ready at first: nothing changes");
            status.store(200, Ordering::SeqCst);
            wait_for(1).await;
            status.store(503, Ordering::SeqCst);
            wait_for(2).await;
            tokio::time::sleep(Duration::from_millis(350)).await;
        };
        tokio::select! {
            () = run(&probe, &target, |ready, _| reports.lock().unwrap().push(ready)) => panic!("run returned"),
            () = script => {}
        }
        assert_eq!(*reports.lock().unwrap(), [true, false]);
    }
}
