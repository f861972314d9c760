//! Mesh-wide settings (`kind: MeshConfig`), with the defaults a user gets when there is none.

use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// `outboundTrafficPolicy.mode` (R3.4): what the source sidecar does with traffic to addresses outside the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundPolicy {
    /// Forward as is, plaintext (reason `passthrough`).
    #[default]
    AllowAny,
    /// Reject (reason `unknown_destination`).
    RegistryOnly,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshConfig {
    /// The trust domain of SPIFFE identities: `spiffe://<trustDomain>/ns/<ns>/sa/<sa>`.
    pub trust_domain: String,
    /// The DNS suffix of Service names (`<svc>.<ns>.svc.<clusterDomain>`).
    pub cluster_domain: String,
    /// Where a selector-less PeerAuthentication applies mesh-wide.
    pub root_namespace: String,
    pub outbound_traffic_policy: OutboundPolicy,
    /// Pods without `status.podIP` get an address from here.
    #[serde(rename = "podCIDR")]
    pub pod_cidr: IpNet,
    /// Services without `spec.clusterIP` get an address from here.
    #[serde(rename = "serviceCIDR")]
    pub service_cidr: IpNet,
    /// How long the sidecar waits for a client's first bytes on an `auto` port before treating it as TCP (R1.3).
    #[serde(with = "crate::cluster::duration_ms_required")]
    pub protocol_detection_timeout: Duration,
}

pub const DEFAULT_POD_CIDR: &str = "10.244.0.0/16";
pub const DEFAULT_SERVICE_CIDR: &str = "10.96.0.0/12";

impl Default for MeshConfig {
    fn default() -> Self {
        Self {
            trust_domain: "cluster.local".into(),
            cluster_domain: "cluster.local".into(),
            root_namespace: "podmesh-system".into(),
            outbound_traffic_policy: OutboundPolicy::AllowAny,
            pod_cidr: IpNet::V4(ipnet::Ipv4Net::new_assert([10, 244, 0, 0].into(), 16)),
            service_cidr: IpNet::V4(ipnet::Ipv4Net::new_assert([10, 96, 0, 0].into(), 12)),
            protocol_detection_timeout: Duration::from_secs(5),
        }
    }
}

/// Parses a duration as Istio and Kubernetes write them: `250ms`, `5s`, `1.5s`, `2m`, `1h`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = s.split_at(split);
    let value: f64 = num.parse().ok()?;
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return None,
    };
    let secs = value * scale;
    (secs.is_finite() && (0.0..=1e9).contains(&secs)).then(|| Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("-1s"), None);
        assert_eq!(parse_duration("1e400s"), None);
    }
}
