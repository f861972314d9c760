//! Medians over rounds, deltas against direct in the same round, the verdicts, and the table.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::{Config, Machine, Record, Settings, Test};

/// Below this peak RSS per sidecar (MiB) under load.
const RSS_TARGET_MIB: f64 = 20.0;
/// At least this multiple of the nginx pair's saturation throughput.
const THROUGHPUT_FACTOR: f64 = 2.0;
/// The rates the latency targets are stated at.
const TARGET_RATES: [u32; 2] = [1000, 5000];

#[derive(Debug, Serialize)]
pub struct Report {
    pub command: String,
    /// UTC, RFC 3339.
    pub date: String,
    pub machine: Machine,
    pub settings: Settings,
    pub notes: Vec<String>,
    pub wall_s: f64,
    pub summary: Vec<Row>,
    pub targets: Vec<Verdict>,
    /// Every podmesh response was a 200, and there were some.
    pub podmesh_all_200: Option<bool>,
    pub records: Vec<Record>,
}

/// One configuration and test: medians over rounds.
#[derive(Debug, Serialize, Clone)]
pub struct Row {
    pub config: Config,
    pub test: Test,
    pub rounds: usize,
    pub rps: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Minus direct's in the same round, then the median over rounds.
    pub added_p50_ms: Option<f64>,
    pub added_p99_ms: Option<f64>,
    /// Sidecar CPU at 1,000 req/s, as % of one CPU: CPU seconds / responses × 1000 × 100.
    pub cpu_client_pct_per_1k: Option<f64>,
    pub cpu_server_pct_per_1k: Option<f64>,
    pub cpu_app_pct_per_1k: Option<f64>,
    /// Summed over rounds.
    pub responses: u64,
    pub non_200: u64,
    /// Failed requests and scheduled requests never sent.
    pub errors: u64,
    /// VmRSS at the end of the run (median), MiB.
    pub rss_client_mib: Option<f64>,
    pub rss_server_mib: Option<f64>,
    /// VmHWM, the peak since the sidecar started (largest over rounds), MiB.
    pub hwm_client_mib: Option<f64>,
    pub hwm_server_mib: Option<f64>,
    /// The load generator's own timer lateness (median of the runs' p99).
    pub lag_p99_ms: f64,
    pub host_busy_pct: f64,
}

#[derive(Debug, Serialize, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    #[serde(rename = "PASS")]
    Pass,
    #[serde(rename = "MISS")]
    Miss,
    /// Not measured in this run.
    #[serde(rename = "n/a")]
    NotMeasured,
}

#[derive(Debug, Serialize, Clone)]
pub struct Verdict {
    pub target: String,
    pub outcome: Outcome,
    pub podmesh: Option<f64>,
    pub nginx: Option<f64>,
    pub detail: String,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

fn get<T: Copy>(map: &BTreeMap<String, T>, role: &str) -> Option<T> {
    map.get(role).copied()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

impl Report {
    pub fn new(
        command: String,
        date: SystemTime,
        machine: Machine,
        settings: Settings,
        notes: Vec<String>,
        records: Vec<Record>,
        wall: Duration,
    ) -> Report {
        let mut summary = Vec::new();
        let tests: Vec<Test> = settings.rates.iter().map(|r| Test::Rate(*r)).chain([Test::Saturation]).collect();
        for &config in &settings.configs {
            for &test in &tests {
                if let Some(row) = row(&records, config, test) {
                    summary.push(row);
                }
            }
        }
        let podmesh: Vec<&Record> = records.iter().filter(|r| r.config == Config::Podmesh).collect();
        let podmesh_all_200 = (!podmesh.is_empty()).then(|| {
            podmesh.iter().all(|r| r.load.non_200 == 0 && r.load.errors == 0 && r.load.unsent == 0 && r.load.ok > 0)
        });
        let targets = verdicts(&summary);
        Report {
            command,
            date: rfc3339(date),
            machine,
            settings,
            notes,
            wall_s: wall.as_secs_f64(),
            summary,
            targets,
            podmesh_all_200,
            records,
        }
    }

    fn find(&self, config: Config, test: Test) -> Option<&Row> {
        self.summary.iter().find(|r| r.config == config && r.test == test)
    }

    pub fn text(&self) -> String {
        let mut o = String::new();
        let s = &self.settings;
        let m = &self.machine;
        let _ = writeln!(o, "podmesh bench proxy: sidecar pairs with mTLS against a direct connection");
        let _ = writeln!(o, "command:  {}", self.command);
        let _ = writeln!(o, "date:     {} ({:.0} s)", self.date, self.wall_s);
        let _ = writeln!(
            o,
            "machine:  {} CPUs, load average {} before, {} after; Linux {}",
            m.nproc, m.loadavg_before, m.loadavg_after, m.kernel
        );
        let peers: Vec<&str> = [m.nginx.as_deref(), m.haproxy.as_deref()].into_iter().flatten().collect();
        if !peers.is_empty() {
            let _ = writeln!(o, "peers:    {}", peers.join("; "));
        }
        let _ = writeln!(
            o,
            "setup:    app: {}; {} keep-alive HTTP/1.1 connections; {} worker(s) per sidecar;",
            s.app, s.conns, s.workers
        );
        let _ = writeln!(
            o,
            "          {}; {} round(s) of {} s per rate and {} s at saturation, order rotated per round",
            s.pinning.as_deref().unwrap_or("not pinned"),
            s.rounds,
            s.duration_s,
            s.sat_duration_s
        );
        let lag = self.records.iter().map(|r| r.load.lag_p99_ms).fold(0.0, f64::max);
        let late: u64 = self.records.iter().filter(|r| r.test != Test::Saturation).map(|r| r.load.late).sum();
        let _ = writeln!(
            o,
            "loadgen:  timer lateness p99 at most {lag:.3} ms in any run (not charged to the configurations); {} \
             request(s) waited for a busy connection and were CO-corrected",
            thousands(late as f64)
        );
        for n in &self.notes {
            let _ = writeln!(o, "note:     {n}");
        }
        let _ = writeln!(
            o,
            "\nLatency in ms, medians over rounds; \"added\" is the configuration's minus direct's in the same round \
             (median over rounds).\nCPU: the sidecars' CPU time per 1,000 requests, i.e. % of one CPU at 1,000 \
             req/s, client + server."
        );
        for &rate in &s.rates {
            let _ = writeln!(
                o,
                "\n{} req/s, open loop (latency from the scheduled send: coordinated-omission corrected)",
                thousands(f64::from(rate))
            );
            self.table(&mut o, Test::Rate(rate));
        }
        let _ = writeln!(
            o,
            "\nsaturation, closed loop over {} connections (latency from the send, not CO-corrected)",
            s.conns
        );
        self.table(&mut o, Test::Saturation);
        let _ = writeln!(
            o,
            "\nmemory per sidecar, MiB, client / server: VmRSS after the saturation run; peak = VmHWM over the whole \
             run"
        );
        for &config in &s.configs {
            if let Some(r) = self.find(config, Test::Saturation)
                && let (Some(rc), Some(rs), Some(hc), Some(hs)) =
                    (r.rss_client_mib, r.rss_server_mib, r.hwm_client_mib, r.hwm_server_mib)
            {
                let _ = writeln!(o, "  {:<18} {rc:>5.1} / {rs:<5.1}   peak {hc:>5.1} / {hs:<5.1}", config.label());
            }
        }
        let _ = writeln!(o, "\ntargets: the podmesh pair against the nginx pair measured in this run");
        for v in &self.targets {
            let tag = match v.outcome {
                Outcome::Pass => "PASS",
                Outcome::Miss => "MISS",
                Outcome::NotMeasured => "n/a ",
            };
            let _ = writeln!(o, "  {tag}  {:<40} {}", v.target, v.detail);
        }
        match self.podmesh_all_200 {
            Some(true) => {
                let n: u64 = self.summary.iter().filter(|r| r.config == Config::Podmesh).map(|r| r.responses).sum();
                let _ = writeln!(o, "  ok    podmesh responses: all {} were 200, no errors", thousands(n as f64));
            }
            Some(false) => {
                let _ = writeln!(o, "  FAIL  podmesh responses: some were not 200, failed or were never sent (above)");
            }
            None => {}
        }
        o
    }

    fn table(&self, o: &mut String, test: Test) {
        let sat = test == Test::Saturation;
        let _ = writeln!(
            o,
            "  {:<18} {:>8} {:>7} {:>7} {:>7} {:>9} {:>9}  {:<24} {:>6}",
            "configuration",
            "req/s",
            "p50",
            "p99",
            "max",
            if sat { "x nginx" } else { "added p50" },
            if sat { "" } else { "added p99" },
            "sidecar CPU per 1k req/s",
            "errors"
        );
        let nginx_rps = self.find(Config::Nginx, Test::Saturation).map(|r| r.rps);
        for &config in &self.settings.configs {
            let Some(r) = self.find(config, test) else { continue };
            let delta = |v: Option<f64>| v.map_or("-".to_string(), |d| format!("{d:+.3}"));
            let (c1, c2) = if sat {
                (nginx_rps.filter(|n| *n > 0.0).map_or("-".into(), |n| format!("{:.2}", r.rps / n)), String::new())
            } else {
                (delta(r.added_p50_ms), delta(r.added_p99_ms))
            };
            let cpu = match (r.cpu_client_pct_per_1k, r.cpu_server_pct_per_1k) {
                (Some(c), Some(s)) => format!("{c:.1}% + {s:.1}% = {:.1}%", c + s),
                _ => "-".into(),
            };
            let _ = writeln!(
                o,
                "  {:<18} {:>8} {:>7.3} {:>7.3} {:>7.2} {c1:>9} {c2:>9}  {cpu:<24} {:>6}",
                config.label(),
                thousands(r.rps),
                r.p50_ms,
                r.p99_ms,
                r.max_ms,
                r.errors + r.non_200
            );
        }
    }
}

fn row(records: &[Record], config: Config, test: Test) -> Option<Row> {
    let mine: Vec<&Record> = records.iter().filter(|r| r.config == config && r.test == test).collect();
    if mine.is_empty() {
        return None;
    }
    let direct = |round: u32| records.iter().find(|r| r.config == Config::Direct && r.test == test && r.round == round);
    let med = |f: &dyn Fn(&Record) -> Option<f64>| median(mine.iter().filter_map(|r| f(r)).collect());
    let added = |f: fn(&Record) -> f64| {
        if config == Config::Direct {
            return None;
        }
        median(mine.iter().filter_map(|r| Some(f(r) - f(direct(r.round)?))).collect())
    };
    let cpu = |role: &'static str| {
        move |r: &Record| {
            let responses = r.load.responses;
            (responses > 0).then_some(())?;
            Some(get(&r.cpu_s, role)? / responses as f64 * 1000.0 * 100.0)
        }
    };
    let rss = |role: &'static str| move |r: &Record| get(&r.rss_kib, role).map(mib);
    Some(Row {
        config,
        test,
        rounds: mine.len(),
        rps: med(&|r| Some(r.load.rps)).unwrap_or(0.0),
        p50_ms: med(&|r| Some(r.load.p50_ms)).unwrap_or(0.0),
        p90_ms: med(&|r| Some(r.load.p90_ms)).unwrap_or(0.0),
        p99_ms: med(&|r| Some(r.load.p99_ms)).unwrap_or(0.0),
        max_ms: med(&|r| Some(r.load.max_ms)).unwrap_or(0.0),
        added_p50_ms: added(|r| r.load.p50_ms),
        added_p99_ms: added(|r| r.load.p99_ms),
        cpu_client_pct_per_1k: med(&cpu("client")),
        cpu_server_pct_per_1k: med(&cpu("server")),
        cpu_app_pct_per_1k: med(&cpu("app")),
        responses: mine.iter().map(|r| r.load.responses).sum(),
        non_200: mine.iter().map(|r| r.load.non_200).sum(),
        errors: mine.iter().map(|r| r.load.errors + r.load.unsent).sum(),
        rss_client_mib: med(&rss("client")),
        rss_server_mib: med(&rss("server")),
        hwm_client_mib: mine.iter().filter_map(|r| get(&r.hwm_kib, "client")).max().map(mib),
        hwm_server_mib: mine.iter().filter_map(|r| get(&r.hwm_kib, "server")).max().map(mib),
        lag_p99_ms: med(&|r| Some(r.load.lag_p99_ms)).unwrap_or(0.0),
        host_busy_pct: med(&|r| Some(r.host_busy_pct)).unwrap_or(0.0),
    })
}

fn verdicts(summary: &[Row]) -> Vec<Verdict> {
    let find = |c: Config, t: Test| summary.iter().find(|r| r.config == c && r.test == t);
    let mut out = Vec::new();
    for rate in TARGET_RATES {
        for (what, f) in
            [("p50", (|r: &Row| r.added_p50_ms) as fn(&Row) -> Option<f64>), ("p99", |r: &Row| r.added_p99_ms)]
        {
            let target = format!("added {what} at {} req/s below nginx's", thousands(f64::from(rate)));
            let p = find(Config::Podmesh, Test::Rate(rate)).and_then(f);
            let n = find(Config::Nginx, Test::Rate(rate)).and_then(f);
            out.push(match (p, n) {
                (Some(p), Some(n)) => Verdict {
                    target,
                    outcome: if p < n { Outcome::Pass } else { Outcome::Miss },
                    podmesh: Some(p),
                    nginx: Some(n),
                    detail: format!("podmesh {p:+.3} ms {} nginx {n:+.3} ms", if p < n { "<" } else { ">=" }),
                },
                _ => not_measured(target),
            });
        }
    }
    let target = format!("saturation throughput >= {THROUGHPUT_FACTOR}x nginx's");
    let p = find(Config::Podmesh, Test::Saturation).map(|r| r.rps);
    let n = find(Config::Nginx, Test::Saturation).map(|r| r.rps);
    out.push(match (p, n) {
        (Some(p), Some(n)) => {
            let ok = p >= THROUGHPUT_FACTOR * n;
            Verdict {
                target,
                outcome: if ok { Outcome::Pass } else { Outcome::Miss },
                podmesh: Some(p),
                nginx: Some(n),
                detail: format!(
                    "podmesh {} req/s = {:.2}x nginx {} req/s (needs {})",
                    thousands(p),
                    if n > 0.0 { p / n } else { 0.0 },
                    thousands(n),
                    thousands(THROUGHPUT_FACTOR * n)
                ),
            }
        }
        _ => not_measured(target),
    });
    let target = format!("RSS per sidecar under load < {RSS_TARGET_MIB} MiB");
    let peak = find(Config::Podmesh, Test::Saturation).and_then(|r| Some((r.hwm_client_mib?, r.hwm_server_mib?)));
    let nginx_peak =
        find(Config::Nginx, Test::Saturation).and_then(|r| r.hwm_client_mib?.max(r.hwm_server_mib?).into());
    out.push(match peak {
        Some((c, s)) => {
            let ok = c.max(s) < RSS_TARGET_MIB;
            Verdict {
                target,
                outcome: if ok { Outcome::Pass } else { Outcome::Miss },
                podmesh: Some(c.max(s)),
                nginx: nginx_peak,
                detail: format!("podmesh peak (VmHWM) client {c:.1} MiB, server {s:.1} MiB"),
            }
        }
        None => not_measured(target),
    });
    out
}

fn not_measured(target: String) -> Verdict {
    Verdict {
        target,
        outcome: Outcome::NotMeasured,
        podmesh: None,
        nginx: None,
        detail: "not measured in this run".into(),
    }
}

/// 12345.6 -> "12,346".
fn thousands(v: f64) -> String {
    let n = v.round().max(0.0) as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// RFC 3339 UTC to the second: the access log's formatter, without its milliseconds.
fn rfc3339(t: SystemTime) -> String {
    let with_ms = podmesh_proxy::log::rfc3339(t);
    match with_ms.split_once('.') {
        Some((secs, _)) => format!("{secs}Z"),
        None => with_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_709_210_096);
        assert_eq!(rfc3339(t), "2024-02-29T12:34:56Z");
    }

    #[test]
    fn numbers() {
        assert_eq!(thousands(0.4), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(12_345.6), "12,346");
        assert_eq!(thousands(1_000_000.0), "1,000,000");
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }
}
