//! The client and server machines talking to each other in memory, and
//! every refusal libzmq's `test_security_curve.cpp` checks, at the
//! state-machine level.

use super::*;
use crate::telemetry::DisconnectReason;
use crate::transport::scan::frame_header;
use crate::transport::zmtp::Metadata;

fn meta(t: &str) -> Metadata {
    Metadata {
        socket_type: Some(t.into()),
        identity: None,
    }
}

struct Pair {
    client: Session,
    server: Session,
    client_key: CurvePublicKey,
    client_meta: Metadata,
    server_meta: Metadata,
}

fn handshake(client: &CurveKeyPair, server: &CurveKeyPair) -> Result<Pair, CurveError> {
    let (cw, hello) = client_hello(client, server.public())?;
    let (si, welcome) = ServerHello::new(server.clone()).hello(&hello)?;
    let mut cm = meta("DEALER");
    cm.identity = Some(b"client-1".to_vec());
    let (cr, initiate) = cw.welcome(&welcome, &cm)?;
    let init = si.initiate(&initiate)?;
    let (client_key, client_meta) = (init.client_key, init.metadata.clone());
    let (ready, server_session) = init.ready(&meta("ROUTER"))?;
    let (server_meta, client_session) = cr.ready(&ready)?;
    Ok(Pair {
        client: client_session,
        server: server_session,
        client_key,
        client_meta,
        server_meta,
    })
}

/// The command body of the first frame `seal` wrote.
fn body(frame: &[u8]) -> Vec<u8> {
    if frame[0] & 0b010 != 0 {
        frame[9..].to_vec()
    } else {
        frame[2..].to_vec()
    }
}

#[test]
fn a_client_and_a_server_agree_and_exchange_boxes_both_ways() {
    let (c, s) = (CurveKeyPair::generate(), CurveKeyPair::generate());
    let mut p = handshake(&c, &s).unwrap();
    assert_eq!(p.client_key, *c.public());
    assert_eq!(p.client_meta.socket_type.as_deref(), Some("DEALER"));
    assert_eq!(p.client_meta.identity.as_deref(), Some(&b"client-1"[..]));
    assert_eq!(p.server_meta.socket_type.as_deref(), Some("ROUTER"));
    for (i, len) in [0usize, 1, 255, 256, 70_000].into_iter().enumerate() {
        let payload: Vec<u8> = (0..len).map(|b| (b + i) as u8).collect();
        let mut wire = Vec::new();
        p.client.sealer.seal(1, &payload, &mut wire).unwrap();
        let mut cmd = body(&wire);
        assert!(!cmd
            .windows(payload.len().max(8))
            .any(|w| w == &payload[..] && len >= 8));
        let (flags, got) = p.server.opener.open(&mut cmd).unwrap();
        assert_eq!((flags, got), (1, &payload[..]));
        let mut wire = Vec::new();
        p.server.sealer.seal(0, &payload, &mut wire).unwrap();
        let mut cmd = body(&wire);
        assert_eq!(p.client.opener.open(&mut cmd).unwrap(), (0, &payload[..]));
    }
}

#[test]
fn the_hello_is_200_bytes_with_72_zero_bytes_of_padding_as_libzmq_sends() {
    let (c, s) = (CurveKeyPair::generate(), CurveKeyPair::generate());
    let (_, hello) = client_hello(&c, s.public()).unwrap();
    assert_eq!(hello.len(), 200);
    assert_eq!(&hello[..8], b"\x05HELLO\x01\x00");
    assert!(hello[8..80].iter().all(|&b| b == 0));
    assert_eq!(&hello[112..120], &1u64.to_be_bytes());
}

fn hello_and_welcome(
    c: &CurveKeyPair,
    s: &CurveKeyPair,
) -> (
    handshake::ClientWelcome,
    handshake::ServerInitiate,
    Vec<u8>,
    Vec<u8>,
) {
    let (cw, hello) = client_hello(c, s.public()).unwrap();
    let (si, welcome) = ServerHello::new(s.clone()).hello(&hello).unwrap();
    (cw, si, hello, welcome)
}

#[test]
fn malformed_hellos_are_refused_by_length_name_and_version() {
    let (c, s) = (CurveKeyPair::generate(), CurveKeyPair::generate());
    let (_, hello) = client_hello(&c, s.public()).unwrap();
    let server = || ServerHello::new(s.clone());
    let short = &hello[..199];
    assert!(matches!(
        server().hello(short),
        Err(CurveError::Malformed {
            command: "HELLO",
            ..
        })
    ));
    let mut long = hello.clone();
    long.push(0);
    assert!(matches!(
        server().hello(&long),
        Err(CurveError::Malformed { .. })
    ));
    let mut renamed = hello.clone();
    renamed[1..6].copy_from_slice(b"HELLX");
    assert!(matches!(
        server().hello(&renamed),
        Err(CurveError::UnexpectedCommand { expected: "HELLO" })
    ));
    let mut v2 = hello.clone();
    v2[6] = 2;
    let e = server().hello(&v2).unwrap_err();
    assert_eq!(e, CurveError::Version { major: 2, minor: 0 });
    assert_eq!(e.reason(), DisconnectReason::BadHandshake);
    let mut tampered = hello.clone();
    tampered[150] ^= 1;
    let e = server().hello(&tampered).unwrap_err();
    assert_eq!(e, CurveError::Decrypt("HELLO"));
    assert_eq!(e.reason(), DisconnectReason::DecryptFailed);
}

#[test]
fn a_client_with_the_wrong_server_key_is_refused_at_hello() {
    let (c, s, other) = (
        CurveKeyPair::generate(),
        CurveKeyPair::generate(),
        CurveKeyPair::generate(),
    );
    let (_, hello) = client_hello(&c, other.public()).unwrap();
    assert_eq!(
        ServerHello::new(s).hello(&hello).unwrap_err(),
        CurveError::Decrypt("HELLO")
    );
}

#[test]
fn a_welcome_not_from_the_expected_server_is_refused_by_the_client() {
    let (c, s, other) = (
        CurveKeyPair::generate(),
        CurveKeyPair::generate(),
        CurveKeyPair::generate(),
    );
    // A man in the middle that holds another key answers for the server.
    let (cw, _) = client_hello(&c, s.public()).unwrap();
    let (_, hello_to_other) = client_hello(&c, other.public()).unwrap();
    let (_, welcome) = ServerHello::new(other.clone())
        .hello(&hello_to_other)
        .unwrap();
    assert_eq!(
        cw.welcome(&welcome, &meta("SUB")).unwrap_err(),
        CurveError::Decrypt("WELCOME")
    );
    let (cw, _, _, welcome) = hello_and_welcome(&c, &s);
    assert!(matches!(
        cw.welcome(&welcome[..167], &meta("SUB")),
        Err(CurveError::Malformed {
            command: "WELCOME",
            ..
        })
    ));
}

#[test]
fn malformed_initiates_are_refused() {
    let (c, s) = (CurveKeyPair::generate(), CurveKeyPair::generate());
    let fresh = || {
        let (cw, si, _, welcome) = hello_and_welcome(&c, &s);
        let (_, initiate) = cw.welcome(&welcome, &meta("PUSH")).unwrap();
        (si, initiate)
    };
    let (si, initiate) = fresh();
    assert!(matches!(
        si.initiate(&initiate[..256]),
        Err(CurveError::Malformed {
            command: "INITIATE",
            ..
        })
    ));
    let (si, mut initiate) = fresh();
    initiate[1] = b'X';
    assert!(matches!(
        si.initiate(&initiate),
        Err(CurveError::UnexpectedCommand {
            expected: "INITIATE"
        })
    ));
    let (si, _) = fresh();
    let (_, hello) = client_hello(&c, s.public()).unwrap();
    assert!(matches!(
        si.initiate(&hello),
        Err(CurveError::UnexpectedCommand { .. })
    ));
}

#[test]
fn a_tampered_cookie_is_refused() {
    let (c, s) = (CurveKeyPair::generate(), CurveKeyPair::generate());
    let (cw, si, _, welcome) = hello_and_welcome(&c, &s);
    let (_, mut initiate) = cw.welcome(&welcome, &meta("PUSH")).unwrap();
    initiate[40] ^= 0x80; // inside the cookie box
    let e = si.initiate(&initiate).unwrap_err();
    assert_eq!(e, CurveError::Decrypt("cookie"));
    assert_eq!(e.reason(), DisconnectReason::DecryptFailed);
}

#[test]
fn a_cookie_from_another_connection_is_refused() {
    let (c, s) = (CurveKeyPair::generate(), CurveKeyPair::generate());
    let (cw1, _si1, _, welcome1) = hello_and_welcome(&c, &s);
    let (_cw2, si2, _, _) = hello_and_welcome(&c, &s);
    let (_, initiate1) = cw1.welcome(&welcome1, &meta("PUSH")).unwrap();
    // Each WELCOME has its own cookie key: connection 2 cannot open 1's.
    assert_eq!(
        si2.initiate(&initiate1).unwrap_err(),
        CurveError::Decrypt("cookie")
    );
}

#[test]
fn a_tampered_initiate_box_and_a_non_increasing_initiate_nonce_are_refused() {
    let (c, s) = (CurveKeyPair::generate(), CurveKeyPair::generate());
    let (cw, si, _, welcome) = hello_and_welcome(&c, &s);
    let (_, mut initiate) = cw.welcome(&welcome, &meta("PUSH")).unwrap();
    let last = initiate.len() - 1;
    initiate[last] ^= 1;
    assert_eq!(
        si.initiate(&initiate).unwrap_err(),
        CurveError::Decrypt("INITIATE")
    );
    let (cw, si, _, welcome) = hello_and_welcome(&c, &s);
    let (_, mut initiate) = cw.welcome(&welcome, &meta("PUSH")).unwrap();
    initiate[105..113].copy_from_slice(&1u64.to_be_bytes()); // HELLO's nonce again
    let e = si.initiate(&initiate).unwrap_err();
    assert_eq!(e, CurveError::Nonce { got: 1, last: 1 });
    assert_eq!(e.reason(), DisconnectReason::BadNonce);
}

#[test]
fn a_tampered_ready_and_an_error_command_are_refused_by_the_client() {
    let (c, s) = (CurveKeyPair::generate(), CurveKeyPair::generate());
    let (cw, si, _, welcome) = hello_and_welcome(&c, &s);
    let (cr, initiate) = cw.welcome(&welcome, &meta("PULL")).unwrap();
    let (mut ready, _) = si
        .initiate(&initiate)
        .unwrap()
        .ready(&meta("PUSH"))
        .unwrap();
    ready[20] ^= 1;
    assert_eq!(cr.ready(&ready).unwrap_err(), CurveError::Decrypt("READY"));

    let (cw, _, _, welcome) = hello_and_welcome(&c, &s);
    let (cr, _) = cw.welcome(&welcome, &meta("PULL")).unwrap();
    let e = cr.ready(&error_command("400")).unwrap_err();
    assert_eq!(e, CurveError::PeerError("400".into()));
    assert_eq!(e.reason(), DisconnectReason::PeerRefused);
}

#[test]
fn the_client_key_is_what_the_authorizer_sees_and_unknown_keys_are_not_on_the_list() {
    let (c, s, stranger) = (
        CurveKeyPair::generate(),
        CurveKeyPair::generate(),
        CurveKeyPair::generate(),
    );
    let list = AllowList::from_keys([*c.public()]);
    let ep: crate::Endpoint = "tcp://127.0.0.1:1".parse().unwrap();
    for (who, allowed) in [(&c, true), (&stranger, false)] {
        let p = handshake(who, &s).unwrap();
        assert_eq!(p.client_key, *who.public());
        let req = AuthRequest {
            client_key: &p.client_key,
            socket_type: p.client_meta.socket_type.as_deref(),
            endpoint: &ep,
        };
        assert_eq!(list.authorize(&req), allowed);
    }
}

#[test]
fn replayed_reordered_and_tampered_messages_are_refused() {
    let (c, s) = (CurveKeyPair::generate(), CurveKeyPair::generate());
    let mut p = handshake(&c, &s).unwrap();
    let mut boxes = Vec::new();
    for i in 0..3u8 {
        let mut wire = Vec::new();
        p.client.sealer.seal(0, &[i; 10], &mut wire).unwrap();
        boxes.push(body(&wire));
    }
    let mut first = boxes[0].clone();
    p.server.opener.open(&mut first).unwrap();
    let mut replay = boxes[0].clone();
    let e = p.server.opener.open(&mut replay).unwrap_err();
    assert!(matches!(e, CurveError::Nonce { .. }));
    let mut third = boxes[2].clone();
    p.server.opener.open(&mut third).unwrap();
    let mut late = boxes[1].clone();
    assert!(matches!(
        p.server.opener.open(&mut late),
        Err(CurveError::Nonce { .. })
    ));
    let mut wire = Vec::new();
    p.client.sealer.seal(0, b"payload", &mut wire).unwrap();
    let mut tampered = body(&wire);
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert_eq!(
        p.server.opener.open(&mut tampered).unwrap_err(),
        CurveError::Decrypt("MESSAGE")
    );
    // A box from the other direction does not open here either.
    let mut wire = Vec::new();
    p.server.sealer.seal(0, b"payload", &mut wire).unwrap();
    let mut wrong_way = body(&wire);
    wrong_way[8..16].copy_from_slice(&100u64.to_be_bytes());
    assert!(p.server.opener.open(&mut wrong_way).is_err());
    let mut short = b"\x07MESSAGE\0\0\0\0\0\0\0\x09".to_vec();
    assert!(matches!(
        p.server.opener.open(&mut short),
        Err(CurveError::Malformed { .. })
    ));
}

fn plain(frames: &[(&[u8], bool)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (b, more) in frames {
        frame_header(b.len(), *more, false, &mut out);
        out.extend_from_slice(b);
    }
    out
}

#[test]
fn the_stream_transforms_carry_frames_and_subscriptions_in_any_chunking() {
    let (c, s) = (CurveKeyPair::generate(), CurveKeyPair::generate());
    let p = handshake(&c, &s).unwrap();
    let big = vec![7u8; 300];
    let input = plain(&[(b"\x01news", false), (b"\x00news", false)]);
    let mut seal = SealStream::new(p.client.sealer, 1 << 20, true);
    let mut open = OpenStream::new(p.server.opener, 1 << 20);
    let mut wire = Vec::new();
    for b in input.chunks(3) {
        seal.feed(b, &mut wire).unwrap();
    }
    let mut out = Vec::new();
    for b in wire.chunks(5) {
        open.feed(b, &mut out).unwrap();
    }
    assert_eq!(out, input, "subscriptions come back in the 0x01/0x00 form");

    let input = plain(&[(b"head", true), (&big, false), (b"", false)]);
    let mut seal = SealStream::new(p.server.sealer, 1 << 20, false);
    let mut open = OpenStream::new(p.client.opener, 1 << 20);
    let mut wire = Vec::new();
    for b in input.chunks(7) {
        seal.feed(b, &mut wire).unwrap();
    }
    assert!(!wire.windows(big.len()).any(|w| w == &big[..]));
    let mut out = Vec::new();
    open.feed(&wire, &mut out).unwrap();
    assert_eq!(out, input);
}

#[test]
fn the_open_stream_refuses_an_oversized_or_multi_frame_message_from_its_header() {
    let (c, s) = (CurveKeyPair::generate(), CurveKeyPair::generate());
    let p = handshake(&c, &s).unwrap();
    let mut open = OpenStream::new(p.server.opener, 1000);
    let mut hdr = Vec::new();
    frame_header(1 << 40, false, true, &mut hdr);
    let e = open.feed(&hdr, &mut Vec::new()).unwrap_err();
    assert!(matches!(e, CurveError::TooLarge { .. }));
    assert_eq!(e.reason(), DisconnectReason::FrameTooLarge);
    let p = handshake(&c, &s).unwrap();
    let mut open = OpenStream::new(p.server.opener, 1000);
    let e = open
        .feed(&plain(&[(b"plain", true)]), &mut Vec::new())
        .unwrap_err();
    assert_eq!(e, CurveError::NotCommand(1));
    assert_eq!(e.reason(), DisconnectReason::MalformedFrame);
}
