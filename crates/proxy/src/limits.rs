//! Hardening defaults: how much a client may send, for how long, and how many at once. Each value is what
//! Envoy (Istio's sidecar) or hyper uses by default unless noted, so moving an application onto the mesh does not
//! tighten what it can receive; the README lists them.

use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// HTTP/1 request head (request line and headers), bytes; beyond it the client gets 431. Envoy: 60 KiB.
    pub max_header_bytes: usize,
    /// HTTP/1 header count; beyond it 431. Envoy and hyper: 100.
    pub max_headers: usize,
    /// A request head must arrive within this (slowloris). Envoy's `request_headers_timeout` is off by default;
    /// hyper's is 30 s; 10 s is plenty for any real client.
    pub header_read_timeout: Duration,
    /// HTTP/2 concurrent streams per connection. Envoy: 2^31−1 (effectively none); 1,000 bounds memory per
    /// connection while no real gRPC client comes near it.
    pub max_concurrent_streams: u32,
    /// HTTP/2 header list (HPACK-decoded), bytes; also bounds CONTINUATION floods. Envoy: 60 KiB.
    pub max_header_list_bytes: u32,
    /// HTTP/2 streams a client may open and reset before we accept them (the rapid-reset attack,
    /// CVE-2023-44487): beyond it the connection is closed with GOAWAY. hyper: 20.
    pub max_pending_accept_reset_streams: usize,
    /// Streams we reset for a client's protocol errors before closing the connection. hyper: 1,024.
    pub max_local_error_reset_streams: usize,
    /// HTTP/2 keep-alive: a PING after this much silence, and the connection closed if unanswered for
    /// `h2_keep_alive_timeout`.
    pub h2_keep_alive_interval: Duration,
    pub h2_keep_alive_timeout: Duration,
    /// Client connections handled at once, both directions together; beyond it new ones are reset at accept.
    /// Envoy has no default cap; this one keeps a flood from exhausting file descriptors (the default soft limit
    /// is often 1,024 per process, so raise `ulimit -n` to use it all).
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            header_read_timeout: Duration::from_secs(10),
            max_concurrent_streams: 1000,
            max_header_list_bytes: 64 * 1024,
            max_pending_accept_reset_streams: 20,
            max_local_error_reset_streams: 1024,
            h2_keep_alive_interval: Duration::from_secs(60),
            h2_keep_alive_timeout: Duration::from_secs(20),
            max_connections: 16_384,
        }
    }
}

impl Limits {
    /// The HTTP server for one client connection (HTTP/1.1 and HTTP/2 prior knowledge) with these limits.
    pub fn server(&self) -> auto::Builder<TokioExecutor> {
        let mut b = auto::Builder::new(TokioExecutor::new());
        b.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            // hyper refuses a head larger than its read buffer with 431; the buffer holds at least 8 KiB.
            .max_buf_size(self.max_header_bytes.max(8192))
            .max_headers(self.max_headers);
        b.http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(self.max_concurrent_streams)
            .max_header_list_size(self.max_header_list_bytes)
            .max_pending_accept_reset_streams(self.max_pending_accept_reset_streams)
            .max_local_error_reset_streams(self.max_local_error_reset_streams)
            .keep_alive_interval(self.h2_keep_alive_interval)
            .keep_alive_timeout(self.h2_keep_alive_timeout);
        b
    }
}
