//! CURVE on the guard's connections: the I/O that drives the handshake
//! machines of [`curve`](crate::transport::curve) (server side for the
//! listener, client side for links), and the remote halves a link's pumps
//! read and write through, sealed or not.
//!
//! # Guarantees
//! - Every refusal comes back as a [`Refusal`] naming the
//!   [`DisconnectReason`] to count; nothing here counts twice.
//! - A handshake reads one command at a time, each at most
//!   [`MAX_COMMAND`] bytes, declared length checked before the body.
//! - Without CURVE the halves pass bytes straight through (one branch per
//!   read or write, no copy).
//!
//! # Not guaranteed
//! Deadlines: the callers wrap each handshake in
//! `SocketConfig::handshake_timeout`.

use std::io;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::stream::{ReadHalf, WriteHalf};
use crate::endpoint::Endpoint;
use crate::telemetry::{self, DisconnectReason};
use crate::transport::curve::{
    client_hello, error_command, AuthRequest, CurveConfig, CurveError, CurvePublicKey, Initiated,
    OpenStream, SealStream, ServerHello, Session,
};
use crate::transport::scan::frame_header;
use crate::transport::zmtp::{GreetingError, Mechanism, Metadata, SocketKind, MAX_COMMAND};

/// Why a handshake was refused, and the label to count it under.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) reason: DisconnectReason,
    pub(crate) why: String,
}

impl Refusal {
    fn new(reason: DisconnectReason, why: impl Into<String>) -> Self {
        Refusal {
            reason,
            why: why.into(),
        }
    }

    /// Counts and logs the refusal.
    pub(crate) fn record(&self, side: &'static str, peer: &Endpoint) {
        telemetry::disconnected(self.reason);
        tracing::warn!(%peer, side, reason = %self.reason, why = %self.why, "CURVE handshake refused");
    }
}

impl From<CurveError> for Refusal {
    fn from(e: CurveError) -> Self {
        Refusal::new(e.reason(), e.to_string())
    }
}

impl From<GreetingError> for Refusal {
    fn from(e: GreetingError) -> Self {
        Refusal::new(e.reason(), e.to_string())
    }
}

impl From<io::Error> for Refusal {
    fn from(e: io::Error) -> Self {
        let reason = if e.kind() == io::ErrorKind::UnexpectedEof {
            // The other side hung up mid-handshake: it refused us.
            DisconnectReason::BadHandshake
        } else {
            DisconnectReason::Io
        };
        Refusal::new(
            reason,
            format!("connection closed during the handshake: {e}"),
        )
    }
}

/// Reads the peer's greeting and checks that it announces CURVE.
async fn read_curve_greeting<R: AsyncRead + Unpin>(r: &mut R) -> Result<[u8; 64], Refusal> {
    let mut g = [0u8; 64];
    r.read_exact(&mut g).await?;
    Mechanism::Curve.check_greeting(&g)?;
    Ok(g)
}

/// Reads one command frame's body (at most [`MAX_COMMAND`] bytes).
pub(crate) async fn read_command<R: AsyncRead + Unpin>(r: &mut R) -> Result<Vec<u8>, Refusal> {
    let flags = r.read_u8().await?;
    if flags & !0b110 != 0 || flags & 0b100 == 0 {
        return Err(CurveError::NotCommand(flags).into());
    }
    let len = if flags & 0b010 != 0 {
        r.read_u64().await?
    } else {
        r.read_u8().await? as u64
    };
    if len > MAX_COMMAND {
        return Err(CurveError::TooLarge {
            declared: len,
            limit: MAX_COMMAND,
        }
        .into());
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body).await?;
    Ok(body)
}

async fn write_command<W: AsyncWrite + Unpin>(w: &mut W, body: &[u8]) -> io::Result<()> {
    let mut out = Vec::with_capacity(body.len() + 9);
    frame_header(body.len(), false, true, &mut out);
    out.extend_from_slice(body);
    w.write_all(&out).await
}

/// The server side up to an authorized INITIATE: what the client is, and
/// how to finish (send READY) once the private hop is up.
pub(crate) struct Accepted {
    /// What the client announced.
    pub(crate) peer: Metadata,
    initiated: Initiated,
}

impl std::fmt::Debug for Accepted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accepted")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

/// Runs the CURVE server handshake on an accepted connection of a socket
/// of `kind` bound at `endpoint`, up to and including authorization.
pub(crate) async fn server_handshake<R, W>(
    r: &mut R,
    w: &mut W,
    curve: &CurveConfig,
    kind: SocketKind,
    endpoint: &Endpoint,
) -> Result<Accepted, Refusal>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    w.write_all(&Mechanism::Curve.greeting_as(true)).await?;
    let g = read_curve_greeting(r).await?;
    if g[32] != 0 {
        return Err(Refusal::new(
            DisconnectReason::BadHandshake,
            "the peer's greeting says it is a CURVE server too",
        ));
    }
    let hello = read_command(r).await?;
    let (await_initiate, welcome) = ServerHello::new(curve.key_pair()).hello(&hello)?;
    write_command(w, &welcome).await?;
    let initiate = read_command(r).await?;
    let initiated = await_initiate.initiate(&initiate)?;
    let peer = initiated.metadata.clone();
    let Some(peer_type) = peer.socket_type.clone() else {
        return Err(Refusal::new(
            DisconnectReason::BadHandshake,
            "INITIATE without a Socket-Type",
        ));
    };
    if !kind.accepts(&peer_type) {
        let _ = write_command(w, &error_command("socket type mismatch")).await;
        return Err(Refusal::new(
            DisconnectReason::BadHandshake,
            format!(
                "peer is a {peer_type} socket, not compatible with {}",
                kind.zmtp_name()
            ),
        ));
    }
    let req = AuthRequest {
        client_key: &initiated.client_key,
        socket_type: Some(&peer_type),
        endpoint,
    };
    if !curve.authorize(&req) {
        // As libzmq answers a ZAP denial: ERROR with status 400.
        let _ = write_command(w, &error_command("400")).await;
        return Err(Refusal::new(
            DisconnectReason::Unauthorized,
            format!("client key {} is not authorized", initiated.client_key),
        ));
    }
    Ok(Accepted { peer, initiated })
}

impl Accepted {
    /// Sends READY announcing a socket of `kind`; the session.
    pub(crate) async fn finish<W: AsyncWrite + Unpin>(
        self,
        w: &mut W,
        kind: SocketKind,
    ) -> Result<Session, Refusal> {
        let meta = Metadata {
            socket_type: Some(kind.zmtp_name().to_string()),
            identity: None,
        };
        let (ready, session) = self.initiated.ready(&meta)?;
        write_command(w, &ready).await?;
        Ok(session)
    }
}

/// Runs the CURVE client handshake for a socket of `kind` (announcing
/// `identity`) against a server whose key is `server`.
pub(crate) async fn client_handshake<R, W>(
    r: &mut R,
    w: &mut W,
    curve: &CurveConfig,
    server: &CurvePublicKey,
    kind: SocketKind,
    identity: Option<Vec<u8>>,
) -> Result<Session, Refusal>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    w.write_all(&Mechanism::Curve.greeting_as(false)).await?;
    read_curve_greeting(r).await?;
    let (await_welcome, hello) = client_hello(&curve.key_pair(), server)?;
    write_command(w, &hello).await?;
    let welcome = read_command(r).await?;
    let meta = Metadata {
        socket_type: Some(kind.zmtp_name().to_string()),
        identity,
    };
    let (await_ready, initiate) = await_welcome.welcome(&welcome, &meta)?;
    write_command(w, &initiate).await?;
    let ready = read_command(r).await?;
    let (peer, session) = await_ready.ready(&ready)?;
    match peer.socket_type {
        Some(t) if kind.accepts(&t) => Ok(session),
        Some(t) => Err(Refusal::new(
            DisconnectReason::BadHandshake,
            format!(
                "peer is a {t} socket, not compatible with {}",
                kind.zmtp_name()
            ),
        )),
        None => Err(Refusal::new(
            DisconnectReason::BadHandshake,
            "READY without a Socket-Type",
        )),
    }
}

/// The writing half of a link's remote: plain, or sealing every frame.
#[derive(Debug)]
pub(crate) struct RemoteWriter {
    w: WriteHalf,
    seal: Option<SealStream>,
    out: Vec<u8>,
}

impl RemoteWriter {
    pub(crate) fn new(w: WriteHalf, seal: Option<SealStream>) -> Self {
        RemoteWriter {
            w,
            seal,
            out: Vec::new(),
        }
    }

    /// Writes plain ZMTP bytes (sealed first under CURVE).
    pub(crate) async fn write_plain(&mut self, plain: &[u8]) -> io::Result<()> {
        let Some(seal) = &mut self.seal else {
            return self.w.write_all(plain).await;
        };
        self.out.clear();
        if let Err(e) = seal.feed(plain, &mut self.out) {
            tracing::error!(error = %e, "link: local socket wrote a frame CURVE cannot carry");
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
        if self.out.is_empty() {
            return Ok(());
        }
        self.w.write_all(&self.out).await
    }
}

/// The reading half of a link's remote: plain, or opening every box.
#[derive(Debug)]
pub(crate) struct RemoteReader {
    r: ReadHalf,
    open: Option<OpenStream>,
    wire: Vec<u8>,
}

impl RemoteReader {
    pub(crate) fn new(r: ReadHalf, open: Option<OpenStream>) -> Self {
        RemoteReader {
            r,
            open,
            wire: Vec::new(),
        }
    }

    /// Appends plain ZMTP bytes to `buf`; `Ok(0)` at the end of the
    /// stream. A box that does not open is counted, logged, and an error.
    pub(crate) async fn read_plain(
        &mut self,
        buf: &mut BytesMut,
        want: usize,
    ) -> io::Result<usize> {
        let Some(open) = &mut self.open else {
            return self.r.read_buf(buf).await;
        };
        self.wire.resize(want.max(4096), 0);
        let mut out = Vec::new();
        loop {
            let n = self.r.read(&mut self.wire).await?;
            if n == 0 {
                return Ok(0);
            }
            if let Err(e) = open.feed(&self.wire[..n], &mut out) {
                telemetry::disconnected(e.reason());
                tracing::warn!(error = %e, "link: remote sent a CURVE box we refuse; reconnecting");
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            if !out.is_empty() {
                buf.extend_from_slice(&out);
                return Ok(out.len());
            }
        }
    }
}
