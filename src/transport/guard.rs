//! The guard: a ZMTP-aware relay that zfabric puts between every `zeromq`
//! socket and the network.
//!
//! - **Listening** (bind): zfabric owns the tcp/ipc listener. Each accepted
//!   connection is relayed to the `zeromq` socket, which is bound on a
//!   private ipc path. Bytes from the peer pass through a [`FrameScanner`]:
//!   a frame or message declared over the limit disconnects that peer
//!   before its body is read, so the `zeromq` socket never allocates more
//!   than the limit. Other peers are not affected.
//! - **Connecting**: the `zeromq` socket connects to a private ipc listener
//!   owned by a link task. The link answers the ZMTP handshake itself (so
//!   `connect` never waits for the network), then connects to the remote in
//!   the background, replays the socket's handshake, and reconnects with
//!   jittered exponential backoff whenever the remote goes away. Only whole
//!   messages from the remote are passed on, so the local socket never sees
//!   a torn message across reconnects. A SUB socket's subscriptions are
//!   remembered and replayed on every new connection.
//!
//! What it does not do: encryption or authentication (NULL mechanism
//! only), and it does not recover messages that were in flight when a
//! connection broke (they are counted as `link_down` drops).

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{tcp, unix, TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

use super::batch::Progress;
use super::scan::{frame_header, FrameScanner, ScanLimits};
use crate::config::SocketConfig;
use crate::endpoint::Endpoint;
use crate::error::BindError;
use crate::telemetry;

/// Largest handshake or command frame accepted from a peer.
pub(crate) const MAX_COMMAND: u64 = 64 * 1024;
/// Read buffers start small and double, up to this, while reads fill them:
/// an idle connection costs little, a busy one reads in large chunks.
const CHUNK: usize = 256 * 1024;
const FIRST_CHUNK: usize = 8 * 1024;

/// Doubles a read buffer (up to [`CHUNK`]) after a read that filled it.
fn grow_after(buf: &mut Vec<u8>, n: usize) {
    if n == buf.len() && buf.len() < CHUNK {
        buf.resize(buf.len() * 2, 0);
    }
}

/// ZeroMQ socket roles zfabric uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SocketKind {
    Pub,
    Sub,
    Push,
    Pull,
    Dealer,
    Router,
}

impl SocketKind {
    pub(crate) fn zmtp_name(self) -> &'static str {
        match self {
            SocketKind::Pub => "PUB",
            SocketKind::Sub => "SUB",
            SocketKind::Push => "PUSH",
            SocketKind::Pull => "PULL",
            SocketKind::Dealer => "DEALER",
            SocketKind::Router => "ROUTER",
        }
    }

    /// The socket types a peer of this kind may be.
    fn accepts(self, peer: &str) -> bool {
        match self {
            SocketKind::Pub => matches!(peer, "SUB" | "XSUB"),
            SocketKind::Sub => matches!(peer, "PUB" | "XPUB"),
            SocketKind::Push => peer == "PULL",
            SocketKind::Pull => peer == "PUSH",
            SocketKind::Dealer => matches!(peer, "ROUTER" | "DEALER" | "REP"),
            SocketKind::Router => matches!(peer, "DEALER" | "ROUTER" | "REQ"),
        }
    }

    /// The peer type the link announces to the local socket.
    fn peer(self) -> SocketKind {
        match self {
            SocketKind::Pub => SocketKind::Sub,
            SocketKind::Sub => SocketKind::Pub,
            SocketKind::Push => SocketKind::Pull,
            SocketKind::Pull => SocketKind::Push,
            SocketKind::Dealer => SocketKind::Router,
            SocketKind::Router => SocketKind::Dealer,
        }
    }
}

fn scan_limits(cfg: &SocketConfig) -> ScanLimits {
    ScanLimits {
        max_message: cfg.limits.max_message_size as u64,
        max_command: MAX_COMMAND,
    }
}

// ---------------------------------------------------------------- private paths

/// A fresh path for a private ipc socket, in a per-process directory that
/// only this user can enter.
pub(crate) fn private_path() -> io::Result<PathBuf> {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = match DIR.get() {
        Some(d) => d.clone(),
        None => {
            let d = std::env::temp_dir().join(format!(
                "zfabric-{}-{:08x}",
                std::process::id(),
                crate::wire::random_u64() as u32
            ));
            std::fs::create_dir_all(&d)?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700))?;
            }
            DIR.get_or_init(|| d).clone()
        }
    };
    Ok(dir.join(format!("{}.sock", N.fetch_add(1, Ordering::Relaxed))))
}

// ---------------------------------------------------------------- streams

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

    fn split(self) -> (ReadHalf, WriteHalf) {
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

#[derive(Debug)]
enum ReadHalf {
    Tcp(tcp::OwnedReadHalf),
    Unix(unix::OwnedReadHalf),
}

#[derive(Debug)]
enum WriteHalf {
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
fn tune_tcp(s: &TcpStream) -> io::Result<()> {
    s.set_nodelay(true)?;
    let sock = socket2::SockRef::from(s);
    // Best effort: the kernel may cap these.
    let _ = sock.set_send_buffer_size(TCP_BUFFER);
    let _ = sock.set_recv_buffer_size(TCP_BUFFER);
    Ok(())
}

/// Aborts a task when dropped.
#[derive(Debug)]
pub(crate) struct AbortOnDrop(pub(crate) JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

// ---------------------------------------------------------------- listening

/// A listener zfabric owns in front of a `zeromq` socket.
#[derive(Debug)]
pub(crate) struct GuardedListener {
    /// The endpoint as bound (port resolved).
    pub(crate) endpoint: Endpoint,
    _task: AbortOnDrop,
    ipc_path: Option<PathBuf>,
}

impl Drop for GuardedListener {
    fn drop(&mut self) {
        if let Some(p) = &self.ipc_path {
            let _ = std::fs::remove_file(p);
        }
    }
}

enum AnyListener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl AnyListener {
    async fn accept(&self) -> io::Result<Stream> {
        match self {
            AnyListener::Tcp(l) => {
                let (s, _) = l.accept().await?;
                tune_tcp(&s)?;
                Ok(Stream::Tcp(s))
            }
            AnyListener::Unix(l) => Ok(Stream::Unix(l.accept().await?.0)),
        }
    }
}

/// Binds `ep` and relays every accepted connection to the `zeromq` socket
/// listening on `target`, enforcing the size limits.
pub(crate) async fn bind_guarded(
    ep: &Endpoint,
    target: PathBuf,
    cfg: &SocketConfig,
    progress: Arc<Progress>,
) -> Result<GuardedListener, BindError> {
    let io_err = |source| BindError::Io {
        endpoint: ep.clone(),
        source,
    };
    let (listener, endpoint, ipc_path) = match ep {
        Endpoint::Tcp { host, port } => {
            // A listener of this process that was just dropped closes when
            // its task is cancelled, a moment later: retry briefly before
            // calling the address taken.
            let mut tries = 0;
            let l = loop {
                match TcpListener::bind((host.as_str(), *port)).await {
                    Ok(l) => break l,
                    Err(e) if e.kind() == io::ErrorKind::AddrInUse && *port != 0 && tries < 10 => {
                        tries += 1;
                        tokio::time::sleep(Duration::from_millis(25)).await;
                    }
                    Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                        return Err(BindError::AddrInUse(ep.clone()))
                    }
                    Err(e) => return Err(io_err(e)),
                }
            };
            let port = l.local_addr().map_err(io_err)?.port();
            let resolved = Endpoint::Tcp {
                host: host.clone(),
                port,
            };
            (AnyListener::Tcp(l), resolved, None)
        }
        Endpoint::Ipc(path) => {
            clear_stale_socket(ep, path).await?;
            let l = UnixListener::bind(path).map_err(|e| {
                if e.kind() == io::ErrorKind::AddrInUse {
                    BindError::AddrInUse(ep.clone())
                } else {
                    io_err(e)
                }
            })?;
            (AnyListener::Unix(l), ep.clone(), Some(path.clone()))
        }
        Endpoint::Inproc(_) => {
            return Err(io_err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "inproc endpoints are not served by the guard",
            )))
        }
    };
    let limits = scan_limits(cfg);
    let task = tokio::spawn(accept_loop(listener, target, limits, progress));
    Ok(GuardedListener {
        endpoint,
        _task: AbortOnDrop(task),
        ipc_path,
    })
}

/// A leftover socket file with nobody listening is removed; a live one is
/// `AddrInUse`; anything that is not a socket is left alone.
async fn clear_stale_socket(ep: &Endpoint, path: &Path) -> Result<(), BindError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(_) => return Ok(()),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(BindError::NotASocket(ep.clone()));
        }
    }
    match UnixStream::connect(path).await {
        Ok(_) => Err(BindError::AddrInUse(ep.clone())),
        Err(_) => {
            tracing::info!(path = %path.display(), "removing stale ipc socket file");
            std::fs::remove_file(path).map_err(|source| BindError::Io {
                endpoint: ep.clone(),
                source,
            })
        }
    }
}

async fn accept_loop(
    listener: AnyListener,
    target: PathBuf,
    limits: ScanLimits,
    progress: Arc<Progress>,
) {
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        match listener.accept().await {
            Ok(stream) => {
                conns.spawn(relay_accepted(
                    stream,
                    target.clone(),
                    limits,
                    progress.clone(),
                ));
            }
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn relay_accepted(
    peer: Stream,
    target: PathBuf,
    limits: ScanLimits,
    progress: Arc<Progress>,
) {
    let inner = match UnixStream::connect(&target).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "guard cannot reach its socket");
            return;
        }
    };
    let (mut pr, mut pw) = peer.split();
    let (mut ir, mut iw) = inner.into_split();
    let inbound = async {
        let mut scanner = FrameScanner::new(limits);
        let mut buf = vec![0u8; FIRST_CHUNK];
        let mut ends = Vec::new();
        loop {
            let n = match pr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            ends.clear();
            if let Err(e) = scanner.feed(&buf[..n], &mut ends) {
                tracing::warn!(error = ?e, "disconnecting peer that broke the frame limits");
                telemetry::disconnected(e.reason());
                return;
            }
            if iw.write_all(&buf[..n]).await.is_err() {
                return;
            }
            grow_after(&mut buf, n);
        }
    };
    let outbound = async {
        let mut buf = vec![0u8; FIRST_CHUNK];
        // The socket's own handshake (greeting, READY) is not counted: only
        // messages, which is what senders count as handed over.
        let mut handshake = Some((FrameScanner::new(limits), 0usize));
        let mut ends = Vec::new();
        loop {
            let n = match ir.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let counted = match &mut handshake {
                None => n,
                Some((scanner, units)) => {
                    ends.clear();
                    let _ = scanner.feed(&buf[..n], &mut ends);
                    let mut from = None;
                    for e in &ends {
                        *units += 1;
                        if *units == 2 {
                            from = Some(*e);
                        }
                    }
                    match from {
                        Some(at) => {
                            handshake = None;
                            n - at
                        }
                        None => 0,
                    }
                }
            };
            if pw.write_all(&buf[..n]).await.is_err() {
                return;
            }
            // Counted once written on: a linger that sees it knows the
            // bytes have left.
            progress.relayed(counted);
            grow_after(&mut buf, n);
        }
    };
    tokio::select! {
        _ = inbound => {}
        _ = outbound => {}
    }
}

// ---------------------------------------------------------------- connecting

/// State of an outgoing link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Not connected yet (first attempts).
    Connecting,
    /// Connected and past the handshake.
    Connected,
    /// Was connected and lost it; retrying with backoff.
    Reconnecting,
}

/// An outgoing, self-reconnecting link to one remote endpoint.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) remote: Endpoint,
    pub(crate) state: watch::Receiver<LinkState>,
    _task: AbortOnDrop,
}

/// Starts a link to `remote` for a local socket of `kind`. Returns the link
/// and the private path the local `zeromq` socket must connect to.
pub(crate) async fn connect_guarded(
    remote: Endpoint,
    kind: SocketKind,
    cfg: &SocketConfig,
    progress: Arc<Progress>,
) -> io::Result<(Link, PathBuf)> {
    let path = private_path()?;
    let listener = UnixListener::bind(&path)?;
    let (tx, rx) = watch::channel(LinkState::Connecting);
    let task = tokio::spawn(link_task(
        listener,
        path.clone(),
        remote.clone(),
        kind,
        cfg.clone(),
        tx,
        progress,
    ));
    Ok((
        Link {
            remote,
            state: rx,
            _task: AbortOnDrop(task),
        },
        path,
    ))
}

fn greeting() -> [u8; 64] {
    let mut g = [0u8; 64];
    g[0] = 0xff;
    g[9] = 0x7f;
    g[10] = 3;
    g[11] = 0;
    g[12..16].copy_from_slice(b"NULL");
    g
}

/// Greeting plus a READY command announcing `kind`.
pub(crate) fn handshake_bytes(kind: SocketKind) -> Vec<u8> {
    let mut body = Vec::new();
    body.push(5);
    body.extend_from_slice(b"READY");
    let name = b"Socket-Type";
    body.push(name.len() as u8);
    body.extend_from_slice(name);
    let value = kind.zmtp_name().as_bytes();
    body.extend_from_slice(&(value.len() as u32).to_be_bytes());
    body.extend_from_slice(value);
    let mut out = greeting().to_vec();
    frame_header(body.len(), false, true, &mut out);
    out.extend_from_slice(&body);
    out
}

/// Reads a greeting and one command frame. Returns the raw bytes and the
/// `Socket-Type` the READY command announced.
async fn read_handshake<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<(Vec<u8>, Option<String>)> {
    let bad = |m: &'static str| io::Error::new(io::ErrorKind::InvalidData, m);
    let mut raw = vec![0u8; 64];
    r.read_exact(&mut raw).await?;
    if raw[0] != 0xff || raw[9] & 1 != 1 || raw[10] < 3 {
        return Err(bad("bad greeting"));
    }
    if &raw[12..16] != b"NULL" || raw[16] != 0 {
        return Err(bad("unsupported security mechanism"));
    }
    let flags = r.read_u8().await?;
    raw.push(flags);
    if flags & !0b110 != 0 || flags & 0b100 == 0 {
        return Err(bad("expected a command frame"));
    }
    let len = if flags & 0b010 != 0 {
        let l = r.read_u64().await?;
        raw.extend_from_slice(&l.to_be_bytes());
        l
    } else {
        let l = r.read_u8().await?;
        raw.push(l);
        l as u64
    };
    if len > MAX_COMMAND {
        return Err(bad("handshake command too large"));
    }
    let start = raw.len();
    raw.resize(start + len as usize, 0);
    r.read_exact(&mut raw[start..]).await?;
    let socket_type = parse_ready(&raw[start..]).ok_or_else(|| bad("expected READY"))?;
    Ok((raw, socket_type))
}

/// Parses a READY command body; `None` if it is not READY.
fn parse_ready(body: &[u8]) -> Option<Option<String>> {
    let (&n, rest) = body.split_first()?;
    let (name, mut props) = rest.split_at_checked(n as usize)?;
    if name != b"READY" {
        return None;
    }
    let mut socket_type = None;
    while !props.is_empty() {
        let (&n, rest) = props.split_first()?;
        let (name, rest) = rest.split_at_checked(n as usize)?;
        let (len, rest) = rest.split_at_checked(4)?;
        let len = u32::from_be_bytes(len.try_into().ok()?) as usize;
        let (value, rest) = rest.split_at_checked(len)?;
        if name.eq_ignore_ascii_case(b"Socket-Type") {
            socket_type = Some(String::from_utf8_lossy(value).into_owned());
        }
        props = rest;
    }
    Some(socket_type)
}

async fn link_task(
    listener: UnixListener,
    path: PathBuf,
    remote: Endpoint,
    kind: SocketKind,
    cfg: SocketConfig,
    state: watch::Sender<LinkState>,
    progress: Arc<Progress>,
) {
    let local = match listener.accept().await {
        Ok((s, _)) => s,
        Err(e) => {
            tracing::warn!(error = %e, "link: local socket did not connect");
            return;
        }
    };
    drop(listener);
    let _ = std::fs::remove_file(&path);
    let (mut lr, mut lw) = local.into_split();
    if lw.write_all(&handshake_bytes(kind.peer())).await.is_err() {
        return;
    }
    let hello = match read_handshake(&mut lr).await {
        Ok((raw, _)) => raw,
        Err(e) => {
            tracing::warn!(error = %e, "link: bad handshake from local socket");
            return;
        }
    };
    let limits = scan_limits(&cfg);
    let (to_out, out_rx) = mpsc::channel(1);
    let (to_in, in_rx) = mpsc::channel(1);
    let (fail_tx, mut fail_rx) = mpsc::channel(4);
    // The latest generation known dead: both pumps let go of its halves.
    let (dead_tx, dead_rx) = watch::channel(0u64);
    let mut out_task = AbortOnDrop(tokio::spawn(outbound(
        lr,
        out_rx,
        fail_tx.clone(),
        dead_rx.clone(),
        kind == SocketKind::Sub,
        limits,
        progress,
    )));
    let _in_task = AbortOnDrop(tokio::spawn(inbound(lw, in_rx, fail_tx, dead_rx, limits)));

    let mut generation = 0u64;
    let mut delay = cfg.reconnect_initial;
    loop {
        let attempt = tokio::time::timeout(
            cfg.handshake_timeout,
            connect_and_handshake(&remote, &hello, kind),
        );
        let result = tokio::select! {
            r = attempt => r,
            _ = &mut out_task.0 => return,
        };
        match result {
            Ok(Ok(stream)) => {
                generation += 1;
                if generation > 1 {
                    telemetry::reconnected(remote.transport());
                }
                let (r, w) = stream.split();
                if to_out.send((generation, w)).await.is_err()
                    || to_in.send((generation, r)).await.is_err()
                {
                    return;
                }
                let _ = state.send(LinkState::Connected);
                delay = cfg.reconnect_initial;
                loop {
                    tokio::select! {
                        f = fail_rx.recv() => match f {
                            Some(g) if g == generation => break,
                            Some(_) => continue,
                            None => return,
                        },
                        _ = &mut out_task.0 => return,
                    }
                }
                let _ = dead_tx.send(generation);
                let _ = state.send(LinkState::Reconnecting);
                telemetry::disconnected(telemetry::DisconnectReason::Io);
                tracing::info!(%remote, "link lost; reconnecting");
            }
            Ok(Err(e)) => tracing::debug!(%remote, error = %e, "link: connect failed"),
            Err(_) => tracing::debug!(%remote, "link: handshake timed out"),
        }
        let jittered = delay.mul_f64(0.5 + (crate::wire::random_u64() % 1000) as f64 / 1000.0);
        tokio::select! {
            _ = tokio::time::sleep(jittered) => {}
            _ = &mut out_task.0 => return,
        }
        delay = (delay * 2).min(cfg.reconnect_max);
    }
}

async fn connect_and_handshake(
    remote: &Endpoint,
    hello: &[u8],
    kind: SocketKind,
) -> io::Result<Stream> {
    let mut s = Stream::connect(remote).await?;
    match &mut s {
        Stream::Tcp(t) => {
            let (r, w) = t.split();
            handshake_on(r, w, hello, kind).await?
        }
        Stream::Unix(u) => {
            let (r, w) = u.split();
            handshake_on(r, w, hello, kind).await?
        }
    }
    Ok(s)
}

async fn handshake_on<R, W>(mut r: R, mut w: W, hello: &[u8], kind: SocketKind) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    w.write_all(hello).await?;
    let (_, peer_type) = read_handshake(&mut r).await?;
    match peer_type {
        Some(t) if !kind.accepts(&t) => {
            telemetry::disconnected(telemetry::DisconnectReason::BadHandshake);
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "peer is a {t} socket, not compatible with {}",
                    kind.zmtp_name()
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// Local socket -> remote. Reads the local socket only while a remote is
/// attached (so the local socket's own queue applies backpressure while
/// the link is down). After a broken connection, the rest of a partly sent
/// message is skipped so that the next connection starts on a boundary.
async fn outbound(
    mut local: unix::OwnedReadHalf,
    mut remotes: mpsc::Receiver<(u64, WriteHalf)>,
    fail: mpsc::Sender<u64>,
    mut dead: watch::Receiver<u64>,
    is_sub: bool,
    limits: ScanLimits,
    progress: Arc<Progress>,
) {
    let mut scanner = FrameScanner::after_handshake(limits);
    if is_sub {
        scanner = scanner.capture_small();
    }
    let mut subscriptions: Vec<Vec<u8>> = Vec::new();
    let mut remote: Option<(u64, WriteHalf)> = None;
    let mut skip = false;
    let mut buf = vec![0u8; FIRST_CHUNK];
    let mut ends = Vec::new();
    loop {
        let n = if remote.is_none() {
            match remotes.recv().await {
                Some(r) => {
                    remote = Some(r);
                    skip = !scanner.at_boundary();
                    replay(&mut remote, &subscriptions, &fail).await;
                    continue;
                }
                None => return,
            }
        } else {
            let g = remote.as_ref().map(|r| r.0).unwrap_or(0);
            tokio::select! {
                _ = is_dead(&mut dead, g) => {
                    remote = None;
                    continue;
                }
                r = remotes.recv() => match r {
                    Some(r) => {
                        remote = Some(r);
                        skip = !scanner.at_boundary();
                        replay(&mut remote, &subscriptions, &fail).await;
                        continue;
                    }
                    None => return,
                },
                n = local.read(&mut buf) => match n {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                },
            }
        };
        progress.relayed(n);
        grow_after(&mut buf, n);
        ends.clear();
        if let Err(e) = scanner.feed(&buf[..n], &mut ends) {
            tracing::error!(error = ?e, "link: local socket wrote a malformed stream");
            return;
        }
        if is_sub {
            for m in scanner.take_captured() {
                match m.first() {
                    Some(1) => subscriptions.push(m),
                    Some(0) => {
                        if let Some(i) = subscriptions.iter().position(|s| s[1..] == m[1..]) {
                            subscriptions.remove(i);
                        }
                    }
                    _ => {}
                }
            }
        }
        let mut start = 0;
        if skip {
            match ends.first() {
                Some(&e) => {
                    start = e;
                    skip = false;
                    telemetry::dropped(telemetry::DropReason::LinkDown, 1);
                }
                None => continue,
            }
        }
        if let Some((g, w)) = &mut remote {
            let g = *g;
            let written = tokio::select! {
                r = w.write_all(&buf[start..n]) => r.is_ok(),
                _ = is_dead(&mut dead, g) => false,
            };
            if !written {
                let _ = fail.send(g).await;
                remote = None;
                skip = !scanner.at_boundary();
                telemetry::dropped(telemetry::DropReason::LinkDown, ends.len().max(1) as u64);
            }
        }
    }
}

/// Resolves once generation `g` is known dead (or the coordinator is gone).
async fn is_dead(dead: &mut watch::Receiver<u64>, g: u64) {
    let _ = dead.wait_for(|d| *d >= g).await;
}

/// Sends the remembered subscriptions on a fresh connection.
async fn replay(remote: &mut Option<(u64, WriteHalf)>, subs: &[Vec<u8>], fail: &mpsc::Sender<u64>) {
    if subs.is_empty() {
        return;
    }
    let mut out = Vec::new();
    for s in subs {
        frame_header(s.len(), false, false, &mut out);
        out.extend_from_slice(s);
    }
    if let Some((g, w)) = remote {
        if w.write_all(&out).await.is_err() {
            let _ = fail.send(*g).await;
            *remote = None;
        }
    }
}

/// Remote -> local socket. Only whole messages are passed on; a message cut
/// off by a broken connection is dropped and counted.
async fn inbound(
    mut local: unix::OwnedWriteHalf,
    mut remotes: mpsc::Receiver<(u64, ReadHalf)>,
    fail: mpsc::Sender<u64>,
    mut dead: watch::Receiver<u64>,
    limits: ScanLimits,
) {
    let mut ends = Vec::new();
    while let Some((g, mut r)) = remotes.recv().await {
        let mut scanner = FrameScanner::after_handshake(limits);
        let mut buf = BytesMut::with_capacity(FIRST_CHUNK);
        let mut want = FIRST_CHUNK;
        loop {
            let before = buf.len();
            buf.reserve(want);
            tokio::select! {
                n = r.read_buf(&mut buf) => match n {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if n >= want {
                            want = (want * 2).min(CHUNK);
                        }
                    }
                },
                _ = is_dead(&mut dead, g) => break,
            }
            ends.clear();
            if let Err(e) = scanner.feed(&buf[before..], &mut ends) {
                tracing::warn!(error = ?e, "link: remote broke the frame limits; reconnecting");
                telemetry::disconnected(e.reason());
                break;
            }
            if let Some(&last) = ends.last() {
                let upto = before + last;
                if local.write_all(&buf[..upto]).await.is_err() {
                    return;
                }
                buf.advance(upto);
            }
        }
        if !buf.is_empty() {
            telemetry::dropped(telemetry::DropReason::LinkDown, 1);
        }
        let _ = fail.send(g).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_ready_command_parses_back() {
        let hs = handshake_bytes(SocketKind::Router);
        let body = &hs[66..];
        assert_eq!(parse_ready(body), Some(Some("ROUTER".to_string())));
        assert_eq!(parse_ready(b"\x05HELLO"), None);
        assert_eq!(parse_ready(b"\x05READY\x03abc\xff"), None);
    }

    #[test]
    fn socket_kinds_accept_their_zeromq_peers() {
        assert!(SocketKind::Sub.accepts("PUB"));
        assert!(!SocketKind::Sub.accepts("PUSH"));
        assert!(SocketKind::Dealer.accepts(SocketKind::Dealer.peer().zmtp_name()));
    }
}
