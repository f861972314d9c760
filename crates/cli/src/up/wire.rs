//! What the commands (`apply`, `get`, `scale`, `down`, ...) and the running mesh say to each other over its
//! control socket (`STATE/up.sock`): one JSON request per connection, one JSON line back.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// The largest request or response line: a manifest directory well beyond any local mesh's.
pub const MAX_LINE: usize = 64 << 20;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Request {
    /// Pods, Services and endpoints as they are now.
    Status,
    /// Apply these manifests (each a file's name and text), as `kubectl apply`.
    Apply {
        files: Vec<File>,
    },
    /// Delete the objects these manifests name.
    Delete {
        files: Vec<File>,
    },
    Scale {
        kind: String,
        namespace: String,
        name: String,
        replicas: u32,
    },
    /// What a command run in a pod's container sees over the machine's files: `[source, target]` pairs.
    Files {
        namespace: String,
        name: String,
        container: Option<String>,
    },
    /// Stop the control plane and start a new one (the sidecars reconnect).
    RestartControlPlane,
    /// Stop every pod and end the mesh.
    Down,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct File {
    pub name: String,
    pub text: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub data: serde_json::Value,
}

impl Response {
    pub fn ok(data: serde_json::Value) -> Response {
        Response { ok: true, error: None, data }
    }

    pub fn error(e: impl Into<String>) -> Response {
        Response { ok: false, error: Some(e.into()), data: serde_json::Value::Null }
    }
}

/// The mesh's status, as `Request::Status` returns it.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// Pods that should run, with what the node says of each.
    pub pods: Vec<PodRow>,
    pub services: Vec<ServiceRow>,
    pub endpoints: Vec<EndpointsRow>,
    /// The control plane's generation.
    pub generation: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodRow {
    pub namespace: String,
    pub name: String,
    pub ip: String,
    pub node: String,
    pub node_ip: String,
    pub ready: bool,
    pub phase: String,
    pub restarts: u32,
    /// Whether the pod has a sidecar (meshed) or not (plain).
    pub sidecar: bool,
    /// The sidecar's readiness and restarts (null for a plain pod).
    #[serde(default)]
    pub sidecar_status: serde_json::Value,
    /// Each container: name, state (waiting, running, terminated), ready, restarts, lastExitCode, message.
    #[serde(default)]
    pub containers: serde_json::Value,
    #[serde(default)]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRow {
    pub namespace: String,
    pub name: String,
    /// "None" for a headless Service.
    pub cluster_ip: String,
    /// `port/protocol`, e.g. `80/TCP`, with the target port.
    pub ports: Vec<String>,
    pub headless: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointsRow {
    pub namespace: String,
    pub name: String,
    /// `ip:port` of ready endpoints.
    pub ready: Vec<String>,
    pub not_ready: Vec<String>,
}

/// Sends one request to the mesh whose state is in `state`, waiting at most `timeout` for the answer.
pub async fn call(state: &Path, request: &Request, timeout: Duration) -> Result<serde_json::Value> {
    let socket = state.join("up.sock");
    let exchange = async {
        let mut stream = UnixStream::connect(&socket).await.with_context(|| {
            format!(
                "no local mesh is running with its state in {} (start one with `podmesh up -f DIR`)",
                state.display()
            )
        })?;
        let mut line = serde_json::to_vec(request)?;
        line.push(b'\n');
        stream.write_all(&line).await?;
        let mut reader = BufReader::new(stream);
        let mut answer = String::new();
        reader.read_line(&mut answer).await.context("reading the mesh's answer")?;
        let response: Response = serde_json::from_str(&answer).context("the mesh's answer is not JSON")?;
        if !response.ok {
            bail!("{}", response.error.unwrap_or_else(|| "the mesh refused the request".into()));
        }
        Ok(response.data)
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .with_context(|| format!("the mesh did not answer within {} s", timeout.as_secs()))?
}
