//! The CurveZMQ handshake (RFC 26, as libzmq 4.3 runs it) as two state
//! machines without I/O: a client and a server, each a chain of types
//! that can only be driven in protocol order. Every step takes the body of
//! one ZMTP command frame and returns the command body to send, or a
//! [`CurveError`] saying why the peer is refused.
//!
//! ```text
//! client                                   server
//! HELLO    C', Box[64 zeros](C'->S)  ───▶  ServerHello::hello
//! WELCOME  Box[S' + cookie](S->C')   ◀───  (cookie = SecretBox[C' + s'](t), fresh t)
//! INITIATE cookie, Box[C + vouch + metadata](C'->S')  ───▶  ServerInitiate::initiate
//! READY    Box[metadata](S'->C')     ◀───  Initiated::ready
//! ```
//!
//! # Guarantees
//! - Lengths, command names and the version are checked before any box is
//!   opened; every box is opened by `crypto_box` / `crypto_secretbox`
//!   (RustCrypto), never by code of ours.
//! - The server proves it holds `s` (only it opens HELLO and makes a
//!   WELCOME the client can open); the client proves it holds `c` (the
//!   vouch, which must name this connection's `C'` and the server's `S`).
//! - The cookie key is fresh for every WELCOME and the cookie must open
//!   and hold this connection's `C'` and `s'`.
//! - Short nonces: HELLO 1 and INITIATE 2 from the client, READY 1 from
//!   the server, exactly as libzmq; INITIATE's must exceed HELLO's.
//!
//! # Not guaranteed
//! Authorization: the server reports the client's long-term key
//! ([`Initiated::client_key`]) and the caller decides. Timeouts are the
//! caller's (this code never waits).

use crypto_box::aead::consts::U24;
use crypto_box::aead::generic_array::GenericArray;
use crypto_box::aead::rand_core::RngCore;
use crypto_box::aead::{AeadCore, AeadInPlace, OsRng};
use crypto_box::{PublicKey, SalsaBox, SecretKey};
use crypto_secretbox::{KeyInit, XSalsa20Poly1305};

use super::codec::{Opener, Sealer};
use super::keys::{CurveKeyPair, CurvePublicKey};
use crate::telemetry::DisconnectReason;
use crate::transport::zmtp::Metadata;

/// Size of a HELLO command body, as libzmq sends it (with 72 bytes of
/// anti-amplification padding).
pub(crate) const HELLO_SIZE: usize = 200;
/// Size of a WELCOME command body.
pub(crate) const WELCOME_SIZE: usize = 168;
/// Smallest INITIATE command body (no metadata).
pub(crate) const INITIATE_MIN: usize = 257;
/// Smallest READY command body (no metadata).
pub(crate) const READY_MIN: usize = 30;

const TAG: usize = 16;

/// Why a CURVE peer was refused. Each maps to the `reason` label counted
/// when the connection is closed ([`CurveError::reason`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CurveError {
    /// A command other than the one this step expects.
    #[error("expected a {expected} command")]
    UnexpectedCommand {
        /// The command expected.
        expected: &'static str,
    },
    /// The expected command with a wrong length.
    #[error("malformed {command} command: {why}")]
    Malformed {
        /// The command.
        command: &'static str,
        /// What is wrong.
        why: &'static str,
    },
    /// A HELLO announcing another CurveZMQ version than 1.0.
    #[error("unsupported CurveZMQ version {major}.{minor}")]
    Version {
        /// Major version announced.
        major: u8,
        /// Minor version announced.
        minor: u8,
    },
    /// A box did not open: the wrong server key (HELLO), a tampered
    /// cookie, handshake box or message.
    #[error("the {0} box did not open (wrong key or tampered)")]
    Decrypt(&'static str),
    /// The vouch does not name this connection's keys.
    #[error("the vouch does not match this connection")]
    BadVouch,
    /// Metadata that does not parse.
    #[error("malformed metadata in {0}")]
    Metadata(&'static str),
    /// A short nonce that does not increase (a replayed or reordered box).
    #[error("short nonce {got} does not increase past {last}")]
    Nonce {
        /// The nonce received.
        got: u64,
        /// The last one accepted.
        last: u64,
    },
    /// The peer sent ERROR with this reason (printable ASCII only).
    #[error("peer refused the handshake: {0}")]
    PeerError(String),
    /// A frame over its limit.
    #[error("a CURVE frame declares {declared} bytes, over the limit of {limit}")]
    TooLarge {
        /// Declared length.
        declared: u64,
        /// The limit.
        limit: u64,
    },
    /// A frame that is not a single command frame (CURVE carries
    /// everything in commands).
    #[error("frame flags {0:#04x} where a CURVE command was expected")]
    NotCommand(u8),
    /// The operating system's randomness failed.
    #[error("no randomness from the operating system")]
    Random,
}

impl CurveError {
    /// The metric label of the disconnect this causes.
    pub(crate) fn reason(&self) -> DisconnectReason {
        match self {
            CurveError::UnexpectedCommand { .. }
            | CurveError::Malformed { .. }
            | CurveError::Version { .. }
            | CurveError::BadVouch
            | CurveError::Metadata(_)
            | CurveError::Random => DisconnectReason::BadHandshake,
            CurveError::Decrypt(_) => DisconnectReason::DecryptFailed,
            CurveError::Nonce { .. } => DisconnectReason::BadNonce,
            CurveError::PeerError(_) => DisconnectReason::PeerRefused,
            CurveError::TooLarge { .. } => DisconnectReason::FrameTooLarge,
            CurveError::NotCommand(_) => DisconnectReason::MalformedFrame,
        }
    }
}

/// A 24-byte nonce: a protocol prefix and its tail.
pub(super) fn nonce(prefix: &[u8], tail: &[u8]) -> GenericArray<u8, U24> {
    let mut n = [0u8; 24];
    n[..prefix.len()].copy_from_slice(prefix);
    n[prefix.len()..].copy_from_slice(tail);
    n.into()
}

/// `Box[plain]` as NaCl lays it out: the 16-byte tag, then the ciphertext.
pub(super) fn seal<A: AeadInPlace + AeadCore<NonceSize = U24>>(
    cipher: &A,
    n: &crypto_box::Nonce,
    plain: &[u8],
    what: &'static str,
) -> Result<Vec<u8>, CurveError> {
    let mut out = vec![0u8; TAG];
    out.extend_from_slice(plain);
    let tag = cipher
        .encrypt_in_place_detached(n, b"", &mut out[TAG..])
        .map_err(|_| CurveError::Decrypt(what))?;
    out[..TAG].copy_from_slice(&tag);
    Ok(out)
}

/// Opens a box made by [`seal`].
pub(super) fn open<A: AeadInPlace + AeadCore<NonceSize = U24>>(
    cipher: &A,
    n: &crypto_box::Nonce,
    boxed: &[u8],
    what: &'static str,
) -> Result<Vec<u8>, CurveError> {
    if boxed.len() < TAG {
        return Err(CurveError::Decrypt(what));
    }
    let mut plain = boxed[TAG..].to_vec();
    cipher
        .decrypt_in_place_detached(n, b"", &mut plain, GenericArray::from_slice(&boxed[..TAG]))
        .map_err(|_| CurveError::Decrypt(what))?;
    Ok(plain)
}

fn random<const N: usize>() -> Result<[u8; N], CurveError> {
    let mut b = [0u8; N];
    OsRng
        .try_fill_bytes(&mut b)
        .map_err(|_| CurveError::Random)?;
    Ok(b)
}

fn ephemeral() -> Result<(SecretKey, PublicKey), CurveError> {
    let s = SecretKey::from(random::<32>()?);
    let p = s.public_key();
    Ok((s, p))
}

fn key32(b: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 32];
    k.copy_from_slice(&b[..32]);
    k
}

fn short_nonce(b: &[u8]) -> u64 {
    let mut n = [0u8; 8];
    n.copy_from_slice(&b[..8]);
    u64::from_be_bytes(n)
}

/// An ERROR command body carrying `reason` (at most 255 bytes).
pub(crate) fn error_command(reason: &str) -> Vec<u8> {
    let r = &reason.as_bytes()[..reason.len().min(255)];
    let mut out = b"\x05ERROR".to_vec();
    out.push(r.len() as u8);
    out.extend_from_slice(r);
    out
}

/// If `cmd` is an ERROR, the refusal it carries.
fn peer_error(cmd: &[u8]) -> Option<CurveError> {
    let rest = cmd.strip_prefix(b"\x05ERROR")?;
    let reason = match rest.split_first() {
        Some((&n, r)) => &r[..(n as usize).min(r.len())],
        None => &[][..],
    };
    let printable = reason
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '?'
            }
        })
        .collect();
    Some(CurveError::PeerError(printable))
}

/// The session a finished handshake yields: a box for each direction.
#[derive(Debug)]
pub(crate) struct Session {
    /// Seals what we send.
    pub(crate) sealer: Sealer,
    /// Opens what the peer sends.
    pub(crate) opener: Opener,
}

// ----- client -----

/// Starts a client handshake towards a server whose long-term public key
/// is `server`. Returns the state awaiting WELCOME and the HELLO to send.
pub(crate) fn client_hello(
    ours: &CurveKeyPair,
    server: &CurvePublicKey,
) -> Result<(ClientWelcome, Vec<u8>), CurveError> {
    let (cn_secret, cn_public) = ephemeral()?;
    let hello_nonce = 1u64;
    let b = SalsaBox::new(&server.crypto(), &cn_secret);
    let sig = seal(
        &b,
        &nonce(b"CurveZMQHELLO---", &hello_nonce.to_be_bytes()),
        &[0u8; 64],
        "HELLO",
    )?;
    let mut hello = Vec::with_capacity(HELLO_SIZE);
    hello.extend_from_slice(b"\x05HELLO");
    hello.extend_from_slice(&[1, 0]);
    hello.extend_from_slice(&[0u8; 72]);
    hello.extend_from_slice(cn_public.as_bytes());
    hello.extend_from_slice(&hello_nonce.to_be_bytes());
    hello.extend_from_slice(&sig);
    debug_assert_eq!(hello.len(), HELLO_SIZE);
    Ok((
        ClientWelcome {
            ours: ours.clone(),
            server: *server,
            cn_secret,
            cn_public,
        },
        hello,
    ))
}

/// A client that sent HELLO and awaits WELCOME.
pub(crate) struct ClientWelcome {
    ours: CurveKeyPair,
    server: CurvePublicKey,
    cn_secret: SecretKey,
    cn_public: PublicKey,
}

impl std::fmt::Debug for ClientWelcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientWelcome")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl ClientWelcome {
    /// Takes the server's WELCOME; returns the state awaiting READY and
    /// the INITIATE (announcing `meta`) to send.
    pub(crate) fn welcome(
        self,
        cmd: &[u8],
        meta: &Metadata,
    ) -> Result<(ClientReady, Vec<u8>), CurveError> {
        if let Some(e) = peer_error(cmd) {
            return Err(e);
        }
        if !cmd.starts_with(b"\x07WELCOME") {
            return Err(CurveError::UnexpectedCommand {
                expected: "WELCOME",
            });
        }
        if cmd.len() != WELCOME_SIZE {
            return Err(CurveError::Malformed {
                command: "WELCOME",
                why: "not 168 bytes",
            });
        }
        let long_box = SalsaBox::new(&self.server.crypto(), &self.cn_secret);
        let plain = open(
            &long_box,
            &nonce(b"WELCOME-", &cmd[8..24]),
            &cmd[24..],
            "WELCOME",
        )?;
        let cn_server = PublicKey::from(key32(&plain[..32]));
        let cookie = &plain[32..128];
        let session_box = SalsaBox::new(&cn_server, &self.cn_secret);

        let vouch_tail = random::<16>()?;
        let mut vouch_plain = Vec::with_capacity(64);
        vouch_plain.extend_from_slice(self.cn_public.as_bytes());
        vouch_plain.extend_from_slice(self.server.as_bytes());
        let vouch_box = SalsaBox::new(&cn_server, self.ours.secret().crypto());
        let vouch = seal(
            &vouch_box,
            &nonce(b"VOUCH---", &vouch_tail),
            &vouch_plain,
            "vouch",
        )?;

        let mut plain = Vec::with_capacity(128 + 64);
        plain.extend_from_slice(self.ours.public().as_bytes());
        plain.extend_from_slice(&vouch_tail);
        plain.extend_from_slice(&vouch);
        meta.encode(&mut plain);
        let initiate_nonce = 2u64;
        let boxed = seal(
            &session_box,
            &nonce(b"CurveZMQINITIATE", &initiate_nonce.to_be_bytes()),
            &plain,
            "INITIATE",
        )?;
        let mut initiate = Vec::with_capacity(113 + boxed.len());
        initiate.extend_from_slice(b"\x08INITIATE");
        initiate.extend_from_slice(cookie);
        initiate.extend_from_slice(&initiate_nonce.to_be_bytes());
        initiate.extend_from_slice(&boxed);
        Ok((
            ClientReady {
                session_box,
                cn_server,
                cn_secret: self.cn_secret,
                next_nonce: initiate_nonce + 1,
            },
            initiate,
        ))
    }
}

/// A client that sent INITIATE and awaits READY.
pub(crate) struct ClientReady {
    session_box: SalsaBox,
    cn_server: PublicKey,
    cn_secret: SecretKey,
    next_nonce: u64,
}

impl std::fmt::Debug for ClientReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientReady").finish_non_exhaustive()
    }
}

impl ClientReady {
    /// Takes the server's READY: the server's metadata and the session.
    pub(crate) fn ready(self, cmd: &[u8]) -> Result<(Metadata, Session), CurveError> {
        if let Some(e) = peer_error(cmd) {
            return Err(e);
        }
        if !cmd.starts_with(b"\x05READY") {
            return Err(CurveError::UnexpectedCommand { expected: "READY" });
        }
        if cmd.len() < READY_MIN {
            return Err(CurveError::Malformed {
                command: "READY",
                why: "shorter than 30 bytes",
            });
        }
        let ready_nonce = short_nonce(&cmd[6..14]);
        let plain = open(
            &self.session_box,
            &nonce(b"CurveZMQREADY---", &cmd[6..14]),
            &cmd[14..],
            "READY",
        )?;
        let meta = Metadata::parse(&plain).ok_or(CurveError::Metadata("READY"))?;
        Ok((
            meta,
            Session {
                // One precomputed box per direction (`SalsaBox` is not
                // `Clone`): the same key, computed twice.
                sealer: Sealer::new(
                    SalsaBox::new(&self.cn_server, &self.cn_secret),
                    *b"CurveZMQMESSAGEC",
                    self.next_nonce,
                ),
                opener: Opener::new(self.session_box, *b"CurveZMQMESSAGES", ready_nonce),
            },
        ))
    }
}

// ----- server -----

/// A server awaiting a client's HELLO, proving it holds `ours`.
pub(crate) struct ServerHello {
    ours: CurveKeyPair,
}

impl std::fmt::Debug for ServerHello {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHello")
            .field("public", self.ours.public())
            .finish_non_exhaustive()
    }
}

impl ServerHello {
    /// A server handshake with our long-term key pair.
    pub(crate) fn new(ours: CurveKeyPair) -> Self {
        ServerHello { ours }
    }

    /// Takes the client's HELLO; returns the state awaiting INITIATE and
    /// the WELCOME to send.
    pub(crate) fn hello(self, cmd: &[u8]) -> Result<(ServerInitiate, Vec<u8>), CurveError> {
        if !cmd.starts_with(b"\x05HELLO") {
            return Err(CurveError::UnexpectedCommand { expected: "HELLO" });
        }
        if cmd.len() != HELLO_SIZE {
            return Err(CurveError::Malformed {
                command: "HELLO",
                why: "not 200 bytes",
            });
        }
        let (major, minor) = (cmd[6], cmd[7]);
        if (major, minor) != (1, 0) {
            return Err(CurveError::Version { major, minor });
        }
        let cn_client = PublicKey::from(key32(&cmd[80..112]));
        let hello_nonce = short_nonce(&cmd[112..120]);
        let long_box = SalsaBox::new(&cn_client, self.ours.secret().crypto());
        open(
            &long_box,
            &nonce(b"CurveZMQHELLO---", &cmd[112..120]),
            &cmd[120..200],
            "HELLO",
        )?;

        let (cn_secret, cn_public) = ephemeral()?;
        let cookie_key = random::<32>()?;
        let cookie_tail = random::<16>()?;
        let mut cookie_plain = Vec::with_capacity(64);
        cookie_plain.extend_from_slice(cn_client.as_bytes());
        cookie_plain.extend_from_slice(&cn_secret.to_bytes());
        let cookie = seal(
            &XSalsa20Poly1305::new(&cookie_key.into()),
            &nonce(b"COOKIE--", &cookie_tail),
            &cookie_plain,
            "cookie",
        )?;
        let mut plain = Vec::with_capacity(128);
        plain.extend_from_slice(cn_public.as_bytes());
        plain.extend_from_slice(&cookie_tail);
        plain.extend_from_slice(&cookie);
        let welcome_tail = random::<16>()?;
        let boxed = seal(
            &long_box,
            &nonce(b"WELCOME-", &welcome_tail),
            &plain,
            "WELCOME",
        )?;
        let mut welcome = Vec::with_capacity(WELCOME_SIZE);
        welcome.extend_from_slice(b"\x07WELCOME");
        welcome.extend_from_slice(&welcome_tail);
        welcome.extend_from_slice(&boxed);
        debug_assert_eq!(welcome.len(), WELCOME_SIZE);
        Ok((
            ServerInitiate {
                ours: self.ours,
                cn_client,
                cn_secret,
                cookie_key,
                hello_nonce,
            },
            welcome,
        ))
    }
}

/// A server that sent WELCOME and awaits INITIATE.
pub(crate) struct ServerInitiate {
    ours: CurveKeyPair,
    cn_client: PublicKey,
    cn_secret: SecretKey,
    cookie_key: [u8; 32],
    hello_nonce: u64,
}

impl std::fmt::Debug for ServerInitiate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerInitiate").finish_non_exhaustive()
    }
}

impl ServerInitiate {
    /// Takes the client's INITIATE: who the client is (its long-term key,
    /// proven by the vouch) and what it announced.
    pub(crate) fn initiate(self, cmd: &[u8]) -> Result<Initiated, CurveError> {
        if !cmd.starts_with(b"\x08INITIATE") {
            return Err(CurveError::UnexpectedCommand {
                expected: "INITIATE",
            });
        }
        if cmd.len() < INITIATE_MIN {
            return Err(CurveError::Malformed {
                command: "INITIATE",
                why: "shorter than 257 bytes",
            });
        }
        let cookie = open(
            &XSalsa20Poly1305::new(&self.cookie_key.into()),
            &nonce(b"COOKIE--", &cmd[9..25]),
            &cmd[25..105],
            "cookie",
        )?;
        if cookie[..32] != self.cn_client.as_bytes()[..]
            || cookie[32..64] != self.cn_secret.to_bytes()
        {
            return Err(CurveError::Decrypt("cookie"));
        }
        let initiate_nonce = short_nonce(&cmd[105..113]);
        if initiate_nonce <= self.hello_nonce {
            return Err(CurveError::Nonce {
                got: initiate_nonce,
                last: self.hello_nonce,
            });
        }
        let session_box = SalsaBox::new(&self.cn_client, &self.cn_secret);
        let plain = open(
            &session_box,
            &nonce(b"CurveZMQINITIATE", &cmd[105..113]),
            &cmd[113..],
            "INITIATE",
        )?;
        let client = PublicKey::from(key32(&plain[..32]));
        let vouch = open(
            &SalsaBox::new(&client, &self.cn_secret),
            &nonce(b"VOUCH---", &plain[32..48]),
            &plain[48..128],
            "vouch",
        )?;
        if vouch[..32] != self.cn_client.as_bytes()[..]
            || vouch[32..64] != self.ours.public().as_bytes()[..]
        {
            return Err(CurveError::BadVouch);
        }
        let metadata = Metadata::parse(&plain[128..]).ok_or(CurveError::Metadata("INITIATE"))?;
        Ok(Initiated {
            client_key: CurvePublicKey::from_bytes(*client.as_bytes()),
            metadata,
            session_box,
            cn_client: self.cn_client,
            cn_secret: self.cn_secret,
            peer_nonce: initiate_nonce,
        })
    }
}

/// A server that has authenticated the client (not yet authorized it).
pub(crate) struct Initiated {
    /// The client's long-term public key, proven by the vouch.
    pub(crate) client_key: CurvePublicKey,
    /// What the client announced (`Socket-Type`, `Identity`).
    pub(crate) metadata: Metadata,
    session_box: SalsaBox,
    cn_client: PublicKey,
    cn_secret: SecretKey,
    peer_nonce: u64,
}

impl std::fmt::Debug for Initiated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Initiated")
            .field("client_key", &self.client_key)
            .field("metadata", &self.metadata)
            .finish_non_exhaustive()
    }
}

impl Initiated {
    /// Accepts the client: the READY (announcing `meta`) to send, and the
    /// session.
    pub(crate) fn ready(self, meta: &Metadata) -> Result<(Vec<u8>, Session), CurveError> {
        let ready_nonce = 1u64;
        let mut plain = Vec::new();
        meta.encode(&mut plain);
        let boxed = seal(
            &self.session_box,
            &nonce(b"CurveZMQREADY---", &ready_nonce.to_be_bytes()),
            &plain,
            "READY",
        )?;
        let mut ready = Vec::with_capacity(14 + boxed.len());
        ready.extend_from_slice(b"\x05READY");
        ready.extend_from_slice(&ready_nonce.to_be_bytes());
        ready.extend_from_slice(&boxed);
        Ok((
            ready,
            Session {
                sealer: Sealer::new(
                    SalsaBox::new(&self.cn_client, &self.cn_secret),
                    *b"CurveZMQMESSAGES",
                    ready_nonce + 1,
                ),
                opener: Opener::new(self.session_box, *b"CurveZMQMESSAGEC", self.peer_nonce),
            },
        ))
    }
}
