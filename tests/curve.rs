//! CurveZMQ between zfabric sockets over ipc and tcp: every pattern, the
//! refusals (wrong server key, unknown client key, NULL against CURVE,
//! malformed handshakes from a raw peer, a silent peer), each counted by
//! reason while the listener keeps serving its other peers, and key
//! rotation without a restart.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{endpoint, Tp};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zfabric::telemetry::PEERS_DISCONNECTED;
use zfabric::{
    AllowList, Client, CurveConfig, CurveKeyPair, CurvePublicKey, LinkState, Publisher, Puller,
    Pusher, RemoteError, Server, SocketBuilder, SocketConfig, Subscriber,
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Tick {
    n: u32,
}

/// `zfabric_peers_disconnected_total{reason}` now (0 if never counted).
fn cut(reason: &str) -> u64 {
    common::counter(PEERS_DISCONNECTED, reason)
}

/// Waits (bounded) until the counter for `reason` exceeds `before`.
async fn counted(reason: &str, before: u64) {
    common::eventually(500, Duration::from_millis(10), || async {
        (cut(reason) > before).then_some(())
    })
    .await
}

fn server_cfg(server: &CurveKeyPair, allowed: &[&CurveKeyPair]) -> SocketConfig {
    SocketConfig::default().curve(
        CurveConfig::new(server.clone())
            .authorizer(AllowList::from_keys(allowed.iter().map(|k| *k.public()))),
    )
}

fn client_cfg(client: &CurveKeyPair, server: &CurvePublicKey) -> SocketConfig {
    SocketConfig::default()
        .curve(CurveConfig::new(client.clone()).server_key(*server))
        .reconnect(Duration::from_millis(20), Duration::from_millis(200))
}

/// The tests of this binary run one at a time, so that a counter moves
/// only for the test that looks at it.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Declares `name::ipc` and `name::tcp`.
macro_rules! both {
    ($name:ident, $body:path) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn ipc() {
                let _one = SERIAL.lock().await;
                common::watchdog($body(common::Tp::Ipc)).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn tcp() {
                let _one = SERIAL.lock().await;
                common::watchdog($body(common::Tp::Tcp)).await
            }
        }
    };
}

async fn first_tick(sub: &mut Subscriber<Tick>, publisher: &Publisher<Tick>, topic: &str) -> Tick {
    // Subscriptions reach the publisher asynchronously: publish until one
    // arrives (bounded).
    for _ in 0..200 {
        publisher.publish(topic, &Tick { n: 7 }).await.unwrap();
        if let Ok(d) = sub.recv_timeout(Duration::from_millis(50)).await {
            return d.decode().unwrap();
        }
    }
    panic!("no message reached the subscriber");
}

async fn pubsub_is_encrypted_end_to_end_both_ways_round(tp: Tp) {
    let dir = tempfile::tempdir().unwrap();
    let (s, c) = (CurveKeyPair::generate(), CurveKeyPair::generate());
    // Publisher binds, subscriber connects.
    let p: Publisher<Tick> = SocketBuilder::new()
        .config(server_cfg(&s, &[&c]))
        .bind(endpoint(tp, &dir))
        .publisher()
        .await
        .unwrap();
    let mut sub: Subscriber<Tick> = SocketBuilder::new()
        .config(client_cfg(&c, s.public()))
        .connect(p.endpoints()[0].to_string())
        .subscriber(&["t."])
        .await
        .unwrap();
    sub.wait_connected().await;
    assert_eq!(first_tick(&mut sub, &p, "t.a").await, Tick { n: 7 });
    // Not subscribed: filtered at the publisher, across the boxes.
    p.publish("other", &Tick { n: 1 }).await.unwrap();
    p.publish("t.b", &Tick { n: 2 }).await.unwrap();
    loop {
        let t: Tick = sub
            .recv_timeout(Duration::from_secs(10))
            .await
            .unwrap()
            .decode()
            .unwrap();
        if t.n != 7 {
            assert_eq!(t.n, 2);
            break;
        }
    }
    // Subscriber binds, publisher connects: subscriptions go the other way.
    let mut sub2: Subscriber<Tick> = SocketBuilder::new()
        .config(server_cfg(&c, &[&s]))
        .bind(endpoint(tp, &dir))
        .subscriber(&["u."])
        .await
        .unwrap();
    let p2: Publisher<Tick> = SocketBuilder::new()
        .config(client_cfg(&s, c.public()))
        .connect(sub2.endpoints()[0].to_string())
        .publisher()
        .await
        .unwrap();
    p2.wait_connected().await;
    assert_eq!(first_tick(&mut sub2, &p2, "u.x").await, Tick { n: 7 });
}
both!(pubsub, pubsub_is_encrypted_end_to_end_both_ways_round);

async fn push_pull_delivers_everything_in_order_under_curve(tp: Tp) {
    let dir = tempfile::tempdir().unwrap();
    let (s, c) = (CurveKeyPair::generate(), CurveKeyPair::generate());
    let mut pl: Puller<Tick> = SocketBuilder::new()
        .config(server_cfg(&s, &[&c]))
        .bind(endpoint(tp, &dir))
        .puller()
        .await
        .unwrap();
    let push: Pusher<Tick> = SocketBuilder::new()
        .config(client_cfg(&c, s.public()))
        .connect(pl.endpoints()[0].to_string())
        .pusher()
        .await
        .unwrap();
    push.wait_connected().await;
    let sender = tokio::spawn(async move {
        for n in 0..2000 {
            push.send(&Tick { n }).await.unwrap();
        }
        push
    });
    for n in 0..2000 {
        let t: Tick = pl
            .recv_timeout(Duration::from_secs(10))
            .await
            .unwrap()
            .decode()
            .unwrap();
        assert_eq!(t.n, n);
    }
    drop(sender.await.unwrap());
    // A large message (several boxes' worth of frames, long frame headers).
    let mut pl2: Puller<Vec<u8>> = SocketBuilder::new()
        .config(server_cfg(&s, &[&c]))
        .bind(endpoint(tp, &dir))
        .puller()
        .await
        .unwrap();
    let push2: Pusher<Vec<u8>> = SocketBuilder::new()
        .config(client_cfg(&c, s.public()))
        .connect(pl2.endpoints()[0].to_string())
        .pusher()
        .await
        .unwrap();
    push2.wait_connected().await;
    let big: Vec<u8> = (0..1_000_000u32).map(|i| i as u8).collect();
    push2.send(&big).await.unwrap();
    let got: Vec<u8> = pl2
        .recv_timeout(Duration::from_secs(10))
        .await
        .unwrap()
        .decode()
        .unwrap();
    assert_eq!(got, big);
}
both!(pushpull, push_pull_delivers_everything_in_order_under_curve);

fn echo(server: Server<String, String>) -> zfabric::ServerHandle {
    server.spawn(|req| async move { Ok::<_, RemoteError>(format!("echo {}", req.body)) })
}

async fn request_reply_works_under_curve(tp: Tp) {
    let dir = tempfile::tempdir().unwrap();
    let (s, c) = (CurveKeyPair::generate(), CurveKeyPair::generate());
    let server: Server<String, String> = SocketBuilder::new()
        .config(server_cfg(&s, &[&c]))
        .bind(endpoint(tp, &dir))
        .server()
        .await
        .unwrap();
    let ep = server.endpoints()[0].to_string();
    let _h = echo(server);
    let client: Client<String, String> = SocketBuilder::new()
        .config(client_cfg(&c, s.public()))
        .connect(ep)
        .client()
        .await
        .unwrap();
    client.wait_connected().await;
    for i in 0..50 {
        let r = client.request(&format!("hi {i}")).await.unwrap();
        assert_eq!(r, format!("echo hi {i}"));
    }
}
both!(reqrep, request_reply_works_under_curve);

fn not_connected(c: &Client<String, String>) -> bool {
    c.link_states()
        .iter()
        .all(|(_, s)| *s != LinkState::Connected)
}

async fn curve_server(
    tp: Tp,
    dir: &tempfile::TempDir,
    cfg: SocketConfig,
) -> (String, zfabric::ServerHandle) {
    let server: Server<String, String> = SocketBuilder::new()
        .config(cfg)
        .bind(endpoint(tp, dir))
        .server()
        .await
        .unwrap();
    let ep = server.endpoints()[0].to_string();
    (ep, echo(server))
}

async fn client(ep: &str, cfg: SocketConfig) -> Client<String, String> {
    SocketBuilder::new()
        .config(cfg)
        .connect(ep)
        .client()
        .await
        .unwrap()
}

async fn still_serves(ep: &str, c: &CurveKeyPair, s: &CurvePublicKey) {
    let good = client(ep, client_cfg(c, s)).await;
    good.wait_connected().await;
    assert_eq!(good.request(&"x".to_string()).await.unwrap(), "echo x");
}

async fn a_client_with_the_wrong_server_key_never_connects_and_is_counted(tp: Tp) {
    let dir = tempfile::tempdir().unwrap();
    let (s, c, impostor) = (
        CurveKeyPair::generate(),
        CurveKeyPair::generate(),
        CurveKeyPair::generate(),
    );
    let before = cut("decrypt_failed");
    let (ep, _h) = curve_server(tp, &dir, server_cfg(&s, &[&c])).await;
    let wrong = client(&ep, client_cfg(&c, impostor.public())).await;
    // The server cannot open a HELLO sealed to another key.
    counted("decrypt_failed", before).await;
    assert!(not_connected(&wrong));
    // The right key on the same listener works meanwhile.
    still_serves(&ep, &c, s.public()).await;
    assert!(not_connected(&wrong));
}
both!(
    wrong_server_key,
    a_client_with_the_wrong_server_key_never_connects_and_is_counted
);

async fn an_unknown_client_is_refused_and_counted_while_an_authorized_one_works(tp: Tp) {
    let dir = tempfile::tempdir().unwrap();
    let (s, friend, stranger) = (
        CurveKeyPair::generate(),
        CurveKeyPair::generate(),
        CurveKeyPair::generate(),
    );
    let (unauthorized, refused) = (cut("unauthorized"), cut("peer_refused"));
    let (ep, _h) = curve_server(tp, &dir, server_cfg(&s, &[&friend])).await;
    let bad = client(&ep, client_cfg(&stranger, s.public())).await;
    counted("unauthorized", unauthorized).await;
    // The stranger's link hears why (an ERROR command) and counts it too.
    counted("peer_refused", refused).await;
    still_serves(&ep, &friend, s.public()).await;
    assert!(not_connected(&bad));
    let r = bad
        .request_within(&"let me in".to_string(), Duration::from_millis(200))
        .await;
    assert!(r.is_err(), "a refused client gets no answer: {r:?}");
}
both!(
    unknown_client,
    an_unknown_client_is_refused_and_counted_while_an_authorized_one_works
);

async fn null_and_curve_refuse_each_other_with_a_counted_reason(tp: Tp) {
    let dir = tempfile::tempdir().unwrap();
    let (s, c) = (CurveKeyPair::generate(), CurveKeyPair::generate());
    // A NULL client at a CURVE server.
    let before = cut("mechanism_mismatch");
    let (ep, _h) = curve_server(tp, &dir, server_cfg(&s, &[&c])).await;
    let null_client = client(&ep, SocketConfig::default()).await;
    counted("mechanism_mismatch", before).await;
    assert!(not_connected(&null_client));
    still_serves(&ep, &c, s.public()).await;
    // A CURVE client at a NULL server.
    let before = cut("mechanism_mismatch");
    let (null_ep, _h2) = curve_server(tp, &dir, SocketConfig::default()).await;
    let curve_client = client(&null_ep, client_cfg(&c, s.public())).await;
    counted("mechanism_mismatch", before).await;
    assert!(not_connected(&curve_client));
}
both!(
    mechanism_mismatch,
    null_and_curve_refuse_each_other_with_a_counted_reason
);

// ------------------------------------------------------------ raw peers

trait RawIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> RawIo for T {}

async fn raw_stream(ep: &str) -> Box<dyn RawIo> {
    match ep.parse::<zfabric::Endpoint>().unwrap() {
        zfabric::Endpoint::Tcp { host, port } => Box::new(
            tokio::net::TcpStream::connect((host.as_str(), port))
                .await
                .unwrap(),
        ),
        zfabric::Endpoint::Ipc(p) => Box::new(tokio::net::UnixStream::connect(p).await.unwrap()),
        zfabric::Endpoint::Inproc(_) => unreachable!(),
    }
}

/// Reads until the peer closes; whether it did within the watchdog's limit.
async fn closed_by_peer(s: &mut Box<dyn RawIo>) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

fn greeting(mechanism: &str) -> Vec<u8> {
    let mut g = vec![0u8; 64];
    g[0] = 0xff;
    g[9] = 0x7f;
    g[10] = 3;
    g[11] = 1;
    g[12..12 + mechanism.len()].copy_from_slice(mechanism.as_bytes());
    g
}

fn command(body: &[u8]) -> Vec<u8> {
    let mut out = if body.len() > 255 {
        let mut v = vec![0x06];
        v.extend_from_slice(&(body.len() as u64).to_be_bytes());
        v
    } else {
        vec![0x04, body.len() as u8]
    };
    out.extend_from_slice(body);
    out
}

/// A HELLO of `len` bytes with version `major.minor` (its box is garbage:
/// the checks before it must fire first).
fn hello(len: usize, major: u8, minor: u8) -> Vec<u8> {
    let mut h = b"\x05HELLO".to_vec();
    h.extend_from_slice(&[major, minor]);
    h.resize(len, 0);
    h
}

async fn raw_peers_with_broken_handshakes_are_refused_by_reason(tp: Tp) {
    let dir = tempfile::tempdir().unwrap();
    let (s, c) = (CurveKeyPair::generate(), CurveKeyPair::generate());
    let cfg = server_cfg(&s, &[&c]).handshake_timeout(Duration::from_millis(300));
    let mut pl: Puller<Tick> = SocketBuilder::new()
        .config(cfg)
        .bind(endpoint(tp, &dir))
        .puller()
        .await
        .unwrap();
    let ep = pl.endpoints()[0].to_string();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "HELLO one byte short",
            [greeting("CURVE"), command(&hello(199, 1, 0))].concat(),
            "bad_handshake",
        ),
        (
            "HELLO one byte long",
            [greeting("CURVE"), command(&hello(201, 1, 0))].concat(),
            "bad_handshake",
        ),
        (
            "HELLO version 2.0",
            [greeting("CURVE"), command(&hello(200, 2, 0))].concat(),
            "bad_handshake",
        ),
        (
            "INITIATE first",
            [
                greeting("CURVE"),
                command(&{
                    let mut i = b"\x08INITIATE".to_vec();
                    i.resize(300, 0);
                    i
                }),
            ]
            .concat(),
            "bad_handshake",
        ),
        (
            "HELLO whose box is garbage",
            [greeting("CURVE"), command(&hello(200, 1, 0))].concat(),
            "decrypt_failed",
        ),
        (
            "a NULL client",
            [greeting("NULL"), command(b"\x05READY")].concat(),
            "mechanism_mismatch",
        ),
        (
            "a peer that claims to be the CURVE server too",
            [
                {
                    let mut g = greeting("CURVE");
                    g[32] = 1;
                    g
                },
                command(&hello(200, 1, 0)),
            ]
            .concat(),
            "bad_handshake",
        ),
        (
            "not ZMTP at all",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(4),
            "bad_greeting",
        ),
        (
            "a HELLO frame declaring 1 TiB",
            [greeting("CURVE"), {
                let mut v = vec![0x06];
                v.extend_from_slice(&(1u64 << 40).to_be_bytes());
                v
            }]
            .concat(),
            "frame_too_large",
        ),
        (
            "a greeting, then silence",
            greeting("CURVE"),
            "handshake_timeout",
        ),
    ];
    for (what, bytes, reason) in cases {
        let before = cut(reason);
        let mut raw = raw_stream(&ep).await;
        raw.write_all(&bytes).await.unwrap();
        assert!(closed_by_peer(&mut raw).await, "{what}: not cut off");
        counted(reason, before).await;
    }
    // The listener still serves an authorized peer.
    let good: Pusher<Tick> = SocketBuilder::new()
        .config(client_cfg(&c, s.public()))
        .connect(ep)
        .pusher()
        .await
        .unwrap();
    good.wait_connected().await;
    good.send(&Tick { n: 1 }).await.unwrap();
    let t: Tick = pl
        .recv_timeout(Duration::from_secs(10))
        .await
        .unwrap()
        .decode()
        .unwrap();
    assert_eq!(t.n, 1);
}
both!(
    raw_negative,
    raw_peers_with_broken_handshakes_are_refused_by_reason
);

// ------------------------------------------------------------ rotation

fn replace(path: &Path, text: &str) {
    // As Kubernetes updates a mounted Secret: a new file swapped in.
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_without_a_restart() {
    let _one = SERIAL.lock().await;
    common::watchdog(async {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path();
        let (old, new) = (CurveKeyPair::generate(), CurveKeyPair::generate());
        let (alice, bob) = (CurveKeyPair::generate(), CurveKeyPair::generate());
        old.write_files(&keys.join("server.key")).unwrap();
        alice.write_files(&keys.join("alice.key")).unwrap();
        bob.write_files(&keys.join("bob.key")).unwrap();
        replace(
            &keys.join("authorized"),
            &format!("# who may push\n{}\n", alice.public()),
        );
        replace(&keys.join("servers"), &format!("{}\n", old.public()));

        let server_curve = CurveConfig::from_files(
            &keys.join("server.key"),
            None,
            Some(&keys.join("authorized")),
        )
        .unwrap();
        let mut pl: Puller<Tick> = SocketBuilder::new()
            .config(SocketConfig::default().curve(server_curve))
            .bind(endpoint(Tp::Tcp, &dir))
            .puller()
            .await
            .unwrap();
        let ep = pl.endpoints()[0].to_string();
        let servers = keys.join("servers");
        let client = |who: &str| {
            let cfg = CurveConfig::from_files(
                &keys.join(format!("{who}.key")),
                Some(servers.to_str().unwrap()),
                None,
            )
            .unwrap();
            SocketBuilder::new()
                .config(
                    SocketConfig::default()
                        .curve(cfg)
                        .reconnect(Duration::from_millis(20), Duration::from_millis(100)),
                )
                .connect(ep.clone())
                .pusher::<Tick>()
        };
        let a = client("alice").await.unwrap();
        a.wait_connected().await;
        a.send(&Tick { n: 1 }).await.unwrap();
        assert_eq!(
            pl.recv_timeout(Duration::from_secs(10))
                .await
                .unwrap()
                .decode()
                .unwrap(),
            Tick { n: 1 }
        );

        // Bob is not on the list yet.
        let before = cut("unauthorized");
        let b = client("bob").await.unwrap();
        counted("unauthorized", before).await;
        // Authorize him: the allow-list file is re-read on his next attempt.
        replace(
            &keys.join("authorized"),
            &format!("{}\n{}\n", alice.public(), bob.public()),
        );
        b.wait_connected().await;
        b.send(&Tick { n: 2 }).await.unwrap();
        assert_eq!(
            pl.recv_timeout(Duration::from_secs(10))
                .await
                .unwrap()
                .decode()
                .unwrap(),
            Tick { n: 2 }
        );

        // Server key rotation: clients learn the new key next to the old one,
        // then the server switches; new connections use the new key.
        replace(&servers, &format!("{}\n{}\n", old.public(), new.public()));
        replace(
            &keys.join("server.key"),
            &format!("{}\n", new.secret().to_z85()),
        );
        let before = cut("decrypt_failed");
        let late = client("alice").await.unwrap();
        late.wait_connected().await; // old key refused first, then the new one works
        assert!(cut("decrypt_failed") > before);
        late.send(&Tick { n: 3 }).await.unwrap();
        assert_eq!(
            pl.recv_timeout(Duration::from_secs(10))
                .await
                .unwrap()
                .decode()
                .unwrap(),
            Tick { n: 3 }
        );
        // Links made before the rotation stay up.
        a.send(&Tick { n: 4 }).await.unwrap();
        assert_eq!(
            pl.recv_timeout(Duration::from_secs(10))
                .await
                .unwrap()
                .decode()
                .unwrap(),
            Tick { n: 4 }
        );
    })
    .await
}

// ------------------------------------------------ a raw CURVE client

/// A CurveZMQ client written here from RFC 26 on `crypto_box` (not
/// zfabric's machines), to forge each step against a live listener.
mod raw_curve {
    use crypto_box::aead::generic_array::GenericArray;
    use crypto_box::aead::{AeadInPlace, OsRng};
    use crypto_box::{PublicKey, SalsaBox, SecretKey};

    pub(crate) struct RawClient {
        long: SecretKey,
        server: PublicKey,
        cn_secret: SecretKey,
        session: Option<SalsaBox>,
        pub(crate) cookie: Vec<u8>,
    }

    fn nonce(prefix: &[u8], tail: &[u8]) -> GenericArray<u8, crypto_box::aead::consts::U24> {
        let mut n = [0u8; 24];
        n[..prefix.len()].copy_from_slice(prefix);
        n[prefix.len()..].copy_from_slice(tail);
        n.into()
    }

    fn seal(b: &SalsaBox, n: &[u8; 24], plain: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; 16];
        out.extend_from_slice(plain);
        let tag = b
            .encrypt_in_place_detached(GenericArray::from_slice(n), b"", &mut out[16..])
            .unwrap();
        out[..16].copy_from_slice(&tag);
        out
    }

    fn open(b: &SalsaBox, n: &[u8; 24], boxed: &[u8]) -> Vec<u8> {
        let mut plain = boxed[16..].to_vec();
        b.decrypt_in_place_detached(
            GenericArray::from_slice(n),
            b"",
            &mut plain,
            GenericArray::from_slice(&boxed[..16]),
        )
        .expect("the server's box opens");
        plain
    }

    fn n24(prefix: &[u8], tail: &[u8]) -> [u8; 24] {
        nonce(prefix, tail).into()
    }

    impl RawClient {
        pub(crate) fn new(long: [u8; 32], server: [u8; 32]) -> Self {
            RawClient {
                long: SecretKey::from(long),
                server: PublicKey::from(server),
                cn_secret: SecretKey::generate(&mut OsRng),
                session: None,
                cookie: Vec::new(),
            }
        }

        pub(crate) fn hello(&self) -> Vec<u8> {
            let b = SalsaBox::new(&self.server, &self.cn_secret);
            let mut h = b"\x05HELLO\x01\x00".to_vec();
            h.extend_from_slice(&[0u8; 72]);
            h.extend_from_slice(self.cn_secret.public_key().as_bytes());
            h.extend_from_slice(&1u64.to_be_bytes());
            h.extend(seal(
                &b,
                &n24(b"CurveZMQHELLO---", &1u64.to_be_bytes()),
                &[0u8; 64],
            ));
            h
        }

        /// Takes WELCOME, returns INITIATE announcing `socket_type`.
        pub(crate) fn initiate(&mut self, welcome: &[u8], socket_type: &str) -> Vec<u8> {
            assert_eq!(&welcome[..8], b"\x07WELCOME");
            let b = SalsaBox::new(&self.server, &self.cn_secret);
            let plain = open(&b, &n24(b"WELCOME-", &welcome[8..24]), &welcome[24..]);
            let cn_server = PublicKey::from(<[u8; 32]>::try_from(&plain[..32]).unwrap());
            self.cookie = plain[32..128].to_vec();
            let session = SalsaBox::new(&cn_server, &self.cn_secret);
            let mut vouch_plain = self.cn_secret.public_key().as_bytes().to_vec();
            vouch_plain.extend_from_slice(self.server.as_bytes());
            let vouch_tail = [9u8; 16];
            let vouch = seal(
                &SalsaBox::new(&cn_server, &self.long),
                &n24(b"VOUCH---", &vouch_tail),
                &vouch_plain,
            );
            let mut plain = self.long.public_key().as_bytes().to_vec();
            plain.extend_from_slice(&vouch_tail);
            plain.extend(vouch);
            plain.push(11);
            plain.extend_from_slice(b"Socket-Type");
            plain.extend_from_slice(&(socket_type.len() as u32).to_be_bytes());
            plain.extend_from_slice(socket_type.as_bytes());
            let mut i = b"\x08INITIATE".to_vec();
            i.extend_from_slice(&self.cookie);
            i.extend_from_slice(&2u64.to_be_bytes());
            i.extend(seal(
                &session,
                &n24(b"CurveZMQINITIATE", &2u64.to_be_bytes()),
                &plain,
            ));
            self.session = Some(session);
            i
        }

        /// A MESSAGE with short nonce `n` boxing `flags` and `body`.
        pub(crate) fn message(&self, n: u64, flags: u8, body: &[u8]) -> Vec<u8> {
            let mut plain = vec![flags];
            plain.extend_from_slice(body);
            let mut m = b"\x07MESSAGE".to_vec();
            m.extend_from_slice(&n.to_be_bytes());
            m.extend(seal(
                self.session.as_ref().unwrap(),
                &n24(b"CurveZMQMESSAGEC", &n.to_be_bytes()),
                &plain,
            ));
            m
        }
    }
}

/// A frame of `body` as ZMTP frames it: `command` sets the COMMAND bit.
fn frame(body: &[u8], command: bool) -> Vec<u8> {
    let c = if command { 0x04 } else { 0 };
    let mut out = if body.len() > 255 {
        let mut v = vec![0x02 | c];
        v.extend_from_slice(&(body.len() as u64).to_be_bytes());
        v
    } else {
        vec![c, body.len() as u8]
    };
    out.extend_from_slice(body);
    out
}

/// Reads one frame's body.
async fn read_frame(s: &mut Box<dyn RawIo>) -> Vec<u8> {
    let flags = s.read_u8().await.unwrap();
    let len = if flags & 0x02 != 0 {
        s.read_u64().await.unwrap() as usize
    } else {
        s.read_u8().await.unwrap() as usize
    };
    let mut b = vec![0u8; len];
    s.read_exact(&mut b).await.unwrap();
    b
}

/// Connects a raw client, exchanges greetings and HELLO/WELCOME.
async fn raw_welcome(
    ep: &str,
    who: &CurveKeyPair,
    server: &CurvePublicKey,
) -> (Box<dyn RawIo>, raw_curve::RawClient, Vec<u8>) {
    let mut s = raw_stream(ep).await;
    let mut rc = raw_curve::RawClient::new(who.secret().to_bytes(), *server.as_bytes());
    s.write_all(&greeting("CURVE")).await.unwrap();
    let mut g = [0u8; 64];
    s.read_exact(&mut g).await.unwrap();
    assert_eq!(&g[12..17], b"CURVE");
    assert_eq!(g[32], 1, "the bound side is the CURVE server");
    s.write_all(&frame(&rc.hello(), true)).await.unwrap();
    let welcome = read_frame(&mut s).await;
    let initiate = rc.initiate(&welcome, "PUSH");
    (s, rc, initiate)
}

async fn forged_initiates_and_messages_are_refused_by_reason(tp: Tp) {
    let dir = tempfile::tempdir().unwrap();
    let (s, c) = (CurveKeyPair::generate(), CurveKeyPair::generate());
    let mut pl: Puller<Tick> = SocketBuilder::new()
        .config(server_cfg(&s, &[&c]))
        .bind(endpoint(tp, &dir))
        .puller()
        .await
        .unwrap();
    let ep = pl.endpoints()[0].to_string();
    type Forge = fn(&mut Vec<u8>);
    let cases: [(&str, Forge, &str); 4] = [
        (
            "INITIATE cut to 256 bytes",
            |i| i.truncate(256),
            "bad_handshake",
        ),
        (
            "INITIATE with a tampered cookie",
            |i| i[30] ^= 1,
            "decrypt_failed",
        ),
        (
            "INITIATE with a tampered box",
            |i| {
                let l = i.len() - 1;
                i[l] ^= 1
            },
            "decrypt_failed",
        ),
        ("INITIATE renamed", |i| i[1] = b'X', "bad_handshake"),
    ];
    for (what, forge, reason) in cases {
        let before = cut(reason);
        let (mut raw, _rc, mut initiate) = raw_welcome(&ep, &c, s.public()).await;
        forge(&mut initiate);
        raw.write_all(&frame(&initiate, true)).await.unwrap();
        assert!(closed_by_peer(&mut raw).await, "{what}: not cut off");
        counted(reason, before).await;
    }

    // A good handshake, one real message, then a replay and a tampered box.
    let h = zfabric::wire::Header::new(
        zfabric::wire::Kind::Event,
        zfabric::wire::MessageId(1),
        9,
        0,
    );
    let (hdr, body) = (
        zfabric::wire::encode_header(&h),
        zfabric::wire::encode_body(&Tick { n: 41 }).unwrap(),
    );
    for (what, reason) in [
        ("a replayed nonce", "bad_nonce"),
        ("a tampered box", "decrypt_failed"),
    ] {
        let before = cut(reason);
        let (mut raw, rc, initiate) = raw_welcome(&ep, &c, s.public()).await;
        raw.write_all(&frame(&initiate, true)).await.unwrap();
        let ready = read_frame(&mut raw).await;
        assert_eq!(&ready[..6], b"\x05READY");
        // MESSAGEs travel in plain frames; MORE is bit 0 inside the box.
        let mut msg = frame(&rc.message(3, 1, &hdr), false);
        msg.extend(frame(&rc.message(4, 0, &body), false));
        raw.write_all(&msg).await.unwrap();
        let t: Tick = pl
            .recv_timeout(Duration::from_secs(10))
            .await
            .unwrap()
            .decode()
            .unwrap();
        assert_eq!(t.n, 41, "the well-formed message arrived");
        let bad = match reason {
            "bad_nonce" => rc.message(4, 0, &body),
            _ => {
                let mut m = rc.message(5, 0, &body);
                let l = m.len() - 1;
                m[l] ^= 1;
                m
            }
        };
        raw.write_all(&frame(&bad, false)).await.unwrap();
        assert!(closed_by_peer(&mut raw).await, "{what}: not cut off");
        counted(reason, before).await;
    }
    // And the listener still serves an authorized peer.
    let good: Pusher<Tick> = SocketBuilder::new()
        .config(client_cfg(&c, s.public()))
        .connect(ep)
        .pusher()
        .await
        .unwrap();
    good.wait_connected().await;
    good.send(&Tick { n: 2 }).await.unwrap();
    let t: Tick = pl
        .recv_timeout(Duration::from_secs(10))
        .await
        .unwrap()
        .decode()
        .unwrap();
    assert_eq!(t.n, 2);
}
both!(
    forged_curve,
    forged_initiates_and_messages_are_refused_by_reason
);

// ------------------------------------------------------------ an authorized fabric

mod fabric {
    //! Nodes with security on (`NodeBuilder::curve`): servers are CURVE
    //! servers with an allow-list, links are CURVE clients; a member's key
    //! travels in gossip.

    use super::*;
    use zfabric::node::Node;

    /// A node with security on: `kp`, letting in `allowed`, reaching its
    /// seeds with `servers`.
    async fn secure_node(
        name: &str,
        ep: &str,
        kp: &CurveKeyPair,
        allowed: &[&CurveKeyPair],
        servers: &[&CurveKeyPair],
        seed: Option<&str>,
        service: Option<&str>,
    ) -> Node {
        let mut curve = CurveConfig::new(kp.clone())
            .authorizer(AllowList::from_keys(allowed.iter().map(|k| *k.public())));
        for s in servers {
            curve = curve.server_key(*s.public());
        }
        let mut b = Node::builder(name)
            .config(common::fast())
            .bind(ep.to_string())
            .curve(curve);
        if let Some(s) = seed {
            b = b.seed(s.to_string());
        }
        if let Some(svc) = service {
            b = b.serve(svc, |r: zfabric::Request<String>| async move {
                Ok::<_, RemoteError>(format!("{} from {}", r.body, "c"))
            });
        }
        b.start().await.unwrap()
    }

    fn first_ep(n: &Node) -> String {
        n.endpoints()[0].to_string()
    }

    async fn a_member_learned_by_gossip_is_reached_with_the_key_gossip_carried(tp: Tp) {
        let dir = tempfile::tempdir().unwrap();
        let (ka, kb, kc) = (
            CurveKeyPair::generate(),
            CurveKeyPair::generate(),
            CurveKeyPair::generate(),
        );
        let all = [&ka, &kb, &kc];
        // b knows no server key at all (it has no seeds); a knows only b's,
        // c knows only b's: a reaches c with the key c advertised.
        let b = secure_node("b", &endpoint(tp, &dir), &kb, &all, &[], None, None).await;
        let a = secure_node(
            "a",
            &endpoint(tp, &dir),
            &ka,
            &all,
            &[&kb],
            Some(&first_ep(&b)),
            None,
        )
        .await;
        let c = secure_node(
            "c",
            &endpoint(tp, &dir),
            &kc,
            &all,
            &[&kb],
            Some(&first_ep(&b)),
            Some("price"),
        )
        .await;
        common::converge(&[&a, &b, &c]).await;
        let seen = a.members().into_iter().find(|m| m.name == "c").unwrap();
        assert_eq!(seen.curve_key, Some(*kc.public()));
        let r: String = a
            .request("price", &"tea".to_string(), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(r, "tea from c");
    }
    both!(
        gossip_key,
        a_member_learned_by_gossip_is_reached_with_the_key_gossip_carried
    );

    async fn a_node_whose_key_is_not_authorized_cannot_join_and_is_counted(tp: Tp) {
        let dir = tempfile::tempdir().unwrap();
        let (ka, kb, stranger) = (
            CurveKeyPair::generate(),
            CurveKeyPair::generate(),
            CurveKeyPair::generate(),
        );
        let a = secure_node(
            "a",
            &endpoint(tp, &dir),
            &ka,
            &[&ka, &kb],
            &[],
            None,
            Some("price"),
        )
        .await;
        let b = secure_node(
            "b",
            &endpoint(tp, &dir),
            &kb,
            &[&ka, &kb],
            &[&ka],
            Some(&first_ep(&a)),
            None,
        )
        .await;
        common::converge(&[&a, &b]).await;
        let (unauthorized, refused) = (cut("unauthorized"), cut("peer_refused"));
        // The stranger knows a's key and would let a in: a refuses it.
        let s = secure_node(
            "stranger",
            &endpoint(tp, &dir),
            &stranger,
            &[&ka, &kb, &stranger],
            &[&ka],
            Some(&first_ep(&a)),
            None,
        )
        .await;
        counted("unauthorized", unauthorized).await;
        counted("peer_refused", refused).await;
        // Several heartbeats later it is still nobody's member, and sees none.
        for _ in 0..3 {
            counted("unauthorized", cut("unauthorized")).await;
        }
        assert!(a.members().iter().all(|m| m.name != "stranger"));
        assert!(b.members().iter().all(|m| m.name != "stranger"));
        assert!(s.members().is_empty(), "{:?}", s.members());
        let r = s
            .request::<_, String>("price", &"x".to_string(), Duration::from_millis(200))
            .await;
        assert!(r.is_err());
        // The fabric itself is unharmed.
        let r: String = b
            .request("price", &"ok".to_string(), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(r, "ok from c");
    }
    both!(
        unauthorized_node,
        a_node_whose_key_is_not_authorized_cannot_join_and_is_counted
    );

    async fn a_null_node_and_a_curve_node_refuse_each_other_without_a_hang(tp: Tp) {
        let dir = tempfile::tempdir().unwrap();
        let (ka, kb) = (CurveKeyPair::generate(), CurveKeyPair::generate());
        let secure = secure_node(
            "secure",
            &endpoint(tp, &dir),
            &ka,
            &[&ka, &kb],
            &[&kb],
            None,
            None,
        )
        .await;
        let before = cut("mechanism_mismatch");
        // A NULL node seeding the CURVE node: refused at the greeting.
        let plain = Node::builder("plain")
            .config(common::fast())
            .bind(endpoint(tp, &dir))
            .seed(first_ep(&secure))
            .start()
            .await
            .unwrap();
        counted("mechanism_mismatch", before).await;
        // The CURVE node seeding a NULL node: refused the other way.
        let before = cut("mechanism_mismatch");
        let secure2 = secure_node(
            "secure2",
            &endpoint(tp, &dir),
            &kb,
            &[&ka, &kb],
            &[&ka],
            Some(&first_ep(&plain)),
            None,
        )
        .await;
        counted("mechanism_mismatch", before).await;
        assert!(plain.members().is_empty(), "{:?}", plain.members());
        assert!(secure.members().iter().all(|m| m.name != "plain"));
        assert!(secure2.members().iter().all(|m| m.name != "plain"));
        // Shutdown does not hang on the refused links.
        plain.shutdown(Duration::from_millis(500)).await;
        secure2.shutdown(Duration::from_millis(500)).await;
        secure.shutdown(Duration::from_millis(500)).await;
    }
    both!(
        null_vs_curve_nodes,
        a_null_node_and_a_curve_node_refuse_each_other_without_a_hang
    );
}
