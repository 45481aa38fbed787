//! A response body that gives up when the origin stops sending: without it
//! an origin that sends its headers and half a body, then nothing, would
//! hold the person's connection (and a connection slot) forever.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::BoxError;

pin_project_lite::pin_project! {
    /// Wraps a body; fails it once no frame has come for `idle`.
    pub struct IdleBody<B> {
        #[pin]
        inner: B,
        idle: Duration,
        last_frame: Instant,
        // Created only when the body first has to wait, so a response that
        // is already complete costs no timer.
        timer: Option<Pin<Box<Sleep>>>,
    }
}

impl<B> IdleBody<B> {
    pub fn new(inner: B, idle: Duration) -> Self {
        IdleBody { inner, idle, last_frame: Instant::now(), timer: None }
    }
}

/// The error a stalled body ends with (the client sees the connection close).
#[derive(Debug, thiserror::Error)]
#[error("the origin sent nothing for {0:?}; response cut off")]
pub struct BodyStalled(Duration);

impl<B> Body for IdleBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                *this.last_frame = Instant::now();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let deadline = *this.last_frame + *this.idle;
                let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyStalled(*this.idle))))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_sending_fails_after_the_idle_time_and_one_that_flows_does_not() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
        let stream = tokio_stream_from(rx);
        let mut body = IdleBody::new(StreamBody::new(stream), Duration::from_secs(10));
        tx.send(Ok(Frame::data(Bytes::from_static(b"half")))).await.unwrap();
        assert_eq!(body.frame().await.unwrap().unwrap().into_data().unwrap(), "half");
        // A frame every 6 s keeps it alive past the 10 s idle time.
        for _ in 0..3 {
            let tx = tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(6)).await;
                tx.send(Ok(Frame::data(Bytes::from_static(b"more")))).await.unwrap();
            });
            assert!(body.frame().await.unwrap().is_ok());
        }
        // Then nothing: the body fails after 10 s, not before.
        let started = Instant::now();
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(err.to_string().contains("sent nothing"), "{err}");
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        drop(tx);
    }

    fn tokio_stream_from<T>(mut rx: tokio::sync::mpsc::Receiver<T>) -> impl futures_util::Stream<Item = T> + Unpin {
        Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
    }
}
