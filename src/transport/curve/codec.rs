//! CURVE MESSAGE boxes, and the two byte-stream transforms the guard relay
//! runs after a handshake: plain ZMTP frames -> MESSAGE commands
//! ([`SealStream`]) and back ([`OpenStream`]). No I/O.
//!
//! A MESSAGE travels in one ZMTP frame without the MORE and COMMAND bits
//! (as libzmq sends it), holding `\x07MESSAGE`, an 8-byte short nonce, then
//! `Box[flags + frame body](C'->S' or S'->C')` under the session's
//! precomputed key, with the nonce prefix `CurveZMQMESSAGEC` (client to
//! server) or `CurveZMQMESSAGES`. The flags byte inside the box carries
//! MORE (bit 0) and COMMAND (bit 1: libzmq's `msg_t` flags, where the ZMTP
//! frame header has it at bit 2): the frame boundaries and the
//! subscriptions of ZMTP 3.1 travel encrypted.
//!
//! # Guarantees
//! - Short nonces we send start where the handshake left off and increase
//!   by one per box; a box whose nonce does not exceed the last one
//!   accepted is refused ([`CurveError::Nonce`]) before it is opened, and
//!   a box that does not open is refused ([`CurveError::Decrypt`]).
//! - [`OpenStream`] refuses a frame declaring more than its limit from the
//!   header, before buffering the body, and never buffers more than one
//!   frame. What it emits is plain ZMTP that the caller scans against the
//!   message limits like any other stream.
//! - Subscriptions: a SUB socket's `0x01`/`0x00` messages are sent as the
//!   boxed `SUBSCRIBE`/`CANCEL` commands of ZMTP 3.1 (as libzmq does for a
//!   3.1 peer); both forms are accepted and handed on in the `0x01`/`0x00`
//!   form the `zeromq` crate understands.
//!
//! # Not guaranteed
//! Other boxed commands (libzmq's heartbeat PING/PONG) are skipped, not
//! answered: heartbeats must stay off on a libzmq peer.

use crypto_box::aead::AeadInPlace;
use crypto_box::SalsaBox;

use super::handshake::{nonce, CurveError};
use crate::transport::scan::frame_header;

/// ZMTP frame flags (outside the box).
const MORE: u8 = 0b001;
const LONG: u8 = 0b010;
const COMMAND: u8 = 0b100;
/// The flags byte inside a MESSAGE box is libzmq's `msg_t` flags, not the
/// ZMTP frame flags: MORE is bit 0, COMMAND is bit 1.
const BOX_MORE: u8 = 0b01;
const BOX_COMMAND: u8 = 0b10;

/// ZMTP frame flags -> the flags byte inside the box.
fn box_flags(frame: u8) -> u8 {
    (frame & MORE) | if frame & COMMAND != 0 { BOX_COMMAND } else { 0 }
}
const TAG: usize = 16;
/// `\x07MESSAGE`, short nonce, tag, flags.
pub(crate) const MESSAGE_OVERHEAD: usize = 8 + 8 + TAG + 1;

/// Seals frames for one direction of a session.
pub(crate) struct Sealer {
    cipher: SalsaBox,
    prefix: [u8; 16],
    next: u64,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    pub(super) fn new(cipher: SalsaBox, prefix: [u8; 16], next: u64) -> Self {
        Sealer {
            cipher,
            prefix,
            next,
        }
    }

    /// Appends to `out` one ZMTP frame: a MESSAGE boxing `flags` (ZMTP
    /// frame flags: MORE and COMMAND are carried, as the box encodes them)
    /// and `body`.
    pub(crate) fn seal(
        &mut self,
        flags: u8,
        body: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CurveError> {
        let n = self.next;
        self.next += 1;
        // libzmq sends MESSAGE in a plain frame (no COMMAND, no MORE bit:
        // those are inside the box) and treats a command-flagged one as a
        // command, dropping it: do as libzmq does.
        frame_header(MESSAGE_OVERHEAD + body.len(), false, false, out);
        out.extend_from_slice(b"\x07MESSAGE");
        out.extend_from_slice(&n.to_be_bytes());
        let tag_at = out.len();
        out.extend_from_slice(&[0u8; TAG]);
        out.push(box_flags(flags));
        out.extend_from_slice(body);
        let tag = self
            .cipher
            .encrypt_in_place_detached(
                &nonce(&self.prefix, &n.to_be_bytes()),
                b"",
                &mut out[tag_at + TAG..],
            )
            .map_err(|_| CurveError::Decrypt("MESSAGE"))?;
        out[tag_at..tag_at + TAG].copy_from_slice(&tag);
        Ok(())
    }
}

/// Opens the peer's frames for one direction of a session.
pub(crate) struct Opener {
    cipher: SalsaBox,
    prefix: [u8; 16],
    last: u64,
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener")
            .field("last", &self.last)
            .finish_non_exhaustive()
    }
}

impl Opener {
    pub(super) fn new(cipher: SalsaBox, prefix: [u8; 16], last: u64) -> Self {
        Opener {
            cipher,
            prefix,
            last,
        }
    }

    /// Opens a MESSAGE command body in place: its flags as ZMTP frame
    /// flags (MORE, COMMAND) and the frame body.
    pub(crate) fn open<'a>(&mut self, cmd: &'a mut [u8]) -> Result<(u8, &'a [u8]), CurveError> {
        if !cmd.starts_with(b"\x07MESSAGE") {
            return Err(CurveError::UnexpectedCommand {
                expected: "MESSAGE",
            });
        }
        if cmd.len() < MESSAGE_OVERHEAD {
            return Err(CurveError::Malformed {
                command: "MESSAGE",
                why: "shorter than 33 bytes",
            });
        }
        let mut short = [0u8; 8];
        short.copy_from_slice(&cmd[8..16]);
        let got = u64::from_be_bytes(short);
        if got <= self.last {
            return Err(CurveError::Nonce {
                got,
                last: self.last,
            });
        }
        let (head, boxed) = cmd.split_at_mut(16 + TAG);
        let tag = crypto_box::aead::generic_array::GenericArray::from_slice(&head[16..]);
        self.cipher
            .decrypt_in_place_detached(&nonce(&self.prefix, &short), b"", boxed, tag)
            .map_err(|_| CurveError::Decrypt("MESSAGE"))?;
        self.last = got;
        let (&flags, body) = boxed.split_first().unwrap_or((&0, &[]));
        let frame = (flags & BOX_MORE) | if flags & BOX_COMMAND != 0 { COMMAND } else { 0 };
        Ok((frame, body))
    }
}

/// A ZMTP frame header at the start of `data`: (flags, header length,
/// body length), or `None` if it is not complete yet.
fn header(data: &[u8]) -> Option<(u8, usize, u64)> {
    let &flags = data.first()?;
    if flags & LONG != 0 {
        let len = data.get(1..9)?;
        Some((flags, 9, u64::from_be_bytes(len.try_into().ok()?)))
    } else {
        Some((flags, 2, *data.get(1)? as u64))
    }
}

/// Plain ZMTP frames (after the handshake) -> sealed MESSAGE commands.
#[derive(Debug)]
pub(crate) struct SealStream {
    sealer: Sealer,
    pending: Vec<u8>,
    max_frame: u64,
    sub: bool,
    first_frame: bool,
}

impl SealStream {
    /// Seals with `sealer`; frames over `max_frame` are refused. `sub`:
    /// the stream comes from a SUB socket (its messages are subscriptions).
    pub(crate) fn new(sealer: Sealer, max_frame: u64, sub: bool) -> Self {
        SealStream {
            sealer,
            pending: Vec::new(),
            max_frame,
            sub,
            first_frame: true,
        }
    }

    /// Feeds plain bytes; appends the sealed commands of every frame that
    /// completes to `out`, keeping a partial frame for the next call.
    pub(crate) fn feed(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), CurveError> {
        if self.pending.is_empty() {
            let used = self.drain(plain, out)?;
            self.pending.extend_from_slice(&plain[used..]);
        } else {
            let mut data = std::mem::take(&mut self.pending);
            data.extend_from_slice(plain);
            let used = self.drain(&data, out)?;
            data.drain(..used);
            self.pending = data;
        }
        Ok(())
    }

    fn drain(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<usize, CurveError> {
        let mut at = 0;
        while let Some((flags, hlen, len)) = header(&data[at..]) {
            if len > self.max_frame {
                return Err(CurveError::TooLarge {
                    declared: len,
                    limit: self.max_frame,
                });
            }
            let end = at + hlen + len as usize;
            if end > data.len() {
                break;
            }
            let body = &data[at + hlen..end];
            let first = self.first_frame;
            self.first_frame = flags & MORE == 0;
            if self.sub && first && flags & (MORE | COMMAND) == 0 {
                if let Some((&op @ (0 | 1), topic)) = body.split_first() {
                    let name: &[u8] = if op == 1 {
                        b"\x09SUBSCRIBE"
                    } else {
                        b"\x06CANCEL"
                    };
                    let mut cmd = Vec::with_capacity(name.len() + topic.len());
                    cmd.extend_from_slice(name);
                    cmd.extend_from_slice(topic);
                    self.sealer.seal(COMMAND, &cmd, out)?;
                    at = end;
                    continue;
                }
            }
            self.sealer.seal(flags, body, out)?;
            at = end;
        }
        Ok(at)
    }
}

/// Sealed MESSAGE commands from the peer -> plain ZMTP frames.
#[derive(Debug)]
pub(crate) struct OpenStream {
    opener: Opener,
    pending: Vec<u8>,
    max_command: u64,
    /// Boxed commands skipped (heartbeats and the like).
    pub(crate) skipped: u64,
}

impl OpenStream {
    /// Opens with `opener`; a wire frame declaring more than `max_command`
    /// bytes is refused from its header.
    pub(crate) fn new(opener: Opener, max_command: u64) -> Self {
        OpenStream {
            opener,
            pending: Vec::new(),
            max_command,
            skipped: 0,
        }
    }

    /// Feeds bytes read from the peer; appends the plain frames of every
    /// MESSAGE that completes to `out`.
    pub(crate) fn feed(&mut self, wire: &[u8], out: &mut Vec<u8>) -> Result<(), CurveError> {
        self.pending.extend_from_slice(wire);
        let mut data = std::mem::take(&mut self.pending);
        let r = self.drain(&mut data, out);
        self.pending = data;
        r
    }

    fn drain(&mut self, data: &mut Vec<u8>, out: &mut Vec<u8>) -> Result<(), CurveError> {
        let mut at = 0;
        while let Some((flags, hlen, len)) = header(&data[at..]) {
            // One frame per MESSAGE: libzmq sets neither COMMAND nor MORE
            // on it; COMMAND is tolerated (RFC 26's wording), MORE is not.
            if flags & !(LONG | COMMAND) != 0 {
                return Err(CurveError::NotCommand(flags));
            }
            if len > self.max_command {
                return Err(CurveError::TooLarge {
                    declared: len,
                    limit: self.max_command,
                });
            }
            let end = at + hlen + len as usize;
            if end > data.len() {
                break;
            }
            let (inner, body) = self.opener.open(&mut data[at + hlen..end])?;
            if inner & COMMAND == 0 {
                frame_header(body.len(), inner & MORE != 0, false, out);
                out.extend_from_slice(body);
            } else if let Some(topic) = body.strip_prefix(b"\x09SUBSCRIBE") {
                frame_header(topic.len() + 1, false, false, out);
                out.push(1);
                out.extend_from_slice(topic);
            } else if let Some(topic) = body.strip_prefix(b"\x06CANCEL") {
                frame_header(topic.len() + 1, false, false, out);
                out.push(0);
                out.extend_from_slice(topic);
            } else {
                self.skipped += 1;
            }
            at = end;
        }
        data.drain(..at);
        Ok(())
    }
}
