//! ZMTP 3 greeting and handshake, without I/O beyond reading one
//! handshake: the greeting bytes, the READY command (build and parse),
//! socket-type compatibility, and the security [`Mechanism`] seam.
//!
//! # Guarantees
//! - Every length a peer declares is checked before anything is read into
//!   memory for it (a command is at most [`MAX_COMMAND`] bytes).
//! - A greeting that is not ZMTP 3.x, or announces a mechanism zfabric
//!   does not run, is refused with an error naming why.
//!
//! # Not guaranteed
//! Authentication or encryption: [`Mechanism::Null`] is the only mechanism
//! today. A new mechanism (CURVE) goes beside it here: its greeting name,
//! its handshake commands, and what it learns of the peer.

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
}

impl Mechanism {
    /// The mechanism's name as the greeting carries it (up to 20 bytes).
    pub(crate) fn name(self) -> &'static [u8] {
        match self {
            Mechanism::Null => b"NULL",
        }
    }

    /// Our 64-byte greeting (ZMTP 3.0, this mechanism, as-server 0).
    pub(crate) fn greeting(self) -> [u8; 64] {
        let mut g = [0u8; 64];
        g[0] = 0xff;
        g[9] = 0x7f;
        g[10] = 3;
        g[11] = 0;
        let name = self.name();
        g[12..12 + name.len()].copy_from_slice(name);
        g
    }

    /// Checks a peer's greeting: ZMTP 3.x announcing this mechanism.
    pub(crate) fn check_greeting(self, g: &[u8]) -> Result<(), &'static str> {
        if g.len() < 64 || g[0] != 0xff || g[9] & 1 != 1 || g[10] < 3 {
            return Err("bad greeting");
        }
        let name = self.name();
        if &g[12..12 + name.len()] != name || g[12 + name.len()] != 0 {
            return Err("unsupported security mechanism");
        }
        Ok(())
    }

    /// Greeting plus the handshake command announcing a socket of `kind`.
    pub(crate) fn handshake_bytes(self, kind: SocketKind) -> Vec<u8> {
        let body = match self {
            Mechanism::Null => ready_command(kind),
        };
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
            Mechanism::Null => parse_ready(body),
        }
    }
}

/// Greeting plus a NULL-mechanism READY command announcing `kind`.
pub(crate) fn handshake_bytes(kind: SocketKind) -> Vec<u8> {
    Mechanism::Null.handshake_bytes(kind)
}

/// A READY command body announcing `kind`.
fn ready_command(kind: SocketKind) -> Vec<u8> {
    let mut body = Vec::new();
    body.push(5);
    body.extend_from_slice(b"READY");
    let name = b"Socket-Type";
    body.push(name.len() as u8);
    body.extend_from_slice(name);
    let value = kind.zmtp_name().as_bytes();
    body.extend_from_slice(&(value.len() as u32).to_be_bytes());
    body.extend_from_slice(value);
    body
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
    mech.check_greeting(&raw).map_err(bad)?;
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
            Err("unsupported security mechanism")
        );
        g[10] = 2;
        assert_eq!(Mechanism::Null.check_greeting(&g), Err("bad greeting"));
    }
}
