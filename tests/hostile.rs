//! Hostile and malformed input: peers that declare huge frames, send
//! oversized or malformed messages, or speak something other than ZMTP.
//! The node must stay up, lose nothing else, and count what it refused.

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use common::{endpoint, Tp};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zeromq::{Socket, SocketSend, ZmqMessage};
use zfabric::wire::{self, Header, Kind, MessageId};
use zfabric::{LinkState, Puller, Pusher, SocketBuilder, SocketConfig, Subscriber};

fn snapshotter() -> &'static Snapshotter {
    static S: OnceLock<Snapshotter> = OnceLock::new();
    S.get_or_init(|| {
        let r = DebuggingRecorder::new();
        let s = r.snapshotter();
        r.install().expect("recorder installed once");
        s
    })
}

/// Current value of a counter with the given `reason` label (0 if absent).
fn counter(name: &str, reason: &str) -> u64 {
    snapshotter()
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(k, _, _, _)| {
            k.key().name() == name
                && k.key()
                    .labels()
                    .any(|l| l.key() == "reason" && l.value() == reason)
        })
        .map(|(_, _, _, v)| match v {
            DebugValue::Counter(c) => c,
            _ => 0,
        })
        .sum()
}

fn good_message(n: u32) -> Vec<Bytes> {
    let h = Header::new(Kind::Event, MessageId(n as u128), 77, n as u64);
    vec![wire::encode_header(&h), wire::encode_body(&n).unwrap()]
}

/// Our greeting + READY(PUSH) for a raw peer.
fn zmtp_hello(socket_type: &str) -> Vec<u8> {
    let mut g = vec![0u8; 64];
    g[0] = 0xff;
    g[9] = 0x7f;
    g[10] = 3;
    g[12..16].copy_from_slice(b"NULL");
    let mut body = vec![5];
    body.extend_from_slice(b"READY");
    body.push(11);
    body.extend_from_slice(b"Socket-Type");
    body.extend_from_slice(&(socket_type.len() as u32).to_be_bytes());
    body.extend_from_slice(socket_type.as_bytes());
    g.push(0x04);
    g.push(body.len() as u8);
    g.extend_from_slice(&body);
    g
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
