//! ZMTP 3 greeting and handshake, without I/O beyond reading one
//! handshake: the greeting bytes, the READY command and its metadata
//! properties (build and parse), socket-type compatibility, and the
//! security [`Mechanism`] seam.
//!
//! # Guarantees
//! - Every length a peer declares is checked before anything is read into
//!   memory for it (a command is at most [`MAX_COMMAND`] bytes).
//! - A greeting that is not ZMTP 3.x, or announces a mechanism other than
//!   the one expected, is refused with an error naming why
//!   ([`GreetingError`]).
//!
//! # Not guaranteed
//! This module only names the mechanisms: [`Mechanism::Null`] (the
//! `zeromq` socket's private hop, and ipc/tcp links without security) and
//! [`Mechanism::Curve`], whose handshake and message boxes live in
//! [`curve`](super::curve) and which the guard relay runs itself.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt};

use super::scan::frame_header;

/// Largest handshake or command frame accepted from a peer.
pub(crate) const MAX_COMMAND: u64 = 64 * 1024;

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
    pub(crate) fn accepts(self, peer: &str) -> bool {
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
    pub(crate) fn peer(self) -> SocketKind {
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

/// A ZMTP security mechanism: what the greeting announces and which
/// handshake command follows it. Chosen per socket; both ends must run the
/// same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Mechanism {
    /// No security (ZMTP's NULL): the handshake is one READY command each
    /// way, carrying the socket type.
    #[default]
    Null,
    /// CurveZMQ (RFC 26): HELLO, WELCOME, INITIATE, READY, then MESSAGE
    /// boxes. Run by the guard relay ([`super::curve`]), never by the
    /// `zeromq` socket.
    Curve,
}

/// Why a peer's greeting was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GreetingError {
    /// Not a ZMTP 3.x greeting.
    Bad,
    /// ZMTP 3.x announcing another security mechanism than ours.
    Mechanism,
}

impl GreetingError {
    /// The metric label of the disconnect it causes.
    pub(crate) fn reason(self) -> crate::telemetry::DisconnectReason {
        match self {
            GreetingError::Bad => crate::telemetry::DisconnectReason::BadGreeting,
            GreetingError::Mechanism => crate::telemetry::DisconnectReason::MechanismMismatch,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            GreetingError::Bad => "bad greeting",
            GreetingError::Mechanism => "unsupported security mechanism",
        }
    }
}

impl std::error::Error for GreetingError {}

impl std::fmt::Display for GreetingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Mechanism {
    /// The mechanism's name as the greeting carries it (up to 20 bytes).
    pub(crate) fn name(self) -> &'static [u8] {
        match self {
            Mechanism::Null => b"NULL",
            Mechanism::Curve => b"CURVE",
        }
    }

    /// Our 64-byte greeting: this mechanism, `as_server` as given; ZMTP 3.0
    /// for NULL (what the `zeromq` crate speaks), 3.1 for CURVE (what
    /// libzmq 4.3 sends, so subscriptions travel as boxed commands).
    pub(crate) fn greeting_as(self, as_server: bool) -> [u8; 64] {
        let mut g = [0u8; 64];
        g[0] = 0xff;
        g[9] = 0x7f;
        g[10] = 3;
        g[11] = match self {
            Mechanism::Null => 0,
            Mechanism::Curve => 1,
        };
        let name = self.name();
        g[12..12 + name.len()].copy_from_slice(name);
        g[32] = as_server as u8;
        g
    }

    /// Our 64-byte greeting as a client (as-server 0).
    pub(crate) fn greeting(self) -> [u8; 64] {
        self.greeting_as(false)
    }

    /// Checks a peer's greeting: ZMTP 3.x announcing this mechanism.
    pub(crate) fn check_greeting(self, g: &[u8]) -> Result<(), GreetingError> {
        if g.len() < 64 || g[0] != 0xff || g[9] & 1 != 1 || g[10] < 3 {
            return Err(GreetingError::Bad);
        }
        let name = self.name();
        if &g[12..12 + name.len()] != name || g[12 + name.len()] != 0 {
            return Err(GreetingError::Mechanism);
        }
        Ok(())
    }

    /// Greeting plus the handshake command announcing a socket of `kind`.
    pub(crate) fn handshake_bytes(self, kind: SocketKind) -> Vec<u8> {
        let body = ready_command(kind.zmtp_name(), None);
        let mut out = self.greeting().to_vec();
        frame_header(body.len(), false, true, &mut out);
        out.extend_from_slice(&body);
        out
    }

    /// Parses the peer's handshake command body: the `Socket-Type` it
    /// announced (`Some(None)` if it announced none), `None` if the command
    /// is not the one this mechanism expects.
    pub(crate) fn parse_command(self, body: &[u8]) -> Option<Option<String>> {
        match self {
            Mechanism::Null | Mechanism::Curve => parse_ready(body),
        }
    }
}

/// Greeting plus a NULL-mechanism READY command announcing `kind`.
pub(crate) fn handshake_bytes(kind: SocketKind) -> Vec<u8> {
    Mechanism::Null.handshake_bytes(kind)
}

/// A NULL READY command body announcing `socket_type` (and `identity`).
pub(crate) fn ready_command(socket_type: &str, identity: Option<&[u8]>) -> Vec<u8> {
    let mut body = Vec::new();
    body.push(5);
    body.extend_from_slice(b"READY");
    Metadata {
        socket_type: Some(socket_type.to_string()),
        identity: identity.map(<[u8]>::to_vec),
    }
    .encode(&mut body);
    body
}

/// The ZMTP metadata properties zfabric reads and writes (RFC 23: a
/// one-byte name length, the name, a four-byte value length, the value).
/// Other properties a peer sends are skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Metadata {
    /// `Socket-Type`.
    pub(crate) socket_type: Option<String>,
    /// `Identity` (a ROUTER's name for the peer), if set and not empty.
    pub(crate) identity: Option<Vec<u8>>,
}

impl Metadata {
    /// Appends the properties.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let mut put = |name: &[u8], value: &[u8]| {
            out.push(name.len() as u8);
            out.extend_from_slice(name);
            out.extend_from_slice(&(value.len() as u32).to_be_bytes());
            out.extend_from_slice(value);
        };
        if let Some(t) = &self.socket_type {
            put(b"Socket-Type", t.as_bytes());
        }
        if let Some(id) = &self.identity {
            put(b"Identity", id);
        }
    }

    /// Parses properties; `None` if they are truncated.
    pub(crate) fn parse(mut props: &[u8]) -> Option<Metadata> {
        let mut meta = Metadata::default();
        while !props.is_empty() {
            let (&n, rest) = props.split_first()?;
            let (name, rest) = rest.split_at_checked(n as usize)?;
            let (len, rest) = rest.split_at_checked(4)?;
            let len = u32::from_be_bytes(len.try_into().ok()?) as usize;
            let (value, rest) = rest.split_at_checked(len)?;
            if name.eq_ignore_ascii_case(b"Socket-Type") {
                meta.socket_type = Some(String::from_utf8_lossy(value).into_owned());
            } else if name.eq_ignore_ascii_case(b"Identity") && !value.is_empty() {
                meta.identity = Some(value.to_vec());
            }
            props = rest;
        }
        Some(meta)
    }
}

/// The `Identity` a raw NULL handshake (greeting + READY, as
/// [`read_handshake`] returns it) announced.
pub(crate) fn handshake_identity(raw: &[u8]) -> Option<Vec<u8>> {
    let body = raw.get(64..)?;
    let (&flags, rest) = body.split_first()?;
    let rest = if flags & 0b010 != 0 {
        rest.get(8..)?
    } else {
        rest.get(1..)?
    };
    let (&n, rest) = rest.split_first()?;
    let (name, props) = rest.split_at_checked(n as usize)?;
    if name != b"READY" {
        return None;
    }
    Metadata::parse(props)?.identity
}

/// Reads a greeting and one command frame. Returns the raw bytes and the
/// `Socket-Type` the READY command announced.
pub(crate) async fn read_handshake<R: AsyncRead + Unpin>(
    r: &mut R,
) -> io::Result<(Vec<u8>, Option<String>)> {
    let mech = Mechanism::Null;
    let bad = |m: &'static str| io::Error::new(io::ErrorKind::InvalidData, m);
    let mut raw = vec![0u8; 64];
    r.read_exact(&mut raw).await?;
    mech.check_greeting(&raw)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
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
    let socket_type = mech
        .parse_command(&raw[start..])
        .ok_or_else(|| bad("expected READY"))?;
    Ok((raw, socket_type))
}

/// Parses a READY command body; `None` if it is not READY.
fn parse_ready(body: &[u8]) -> Option<Option<String>> {
    let (&n, rest) = body.split_first()?;
    let (name, props) = rest.split_at_checked(n as usize)?;
    if name != b"READY" {
        return None;
    }
    Some(Metadata::parse(props)?.socket_type)
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

    #[test]
    fn a_greeting_for_another_mechanism_is_refused() {
        let mut g = Mechanism::Null.greeting();
        assert_eq!(Mechanism::Null.check_greeting(&g), Ok(()));
        g[12..17].copy_from_slice(b"CURVE");
        assert_eq!(
            Mechanism::Null.check_greeting(&g),
            Err(GreetingError::Mechanism)
        );
        assert_eq!(Mechanism::Curve.check_greeting(&g), Ok(()));
        g[10] = 2;
        assert_eq!(Mechanism::Null.check_greeting(&g), Err(GreetingError::Bad));
        let server = Mechanism::Curve.greeting_as(true);
        assert_eq!((server[11], server[32]), (1, 1));
    }

    #[test]
    fn metadata_round_trips_and_the_identity_is_found_in_a_handshake() {
        let meta = Metadata {
            socket_type: Some("DEALER".into()),
            identity: Some(b"me".to_vec()),
        };
        let mut out = Vec::new();
        meta.encode(&mut out);
        assert_eq!(Metadata::parse(&out), Some(meta));
        assert_eq!(Metadata::parse(&out[..out.len() - 1]), None);
        let mut raw = Mechanism::Null.greeting().to_vec();
        let body = ready_command("DEALER", Some(b"me"));
        frame_header(body.len(), false, true, &mut raw);
        raw.extend_from_slice(&body);
        assert_eq!(handshake_identity(&raw), Some(b"me".to_vec()));
        assert_eq!(
            handshake_identity(&handshake_bytes(SocketKind::Dealer)),
            None
        );
    }
}
