//! The kernel copy of a tunnel between two TCP sockets: `splice(2)` from
//! the reading socket into a pipe and from the pipe into the writing
//! socket, one pipe per direction, so the bytes never enter user space.
//!
//! Pipes are held only while bytes are in flight. A tunnel takes a pair of
//! pipes when one of its sockets has something to read, and gives the pair
//! back as soon as both pipes are empty again and neither socket has more
//! to read. A pair that is given back empty after a clean hand-over goes
//! into a small shared pool ([`POOL_MAX`] pairs), where the next tunnel (or
//! the next burst of this one) finds it: setting up a tunnel creates no
//! pipes once the pool is warm, and thousands of open but quiet tunnels
//! hold no pipes at all (no descriptors, no pipe buffers, and nothing
//! counted against the kernel's per-user pipe allowance,
//! `fs.pipe-user-pages-soft`). A pair that may still hold bytes (an error,
//! a tunnel dropped by its idle timeout mid-copy) is closed, never pooled.
//!
//! Every pair carries the descriptor leave it was created under
//! ([`PipeLeave`]); when no pair is pooled and the descriptor budget has no
//! room for a new one, the burst is copied through a small user-space
//! buffer instead, freed when the burst is over.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{ready, Context, Poll};

use rustix::fd::OwnedFd;
use rustix::pipe::{fcntl_setpipe_size, pipe_with, splice, PipeFlags, SpliceFlags};
use tokio::io::{AsyncWrite, Interest};
use tokio::net::TcpStream;

use crate::plumbing::accept::{Admitted, PipeLeave};

/// How many idle pairs the pool keeps (four descriptors each).
pub const POOL_MAX: usize = 32;

/// The capacity asked for each pipe: one `splice(2)` moves up to this much.
/// A pipe's pages are only taken while bytes are in it.
const PIPE_SIZE: usize = 1 << 20;

/// The user-space buffer of a burst copied without a pipe.
const FALLBACK_BUF: usize = 16 * 1024;

/// Idle pairs, every one known empty.
static POOL: Mutex<Vec<Pair>> = Mutex::new(Vec::new());

/// One pipe's two ends.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let (read, write) = pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC)?;
        // A smaller pipe still works (more calls for the same bytes): the
        // size is a wish (an unprivileged user past its pipe allowance, or a
        // lower fs.pipe-max-size, gets the default).
        let _ = fcntl_setpipe_size(&write, PIPE_SIZE);
        Ok(Pipe { read, write })
    }
}

/// The two pipes of one tunnel's burst, with the descriptors they use.
struct Pair {
    a_to_b: Pipe,
    b_to_a: Pipe,
    _leave: PipeLeave,
}

/// A pair from the pool, or a new one within `slot`'s descriptor budget.
fn take(slot: &Admitted) -> Option<Pair> {
    if let Some(pair) = POOL.lock().ok().and_then(|mut pool| pool.pop()) {
        return Some(pair);
    }
    let leave = slot.pipes()?;
    match (Pipe::new(), Pipe::new()) {
        (Ok(a_to_b), Ok(b_to_a)) => Some(Pair { a_to_b, b_to_a, _leave: leave }),
        (Err(e), _) | (_, Err(e)) => {
            tracing::debug!(error = %e, "no pipe for splice(2); copying this burst through user space");
            None
        }
    }
}

/// Gives an empty pair back: pooled, or closed when the pool is full.
fn give(pair: Pair) {
    if let Ok(mut pool) = POOL.lock() {
        if pool.len() < POOL_MAX {
            pool.push(pair);
        }
    }
}

/// The pair a tunnel holds while bytes are in flight, and where it gets one.
struct Held<'s> {
    pair: Option<Pair>,
    slot: &'s Admitted,
}

impl Held<'_> {
    /// The pipe of one direction, when a pair is held.
    fn pipe(&self, a_to_b: bool) -> Option<&Pipe> {
        self.pair.as_ref().map(|p| if a_to_b { &p.a_to_b } else { &p.b_to_a })
    }
}

/// One direction of the copy.
#[derive(Default)]
struct Direction {
    /// Bytes in this direction's pipe, not yet written on.
    in_pipe: usize,
    /// A burst copied through user space: the buffer and its unwritten part.
    buf: Option<(Box<[u8]>, usize, usize)>,
    /// The reading side has ended (and the writing side was shut down when
    /// `done`).
    read_done: bool,
    done: bool,
    written: u64,
}

impl Direction {
    /// Whether bytes of this direction are held in the pipe.
    fn holds_pipe(&self) -> bool {
        self.in_pipe > 0
    }

    /// Moves bytes from `src` to `dst` until it has to wait (`Pending`),
    /// the direction is done (`Ready(Ok)`), or an error. The pipe used is
    /// the `a_to_b` one (else the other) of the pair `held`, which takes a
    /// pair when there is something to read and none is held.
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        src: &TcpStream,
        dst: &mut TcpStream,
        held: &mut Held<'_>,
        a_to_b: bool,
        moved: &dyn Fn(),
    ) -> Poll<io::Result<()>> {
        loop {
            if self.done {
                return Poll::Ready(Ok(()));
            }
            // First what was read and not written yet.
            if self.in_pipe > 0 {
                let Some(pipe) = held.pipe(a_to_b) else {
                    return Poll::Ready(Err(io::Error::other("bytes in a pipe the tunnel no longer holds")));
                };
                ready!(dst.poll_write_ready(cx))?;
                match dst.try_io(Interest::WRITABLE, || {
                    splice(&pipe.read, None, &*dst, None, self.in_pipe, SpliceFlags::NONBLOCK).map_err(io::Error::from)
                }) {
                    Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Ok(n) => {
                        self.in_pipe -= n;
                        self.written += n as u64;
                        moved();
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Poll::Ready(Err(e)),
                }
                continue;
            }
            if let Some((buf, start, end)) = &mut self.buf {
                if start < end {
                    let n = ready!(Pin::new(&mut *dst).poll_write(cx, &buf[*start..*end]))?;
                    if n == 0 {
                        return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                    }
                    *start += n;
                    self.written += n as u64;
                    moved();
                    continue;
                }
            }
            if self.read_done {
                ready!(Pin::new(&mut *dst).poll_shutdown(cx))?;
                self.done = true;
                continue;
            }
            // Then read more: only into an empty pipe, so that a read that
            // would block means the socket has nothing, never a full pipe.
            ready!(src.poll_read_ready(cx))?;
            if held.pair.is_none() && self.buf.is_none() {
                held.pair = take(held.slot);
            }
            if let Some(pipe) = held.pipe(a_to_b) {
                // A burst that began without a pipe is over: its buffer goes.
                self.buf = None;
                match src.try_io(Interest::READABLE, || {
                    splice(src, None, &pipe.write, None, PIPE_SIZE, SpliceFlags::NONBLOCK).map_err(io::Error::from)
                }) {
                    Ok(0) => self.read_done = true,
                    Ok(n) => {
                        self.in_pipe = n;
                        moved();
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Poll::Ready(Err(e)),
                }
            } else {
                let (buf, start, end) =
                    self.buf.get_or_insert_with(|| (vec![0u8; FALLBACK_BUF].into_boxed_slice(), 0, 0));
                match src.try_read(buf) {
                    Ok(0) => self.read_done = true,
                    Ok(n) => {
                        (*start, *end) = (0, n);
                        moved();
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        // The burst is over: its buffer goes.
                        self.buf = None;
                    }
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
        }
    }
}

/// Copies both ways between `a` and `b` in the kernel, like
/// `tokio::io::copy_bidirectional`: when one side's reading ends, the other
/// side's writing is shut down; done when both directions are done, or at
/// the first error. Pipes are taken within `slot`'s descriptor budget (see
/// the module's documentation). `moved` is called whenever bytes moved.
/// Returns the bytes copied a→b and b→a.
pub async fn copy(a: &mut TcpStream, b: &mut TcpStream, slot: &Admitted, moved: impl Fn()) -> io::Result<(u64, u64)> {
    let (mut ab, mut ba) = (Direction::default(), Direction::default());
    let mut held = Held { pair: None, slot };
    let result = poll_fn(|cx| {
        if let Poll::Ready(Err(e)) = ab.poll(cx, a, b, &mut held, true, &moved) {
            return Poll::Ready(Err(e));
        }
        if let Poll::Ready(Err(e)) = ba.poll(cx, b, a, &mut held, false, &moved) {
            return Poll::Ready(Err(e));
        }
        // Both pipes empty and nothing to read just now: the pair goes back.
        if !ab.holds_pipe() && !ba.holds_pipe() {
            if let Some(p) = held.pair.take() {
                give(p);
            }
        }
        if ab.done && ba.done {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    })
    .await;
    // On an error a pipe may still hold bytes: the pair is closed with it.
    drop(held);
    result.map(|()| (ab.written, ba.written))
}
