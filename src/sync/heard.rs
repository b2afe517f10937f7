//! When the bytes of a `Pull` stream last arrived. A batch over a slow link
//! can take longer than the puller's silence timeout to arrive whole; as
//! long as its bytes keep coming the link is alive, and giving up on it
//! would only send the same batch again, for ever.
//!
//! [`Listening`] wraps the channel a puller calls `Pull` on; it marks
//! [`Heard`] whenever a piece of the reply's body arrives. It knows nothing
//! of messages: the puller still decides what a message means.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tonic::body::Body;
use tonic::transport::Channel;

/// When something last arrived on one stream; starts as heard now.
#[derive(Debug, Clone)]
pub struct Heard {
    start: Instant,
    /// Milliseconds after `start`.
    last_ms: Arc<AtomicU64>,
}

impl Heard {
    pub fn now() -> Self {
        Self {
            start: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    fn mark(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// How long nothing has arrived.
    pub fn silent_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// A channel whose replies mark `heard` as their bytes arrive.
#[derive(Clone)]
pub struct Listening {
    channel: Channel,
    heard: Heard,
}

impl Listening {
    pub fn new(channel: Channel, heard: Heard) -> Self {
        Self { channel, heard }
    }
}

type Reply = http::Response<HeardBody>;

impl tower::Service<http::Request<Body>> for Listening {
    type Response = Reply;
    type Error = tonic::transport::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Reply, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.channel.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let heard = self.heard.clone();
        let reply = self.channel.call(request);
        Box::pin(async move {
            let reply = reply.await?;
            heard.mark();
            Ok(reply.map(|inner| HeardBody { inner, heard }))
        })
    }
}

/// A reply body that marks [`Heard`] whenever a frame of it arrives.
pub struct HeardBody {
    inner: Body,
    heard: Heard,
}

impl http_body::Body for HeardBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &polled {
            self.heard.mark();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_counts_from_the_last_mark() {
        let heard = Heard::now();
        std::thread::sleep(Duration::from_millis(30));
        assert!(heard.silent_for() >= Duration::from_millis(30));
        heard.mark();
        assert!(heard.silent_for() < Duration::from_millis(30));
    }
}
