//! The node's Service NAT, as kube-proxy's iptables mode makes it. A connection from a plain pod or a node process
//! to a `ClusterIP:port` is translated once, when it opens (conntrack keeps the choice for its life), to one of the
//! Service's ready endpoints, each equally likely. A pod that reaches itself through its Service is masqueraded
//! on the way back in, so its reply goes through the node (it would otherwise answer itself directly, and the
//! connection would not match). Meshed pods never get here: their sidecar takes the connection inside the pod.
//!
//! The rules are made whole for each generation of the index, as `iptables-restore` (or `ip6tables-restore`)
//! input for the node's own `nat` table, which the runtime owns entirely. A Service without a ready endpoint has
//! no rule: its address stays unreachable, and a connection fails at once.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use podmesh_compute::Outbound;

/// Which addresses a rule set is for: `iptables-restore` takes IPv4 rules, `ip6tables-restore` IPv6 ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn of(ip: IpAddr) -> Family {
        if ip.is_ipv4() { Family::V4 } else { Family::V6 }
    }

    fn host_prefix(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

/// The mark of a connection to masquerade: a pod that reached itself through its own Service.
pub const HAIRPIN_MARK: u32 = 0x4000;

/// The `nat` table for the Services' addresses of `family` in `outbound`, for `iptables-restore`.
pub fn rules(outbound: &Outbound, family: Family) -> String {
    let mut chains = String::new();
    let mut body = String::new();
    let comment = "-m comment --comment \"podmesh Service addresses\"";
    let _ = writeln!(body, "-A PREROUTING {comment} -j PODMESH-SERVICES");
    let _ = writeln!(body, "-A OUTPUT {comment} -j PODMESH-SERVICES");
    let _ = writeln!(body, "-A POSTROUTING -m mark --mark {HAIRPIN_MARK:#x}/{HAIRPIN_MARK:#x} -j MASQUERADE");
    for (addr, listener) in outbound.listeners.iter().filter(|(a, _)| Family::of(a.ip()) == family) {
        let Some(upstream) = outbound.clusters.get(&listener.cluster) else { continue };
        let ready: Vec<SocketAddr> = upstream.endpoints.iter().filter(|e| e.ready).map(|e| e.address).collect();
        if ready.is_empty() {
            continue;
        }
        let name = format!("{}:{}", listener.service, listener.port);
        let svc = chain("SVC", &format!("{name}@{addr}"));
        let _ = writeln!(chains, ":{svc} - [0:0]");
        let _ = writeln!(
            body,
            "-A PODMESH-SERVICES -d {}/{} -p tcp -m tcp --dport {} -m comment --comment \"{name}\" -j {svc}",
            addr.ip(),
            family.host_prefix(),
            addr.port()
        );
        for (i, endpoint) in ready.iter().enumerate() {
            let sep = chain("SEP", &format!("{name}@{addr}>{endpoint}"));
            let _ = writeln!(chains, ":{sep} - [0:0]");
            // Each endpoint in turn takes an equal share of what the ones before it left.
            let left = ready.len() - i;
            let pick = if left > 1 {
                format!("-m statistic --mode random --probability {:.10} ", 1.0 / left as f64)
            } else {
                String::new()
            };
            let _ = writeln!(body, "-A {svc} {pick}-j {sep}");
            let _ = writeln!(
                body,
                "-A {sep} -s {}/{} -j MARK --set-xmark {HAIRPIN_MARK:#x}/{HAIRPIN_MARK:#x}",
                endpoint.ip(),
                family.host_prefix()
            );
            let _ = writeln!(body, "-A {sep} -p tcp -m tcp -j DNAT --to-destination {endpoint}");
        }
    }
    format!(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n\
         :PODMESH-SERVICES - [0:0]\n{chains}{body}COMMIT\n"
    )
}

/// A chain name of at most 28 characters (iptables' limit), stable for what it stands for.
fn chain(kind: &str, what: &str) -> String {
    // FNV-1a: stable across builds and runs, unlike the standard library's hasher.
    let hash = what.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("PODMESH-{kind}-{hash:016X}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn index() -> podmesh_compute::Index {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart");
        podmesh_compute::Index::new(podmesh_model::load(&[podmesh_model::Source::Path(root)]).unwrap().cluster)
    }

    #[test]
    fn each_service_address_picks_one_ready_endpoint_per_connection_equally() {
        let index = index();
        let out = index.outbound();
        let text = rules(out, Family::V4);
        assert!(text.starts_with("*nat\n") && text.ends_with("COMMIT\n"), "{text}");
        // Every chain a rule jumps to is declared, and every name fits iptables' limit.
        let declared: Vec<&str> =
            text.lines().filter_map(|l| l.strip_prefix(':')).map(|l| l.split(' ').next().unwrap()).collect();
        for jump in text.lines().filter_map(|l| l.split(" -j ").nth(1)).map(|j| j.split(' ').next().unwrap()) {
            if jump.starts_with("PODMESH") {
                assert!(declared.contains(&jump), "{jump} is not declared");
            }
        }
        assert!(declared.iter().all(|c| c.len() <= 28), "{declared:?}");

        // A Service: its rule, and one endpoint chain per ready endpoint with shares 1/n, 1/(n-1), ... 1.
        let (addr, listener) = out.listeners.iter().find(|(_, l)| &*l.service.name == "web").unwrap();
        let ready: Vec<SocketAddr> =
            out.clusters[&listener.cluster].endpoints.iter().filter(|e| e.ready).map(|e| e.address).collect();
        assert!(ready.len() >= 2, "{ready:?}");
        let rule = text
            .lines()
            .find(|l| {
                l.starts_with(&format!("-A PODMESH-SERVICES -d {}/32 ", addr.ip()))
                    && l.contains(&format!("--dport {} ", addr.port()))
            })
            .unwrap();
        let svc = rule.rsplit(" -j ").next().unwrap();
        let picks: Vec<&str> = text.lines().filter(|l| l.starts_with(&format!("-A {svc} "))).collect();
        assert_eq!(picks.len(), ready.len());
        let n = ready.len();
        for (i, pick) in picks.iter().enumerate() {
            match n - i {
                1 => assert!(!pick.contains("statistic"), "{pick}"),
                left => assert!(pick.contains(&format!("--probability {:.10}", 1.0 / left as f64)), "{pick}"),
            }
        }
        let targets: Vec<String> = text
            .lines()
            .filter_map(|l| l.split("--to-destination ").nth(1))
            .map(str::to_string)
            .filter(|t| ready.iter().any(|r| r.to_string() == *t))
            .collect();
        assert_eq!(targets.len(), n);
        // A pod reaching itself is marked for masquerade.
        for endpoint in &ready {
            assert!(text.contains(&format!("-s {}/32 -j MARK --set-xmark 0x4000/0x4000", endpoint.ip())));
        }
        assert!(text.contains("-A POSTROUTING -m mark --mark 0x4000/0x4000 -j MASQUERADE"));
        // Only IPv4 here.
        assert!(!rules(out, Family::V6).contains("-A PODMESH-SERVICES"));
    }

    #[test]
    fn a_service_without_ready_endpoints_has_no_rule() {
        let index = index();
        let mut out = (**index.outbound()).clone();
        let (addr, listener) =
            out.listeners.iter().find(|(_, l)| &*l.service.name == "web").map(|(a, l)| (*a, l.clone())).unwrap();
        for e in &mut out.clusters.get_mut(&listener.cluster).unwrap().endpoints {
            e.ready = false;
        }
        let text = rules(&out, Family::V4);
        assert!(!text.contains(&format!("-d {}/32 -p tcp -m tcp --dport {} ", addr.ip(), addr.port())), "{text}");
        assert!(text.contains("-A PODMESH-SERVICES"), "the other Services keep theirs");
    }

    #[test]
    fn chain_names_are_stable_and_distinct() {
        assert_eq!(chain("SVC", "shop/web:80@10.96.0.10:80"), chain("SVC", "shop/web:80@10.96.0.10:80"));
        assert_ne!(chain("SVC", "shop/web:80@10.96.0.10:80"), chain("SVC", "shop/web:81@10.96.0.10:81"));
        assert_eq!(chain("SEP", "x").len(), 28);
    }
}
