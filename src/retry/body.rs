//! [`ReplayBody`]: a request body that can be sent again.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::BoxError;
use crate::util::IgnorePoison;

pin_project! {
    /// A request body that keeps the bytes it streams, up to a cap, so
    /// that the request can be sent again (made by
    /// [`HttpReplay`](super::HttpReplay)).
    ///
    /// The first attempt streams the original body as it comes, keeping a
    /// copy of each chunk (`Bytes`, no copy of the data when the body
    /// yields `Bytes`). A replay yields the kept chunks, then continues
    /// with whatever the original body had not yet yielded, so a retry
    /// after an attempt that read only part of the body is still complete.
    /// Once more than the cap has been read, the copies are dropped and
    /// the request can no longer be replayed.
    ///
    /// # Examples
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http_body_util::{BodyExt, Full};
    /// use tower_sluice::retry::ReplayBody;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower_sluice::BoxError> {
    /// let body = ReplayBody::new(Full::new(Bytes::from("hello")), 1024);
    /// assert!(body.is_replayable());
    /// assert_eq!(body.collect().await?.to_bytes(), "hello");
    /// # Ok(())
    /// # }
    /// ```
    pub struct ReplayBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Once { #[pin] body: B },
        Replay { shared: Arc<Mutex<Shared<B>>>, pos: usize, read: u64, hint: SizeHint, done: bool, empty: bool },
    }
}

struct Shared<B> {
    /// The rest of the original body.
    body: Option<Pin<Box<B>>>,
    chunks: Vec<Bytes>,
    /// Chunks yielded by the original body so far (kept or not).
    yielded: usize,
    len: usize,
    cap: usize,
    /// Over the cap, or the original body failed: no more replays.
    spoiled: bool,
    /// The original body has ended.
    eos: bool,
    trailers: Option<HeaderMap>,
}

impl<B: Body> ReplayBody<B> {
    /// A body that keeps up to `cap` bytes for replays.
    ///
    /// # Examples
    ///
    /// ```
    /// # use bytes::Bytes;
    /// # use http_body_util::Full;
    /// # use tower_sluice::retry::ReplayBody;
    /// // Keeps up to 64 KiB of the body for a retry.
    /// let body = ReplayBody::new(Full::new(Bytes::from_static(b"{\"id\":1}")), 64 * 1024);
    /// assert!(body.is_replayable());
    /// ```
    pub fn new(body: B, cap: usize) -> Self {
        let hint = body.size_hint();
        let empty = body.is_end_stream();
        ReplayBody {
            kind: Kind::Replay {
                shared: Arc::new(Mutex::new(Shared {
                    body: Some(Box::pin(body)),
                    chunks: Vec::new(),
                    yielded: 0,
                    len: 0,
                    cap,
                    spoiled: false,
                    eos: false,
                    trailers: None,
                })),
                pos: 0,
                read: 0,
                hint,
                done: false,
                empty,
            },
        }
    }
}

impl<B> ReplayBody<B> {
    /// A body streamed once, without keeping anything.
    ///
    /// # Examples
    ///
    /// ```
    /// # use http_body_util::Empty;
    /// # use bytes::Bytes;
    /// # use tower_sluice::retry::ReplayBody;
    /// let body = ReplayBody::once(Empty::<Bytes>::new());
    /// assert!(!body.is_replayable());
    /// ```
    pub fn once(body: B) -> Self {
        ReplayBody {
            kind: Kind::Once { body },
        }
    }

    /// Whether a replay is still possible (not over the cap, no error).
    pub fn is_replayable(&self) -> bool {
        match &self.kind {
            Kind::Once { .. } => false,
            Kind::Replay { shared, .. } => !lock(shared).spoiled,
        }
    }

    /// A handle sharing this body's state (yields nothing itself until
    /// replayed).
    pub(crate) fn replay_handle(&self) -> Self {
        match &self.kind {
            Kind::Once { .. } => unreachable!("replay_handle of a Once body"),
            Kind::Replay {
                shared,
                hint,
                empty,
                ..
            } => ReplayBody {
                kind: Kind::Replay {
                    shared: shared.clone(),
                    pos: 0,
                    read: 0,
                    hint: *hint,
                    done: false,
                    empty: *empty,
                },
            },
        }
    }

    /// A fresh body yielding the whole original again, or `None` when it
    /// went over the cap or failed.
    pub(crate) fn replay(&self) -> Option<Self> {
        self.is_replayable().then(|| self.replay_handle())
    }
}

fn lock<B>(shared: &Mutex<Shared<B>>) -> std::sync::MutexGuard<'_, Shared<B>> {
    shared.lock().ignore_poison()
}

impl<B> Body for ReplayBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            KindProj::Once { body } => match body.poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(
                    frame.map_data(|mut d| d.copy_to_bytes(d.remaining()))
                ))),
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
            KindProj::Replay {
                shared,
                pos,
                read,
                done,
                ..
            } => {
                if *done {
                    return Poll::Ready(None);
                }
                let mut s = lock(shared);
                if *pos < s.yielded {
                    if s.spoiled {
                        *done = true;
                        return Poll::Ready(Some(Err(
                            "request body went over the replay buffer while being replayed".into(),
                        )));
                    }
                    let chunk = s.chunks[*pos].clone();
                    *pos += 1;
                    *read += chunk.len() as u64;
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                if s.eos {
                    *done = true;
                    return Poll::Ready(s.trailers.clone().map(|t| Ok(Frame::trailers(t))));
                }
                let Some(body) = s.body.as_mut() else {
                    *done = true;
                    return Poll::Ready(None);
                };
                match body.as_mut().poll_frame(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(None) => {
                        s.eos = true;
                        s.body = None;
                        *done = true;
                        Poll::Ready(None)
                    }
                    Poll::Ready(Some(Err(e))) => {
                        s.spoiled = true;
                        s.chunks = Vec::new();
                        *done = true;
                        Poll::Ready(Some(Err(e.into())))
                    }
                    Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                        Ok(mut data) => {
                            let chunk = data.copy_to_bytes(data.remaining());
                            s.yielded += 1;
                            *pos += 1;
                            *read += chunk.len() as u64;
                            if !s.spoiled {
                                if s.len + chunk.len() <= s.cap {
                                    s.len += chunk.len();
                                    s.chunks.push(chunk.clone());
                                } else {
                                    s.spoiled = true;
                                    s.chunks = Vec::new();
                                }
                            }
                            Poll::Ready(Some(Ok(Frame::data(chunk))))
                        }
                        Err(frame) => {
                            if let Ok(trailers) = frame.into_trailers() {
                                s.trailers = Some(trailers.clone());
                                s.eos = true;
                                s.body = None;
                                *done = true;
                                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                            } else {
                                // An unknown frame kind: skip it.
                                cx.waker().wake_by_ref();
                                Poll::Pending
                            }
                        }
                    },
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Once { body } => body.is_end_stream(),
            Kind::Replay { done, empty, .. } => *done || *empty,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Once { body } => body.size_hint(),
            Kind::Replay { hint, read, .. } => {
                let mut h = SizeHint::new();
                h.set_lower(hint.lower().saturating_sub(*read));
                if let Some(upper) = hint.upper() {
                    h.set_upper(upper.saturating_sub(*read));
                }
                h
            }
        }
    }
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Once { .. } => f
                .debug_struct("ReplayBody")
                .field("replay", &false)
                .finish(),
            Kind::Replay { shared, pos, .. } => {
                let s = lock(shared);
                f.debug_struct("ReplayBody")
                    .field("kept_bytes", &s.len)
                    .field("cap", &s.cap)
                    .field("replayable", &!s.spoiled)
                    .field("pos", pos)
                    .finish()
            }
        }
    }
}
