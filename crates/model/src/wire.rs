//! The input as written: serde types for the subset of Kubernetes and Istio objects podmesh reads.
//!
//! These mirror the API field names (camelCase) and keep everything optional, so that a missing field becomes a
//! clear validation error (with its path) in [`crate::cluster`] rather than a terse serde message. Fields podmesh
//! does not use are ignored.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

pub type Labels = BTreeMap<String, String>;

#[derive(Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub labels: Option<Labels>,
    pub annotations: Option<Labels>,
}

#[derive(Deserialize, Debug)]
pub struct Namespace {
    #[serde(default)]
    pub metadata: ObjectMeta,
}

// ---------------------------------------------------------------- Service

#[derive(Deserialize, Debug)]
pub struct Service {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: Option<ServiceSpec>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    #[serde(rename = "type")]
    pub type_: Option<String>,
    #[serde(rename = "clusterIP")]
    pub cluster_ip: Option<String>,
    #[serde(rename = "clusterIPs")]
    pub cluster_ips: Option<Vec<String>>,
    pub selector: Option<Labels>,
    pub ports: Option<Vec<ServicePort>>,
    pub publish_not_ready_addresses: Option<bool>,
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    pub name: Option<String>,
    pub port: Option<u16>,
    pub target_port: Option<IntOrString>,
    pub protocol: Option<String>,
    pub app_protocol: Option<String>,
}

/// Kubernetes' IntOrString, as used by `targetPort`: a port number or a port name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntOrString {
    Int(i64),
    String(String),
}

impl<'de> Deserialize<'de> for IntOrString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = IntOrString;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a port number or a port name")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<IntOrString, E> {
                Ok(IntOrString::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<IntOrString, E> {
                i64::try_from(v).map(IntOrString::Int).map_err(|_| E::custom(format!("{v} is not a port number")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IntOrString, E> {
                Ok(IntOrString::String(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

// ---------------------------------------------------------------- Pod and workloads

#[derive(Deserialize, Debug)]
pub struct Pod {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: Option<PodSpec>,
    pub status: Option<PodStatus>,
}

#[derive(Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    pub containers: Option<Vec<Container>>,
    pub hostname: Option<String>,
    pub subdomain: Option<String>,
    pub service_account_name: Option<String>,
    /// Deprecated alias of serviceAccountName, still accepted by the API server.
    pub service_account: Option<String>,
    pub restart_policy: Option<String>,
    pub volumes: Option<Vec<Volume>>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    pub name: Option<String>,
    pub ports: Option<Vec<ContainerPort>>,
    pub command: Option<Vec<String>>,
    pub args: Option<Vec<String>>,
    pub env: Option<Vec<EnvVar>>,
    pub readiness_probe: Option<Probe>,
    pub volume_mounts: Option<Vec<VolumeMount>>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    pub name: Option<String>,
    pub value: Option<String>,
    pub value_from: Option<EnvVarSource>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct EnvVarSource {
    pub field_ref: Option<FieldRef>,
    /// Sources podmesh does not have (secretKeyRef, configMapKeyRef, resourceFieldRef): named in a warning.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct FieldRef {
    pub field_path: Option<String>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    pub http_get: Option<HttpGetAction>,
    pub tcp_socket: Option<TcpSocketAction>,
    pub exec: Option<ExecAction>,
    pub grpc: Option<serde_json::Value>,
    pub initial_delay_seconds: Option<i64>,
    pub period_seconds: Option<i64>,
    pub timeout_seconds: Option<i64>,
    pub success_threshold: Option<i64>,
    pub failure_threshold: Option<i64>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct HttpGetAction {
    pub path: Option<String>,
    pub port: Option<IntOrString>,
    pub host: Option<String>,
    pub scheme: Option<String>,
    pub http_headers: Option<Vec<HttpHeader>>,
}

#[derive(Deserialize, Debug, Clone)]
pub struct HttpHeader {
    pub name: Option<String>,
    pub value: Option<String>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct TcpSocketAction {
    pub port: Option<IntOrString>,
    pub host: Option<String>,
}

#[derive(Deserialize, Debug, Clone)]
pub struct ExecAction {
    pub command: Option<Vec<String>>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    pub name: Option<String>,
    pub empty_dir: Option<serde_json::Value>,
    /// Other volume sources (configMap, secret, hostPath, persistentVolumeClaim, ...): named in a warning.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct VolumeMount {
    pub name: Option<String>,
    pub mount_path: Option<String>,
    pub read_only: Option<bool>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    pub name: Option<String>,
    pub container_port: Option<u16>,
    pub protocol: Option<String>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    #[serde(rename = "podIP")]
    pub pod_ip: Option<String>,
    #[serde(rename = "podIPs")]
    pub pod_ips: Option<Vec<PodIpEntry>>,
    pub conditions: Option<Vec<PodCondition>>,
    pub phase: Option<String>,
}

#[derive(Deserialize, Debug)]
pub struct PodIpEntry {
    pub ip: Option<String>,
}

#[derive(Deserialize, Debug)]
pub struct PodCondition {
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub status: Option<String>,
}

#[derive(Deserialize, Debug, Clone, Default)]
pub struct PodTemplate {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: Option<PodSpec>,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    pub match_labels: Option<Labels>,
}

/// A Deployment or a StatefulSet: the fields both share, plus StatefulSet's `serviceName`.
#[derive(Deserialize, Debug)]
pub struct Workload {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: Option<WorkloadSpec>,
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSpec {
    pub replicas: Option<i64>,
    pub selector: Option<LabelSelector>,
    pub template: Option<PodTemplate>,
    pub service_name: Option<String>,
    pub pod_management_policy: Option<String>,
}

// ---------------------------------------------------------------- EndpointSlice

#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSlice {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub address_type: Option<String>,
    pub endpoints: Option<Vec<Endpoint>>,
    pub ports: Option<Vec<EndpointPort>>,
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    pub addresses: Option<Vec<String>>,
    pub conditions: Option<EndpointConditions>,
    pub hostname: Option<String>,
    pub target_ref: Option<ObjectReference>,
}

#[derive(Deserialize, Debug, Default)]
pub struct EndpointConditions {
    pub ready: Option<bool>,
}

#[derive(Deserialize, Debug)]
pub struct ObjectReference {
    pub kind: Option<String>,
    pub name: Option<String>,
    pub namespace: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct EndpointPort {
    pub name: Option<String>,
    pub port: Option<u16>,
    pub protocol: Option<String>,
}

// ---------------------------------------------------------------- Istio networking

#[derive(Deserialize, Debug)]
pub struct VirtualService {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: Option<VirtualServiceSpec>,
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct VirtualServiceSpec {
    pub hosts: Option<Vec<String>>,
    pub gateways: Option<Vec<String>>,
    pub http: Option<Vec<HttpRoute>>,
    /// Not supported: present only so that a warning can say so.
    pub tcp: Option<serde_json::Value>,
    pub tls: Option<serde_json::Value>,
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct HttpRoute {
    pub name: Option<String>,
    #[serde(rename = "match")]
    pub match_: Option<Vec<HttpMatchRequest>>,
    pub route: Option<Vec<HttpRouteDestination>>,
    pub timeout: Option<String>,
    pub retries: Option<HttpRetry>,
    /// Not supported: present only so that a warning can say so.
    pub redirect: Option<serde_json::Value>,
    pub rewrite: Option<serde_json::Value>,
    pub fault: Option<serde_json::Value>,
    pub mirror: Option<serde_json::Value>,
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct HttpMatchRequest {
    pub uri: Option<StringMatch>,
    pub headers: Option<BTreeMap<String, StringMatch>>,
    pub method: Option<StringMatch>,
    pub port: Option<u16>,
}

#[derive(Deserialize, Debug)]
pub struct StringMatch {
    pub exact: Option<String>,
    pub prefix: Option<String>,
    pub regex: Option<String>,
}

#[derive(Deserialize, Debug)]
pub struct HttpRouteDestination {
    pub destination: Option<Destination>,
    pub weight: Option<i64>,
}

#[derive(Deserialize, Debug)]
pub struct Destination {
    pub host: Option<String>,
    pub subset: Option<String>,
    pub port: Option<PortSelector>,
}

#[derive(Deserialize, Debug)]
pub struct PortSelector {
    pub number: Option<u16>,
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct HttpRetry {
    pub attempts: Option<u32>,
}

#[derive(Deserialize, Debug)]
pub struct DestinationRule {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: Option<DestinationRuleSpec>,
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct DestinationRuleSpec {
    pub host: Option<String>,
    pub subsets: Option<Vec<Subset>>,
    /// Not supported: present only so that a warning can say so.
    pub traffic_policy: Option<serde_json::Value>,
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Subset {
    pub name: Option<String>,
    pub labels: Option<Labels>,
    pub traffic_policy: Option<serde_json::Value>,
}

// ---------------------------------------------------------------- Istio security

#[derive(Deserialize, Debug)]
pub struct PeerAuthentication {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PeerAuthenticationSpec,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct PeerAuthenticationSpec {
    pub selector: Option<LabelSelector>,
    pub mtls: Option<MutualTls>,
    pub port_level_mtls: Option<BTreeMap<String, MutualTls>>,
}

#[derive(Deserialize, Debug)]
pub struct MutualTls {
    pub mode: Option<String>,
}

// ---------------------------------------------------------------- podmesh

/// `apiVersion: podmesh.io/v1alpha1`, `kind: MeshConfig`: mesh-wide settings. All optional.
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshConfigSpec {
    pub trust_domain: Option<String>,
    pub cluster_domain: Option<String>,
    pub root_namespace: Option<String>,
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
    #[serde(rename = "podCIDR")]
    pub pod_cidr: Option<String>,
    #[serde(rename = "serviceCIDR")]
    pub service_cidr: Option<String>,
    pub protocol_detection_timeout: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct OutboundTrafficPolicy {
    pub mode: Option<String>,
}

#[derive(Deserialize, Debug)]
pub struct MeshConfig {
    #[serde(default)]
    pub spec: MeshConfigSpec,
}
