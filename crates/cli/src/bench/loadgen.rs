//! The load generator: HTTP/1.1 keep-alive over N connections, one OS thread each, with blocking sockets.
//!
//! - Fixed rate (open loop): request `j` of the run is due at `start + j / rate`, and goes out on connection
//!   `j mod N`, so the whole run follows one even schedule whatever the server does. When the connection is still
//!   busy with its previous request at the due time, the request goes out as soon as it is free and its latency is
//!   counted from the due time: the wait the server caused is charged to it (coordinated-omission correction, as
//!   wrk2 does). When the connection was idle, the thread sleeps until the due time and the latency is counted
//!   from the actual send: `thread::sleep` wakes some tens of microseconds late, which is the generator's own
//!   error, not the server's, and at 0.1 ms latencies would otherwise be a large share of every number. That
//!   lateness is reported separately (`lag_p99_ms`) so a busy generator shows.
//! - Saturation (closed loop): every connection sends its next request as soon as the previous answer is in;
//!   latency from the send.
//!
//! Threads rather than an event loop: a sleeping thread wakes on a high-resolution timer, while tokio's timer
//! has 1 ms granularity, which would bunch a 5,000 req/s schedule into bursts of five.
//!
//! Every run is bounded in time (the schedule ends at `duration`; sends stop `timeout` after it; every socket
//! operation has `timeout`) and in count (`rate × duration`, or `--requests`).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

#[derive(clap::Args, Debug, Clone)]
pub struct LoadgenArgs {
    /// http://IP:PORT/PATH (an IP address: the lab has no DNS).
    #[arg(long)]
    pub url: String,
    /// The Host header (default: the URL's IP:PORT).
    #[arg(long)]
    pub host: Option<String>,
    /// Keep-alive connections.
    #[arg(long, default_value_t = 16)]
    pub conns: usize,
    /// Requests per second over all connections, on a fixed schedule; 0 for a closed loop.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Seconds of load.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// At most this many requests in all.
    #[arg(long, default_value_t = 20_000_000)]
    pub requests: u64,
    /// Seconds a connect, a send or a response may take before it counts as an error.
    #[arg(long, default_value_t = 2.0)]
    pub timeout: f64,
    /// Speak TLS without a client certificate, trusting this CA (PEM) — the check that a server-side sidecar
    /// refuses clients without one.
    #[arg(long, requires = "tls_name", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// The server name to send and verify with --tls-ca.
    #[arg(long)]
    pub tls_name: Option<String>,
}

/// One run's outcome; the loadgen prints it as one JSON object.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct LoadResult {
    /// Responses received, any status.
    pub responses: u64,
    /// Responses with status 200.
    pub ok: u64,
    pub non_200: u64,
    /// Connects, sends or responses that failed or timed out.
    pub errors: u64,
    /// Scheduled requests never sent because the run's time was up (the server could not keep the rate).
    pub unsent: u64,
    /// Requests sent after their due time because the connection was still busy (CO-corrected ones).
    pub late: u64,
    pub connects: u64,
    /// The smallest and largest response body, in bytes.
    pub body_min: u64,
    pub body_max: u64,
    /// From the start of the schedule to the last response.
    pub elapsed_s: f64,
    /// Responses per second over `elapsed_s`.
    pub rps: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
    /// How late the generator's own timer woke for requests on idle connections (99th percentile).
    pub lag_p99_ms: f64,
    /// The generator's own CPU time (user + system).
    pub cpu_s: f64,
    pub first_error: Option<String>,
}

pub fn run(a: &LoadgenArgs) -> Result<std::process::ExitCode> {
    let result = generate(a)?;
    println!("{}", serde_json::to_string(&result)?);
    Ok(std::process::ExitCode::SUCCESS)
}

/// Histograms in nanoseconds, 1 ns to 100 s, three significant digits.
fn histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).map_err(|e| anyhow!("histogram: {e:?}"))
}

struct Target {
    addr: SocketAddr,
    request: Vec<u8>,
    tls: Option<(Arc<rustls::ClientConfig>, rustls_pki_types::ServerName<'static>)>,
    timeout: Duration,
}

fn parse_url(url: &str) -> Result<(SocketAddr, String)> {
    let rest = url.strip_prefix("http://").ok_or_else(|| anyhow!("{url:?}: only http:// URLs"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = if authority.contains(':') { authority.to_string() } else { format!("{authority}:80") };
    let addr: SocketAddr = addr.parse().with_context(|| format!("{url:?}: the host must be IP:PORT"))?;
    Ok((addr, path.to_string()))
}

fn tls_config(ca: &PathBuf, name: &str) -> Result<(Arc<rustls::ClientConfig>, rustls_pki_types::ServerName<'static>)> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in
        rustls_pki_types::CertificateDer::pem_file_iter(ca).with_context(|| format!("reading {}", ca.display()))?
    {
        roots.add(cert.with_context(|| format!("reading {}", ca.display()))?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from(name.to_string())?;
    Ok((Arc::new(config), name))
}

pub fn generate(a: &LoadgenArgs) -> Result<LoadResult> {
    if a.conns == 0 || a.conns > 4096 {
        bail!("--conns must be 1..4096");
    }
    let valid = a.duration > 0.0 && a.duration <= 3600.0 && a.rate >= 0.0 && a.timeout > 0.0;
    if !valid {
        bail!("--duration must be in (0, 3600] s, --rate >= 0, --timeout > 0");
    }
    let (addr, path) = parse_url(&a.url)?;
    let host = a.host.clone().unwrap_or_else(|| addr.to_string());
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: podmesh-bench\r\nAccept: */*\r\n\r\n");
    let tls = match (&a.tls_ca, &a.tls_name) {
        (Some(ca), Some(name)) => Some(tls_config(ca, name)?),
        _ => None,
    };
    let target = Target { addr, request: request.into_bytes(), tls, timeout: Duration::from_secs_f64(a.timeout) };
    let duration = Duration::from_secs_f64(a.duration);
    // Open loop: the whole run's requests are known up front; closed loop: a shared counter bounds them.
    let scheduled = if a.rate > 0.0 { ((a.rate * a.duration).floor() as u64).min(a.requests) } else { 0 };
    let issued = AtomicU64::new(0);
    let plan = Plan {
        conns: a.conns as u64,
        rate: a.rate,
        scheduled,
        cap: a.requests,
        start: OnceLock::new(),
        connected: Barrier::new(a.conns),
        duration,
    };
    let stats: Vec<Result<ConnStats>> = std::thread::scope(|s| {
        let (target, plan, issued) = (&target, &plan, &issued);
        let handles: Vec<_> =
            (0..a.conns as u64).map(|i| s.spawn(move || connection(target, plan, i, issued))).collect();
        handles.into_iter().map(|h| h.join().map_err(|_| anyhow!("a load thread panicked"))?).collect()
    });
    let mut total = ConnStats::new()?;
    for st in stats {
        total.merge(st?)?;
    }
    let start = plan.start.get().copied().unwrap_or_else(Instant::now);
    let end = total.last_done.unwrap_or(start);
    let elapsed = end.saturating_duration_since(start).as_secs_f64().max(1e-9);
    let q = |h: &Histogram<u64>, p: f64| if h.is_empty() { 0.0 } else { h.value_at_quantile(p) as f64 / 1e6 };
    Ok(LoadResult {
        responses: total.ok + total.non_200,
        ok: total.ok,
        non_200: total.non_200,
        errors: total.errors,
        unsent: total.unsent,
        late: total.late,
        connects: total.connects,
        body_min: if total.body_min == u64::MAX { 0 } else { total.body_min },
        body_max: total.body_max,
        elapsed_s: elapsed,
        rps: (total.ok + total.non_200) as f64 / elapsed,
        p50_ms: q(&total.latency, 0.5),
        p90_ms: q(&total.latency, 0.9),
        p99_ms: q(&total.latency, 0.99),
        p999_ms: q(&total.latency, 0.999),
        max_ms: if total.latency.is_empty() { 0.0 } else { total.latency.max() as f64 / 1e6 },
        mean_ms: if total.latency.is_empty() { 0.0 } else { total.latency.mean() / 1e6 },
        lag_p99_ms: q(&total.lag, 0.99),
        cpu_s: own_cpu_seconds(),
        first_error: total.first_error,
    })
}

struct Plan {
    conns: u64,
    /// 0: closed loop.
    rate: f64,
    /// Open loop: requests in the schedule.
    scheduled: u64,
    /// Closed loop: at most this many requests.
    cap: u64,
    /// Set once every thread has connected: all of them start on this one clock.
    start: OnceLock<Instant>,
    connected: Barrier,
    duration: Duration,
}

struct ConnStats {
    latency: Histogram<u64>,
    lag: Histogram<u64>,
    ok: u64,
    non_200: u64,
    errors: u64,
    unsent: u64,
    late: u64,
    connects: u64,
    body_min: u64,
    body_max: u64,
    last_done: Option<Instant>,
    first_error: Option<String>,
}

impl ConnStats {
    fn new() -> Result<ConnStats> {
        Ok(ConnStats {
            latency: histogram()?,
            lag: histogram()?,
            ok: 0,
            non_200: 0,
            errors: 0,
            unsent: 0,
            late: 0,
            connects: 0,
            body_min: u64::MAX,
            body_max: 0,
            last_done: None,
            first_error: None,
        })
    }

    fn merge(&mut self, o: ConnStats) -> Result<()> {
        self.latency.add(&o.latency).map_err(|e| anyhow!("histogram: {e:?}"))?;
        self.lag.add(&o.lag).map_err(|e| anyhow!("histogram: {e:?}"))?;
        self.ok += o.ok;
        self.non_200 += o.non_200;
        self.errors += o.errors;
        self.unsent += o.unsent;
        self.late += o.late;
        self.connects += o.connects;
        self.body_min = self.body_min.min(o.body_min);
        self.body_max = self.body_max.max(o.body_max);
        self.last_done = self.last_done.max(o.last_done);
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
        Ok(())
    }

    fn error(&mut self, e: String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e);
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// One connection's thread: its share of the schedule (or a closed loop), reconnecting after errors.
fn connection(t: &Target, plan: &Plan, i: u64, issued: &AtomicU64) -> Result<ConnStats> {
    let mut st = match ConnStats::new() {
        Ok(st) => st,
        Err(e) => {
            // The others wait for every thread at the barrier.
            plan.connected.wait();
            return Err(e);
        }
    };
    let mut conn: Option<Conn> = None;
    let mut buf = Vec::with_capacity(16 * 1024);
    // Connect before the start, so that connection setup is not measured (a failure is retried in the loop).
    match Conn::open(t) {
        Ok(c) => {
            st.connects += 1;
            conn = Some(c);
        }
        Err(e) => st.error(format!("connect: {e}")),
    }
    plan.connected.wait();
    let start = *plan.start.get_or_init(|| Instant::now() + Duration::from_millis(1));
    let end = start + plan.duration;
    // Nothing is sent after this: an overloaded server cannot stretch a run without bound.
    let hard_end = end + t.timeout;
    let mut j = i;
    loop {
        let due = if plan.rate > 0.0 {
            if j >= plan.scheduled {
                break;
            }
            Some(start + Duration::from_secs_f64(j as f64 / plan.rate))
        } else {
            if Instant::now() >= end || issued.fetch_add(1, Ordering::Relaxed) >= plan.cap {
                break;
            }
            None
        };
        let now = Instant::now();
        if now >= hard_end {
            if plan.rate > 0.0 {
                st.unsent += (plan.scheduled - j).div_ceil(plan.conns);
            }
            break;
        }
        let idle_at_due = due.is_none_or(|d| now <= d);
        if let Some(d) = due {
            sleep_until(d);
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Conn::open(t) {
                Ok(c) => {
                    st.connects += 1;
                    conn.insert(c)
                }
                Err(e) => {
                    st.error(format!("connect: {e}"));
                    // A refused connect returns at once; don't spin through the schedule.
                    std::thread::sleep(Duration::from_millis(10));
                    j += plan.conns;
                    continue;
                }
            },
        };
        let sent = Instant::now();
        let from = match due {
            Some(d) if !idle_at_due => {
                st.late += 1;
                d
            }
            Some(d) => {
                st.lag.saturating_record(nanos(sent.saturating_duration_since(d)).max(1));
                sent
            }
            None => sent,
        };
        match exchange(c, &t.request, &mut buf) {
            Ok(resp) => {
                let done = Instant::now();
                st.latency.saturating_record(nanos(done.saturating_duration_since(from)).max(1));
                st.last_done = Some(done);
                if resp.status == 200 {
                    st.ok += 1;
                } else {
                    st.non_200 += 1;
                    if st.first_error.is_none() {
                        st.first_error = Some(format!("status {}", resp.status));
                    }
                }
                st.body_min = st.body_min.min(resp.body);
                st.body_max = st.body_max.max(resp.body);
                if resp.close {
                    conn = None;
                }
            }
            Err(e) => {
                st.error(e.to_string());
                conn = None;
            }
        }
        j += plan.conns;
    }
    Ok(st)
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

enum Conn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Conn {
    fn open(t: &Target) -> io::Result<Conn> {
        let s = TcpStream::connect_timeout(&t.addr, t.timeout)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(t.timeout))?;
        s.set_write_timeout(Some(t.timeout))?;
        Ok(match &t.tls {
            None => Conn::Plain(s),
            Some((config, name)) => {
                let c = rustls::ClientConnection::new(Arc::clone(config), name.clone()).map_err(io::Error::other)?;
                Conn::Tls(Box::new(rustls::StreamOwned::new(c, s)))
            }
        })
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Response {
    status: u16,
    body: u64,
    /// The server closes the connection after this response.
    close: bool,
}

/// The largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// Sends one request and reads its whole response (Content-Length, chunked, or until EOF).
fn exchange(c: &mut Conn, request: &[u8], buf: &mut Vec<u8>) -> io::Result<Response> {
    c.write_all(request)?;
    c.flush()?;
    buf.clear();
    let (head_len, status, framing, close) = loop {
        if fill(c, buf)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed before a response"));
        }
        if let Some(head) = parse_head(buf)? {
            break head;
        }
        if buf.len() > MAX_HEAD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "response head too large"));
        }
    };
    let body = match framing {
        Framing::Length(n) => {
            let want = head_len + usize::try_from(n).map_err(io::Error::other)?;
            while buf.len() < want {
                if fill(c, buf)? == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed in the body"));
                }
            }
            n
        }
        Framing::Chunked => loop {
            if let Some(n) = chunked_len(&buf[head_len..])? {
                break n;
            }
            if fill(c, buf)? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed in a chunked body"));
            }
        },
        Framing::UntilClose => {
            while fill(c, buf)? > 0 {}
            (buf.len() - head_len) as u64
        }
    };
    Ok(Response { status, body, close: close || matches!(framing, Framing::UntilClose) })
}

fn fill(c: &mut Conn, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut chunk = [0u8; 16 * 1024];
    let n = c.read(&mut chunk)?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

#[derive(Debug, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

/// The head, once complete: its length, the status, how the body is framed and whether the server closes.
fn parse_head(buf: &[u8]) -> io::Result<Option<(usize, u16, Framing, bool)>> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, format!("bad response head: {e}"))),
    };
    let status = resp.code.unwrap_or(0);
    let mut framing = Framing::UntilClose;
    let mut close = resp.version == Some(0);
    for h in resp.headers.iter() {
        let value = String::from_utf8_lossy(h.value);
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = value.trim().parse().map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad length"))?;
            if framing != Framing::Chunked {
                framing = Framing::Length(n);
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") && value.to_ascii_lowercase().contains("chunked") {
            framing = Framing::Chunked;
        } else if h.name.eq_ignore_ascii_case("connection") {
            close = value.to_ascii_lowercase().contains("close");
        }
    }
    // Responses that never have a body (RFC 9112 6.3).
    if status == 204 || status == 304 || (100..200).contains(&status) {
        framing = Framing::Length(0);
    }
    Ok(Some((head_len, status, framing, close)))
}

/// The decoded length of a complete chunked body at the start of `b`, or None while it is incomplete.
fn chunked_len(b: &[u8]) -> io::Result<Option<u64>> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "bad chunked body");
    let mut pos = 0;
    let mut total = 0u64;
    loop {
        let Some(eol) = b[pos..].windows(2).position(|w| w == b"\r\n") else { return Ok(None) };
        let line = std::str::from_utf8(&b[pos..pos + eol]).map_err(|_| bad())?;
        let size = line.split(';').next().unwrap_or("").trim();
        let size = u64::from_str_radix(size, 16).map_err(|_| bad())?;
        pos += eol + 2;
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                let Some(eol) = b[pos..].windows(2).position(|w| w == b"\r\n") else { return Ok(None) };
                pos += eol + 2;
                if eol == 0 {
                    return Ok(Some(total));
                }
            }
        }
        let size_usize = usize::try_from(size).map_err(|_| bad())?;
        if b.len() < pos + size_usize + 2 {
            return Ok(None);
        }
        total += size;
        pos += size_usize + 2;
    }
}

/// This process's CPU time so far (utime + stime of /proc/self/stat).
fn own_cpu_seconds() -> f64 {
    crate::bench::lab::proc_ticks(std::process::id()).map_or(0.0, |t| t as f64 / crate::bench::lab::CLK_TCK)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn heads_and_framing() {
        let (n, status, framing, close) =
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello").unwrap().unwrap();
        assert_eq!((n, status, framing, close), (38, 200, Framing::Length(5), false));
        let (_, _, framing, close) =
            parse_head(b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!((framing, close), (Framing::Chunked, true));
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Le").unwrap().is_none());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
        let (_, _, framing, _) = parse_head(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap().unwrap();
        assert_eq!(framing, Framing::Length(0));
    }

    #[test]
    fn chunked_bodies() {
        assert_eq!(chunked_len(b"5\r\nhello\r\n0\r\n\r\n").unwrap(), Some(5));
        assert_eq!(chunked_len(b"3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nt: v\r\n\r\n").unwrap(), Some(5));
        assert_eq!(chunked_len(b"5\r\nhel").unwrap(), None);
        assert_eq!(chunked_len(b"5\r\nhello\r\n0\r\n").unwrap(), None);
        assert!(chunked_len(b"zz\r\n").is_err());
    }

    #[test]
    fn urls() {
        let (addr, path) = parse_url("http://10.96.0.10:80/bytes/1024").unwrap();
        assert_eq!((addr.to_string().as_str(), path.as_str()), ("10.96.0.10:80", "/bytes/1024"));
        let (addr, path) = parse_url("http://127.0.0.1").unwrap();
        assert_eq!((addr.to_string().as_str(), path.as_str()), ("127.0.0.1:80", "/"));
        assert!(parse_url("https://127.0.0.1/").is_err());
        assert!(parse_url("http://server.bench/").is_err());
    }
}
