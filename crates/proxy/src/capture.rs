//! Transparent capture, as istio-init does it: NAT rules in the pod's network namespace send every outbound TCP
//! connection to the sidecar's 15001 and every inbound one to 15006; the original destination stays readable
//! from the socket. One function writes the rules ([`rules`]); `podmesh capture install` applies them at once
//! with `iptables-restore` (and `ip6tables-restore`), so a pod never runs with half its rules.
//!
//! What is never captured (no loops, ever):
//! - the sidecar's own connections: by socket mark (the proxy marks every socket it opens) or by user id (the
//!   proxy runs as its own uid in a real pod) — R7;
//! - inbound connections to the sidecar's own ports (R7): 15000, 15001, 15006, 15020, 15021, 15053;
//! - loopback: connections to 127.0.0.0/8 (::1) and anything leaving through `lo` (the application calling
//!   itself, also by its pod IP).

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Command, Stdio};

use podmesh_route::request::ports;

/// How the sidecar's own connections are recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exclude {
    /// Sockets carrying this SO_MARK (the proxy's `--mark`).
    Mark(u32),
    /// Sockets owned by this user id (the proxy runs as it; Istio's 1337).
    Uid(u32),
}

/// The default mark and uid: Istio's 1337.
pub const DEFAULT_MARK: u32 = 1337;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// The `iptables-restore` input for one address family.
pub fn rules(family: Family, exclude: Exclude, inbound_sources: &[std::net::IpAddr]) -> String {
    let loopback = match family {
        Family::V4 => "127.0.0.0/8",
        Family::V6 => "::1/128",
    };
    let own = match exclude {
        Exclude::Mark(m) => format!("-m mark --mark {m:#x}"),
        Exclude::Uid(u) => format!("-m owner --uid-owner {u}"),
    };
    let mut r = String::new();
    r.push_str("# podmesh capture rules (R7): outbound TCP -> 15001, inbound TCP -> 15006.\n*nat\n");
    for chain in ["PODMESH_INBOUND", "PODMESH_OUTPUT"] {
        let _ = writeln!(r, ":{chain} - [0:0]");
    }
    // Inbound: everything but the sidecar's own ports.
    r.push_str("-A PREROUTING -p tcp -j PODMESH_INBOUND\n");
    for source in inbound_sources.iter().filter(|s| s.is_ipv4() == (family == Family::V4)) {
        let prefix = if source.is_ipv4() { 32 } else { 128 };
        let _ = writeln!(r, "-A PODMESH_INBOUND -s {source}/{prefix} -j RETURN");
    }
    for p in ports::ALL {
        let _ = writeln!(r, "-A PODMESH_INBOUND -p tcp --dport {p} -j RETURN");
    }
    let _ = writeln!(r, "-A PODMESH_INBOUND -p tcp -j REDIRECT --to-ports {}", ports::INBOUND_CAPTURE);
    // Outbound: everything but the sidecar's own sockets and loopback.
    r.push_str("-A OUTPUT -p tcp -j PODMESH_OUTPUT\n");
    let _ = writeln!(r, "-A PODMESH_OUTPUT {own} -j RETURN");
    let _ = writeln!(r, "-A PODMESH_OUTPUT -d {loopback} -j RETURN");
    r.push_str("-A PODMESH_OUTPUT -o lo -j RETURN\n");
    let _ = writeln!(r, "-A PODMESH_OUTPUT -p tcp -j REDIRECT --to-ports {}", ports::OUTBOUND_CAPTURE);
    r.push_str("COMMIT\n");
    r
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("cannot run {tool}: {source} (install the iptables package: apt-get install -y iptables)")]
    Spawn { tool: &'static str, source: std::io::Error },
    #[error("{tool} refused the rules: {stderr}")]
    Refused { tool: &'static str, stderr: String },
}

/// Applies the rules of both families in the current network namespace, atomically per family. `--noflush`
/// keeps other tables' rules; the rules go into the nat table's own chains.
pub fn install(exclude: Exclude, inbound_sources: &[std::net::IpAddr], ipv6: bool) -> Result<(), CaptureError> {
    restore("iptables-restore", &rules(Family::V4, exclude, inbound_sources))?;
    if ipv6 {
        restore("ip6tables-restore", &rules(Family::V6, exclude, inbound_sources))?;
    }
    Ok(())
}

fn restore(tool: &'static str, input: &str) -> Result<(), CaptureError> {
    let mut child = Command::new(tool)
        .arg("--noflush")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| CaptureError::Spawn { tool, source })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes()).map_err(|source| CaptureError::Spawn { tool, source })?;
    }
    let out = child.wait_with_output().map_err(|source| CaptureError::Spawn { tool, source })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(CaptureError::Refused { tool, stderr: String::from_utf8_lossy(&out.stderr).trim().to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_redirect_everything_but_the_sidecar_and_loopback() {
        let v4 = rules(Family::V4, Exclude::Mark(1337), &[]);
        let lines: Vec<&str> = v4.lines().filter(|l| l.starts_with('-')).collect();
        // Inbound: the sidecar's ports return before the redirect.
        let redirect_in = lines.iter().position(|l| l.contains("--to-ports 15006")).unwrap_or(usize::MAX);
        for p in ports::ALL {
            let ret = lines.iter().position(|l| l.contains(&format!("--dport {p} -j RETURN")));
            assert!(ret.is_some_and(|i| i < redirect_in), "port {p} is not excluded before the redirect");
        }
        // Outbound: the proxy's mark, loopback and lo return before the redirect.
        let redirect_out = lines.iter().position(|l| l.contains("--to-ports 15001")).unwrap_or(usize::MAX);
        for needle in ["--mark 0x539 -j RETURN", "-d 127.0.0.0/8 -j RETURN", "-o lo -j RETURN"] {
            let i = lines.iter().position(|l| l.contains(needle));
            assert!(i.is_some_and(|i| i < redirect_out), "{needle} missing or after the redirect");
        }
        assert!(v4.starts_with("# podmesh") && v4.ends_with("COMMIT\n"));
        let v6 = rules(Family::V6, Exclude::Uid(1337), &[]);
        assert!(v6.contains("-m owner --uid-owner 1337 -j RETURN") && v6.contains("-d ::1/128 -j RETURN"));
        // A source let through (the node's probes), before the redirect, in its own family only.
        let probe: std::net::IpAddr = "169.254.7.127".parse().unwrap();
        let with = rules(Family::V4, Exclude::Mark(1337), &[probe]);
        let lines: Vec<&str> = with.lines().collect();
        let ret = lines.iter().position(|l| *l == "-A PODMESH_INBOUND -s 169.254.7.127/32 -j RETURN");
        let redirect = lines.iter().position(|l| l.contains("--to-ports 15006"));
        assert!(ret.is_some() && ret < redirect, "{with}");
        assert!(!rules(Family::V6, Exclude::Mark(1337), &[probe]).contains("169.254"));
    }
}
