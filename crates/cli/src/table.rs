//! `podmesh routes -o table`: a sidecar config as aligned text tables.

use std::fmt::Write as _;

use podmesh_compute::ProxyConfig;

/// Renders rows as columns separated by two spaces, the first row being the header.
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> =
        (0..cols).map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

pub fn routes(cfg: &ProxyConfig) -> String {
    let w = &cfg.workload;
    let out = &cfg.outbound;
    let mut s = String::new();
    let _ = writeln!(s, "sidecar of {}  ip {}  identity {}  workload {}\n", w.pod, w.ip, w.identity, w.workload);

    let mut rows =
        vec![vec!["INBOUND PORT".into(), "PROTOCOL".into(), "MTLS".into(), "SERVICES".into(), "ACCEPTED HOSTS".into()]];
    for p in cfg.inbound.ports.values() {
        let services: Vec<String> = p
            .services
            .iter()
            .map(|s| format!("{}:{}{}", s.service, s.port, if s.headless { " (headless)" } else { "" }))
            .collect();
        let hosts = if p.headless {
            "* (headless)".to_string()
        } else {
            p.hosts.iter().cloned().collect::<Vec<_>>().join(", ")
        };
        rows.push(vec![p.port.to_string(), p.protocol.to_string(), p.mtls.to_string(), services.join(", "), hosts]);
    }
    if rows.len() == 1 {
        rows.push(vec!["(none: no Service selects this pod)".into()]);
    }
    s.push_str(&table(&rows));
    s.push('\n');

    let mut rows = vec![vec!["OUTBOUND LISTENER".into(), "SERVICE".into(), "PROTOCOL".into(), "TCP CLUSTER".into()]];
    for (addr, l) in &out.listeners {
        rows.push(vec![
            addr.to_string(),
            format!("{}:{}", l.service, l.port),
            l.protocol.to_string(),
            l.cluster.to_string(),
        ]);
    }
    s.push_str(&table(&rows));
    s.push('\n');

    let mut rows =
        vec![vec!["ROUTE PORT".into(), "VIRTUAL HOST".into(), "ROUTE".into(), "MATCH".into(), "DESTINATIONS".into()]];
    for (port, t) in &out.routes {
        for vh in &t.virtual_hosts {
            for r in &vh.routes {
                let total: u32 = r.destinations.iter().map(|d| d.weight).sum();
                let dests: Vec<String> = r
                    .destinations
                    .iter()
                    .map(|d| {
                        format!(
                            "{} {}%",
                            d.cluster,
                            if total == 0 { 0 } else { u64::from(d.weight) * 100 / u64::from(total) }
                        )
                    })
                    .collect();
                let matches: Vec<String> = r
                    .matches
                    .iter()
                    .map(|m| {
                        let mut parts = vec![];
                        if let Some(u) = &m.uri {
                            parts.push(format!("uri {u}"));
                        }
                        if let Some(x) = &m.method {
                            parts.push(format!("method {x}"));
                        }
                        for (h, v) in &m.headers {
                            parts.push(format!("{h} {v}"));
                        }
                        parts.join(" & ")
                    })
                    .collect();
                let matched = if matches.is_empty() { "*".to_string() } else { matches.join(" | ") };
                rows.push(vec![port.to_string(), vh.name.clone(), r.name.clone(), matched, dests.join(", ")]);
            }
        }
    }
    s.push_str(&table(&rows));
    s.push('\n');

    let mut rows = vec![vec!["CLUSTER".into(), "READY".into(), "ENDPOINTS".into()]];
    for (name, up) in &out.clusters {
        let ready = up.ready().count();
        let eps: Vec<String> = up
            .endpoints
            .iter()
            .map(|e| {
                let who = e.pod.as_ref().map(|p| p.name.clone()).unwrap_or_else(|| "-".into());
                let tls = if e.tls.is_some() { "mtls" } else { "plain" };
                let ready = if e.ready { "" } else { " not-ready" };
                format!("{} {who} {tls}{ready}", e.address)
            })
            .collect();
        rows.push(vec![name.to_string(), format!("{ready}/{}", up.endpoints.len()), eps.join(", ")]);
    }
    s.push_str(&table(&rows));
    let meshed = out.pods.values().filter(|p| p.identity.is_some()).count();
    let _ = writeln!(s, "\ndirect pod table: {} pods ({meshed} with a sidecar); see -o json", out.pods.len());
    s
}
