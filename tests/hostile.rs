//! Hostile and malformed input: peers that declare huge frames, send
//! oversized or malformed messages, or speak something other than ZMTP.
//! The node must stay up, lose nothing else, and count what it refused.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{endpoint, zmtp_hello, Tp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zeromq::{Socket, SocketSend, ZmqMessage};
use zfabric::wire::{self, Header, Kind, MessageId};
use zfabric::{LinkState, Puller, Pusher, SocketBuilder, SocketConfig, Subscriber};

/// Current value of a counter with the given `reason` label (0 if absent).
fn counter(name: &str, reason: &str) -> u64 {
    common::counter(name, reason)
}

fn good_message(n: u32) -> Vec<Bytes> {
    let h = Header::new(Kind::Event, MessageId(n as u128), 77, n as u64);
    vec![wire::encode_header(&h), wire::encode_body(&n).unwrap()]
}

async fn raw_stream(ep: &str) -> Box<dyn RawIo> {
    let e: zfabric::Endpoint = ep.parse().unwrap();
    match e {
        zfabric::Endpoint::Tcp { host, port } => Box::new(
            tokio::net::TcpStream::connect((host.as_str(), port))
                .await
                .unwrap(),
        ),
        zfabric::Endpoint::Ipc(p) => Box::new(tokio::net::UnixStream::connect(p).await.unwrap()),
        zfabric::Endpoint::Inproc(_) => unreachable!(),
    }
}

trait RawIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> RawIo for T {}

/// Reads until the peer closes; returns whether it closed within the limit.
async fn closed_by_peer(s: &mut Box<dyn RawIo>) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

async fn a_peer_declaring_a_terabyte_frame_is_cut_off_and_others_keep_working(tp: Tp) {
    if tp == Tp::Inproc {
        return; // no bytes to forge in-process
    }
    let before = counter(zfabric::telemetry::PEERS_DISCONNECTED, "frame_too_large");
    let dir = tempfile::tempdir().unwrap();
    let mut puller: Puller<u32> = Puller::bind(&endpoint(tp, &dir)).await.unwrap();
    let ep = puller.endpoints()[0].to_string();

    let mut evil = raw_stream(&ep).await;
    evil.write_all(&zmtp_hello("PUSH")).await.unwrap();
    // A message frame header declaring 1 TiB, then a trickle of bytes.
    let mut frame = vec![0x02];
    frame.extend_from_slice(&(1u64 << 40).to_be_bytes());
    frame.extend_from_slice(&[0u8; 1024]);
    let _ = evil.write_all(&frame).await;
    assert!(
        closed_by_peer(&mut evil).await,
        "the hostile peer must be disconnected"
    );
    assert!(counter(zfabric::telemetry::PEERS_DISCONNECTED, "frame_too_large") > before);

    // A well-behaved peer on the same listener is unaffected.
    let good: Pusher<u32> = Pusher::connect(&ep).await.unwrap();
    good.wait_connected().await;
    good.send(&42).await.unwrap();
    let d = puller.recv_timeout(Duration::from_secs(10)).await.unwrap();
    assert_eq!(d.decode().unwrap(), 42);
}
per_transport!(
    terabyte_frame,
    a_peer_declaring_a_terabyte_frame_is_cut_off_and_others_keep_working
);

async fn an_oversized_message_from_a_real_zeromq_peer_is_refused(tp: Tp) {
    if tp == Tp::Inproc {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = SocketConfig::default().max_message_size(64 * 1024);
    let mut puller: Puller<u32> = SocketBuilder::new()
        .config(cfg)
        .bind(endpoint(tp, &dir))
        .puller()
        .await
        .unwrap();
    let ep = puller.endpoints()[0].to_string();
    let before = counter(zfabric::telemetry::PEERS_DISCONNECTED, "frame_too_large")
        + counter(zfabric::telemetry::PEERS_DISCONNECTED, "message_too_large");

    let mut raw = zeromq::PushSocket::new();
    raw.connect(&ep).await.unwrap();
    let mut big = good_message(1);
    big[1] = Bytes::from(vec![0u8; 200 * 1024]);
    raw.send(ZmqMessage::try_from(big).unwrap()).await.unwrap();

    // The good pusher's messages still arrive; the oversized one never does.
    let good: Pusher<u32> = Pusher::connect(&ep).await.unwrap();
    good.wait_connected().await;
    good.send(&7).await.unwrap();
    let d = puller.recv_timeout(Duration::from_secs(10)).await.unwrap();
    assert_eq!(d.decode().unwrap(), 7);
    for _ in 0..200 {
        let now = counter(zfabric::telemetry::PEERS_DISCONNECTED, "frame_too_large")
            + counter(zfabric::telemetry::PEERS_DISCONNECTED, "message_too_large");
        if now > before {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("oversized message was not counted");
}
per_transport!(
    oversized_message,
    an_oversized_message_from_a_real_zeromq_peer_is_refused
);

async fn malformed_envelopes_are_dropped_and_counted_and_the_peer_keeps_working(tp: Tp) {
    if tp == Tp::Inproc {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut puller: Puller<u32> = Puller::bind(&endpoint(tp, &dir)).await.unwrap();
    let ep = puller.endpoints()[0].to_string();
    let bad_before = counter(zfabric::telemetry::MESSAGES_DROPPED, "malformed_header");
    let kind_before = counter(zfabric::telemetry::MESSAGES_DROPPED, "unknown_kind");
    let frames_before = counter(zfabric::telemetry::MESSAGES_DROPPED, "bad_frame_count");

    let mut raw = zeromq::PushSocket::new();
    raw.connect(&ep).await.unwrap();
    // Not MessagePack at all.
    raw.send(ZmqMessage::try_from(vec![Bytes::from_static(b"\xc1\xc1"), Bytes::new()]).unwrap())
        .await
        .unwrap();
    // One frame only.
    raw.send(ZmqMessage::from(Bytes::from_static(b"lonely")))
        .await
        .unwrap();
    // A kind this version does not know (99).
    let mut h = wire::encode_header(&Header::new(Kind::Event, MessageId(1), 1, 1)).to_vec();
    // fixmap, key 0 (version), 1, key 1 (kind), value: the kind is byte 4.
    assert_eq!(&h[1..4], &[0, 1, 1]);
    h[4] = 99;
    raw.send(ZmqMessage::try_from(vec![Bytes::from(h), Bytes::new()]).unwrap())
        .await
        .unwrap();
    // Then a good one on the same connection.
    raw.send(ZmqMessage::try_from(good_message(5)).unwrap())
        .await
        .unwrap();

    let d = puller.recv_timeout(Duration::from_secs(10)).await.unwrap();
    assert_eq!(d.decode().unwrap(), 5);
    assert!(counter(zfabric::telemetry::MESSAGES_DROPPED, "malformed_header") > bad_before);
    assert!(counter(zfabric::telemetry::MESSAGES_DROPPED, "unknown_kind") > kind_before);
    assert!(counter(zfabric::telemetry::MESSAGES_DROPPED, "bad_frame_count") > frames_before);
}
per_transport!(
    malformed_envelopes,
    malformed_envelopes_are_dropped_and_counted_and_the_peer_keeps_working
);

async fn a_peer_that_does_not_speak_zmtp_is_disconnected(tp: Tp) {
    if tp == Tp::Inproc {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let puller: Puller<u32> = Puller::bind(&endpoint(tp, &dir)).await.unwrap();
    let ep = puller.endpoints()[0].to_string();
    let before = counter(zfabric::telemetry::PEERS_DISCONNECTED, "bad_greeting");
    let mut s = raw_stream(&ep).await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(closed_by_peer(&mut s).await);
    assert!(counter(zfabric::telemetry::PEERS_DISCONNECTED, "bad_greeting") > before);
}
per_transport!(not_zmtp, a_peer_that_does_not_speak_zmtp_is_disconnected);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_publisher_cannot_make_a_connecting_subscriber_allocate() {
    common::watchdog(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let before = counter(zfabric::telemetry::PEERS_DISCONNECTED, "frame_too_large");
        let mut sub: Subscriber<u32> =
            Subscriber::connect(&format!("tcp://127.0.0.1:{port}"), &[""])
                .await
                .unwrap();
        // Play a PUB that sends a frame header declaring 1 TiB.
        let (mut conn, _) = listener.accept().await.unwrap();
        conn.write_all(&zmtp_hello("PUB")).await.unwrap();
        let mut frame = vec![0x02];
        frame.extend_from_slice(&(1u64 << 40).to_be_bytes());
        let _ = conn.write_all(&frame).await;
        let mut buf = [0u8; 1024];
        // The link drops the connection...
        loop {
            match tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(_)) => continue,
                Err(_) => panic!("hostile publisher was not disconnected"),
            }
        }
        assert!(counter(zfabric::telemetry::PEERS_DISCONNECTED, "frame_too_large") > before);
        // ...and nothing reached the application.
        assert!(sub.recv_timeout(Duration::from_millis(100)).await.is_err());
        // ...and it reconnects (here: to the same hostile listener).
        let (_again, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
            .await
            .expect("link reconnects")
            .unwrap();
        let _ = LinkState::Connecting;
    })
    .await
}

// ---------------------------------------------------------------- what a stranger costs

const CUT: &str = zfabric::telemetry::PEERS_DISCONNECTED;

/// Waits (bounded) until `reason` has moved past `before`.
async fn counted(reason: &str, before: u64) {
    common::eventually(1000, Duration::from_millis(10), || async {
        (counter(CUT, reason) > before).then_some(())
    })
    .await
}

/// A NULL puller bound with `cfg` on `tp`; its endpoint.
async fn puller_with(tp: Tp, dir: &tempfile::TempDir, cfg: SocketConfig) -> (Puller<u32>, String) {
    let p: Puller<u32> = SocketBuilder::new()
        .config(cfg)
        .bind(endpoint(tp, dir))
        .puller()
        .await
        .unwrap();
    let ep = p.endpoints()[0].to_string();
    (p, ep)
}

/// A real pusher still gets a message through `ep`.
async fn still_works(puller: &mut Puller<u32>, ep: &str) {
    let good: Pusher<u32> = Pusher::connect(ep).await.unwrap();
    good.wait_connected().await;
    good.send(&7).await.unwrap();
    let d = puller.recv_timeout(Duration::from_secs(10)).await.unwrap();
    assert_eq!(d.decode().unwrap(), 7);
}

fn short_deadline() -> SocketConfig {
    SocketConfig::default().handshake_timeout(Duration::from_millis(300))
}

async fn a_partial_or_trickled_null_greeting_is_cut_off_at_the_deadline(tp: Tp) {
    if tp == Tp::Inproc {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut puller, ep) = puller_with(tp, &dir, short_deadline()).await;
    // Ten bytes of greeting, then silence.
    let before = counter(CUT, "handshake_timeout");
    let mut partial = raw_stream(&ep).await;
    partial.write_all(&zmtp_hello("PUSH")[..10]).await.unwrap();
    assert!(
        closed_by_peer(&mut partial).await,
        "a partial greeting is cut off"
    );
    counted("handshake_timeout", before).await;
    // The whole greeting, one byte at a time, slower than the deadline allows.
    let before = counter(CUT, "handshake_timeout");
    let mut slow = raw_stream(&ep).await;
    let hello = zmtp_hello("PUSH");
    let mut cut = false;
    for b in &hello {
        if slow.write_all(&[*b]).await.is_err() {
            cut = true;
            break;
        }
        // Pacing the trickle, not synchronising: the deadline is 300 ms
        // and the greeting alone is 64 bytes.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        cut || closed_by_peer(&mut slow).await,
        "a trickled greeting is cut off"
    );
    counted("handshake_timeout", before).await;
    still_works(&mut puller, &ep).await;
}
per_transport!(
    null_deadline,
    a_partial_or_trickled_null_greeting_is_cut_off_at_the_deadline
);

/// The greeting of a raw peer announcing `mechanism`.
fn greeting_with(mechanism: &[u8]) -> Vec<u8> {
    let mut g = zmtp_hello("PUSH");
    g.truncate(64);
    g[12..32].fill(0);
    g[12..12 + mechanism.len()].copy_from_slice(mechanism);
    g
}

async fn each_null_handshake_refusal_at_a_listener_moves_its_counter(tp: Tp) {
    if tp == Tp::Inproc {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut puller, ep) = puller_with(tp, &dir, short_deadline()).await;
    let mut broken_ready = zmtp_hello("PUSH");
    broken_ready.truncate(64);
    broken_ready.extend_from_slice(&[0x04, 6, 5, b'H', b'E', b'L', b'L', b'O']);
    let mut ready_without_type = zmtp_hello("PUSH");
    ready_without_type.truncate(64);
    ready_without_type.extend_from_slice(&[0x04, 6, 5, b'R', b'E', b'A', b'D', b'Y']);
    let cases: [(&str, Vec<u8>, &str); 5] = [
        (
            "a CURVE greeting",
            greeting_with(b"CURVE"),
            "mechanism_mismatch",
        ),
        (
            "a PLAIN greeting",
            greeting_with(b"PLAIN"),
            "mechanism_mismatch",
        ),
        ("a PUB at a PULL socket", zmtp_hello("PUB"), "bad_handshake"),
        ("HELLO instead of READY", broken_ready, "bad_handshake"),
        (
            "READY without Socket-Type",
            ready_without_type,
            "bad_handshake",
        ),
    ];
    for (what, bytes, reason) in cases {
        let before = counter(CUT, reason);
        let mut s = raw_stream(&ep).await;
        s.write_all(&bytes).await.unwrap();
        assert!(closed_by_peer(&mut s).await, "{what}: not cut off");
        counted(reason, before).await;
    }
    still_works(&mut puller, &ep).await;
}
per_transport!(
    null_refusals,
    each_null_handshake_refusal_at_a_listener_moves_its_counter
);

async fn a_connection_idle_past_the_idle_timeout_is_closed_and_counted(tp: Tp) {
    if tp == Tp::Inproc {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = SocketConfig::default().idle_timeout(Duration::from_millis(200));
    let (mut puller, ep) = puller_with(tp, &dir, cfg).await;
    let before = counter(CUT, "idle_timeout");
    let mut quiet = raw_stream(&ep).await;
    quiet.write_all(&zmtp_hello("PUSH")).await.unwrap();
    assert!(
        closed_by_peer(&mut quiet).await,
        "an idle connection is closed"
    );
    counted("idle_timeout", before).await;
    still_works(&mut puller, &ep).await;
}
per_transport!(
    idle_timeout,
    a_connection_idle_past_the_idle_timeout_is_closed_and_counted
);

async fn a_full_listener_refuses_new_connections_and_counts_them(tp: Tp) {
    if tp == Tp::Inproc {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = SocketConfig::default().max_connections(2);
    let (mut puller, ep) = puller_with(tp, &dir, cfg).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = raw_stream(&ep).await;
        s.write_all(&zmtp_hello("PUSH")).await.unwrap();
        // The socket's greeting back: this connection is being relayed.
        let mut g = [0u8; 10];
        s.read_exact(&mut g).await.unwrap();
        held.push(s);
    }
    let before = counter(CUT, "too_many_connections");
    let mut third = raw_stream(&ep).await;
    let _ = third.write_all(&zmtp_hello("PUSH")).await;
    assert!(closed_by_peer(&mut third).await, "the third is refused");
    counted("too_many_connections", before).await;
    // One leaves: there is room again (the relay notices its close).
    drop(held.pop());
    common::eventually(500, Duration::from_millis(10), || {
        let ep = ep.clone();
        async move {
            let mut s = raw_stream(&ep).await;
            s.write_all(&zmtp_hello("PUSH")).await.ok()?;
            let mut g = [0u8; 10];
            tokio::time::timeout(Duration::from_millis(200), s.read_exact(&mut g))
                .await
                .ok()?
                .ok()?;
            Some(())
        }
    })
    .await;
    drop(held);
    still_works(&mut puller, &ep).await;
}
per_transport!(
    max_connections,
    a_full_listener_refuses_new_connections_and_counts_them
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_counts_a_remote_with_a_broken_ready_or_a_silent_handshake() {
    common::watchdog(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cfg = SocketConfig::default()
            .handshake_timeout(Duration::from_millis(300))
            .reconnect(Duration::from_millis(20), Duration::from_millis(100));
        let before = counter(CUT, "bad_handshake");
        let _push: Pusher<u32> = SocketBuilder::new()
            .config(cfg)
            .connect(format!("tcp://127.0.0.1:{port}"))
            .pusher()
            .await
            .unwrap();
        // A remote that answers READY with HELLO.
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut g = zmtp_hello("PULL");
        g.truncate(64);
        g.extend_from_slice(&[0x04, 6, 5, b'H', b'E', b'L', b'L', b'O']);
        conn.write_all(&g).await.unwrap();
        counted("bad_handshake", before).await;
        // Then one that accepts and never speaks.
        let before = counter(CUT, "handshake_timeout");
        let (_silent, _) = listener.accept().await.unwrap();
        counted("handshake_timeout", before).await;
    })
    .await
}

// ------------------------------------------ what PROTOCOL.md promises (issue 16)

const DROPPED: &str = zfabric::telemetry::MESSAGES_DROPPED;

/// A request header as a peer in another language would write it.
fn request(id: u128, deadline_in: Duration) -> Header {
    let mut h = Header::new(Kind::Request, MessageId(id), 4242, id as u64);
    h.deadline = Some(wire::Deadline::after(deadline_in));
    h
}

/// The next message a raw socket receives, within the watchdog's patience.
async fn next_frames<S: zeromq::SocketRecv>(s: &mut S) -> Vec<Bytes> {
    tokio::time::timeout(Duration::from_secs(10), s.recv())
        .await
        .expect("a message in time")
        .unwrap()
        .into_vec()
}

/// A topic with no header/body pair after it (one frame), or with a
/// header and no body (two), is `bad_frame_count`, not `malformed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_without_a_whole_envelope_is_a_bad_frame_count() {
    common::watchdog(async {
        let mut publ = zeromq::PubSocket::new();
        let ep = publ.bind("tcp://127.0.0.1:0").await.unwrap().to_string();
        let mut sub: Subscriber<u32> = Subscriber::connect(&ep, &["t"]).await.unwrap();
        let good = |n: u32| {
            let mut m = vec![Bytes::from_static(b"t")];
            m.extend(good_message(n));
            ZmqMessage::try_from(m).unwrap()
        };
        // Until the subscription reached the raw publisher.
        let mut subscribed = false;
        for _ in 0..500 {
            publ.send(good(1)).await.unwrap();
            if sub.recv_timeout(Duration::from_millis(20)).await.is_ok() {
                subscribed = true;
                break;
            }
        }
        assert!(subscribed, "the subscription never reached the publisher");
        let (frames_before, malformed_before) = (
            counter(DROPPED, "bad_frame_count"),
            counter(DROPPED, "malformed"),
        );
        publ.send(ZmqMessage::from(Bytes::from_static(b"t")))
            .await
            .unwrap();
        let header = good_message(2).remove(0);
        publ.send(ZmqMessage::try_from(vec![Bytes::from_static(b"t"), header]).unwrap())
            .await
            .unwrap();
        publ.send(good(3)).await.unwrap();
        // In order on one connection: once 3 is here, both were dropped.
        loop {
            let d = sub.recv_timeout(Duration::from_secs(10)).await.unwrap();
            if d.decode().unwrap() == 3 {
                break;
            }
        }
        assert!(counter(DROPPED, "bad_frame_count") >= frames_before + 2);
        assert_eq!(counter(DROPPED, "malformed"), malformed_before);
    })
    .await
}

/// A header integer in a signed MessagePack encoding is `malformed_header`
/// (the decoder's `WrongType`), even when its value is positive.
async fn a_signed_integer_in_a_header_is_a_malformed_header(tp: Tp) {
    if tp == Tp::Inproc {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut puller: Puller<u32> = Puller::bind(&endpoint(tp, &dir)).await.unwrap();
    let ep = puller.endpoints()[0].to_string();
    let before = counter(DROPPED, "malformed_header");
    let mut raw = zeromq::PushSocket::new();
    raw.connect(&ep).await.unwrap();
    // {0: 1, 1: 0, 2: <16 bytes>, 3: 1, 4: int8 5}: seq as int 8.
    let mut h = vec![0x85, 0, 1, 1, 0, 2, 0xc4, 16];
    h.extend_from_slice(&[7u8; 16]);
    h.extend_from_slice(&[3, 1, 4, 0xd0, 5]);
    let body = wire::encode_body(&9u32).unwrap();
    raw.send(ZmqMessage::try_from(vec![Bytes::from(h.clone()), body.clone()]).unwrap())
        .await
        .unwrap();
    // The same header with seq as a uint 8 is accepted.
    let n = h.len();
    h[n - 2] = 0xcc;
    raw.send(ZmqMessage::try_from(vec![Bytes::from(h), body]).unwrap())
        .await
        .unwrap();
    let d = puller.recv_timeout(Duration::from_secs(10)).await.unwrap();
    assert_eq!((d.decode().unwrap(), d.header().seq), (9, 5));
    assert!(counter(DROPPED, "malformed_header") > before);
}
per_transport!(
    signed_integers,
    a_signed_integer_in_a_header_is_a_malformed_header
);

/// A handler that returns only once the request's deadline has passed.
async fn slow(req: zfabric::Request<u32>) -> Result<u32, zfabric::RemoteError> {
    if req.body == 1 {
        // Bounded: the deadlines in these tests are 100 ms away.
        for _ in 0..2000 {
            if req.remaining().is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    Ok(req.body * 2)
}

/// A server does not send the reply of a request whose deadline passed
/// while its handler ran (counted `reply_after_deadline`): the caller gets
/// its timeout and nothing else. Its replies carry its source id.
async fn a_server_drops_a_reply_finished_after_its_deadline(tp: Tp) {
    let dir = tempfile::tempdir().unwrap();
    let server: zfabric::Server<u32, u32> = zfabric::Server::bind(&endpoint(tp, &dir))
        .await
        .unwrap()
        .with_source(0xabcd);
    let ep = server.endpoints()[0].to_string();
    let _serving = server.spawn(slow);
    let client: zfabric::Client<u32, u32> = zfabric::Client::connect(&ep).await.unwrap();
    assert_eq!(client.request(&21).await.unwrap(), 42);
    let before = counter(DROPPED, "reply_after_deadline");
    let r = client.request_within(&1, Duration::from_millis(100)).await;
    assert!(
        matches!(r, Err(zfabric::RequestError::Timeout(_))),
        "the caller gets its timeout: {r:?}"
    );
    counted_drop("reply_after_deadline", before).await;
    if tp == Tp::Inproc {
        return; // no frames to look at in-process
    }
    // On the wire: the late reply never comes; the next one carries the
    // server's source.
    let mut raw = zeromq::DealerSocket::new();
    raw.connect(&ep).await.unwrap();
    let body = wire::encode_body(&1u32).unwrap();
    let late = request(1, Duration::from_millis(100));
    raw.send(ZmqMessage::try_from(vec![wire::encode_header(&late), body]).unwrap())
        .await
        .unwrap();
    let before = counter(DROPPED, "reply_after_deadline");
    counted_drop("reply_after_deadline", before).await;
    let body = wire::encode_body(&21u32).unwrap();
    let on_time = request(2, Duration::from_secs(10));
    raw.send(ZmqMessage::try_from(vec![wire::encode_header(&on_time), body]).unwrap())
        .await
        .unwrap();
    let frames = next_frames(&mut raw).await;
    assert_eq!(frames.len(), 2);
    let reply = Header::decode(&frames[0], 4096).unwrap();
    assert_eq!(reply.correlation, Some(MessageId(2)), "not the late reply");
    assert_eq!((reply.kind, reply.source), (Kind::Reply, 0xabcd));
    assert_eq!(wire::decode_body::<u32>(&frames[1]).unwrap(), 42);
}
per_transport!(
    late_replies,
    a_server_drops_a_reply_finished_after_its_deadline
);

/// Waits (bounded) until drop `reason` has moved past `before`.
async fn counted_drop(reason: &str, before: u64) {
    common::eventually(1000, Duration::from_millis(10), || async {
        (counter(DROPPED, reason) > before).then_some(())
    })
    .await
}

/// A request with a header and no body reaches a server as the identity
/// and one frame: `bad_frame_count`; the connection keeps working.
async fn a_request_without_its_body_is_a_bad_frame_count(tp: Tp) {
    if tp == Tp::Inproc {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server: zfabric::Server<u32, u32> =
        zfabric::Server::bind(&endpoint(tp, &dir)).await.unwrap();
    let ep = server.endpoints()[0].to_string();
    let _serving = server.spawn(slow);
    let mut raw = zeromq::DealerSocket::new();
    raw.connect(&ep).await.unwrap();
    let before = counter(DROPPED, "bad_frame_count");
    raw.send(ZmqMessage::from(wire::encode_header(&request(
        1,
        Duration::from_secs(10),
    ))))
    .await
    .unwrap();
    let body = wire::encode_body(&4u32).unwrap();
    let h = wire::encode_header(&request(2, Duration::from_secs(10)));
    raw.send(ZmqMessage::try_from(vec![h, body]).unwrap())
        .await
        .unwrap();
    let frames = next_frames(&mut raw).await;
    let reply = Header::decode(&frames[0], 4096).unwrap();
    assert_eq!(reply.correlation, Some(MessageId(2)));
    assert!(counter(DROPPED, "bad_frame_count") > before);
}
per_transport!(
    bodiless_request,
    a_request_without_its_body_is_a_bad_frame_count
);

/// A node's replies carry the node's id as `source`: to a call and to a
/// hello, as a peer in another language sees them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nodes_replies_carry_its_id() {
    common::watchdog(async {
        let node = zfabric::node::Node::builder("answers")
            .bind("tcp://127.0.0.1:0")
            .serve("double", |r: zfabric::Request<u32>| async move {
                Ok::<_, zfabric::RemoteError>(r.body * 2)
            })
            .start()
            .await
            .unwrap();
        let ep = node.bound_endpoints()[0].to_string();
        let mut raw = zeromq::DealerSocket::new();
        raw.connect(&ep).await.unwrap();
        let mut call = request(1, Duration::from_secs(10));
        call.op = Some(wire::NodeOp::Call);
        call.service = Some("double".into());
        call.hops = 1;
        let body = wire::encode_body(&21u32).unwrap();
        raw.send(ZmqMessage::try_from(vec![wire::encode_header(&call), body]).unwrap())
            .await
            .unwrap();
        let frames = next_frames(&mut raw).await;
        let reply = Header::decode(&frames[0], 4096).unwrap();
        assert_eq!(reply.correlation, Some(MessageId(1)));
        assert_eq!((reply.kind, reply.source), (Kind::Reply, node.id().0));
        assert_eq!(wire::decode_body::<u32>(&frames[1]).unwrap(), 42);
        // An unknown service: an error reply, from the node too.
        call.id = MessageId(2);
        call.service = Some("nope".into());
        let body = wire::encode_body(&21u32).unwrap();
        raw.send(ZmqMessage::try_from(vec![wire::encode_header(&call), body]).unwrap())
            .await
            .unwrap();
        let frames = next_frames(&mut raw).await;
        let reply = Header::decode(&frames[0], 4096).unwrap();
        assert_eq!((reply.kind, reply.source), (Kind::Error, node.id().0));
        let e: zfabric::RemoteError = wire::decode_body(&frames[1]).unwrap();
        assert_eq!(e.code, "no_such_service");
    })
    .await
}
