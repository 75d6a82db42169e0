//! Linux only: moves the rest of a large frame body from a peer's socket
//! to the `zeromq` socket's private ipc endpoint with `splice(2)` through
//! a pipe, so those bytes never enter user space (measured, see
//! docs/BENCH.md, "Levers (issue 11)").
//!
//! # Guarantees
//! - Exactly the bytes asked for move, in order; the frame scanner is
//!   told about them ([`FrameScanner::skip_body`](crate::transport::scan::FrameScanner::skip_body)),
//!   so its limits apply to every header that follows, as before.
//! - Only a data frame's body is spliced, once its header passed the
//!   scanner's limits: what may be moved is never more than the header
//!   declared and the limit allowed.
//!
//! # Not guaranteed
//! Anything on other systems: there the relay copies through its buffer,
//! as it always did.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use rustix::pipe::{pipe_with, splice, PipeFlags, SpliceFlags};
use tokio::io::Interest;
use tokio::net::unix;

use super::stream::ReadHalf;

/// Frame bodies with at least this much still to come are spliced.
pub(super) const SPLICE_MIN: u64 = 16 * 1024;

/// Pipe size asked for (the kernel may give less).
const PIPE_SIZE: usize = 1024 * 1024;

/// A pipe between the two sockets of one relay.
#[derive(Debug)]
pub(super) struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
    size: usize,
}

impl Pipe {
    /// A non-blocking pipe, enlarged where the kernel lets it.
    pub(super) fn new() -> io::Result<Pipe> {
        let (r, w) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        let size = rustix::pipe::fcntl_setpipe_size(&w, PIPE_SIZE)
            .or_else(|_| rustix::pipe::fcntl_getpipe_size(&w))
            .unwrap_or(64 * 1024);
        Ok(Pipe { r, w, size })
    }
}

fn flags() -> SpliceFlags {
    SpliceFlags::MOVE | SpliceFlags::NONBLOCK
}

/// One splice from the peer into the (empty) pipe.
fn fill(from: &ReadHalf, pipe: &Pipe, want: usize) -> io::Result<usize> {
    let go = |fd: std::os::fd::BorrowedFd<'_>| {
        splice(fd, None, &pipe.w, None, want, flags()).map_err(io::Error::from)
    };
    match from {
        ReadHalf::Tcp(r) => {
            let s: &tokio::net::TcpStream = r.as_ref();
            s.try_io(Interest::READABLE, || go(s.as_fd()))
        }
        ReadHalf::Unix(r) => {
            let s: &tokio::net::UnixStream = r.as_ref();
            s.try_io(Interest::READABLE, || go(s.as_fd()))
        }
    }
}

async fn readable(from: &ReadHalf) -> io::Result<()> {
    match from {
        ReadHalf::Tcp(r) => r.readable().await,
        ReadHalf::Unix(r) => r.readable().await,
    }
}

/// Moves exactly `n` bytes from `from` to `to` through `pipe`.
///
/// The pipe is filled only when empty and then drained completely, so a
/// splice that would block always means the socket is not ready (never
/// that the pipe is full), which keeps tokio's readiness right.
pub(super) async fn splice_exact(
    pipe: &Pipe,
    from: &ReadHalf,
    to: &unix::OwnedWriteHalf,
    n: u64,
) -> io::Result<()> {
    let mut left = n;
    while left > 0 {
        let want = left.min(pipe.size as u64) as usize;
        let got = match fill(from, pipe, want) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                readable(from).await?;
                continue;
            }
            Err(e) => return Err(e),
        };
        left -= got as u64;
        let mut in_pipe = got;
        let out: &tokio::net::UnixStream = to.as_ref();
        while in_pipe > 0 {
            let r = out.try_io(Interest::WRITABLE, || {
                splice(&pipe.r, None, out.as_fd(), None, in_pipe, flags()).map_err(io::Error::from)
            });
            match r {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(k) => in_pipe -= k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => to.writable().await?,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::guard::stream::Stream;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn exactly_the_bytes_asked_for_move_in_order_and_the_rest_stays() {
        let watchdog = std::time::Duration::from_secs(10);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let sent = body.clone();
        let writer = tokio::spawn(async move {
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            c.write_all(&sent).await.unwrap();
            c.write_all(b"tail").await.unwrap();
        });
        let (peer, _) = listener.accept().await.unwrap();
        let (pr, _pw) = Stream::Tcp(peer).split();
        let (a, mut b) = tokio::net::UnixStream::pair().unwrap();
        let (_ar, aw) = a.into_split();
        let pipe = Pipe::new().unwrap();
        let n = body.len();
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; n];
            b.read_exact(&mut got).await.unwrap();
            got
        });
        tokio::time::timeout(watchdog, splice_exact(&pipe, &pr, &aw, n as u64))
            .await
            .unwrap()
            .unwrap();
        let got = tokio::time::timeout(watchdog, reader)
            .await
            .unwrap()
            .unwrap();
        assert!(got == body, "the spliced bytes differ");
        // What follows the body is still in the peer's socket.
        let mut pr = pr;
        let mut tail = [0u8; 4];
        tokio::time::timeout(watchdog, pr.read_exact(&mut tail))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&tail, b"tail");
        writer.await.unwrap();
    }
}
