//! The byte streams the guard relays: tcp or unix, split into halves,
//! tuned for batched bursts.
//!
//! Guarantees nothing about content: framing and limits are the scanner's.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{tcp, unix, TcpStream, UnixStream};

use crate::endpoint::Endpoint;

/// A connected tcp or unix stream.
#[derive(Debug)]
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    pub(crate) async fn connect(ep: &Endpoint) -> io::Result<Stream> {
        match ep {
            Endpoint::Tcp { host, port } => {
                let s = TcpStream::connect((host.as_str(), *port)).await?;
                tune_tcp(&s)?;
                Ok(Stream::Tcp(s))
            }
            Endpoint::Ipc(path) => Ok(Stream::Unix(UnixStream::connect(path).await?)),
            Endpoint::Inproc(_) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "inproc endpoints have no stream",
            )),
        }
    }

    pub(crate) fn split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Stream::Tcp(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Tcp(r), WriteHalf::Tcp(w))
            }
            Stream::Unix(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Unix(r), WriteHalf::Unix(w))
            }
        }
    }
}

/// The reading half of a [`Stream`].
#[derive(Debug)]
pub(crate) enum ReadHalf {
    Tcp(tcp::OwnedReadHalf),
    Unix(unix::OwnedReadHalf),
}

/// The writing half of a [`Stream`].
#[derive(Debug)]
pub(crate) enum WriteHalf {
    Tcp(tcp::OwnedWriteHalf),
    Unix(unix::OwnedWriteHalf),
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadHalf::Tcp(r) => Pin::new(r).poll_read(cx, buf),
            ReadHalf::Unix(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Tcp(w) => Pin::new(w).poll_write(cx, b),
            WriteHalf::Unix(w) => Pin::new(w).poll_write(cx, b),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Tcp(w) => Pin::new(w).poll_flush(cx),
            WriteHalf::Unix(w) => Pin::new(w).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Tcp(w) => Pin::new(w).poll_shutdown(cx),
            WriteHalf::Unix(w) => Pin::new(w).poll_shutdown(cx),
        }
    }
}

/// TCP buffer size for relayed connections (as the `zeromq` crate uses).
const TCP_BUFFER: usize = 4 * 1024 * 1024;

/// No Nagle delay, and socket buffers large enough for batched bursts.
pub(crate) fn tune_tcp(s: &TcpStream) -> io::Result<()> {
    s.set_nodelay(true)?;
    let sock = socket2::SockRef::from(s);
    // Best effort: the kernel may cap these.
    let _ = sock.set_send_buffer_size(TCP_BUFFER);
    let _ = sock.set_recv_buffer_size(TCP_BUFFER);
    Ok(())
}
