//! A ZMTP 3.x stream scanner: reads frame headers only, never buffers
//! bodies, and rejects a frame or message over the limit from its declared
//! length, before the bytes arrive. Plain code, no I/O.

/// Limits the scanner enforces.
use crate::telemetry::DisconnectReason;

#[derive(Debug, Clone, Copy)]
pub(crate) struct ScanLimits {
    /// Largest message (sum of its frames) in bytes.
    pub(crate) max_message: u64,
    /// Largest command frame (handshake, heartbeats) in bytes.
    pub(crate) max_command: u64,
}

/// Why a stream was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ScanError {
    /// The greeting does not start with the ZMTP signature.
    BadGreeting,
    /// The greeting announces another security mechanism than NULL (a
    /// CURVE client at a NULL socket).
    Mechanism,
    /// Reserved flag bits set, or a command with the MORE flag.
    BadFlags(u8),
    /// A message frame declares more than the message limit by itself.
    FrameTooLarge { declared: u64, limit: u64 },
    /// The frames of one message add up to more than the limit.
    MessageTooLarge { size: u64, limit: u64 },
    /// A command frame declares more than the command limit.
    CommandTooLarge { declared: u64, limit: u64 },
}

impl ScanError {
    /// Metric label for the disconnect this causes.
    pub(crate) fn reason(&self) -> DisconnectReason {
        match self {
            ScanError::BadGreeting => DisconnectReason::BadGreeting,
            ScanError::Mechanism => DisconnectReason::MechanismMismatch,
            ScanError::BadFlags(_) => DisconnectReason::MalformedFrame,
            ScanError::FrameTooLarge { .. } => DisconnectReason::FrameTooLarge,
            ScanError::MessageTooLarge { .. } => DisconnectReason::MessageTooLarge,
            ScanError::CommandTooLarge { .. } => DisconnectReason::FrameTooLarge,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// Inside the 64-byte greeting; the value is the offset reached.
    Greeting(u8),
    Flags,
    Len {
        flags: u8,
        need: u8,
        acc: u64,
    },
    Body {
        flags: u8,
        remaining: u64,
    },
}

const MORE: u8 = 0b001;
const LONG: u8 = 0b010;
const COMMAND: u8 = 0b100;

/// The greeting's mechanism field for NULL.
const NULL_MECHANISM: [u8; 20] = *b"NULL\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";

/// Largest single-frame message body captured by `capture_small`.
const CAPTURE_MAX: u64 = 4096;

/// The scanner. Feed it the bytes of one direction of a connection in
/// order.
#[derive(Debug)]
pub(crate) struct FrameScanner {
    state: State,
    limits: ScanLimits,
    msg_size: u64,
    first_frame: bool,
    capture_small: bool,
    capturing: Option<Vec<u8>>,
    captured: Vec<Vec<u8>>,
    messages: u64,
    /// Frames so far in the unit being scanned.
    frames: u32,
    /// Whether [`count_units`](Self::count_units) is on.
    count_units: bool,
    /// With it: what each completed unit was, in the order of `ends`.
    units: Vec<Unit>,
}

/// What one completed unit of a stream was (see
/// [`FrameScanner::count_units`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unit {
    /// Frames in it (1 for a command, 0 for the greeting).
    pub(crate) frames: u32,
    /// A data message (not the greeting, not a command).
    pub(crate) data: bool,
}

impl FrameScanner {
    /// A scanner that expects the stream to start with a greeting.
    pub(crate) fn new(limits: ScanLimits) -> Self {
        FrameScanner {
            state: State::Greeting(0),
            limits,
            msg_size: 0,
            first_frame: true,
            capture_small: false,
            capturing: None,
            captured: Vec::new(),
            messages: 0,
            frames: 0,
            count_units: false,
            units: Vec::new(),
        }
    }

    /// A scanner for a stream already past its handshake.
    pub(crate) fn after_handshake(limits: ScanLimits) -> Self {
        FrameScanner {
            state: State::Flags,
            ..Self::new(limits)
        }
    }

    /// Also keep the bodies of small single-frame messages (used to see a
    /// SUB socket's subscriptions so they can be replayed on reconnect).
    pub(crate) fn capture_small(mut self) -> Self {
        self.capture_small = true;
        self
    }

    /// Also record what each completed unit was ([`take_units`](Self::take_units)).
    pub(crate) fn count_units(mut self) -> Self {
        self.count_units = true;
        self
    }

    /// The units completed since the last call, in the order their ends
    /// were pushed (empty unless [`count_units`](Self::count_units)).
    pub(crate) fn take_units(&mut self) -> std::vec::Drain<'_, Unit> {
        self.units.drain(..)
    }

    /// Takes the captured small messages. A ZMTP 3.1 `SUBSCRIBE` or
    /// `CANCEL` command is handed out in the 3.0 form, as a message `1`
    /// or `0` followed by the prefix; other commands are not captured.
    pub(crate) fn take_captured(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.captured)
    }

    /// Whether the scanner sits between messages.
    pub(crate) fn at_boundary(&self) -> bool {
        matches!(self.state, State::Flags | State::Greeting(0)) && self.first_frame
    }

    /// Complete data messages seen so far (commands and greeting excluded).
    #[cfg(test)]
    pub(crate) fn messages(&self) -> u64 {
        self.messages
    }

    /// Scans `data`. Pushes into `ends` the offset just past each unit that
    /// completes in it (greeting, command or whole message). On error, the
    /// stream must be closed; nothing after the offending header may be
    /// forwarded.
    pub(crate) fn feed(&mut self, data: &[u8], ends: &mut Vec<usize>) -> Result<(), ScanError> {
        let mut i = 0usize;
        while i < data.len() {
            match self.state {
                State::Greeting(off) => {
                    let b = data[i];
                    if (off == 0 && b != 0xff) || (off == 9 && b & 1 != 1) {
                        return Err(ScanError::BadGreeting);
                    }
                    // The mechanism field (bytes 12..32): NULL, zero-padded.
                    if (12..32).contains(&off) && NULL_MECHANISM[off as usize - 12] != b {
                        return Err(ScanError::Mechanism);
                    }
                    i += 1;
                    if off == 63 {
                        self.state = State::Flags;
                        ends.push(i);
                        if self.count_units {
                            self.units.push(Unit {
                                frames: 0,
                                data: false,
                            });
                        }
                    } else {
                        self.state = State::Greeting(off + 1);
                    }
                }
                State::Flags => {
                    let flags = data[i];
                    i += 1;
                    if flags & !(MORE | LONG | COMMAND) != 0
                        || (flags & COMMAND != 0 && (flags & MORE != 0 || !self.first_frame))
                    {
                        return Err(ScanError::BadFlags(flags));
                    }
                    let need = if flags & LONG != 0 { 8 } else { 1 };
                    self.state = State::Len {
                        flags,
                        need,
                        acc: 0,
                    };
                }
                State::Len { flags, need, acc } => {
                    let acc = (acc << 8) | data[i] as u64;
                    i += 1;
                    if need > 1 {
                        self.state = State::Len {
                            flags,
                            need: need - 1,
                            acc,
                        };
                        continue;
                    }
                    self.check_len(flags, acc)?;
                    if self.capture_small
                        && flags & MORE == 0
                        && self.first_frame
                        && acc <= CAPTURE_MAX
                    {
                        self.capturing = Some(Vec::with_capacity(acc as usize));
                    }
                    self.state = State::Body {
                        flags,
                        remaining: acc,
                    };
                    if acc == 0 {
                        self.end_frame(flags, i, ends);
                    }
                }
                State::Body { flags, remaining } => {
                    let take = remaining.min((data.len() - i) as u64) as usize;
                    if let Some(c) = &mut self.capturing {
                        c.extend_from_slice(&data[i..i + take]);
                    }
                    i += take;
                    let remaining = remaining - take as u64;
                    self.state = State::Body { flags, remaining };
                    if remaining == 0 {
                        self.end_frame(flags, i, ends);
                    }
                }
            }
        }
        Ok(())
    }

    fn check_len(&mut self, flags: u8, len: u64) -> Result<(), ScanError> {
        if flags & COMMAND != 0 {
            if len > self.limits.max_command {
                return Err(ScanError::CommandTooLarge {
                    declared: len,
                    limit: self.limits.max_command,
                });
            }
            return Ok(());
        }
        let limit = self.limits.max_message;
        if len > limit {
            return Err(ScanError::FrameTooLarge {
                declared: len,
                limit,
            });
        }
        let size = self.msg_size + len;
        if size > limit {
            return Err(ScanError::MessageTooLarge { size, limit });
        }
        self.msg_size = size;
        Ok(())
    }

    fn end_frame(&mut self, flags: u8, at: usize, ends: &mut Vec<usize>) {
        self.state = State::Flags;
        self.frames += 1;
        if flags & MORE != 0 {
            self.first_frame = false;
            return;
        }
        let data = flags & COMMAND == 0;
        if data {
            self.messages += 1;
        }
        if self.count_units {
            self.units.push(Unit {
                frames: self.frames,
                data,
            });
        }
        self.frames = 0;
        if let Some(c) = self.capturing.take() {
            if data {
                self.captured.push(c);
            } else if let Some(m) = subscription_command(&c) {
                self.captured.push(m);
            }
        }
        self.first_frame = true;
        self.msg_size = 0;
        ends.push(at);
    }
}

/// A ZMTP 3.1 `SUBSCRIBE`/`CANCEL` command body (name length, name,
/// prefix) in the 3.0 message form (`1`/`0`, prefix).
fn subscription_command(body: &[u8]) -> Option<Vec<u8>> {
    let (&n, rest) = body.split_first()?;
    let name = rest.get(..n as usize)?;
    let flag = match name {
        b"SUBSCRIBE" => 1u8,
        b"CANCEL" => 0u8,
        _ => return None,
    };
    let mut m = Vec::with_capacity(1 + rest.len() - name.len());
    m.push(flag);
    m.extend_from_slice(&rest[n as usize..]);
    Some(m)
}

/// Encodes one ZMTP frame header.
pub(crate) fn frame_header(len: usize, more: bool, command: bool, out: &mut Vec<u8>) {
    let mut flags = 0u8;
    if more {
        flags |= MORE;
    }
    if command {
        flags |= COMMAND;
    }
    if len > 255 {
        out.push(flags | LONG);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    } else {
        out.push(flags);
        out.push(len as u8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ScanLimits = ScanLimits {
        max_message: 1000,
        max_command: 100,
    };

    fn greeting() -> Vec<u8> {
        let mut g = vec![0u8; 64];
        g[0] = 0xff;
        g[9] = 0x7f;
        g[10] = 3;
        g[12..16].copy_from_slice(b"NULL");
        g
    }

    fn frame(len: usize, more: bool, command: bool) -> Vec<u8> {
        let mut v = Vec::new();
        frame_header(len, more, command, &mut v);
        v.extend(std::iter::repeat_n(7u8, len));
        v
    }

    #[test]
    fn a_greeting_announcing_curve_is_refused_as_a_mechanism_mismatch() {
        let mut g = greeting();
        g[12..17].copy_from_slice(b"CURVE");
        let err = FrameScanner::new(LIMITS)
            .feed(&g, &mut Vec::new())
            .unwrap_err();
        assert_eq!(err, ScanError::Mechanism);
        assert_eq!(err.reason(), DisconnectReason::MechanismMismatch);
    }

    #[test]
    fn units_end_where_expected_even_fed_byte_by_byte() {
        let mut s = greeting();
        s.extend(frame(10, false, true));
        s.extend(frame(3, true, false));
        s.extend(frame(300, false, false));
        let expect = vec![64, 64 + 12, s.len()];
        let mut whole = FrameScanner::new(LIMITS);
        let mut ends = Vec::new();
        whole.feed(&s, &mut ends).unwrap();
        assert_eq!(ends, expect);
        assert_eq!(whole.messages(), 1);
        assert!(whole.at_boundary());

        let mut bytewise = FrameScanner::new(LIMITS);
        let mut ends = Vec::new();
        for (i, b) in s.iter().enumerate() {
            let mut e = Vec::new();
            bytewise.feed(std::slice::from_ref(b), &mut e).unwrap();
            ends.extend(e.into_iter().map(|x| x + i));
        }
        assert_eq!(ends, expect);
    }

    #[test]
    fn a_huge_declared_frame_is_refused_from_its_header_alone() {
        let mut s = greeting();
        s.push(LONG);
        s.extend_from_slice(&(1u64 << 40).to_be_bytes());
        let mut sc = FrameScanner::new(LIMITS);
        assert_eq!(
            sc.feed(&s, &mut Vec::new()),
            Err(ScanError::FrameTooLarge {
                declared: 1 << 40,
                limit: 1000
            })
        );
    }

    #[test]
    fn frames_adding_up_past_the_limit_are_refused() {
        let mut s = greeting();
        s.extend(frame(600, true, false));
        s.extend(frame(600, false, false));
        let mut sc = FrameScanner::new(LIMITS);
        assert!(matches!(
            sc.feed(&s, &mut Vec::new()),
            Err(ScanError::MessageTooLarge { size: 1200, .. })
        ));
    }

    #[test]
    fn bad_greetings_flags_and_big_commands_are_refused() {
        let mut sc = FrameScanner::new(LIMITS);
        assert_eq!(
            sc.feed(b"GET / HTTP/1.1", &mut Vec::new()),
            Err(ScanError::BadGreeting)
        );
        let mut sc = FrameScanner::after_handshake(LIMITS);
        assert_eq!(
            sc.feed(&[0x40], &mut Vec::new()),
            Err(ScanError::BadFlags(0x40))
        );
        let mut sc = FrameScanner::after_handshake(LIMITS);
        assert!(matches!(
            sc.feed(&frame(200, false, true), &mut Vec::new()),
            Err(ScanError::CommandTooLarge { .. })
        ));
    }

    #[test]
    fn small_single_frame_messages_are_captured() {
        let mut sc = FrameScanner::after_handshake(LIMITS).capture_small();
        let mut s = Vec::new();
        frame_header(4, false, false, &mut s);
        s.extend_from_slice(b"\x01abc");
        s.extend(frame(2, true, false));
        s.extend(frame(2, false, false));
        sc.feed(&s, &mut Vec::new()).unwrap();
        assert_eq!(sc.take_captured(), vec![b"\x01abc".to_vec()]);
    }

    #[test]
    fn zmtp31_subscribe_and_cancel_commands_are_captured_in_the_30_form() {
        let mut sc = FrameScanner::after_handshake(LIMITS).capture_small();
        let mut s = Vec::new();
        for (name, prefix) in [
            (&b"SUBSCRIBE"[..], &b"ab"[..]),
            (b"PING", b"xx"),
            (b"CANCEL", b"ab"),
        ] {
            frame_header(1 + name.len() + prefix.len(), false, true, &mut s);
            s.push(name.len() as u8);
            s.extend_from_slice(name);
            s.extend_from_slice(prefix);
        }
        sc.feed(&s, &mut Vec::new()).unwrap();
        assert_eq!(
            sc.take_captured(),
            vec![b"\x01ab".to_vec(), b"\x00ab".to_vec()]
        );
    }

    #[test]
    fn counted_units_say_how_many_frames_each_had() {
        let mut sc = FrameScanner::new(LIMITS).count_units();
        let mut s = greeting();
        s.extend(frame(3, false, true));
        s.extend(frame(1, true, false));
        s.extend(frame(2, true, false));
        s.extend(frame(2, false, false));
        s.extend(frame(0, false, false));
        let mut ends = Vec::new();
        sc.feed(&s, &mut ends).unwrap();
        let units: Vec<Unit> = sc.take_units().collect();
        assert_eq!(ends.len(), units.len());
        let shape: Vec<(u32, bool)> = units.iter().map(|u| (u.frames, u.data)).collect();
        assert_eq!(shape, vec![(0, false), (1, false), (3, true), (1, true)]);
        assert_eq!(sc.take_units().count(), 0);
    }

    proptest::proptest! {
        #[test]
        fn random_streams_never_panic_and_report_ends_in_order(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048),
            split in 0usize..2048,
        ) {
            let mut sc = FrameScanner::new(LIMITS);
            let mut ends = Vec::new();
            let cut = split.min(bytes.len());
            let a = sc.feed(&bytes[..cut], &mut ends);
            if a.is_ok() {
                let _ = sc.feed(&bytes[cut..], &mut ends);
            }
            let mut last = 0;
            for e in ends {
                proptest::prop_assert!(e >= last);
                last = e;
            }
        }

        #[test]
        fn chunking_does_not_change_what_the_scanner_sees(
            sizes in proptest::collection::vec(0usize..400, 1..6),
            split in 1usize..64,
        ) {
            let mut s = greeting();
            for (i, n) in sizes.iter().enumerate() {
                s.extend(frame(*n, i + 1 < sizes.len() && n % 2 == 0, false));
            }
            let mut whole = FrameScanner::new(LIMITS);
            let mut e1 = Vec::new();
            let r1 = whole.feed(&s, &mut e1);
            let mut parts = FrameScanner::new(LIMITS);
            let mut e2 = Vec::new();
            let mut r2 = Ok(());
            for (k, chunk) in s.chunks(split).enumerate() {
                let mut e = Vec::new();
                r2 = parts.feed(chunk, &mut e);
                e2.extend(e.into_iter().map(|x| x + k * split));
                if r2.is_err() {
                    break;
                }
            }
            proptest::prop_assert_eq!(r1, r2);
            proptest::prop_assert_eq!(e1, e2);
        }
    }
}
