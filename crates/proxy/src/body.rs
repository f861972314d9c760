//! Counting bodies: how the access log and metrics learn the bytes of an HTTP request and response, and when the
//! response really ended. The record of a request is written once its response body has been sent (or the
//! exchange broke off), so `duration_ms` covers the whole exchange, as Envoy's does.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

/// Runs once when a counted body ends: `true` when it reached its end, `false` when it failed or was dropped
/// before.
pub type OnEnd = Box<dyn FnOnce(bool) + Send + Sync>;

/// A body that adds its data bytes to `count` as they pass, and calls `on_end` once.
pub struct Counted<B> {
    inner: B,
    count: Arc<AtomicU64>,
    on_end: Option<OnEnd>,
}

impl<B> std::fmt::Debug for Counted<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counted").field("count", &self.count.load(Ordering::Relaxed)).finish_non_exhaustive()
    }
}

impl<B> Counted<B> {
    pub fn new(inner: B, count: Arc<AtomicU64>, on_end: Option<OnEnd>) -> Self {
        Self { inner, count, on_end }
    }

    fn end(&mut self, complete: bool) {
        if let Some(f) = self.on_end.take() {
            f(complete);
        }
    }
}

impl<B> Drop for Counted<B> {
    fn drop(&mut self) {
        // Never polled to its end: an empty body hyper did not poll (HEAD, 204) is complete; anything else was
        // cut short.
        let complete = self.on_end.is_some() && self.count.load(Ordering::Relaxed) == 0;
        self.end(complete);
    }
}

impl<B> Body for Counted<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.count.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                // Trailers are always the last frame; after them hyper stops polling.
                if frame.is_trailers() || self.inner.is_end_stream() {
                    self.end(true);
                }
            }
            Poll::Ready(Some(Err(_))) => self.end(false),
            Poll::Ready(None) => self.end(true),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
