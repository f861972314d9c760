//! The access log: one JSON line per HTTP request and per TCP connection, with its reason code (R6). Every
//! request and connection ends in exactly one [`AccessLog::write`], which is why the metrics are recorded there
//! too ([`crate::metrics`]).

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use podmesh_route::{ReasonCode, Rejection, Side};
use serde::Serialize;

use crate::metrics::Telemetry;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Outbound,
    Inbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }
}

/// One access-log line. Field names are documented in the README.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AccessRecord {
    /// When the request or connection ended, RFC 3339 UTC.
    pub time: String,
    pub direction: Direction,
    /// `http/1.1`, `http/2` or `tcp`.
    pub protocol: &'static str,
    /// The client's address.
    pub src: SocketAddr,
    /// The original destination the client dialled.
    pub dst: SocketAddr,
    /// Outbound: the identity required of the server. Inbound: the client's mTLS identity (none: plaintext).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_identity: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The HTTP status the client got (none for TCP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub reason: ReasonCode,
    /// Which sidecar decided a rejection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub side: Option<Side>,
    /// The closest Envoy response flag (`-` when none).
    pub flag: &'static str,
    /// The Service the request or connection was routed through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The endpoint it was sent to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_pod: Option<String>,
    /// Bytes from the client, and to it (TCP: payload; HTTP: bodies).
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub duration_ms: f64,
    /// A rejection's one-line explanation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl AccessRecord {
    pub fn new(direction: Direction, protocol: &'static str, src: SocketAddr, dst: SocketAddr) -> Self {
        Self {
            time: String::new(),
            direction,
            protocol,
            src,
            dst,
            peer_identity: None,
            host: None,
            method: None,
            path: None,
            status: None,
            reason: ReasonCode::Ok,
            side: None,
            flag: "-",
            service: None,
            upstream: None,
            upstream_pod: None,
            bytes_received: 0,
            bytes_sent: 0,
            duration_ms: 0.0,
            message: None,
        }
    }

    pub fn reason(&mut self, reason: ReasonCode) {
        self.reason = reason;
        self.flag = reason.envoy_flag();
    }

    pub fn rejected(&mut self, r: &Rejection) {
        self.reason(r.reason);
        self.side = Some(r.side);
        self.message = Some(r.message.clone());
    }
}

/// Where access-log lines go.
#[derive(Debug, Clone, Default)]
enum Sink {
    #[default]
    Off,
    /// One JSON line per record on standard output, written by a thread of its own ([`Batch`]).
    Stdout(Arc<Batch>),
    /// Kept in memory, for tests.
    Memory(Arc<Mutex<Vec<AccessRecord>>>),
}

/// The one point every request and connection ends in: an access-log sink, and — once a [`crate::Proxy`] owns the
/// log — its telemetry, which turns each record into metrics ([`crate::metrics`]) and can switch the log itself
/// off at runtime (the admin `/logging` endpoint). Clones share the sink and the telemetry.
#[derive(Debug, Clone, Default)]
pub struct AccessLog {
    sink: Sink,
    telemetry: Option<Arc<Telemetry>>,
}

impl AccessLog {
    /// No access-log lines (a proxy still records metrics).
    pub fn off() -> Self {
        AccessLog { sink: Sink::Off, telemetry: None }
    }

    /// One JSON line per record on standard output.
    pub fn stdout() -> Self {
        AccessLog { sink: Sink::Stdout(Batch::start()), telemetry: None }
    }

    /// Kept in memory ([`AccessLog::records`]), for tests.
    pub fn memory() -> Self {
        AccessLog { sink: Sink::Memory(Arc::default()), telemetry: None }
    }

    /// `off`, `stdout` or `memory` (the admin `/logging` endpoint shows it).
    pub fn sink_name(&self) -> &'static str {
        match self.sink {
            Sink::Off => "off",
            Sink::Stdout(_) => "stdout",
            Sink::Memory(_) => "memory",
        }
    }

    /// The same sink, feeding `telemetry` too.
    pub fn with_telemetry(mut self, telemetry: Arc<Telemetry>) -> Self {
        self.telemetry = Some(telemetry);
        self
    }

    /// Whether records reach the sink: false once switched off at runtime ([`AccessLog::set_enabled`]).
    pub fn enabled(&self) -> bool {
        self.telemetry.as_ref().is_none_or(|t| t.access_log_enabled())
    }

    /// Switches writing to the sink on or off for this log and every clone sharing its telemetry; metrics are
    /// recorded either way. False (and nothing changes) when the log has no telemetry, i.e. no proxy owns it.
    pub fn set_enabled(&self, on: bool) -> bool {
        match &self.telemetry {
            Some(t) => {
                t.set_access_log_enabled(on);
                true
            }
            None => false,
        }
    }

    /// Records `r`, stamping its end time and duration.
    pub fn write(&self, mut r: AccessRecord, elapsed: Duration) {
        if let Some(t) = &self.telemetry {
            t.record(&r, elapsed);
            if !t.access_log_enabled() {
                return;
            }
        }
        if matches!(self.sink, Sink::Off) {
            return;
        }
        r.time = rfc3339(SystemTime::now());
        r.duration_ms = elapsed.as_secs_f64() * 1000.0;
        match &self.sink {
            Sink::Off => {}
            Sink::Stdout(batch) => {
                let queued = serde_json::to_vec(&r).is_ok_and(|line| batch.push(&line));
                if let (false, Some(t)) = (queued, &self.telemetry) {
                    t.metrics().access_log_dropped();
                }
            }
            Sink::Memory(v) => v.lock().unwrap_or_else(PoisonError::into_inner).push(r),
        }
    }

    /// Writes out the lines not yet written (stdout); call before the process exits.
    pub fn flush(&self) {
        if let Sink::Stdout(batch) = &self.sink {
            batch.flush();
        }
    }

    /// The records kept so far (memory log only).
    pub fn records(&self) -> Vec<AccessRecord> {
        match &self.sink {
            Sink::Memory(v) => v.lock().unwrap_or_else(PoisonError::into_inner).clone(),
            _ => Vec::new(),
        }
    }
}

/// Lines waiting for standard output, written by a thread of their own every [`Batch::INTERVAL`]. A record is
/// finished while its response is still being written (when the response body ends): the data path only appends
/// its line to memory, so neither a system call nor a slow reader of stdout (a full pipe) ever sits between a
/// response and the next request. If stdout is not read at all, lines beyond [`Batch::MAX_WAITING`] bytes are
/// dropped and counted (`podmesh_access_log_dropped_lines_total`), rather than stall the traffic.
#[derive(Debug, Default)]
pub struct Batch {
    lines: Mutex<Vec<u8>>,
    /// Held while writing, so batches reach stdout in order whoever writes them.
    writing: Mutex<()>,
}

impl Batch {
    pub const INTERVAL: Duration = Duration::from_millis(100);
    pub const MAX_WAITING: usize = 16 << 20;

    /// A batch and its writer thread, which ends when the batch is dropped.
    fn start() -> Arc<Batch> {
        let batch = Arc::new(Batch::default());
        let weak = Arc::downgrade(&batch);
        let spawned = std::thread::Builder::new().name("access-log".into()).spawn(move || {
            loop {
                std::thread::sleep(Self::INTERVAL);
                match weak.upgrade() {
                    Some(batch) => batch.flush(),
                    None => return,
                }
            }
        });
        if let Err(e) = spawned {
            eprintln!("podmesh proxy: no access-log writer thread ({e}): lines are written on exit only");
        }
        batch
    }

    /// Queues `line`; false when it was dropped because too much is waiting already.
    fn push(&self, line: &[u8]) -> bool {
        let mut lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        if lines.len() + line.len() >= Self::MAX_WAITING {
            return false;
        }
        lines.extend_from_slice(line);
        lines.push(b'\n');
        true
    }

    /// Writes out every line waiting.
    fn flush(&self) {
        let _writing = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        let lines = std::mem::take(&mut *self.lines.lock().unwrap_or_else(PoisonError::into_inner));
        if !lines.is_empty() {
            let _ = std::io::stdout().lock().write_all(&lines);
        }
    }
}

/// `2026-11-26T14:05:09.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_millis(951_782_400_123)), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_705_509)), "2026-11-26T15:05:09.000Z");
    }
}
