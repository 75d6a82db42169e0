//! CurveZMQ interop with pyzmq (its bundled libzmq) in both directions:
//! libzmq as CURVE client against a zfabric CURVE listener, and zfabric as
//! CURVE client against a libzmq CURVE server, for PUB/SUB, PUSH/PULL and
//! DEALER/ROUTER, over tcp and ipc.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use zfabric::{
    AllowList, Client, CurveConfig, CurveKeyPair, CurvePublicKey, Publisher, Puller, Pusher,
    RemoteError, Server, SocketBuilder, SocketConfig, Subscriber,
};

use super::{common, python_ready, Item};

const CURVE_PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/curve_peer.py");

struct Py {
    child: Child,
    out: Lines<BufReader<ChildStdout>>,
}

impl Py {
    fn start(
        mode: &str,
        role: &str,
        endpoint: &str,
        count: u32,
        keys: &CurveKeyPair,
        server: Option<&CurvePublicKey>,
    ) -> Py {
        python_ready();
        let mut cmd = Command::new("python3");
        cmd.args([CURVE_PEER, mode, role, endpoint, &count.to_string()])
            .env("ZF_SECRET", keys.secret().to_z85())
            .env("ZF_PUBLIC", keys.public().to_z85())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if let Some(s) = server {
            cmd.env("ZF_SERVER", s.to_z85());
        }
        let mut child = cmd.spawn().expect("python3 starts");
        let out = BufReader::new(child.stdout.take().unwrap()).lines();
        Py { child, out }
    }

    async fn line(&mut self) -> Value {
        match tokio::time::timeout(Duration::from_secs(30), self.out.next_line()).await {
            Ok(Ok(Some(l))) => serde_json::from_str(&l).expect("peer prints JSON"),
            other => panic!("python CURVE peer ended early: {other:?}"),
        }
    }

    async fn lines(&mut self, n: usize) -> Vec<Value> {
        let mut v = Vec::new();
        while v.len() < n {
            v.push(self.line().await);
        }
        v
    }

    /// Binds the peer and returns the endpoint it bound.
    async fn bound(&mut self) -> String {
        self.line().await["endpoint"].as_str().unwrap().to_string()
    }

    async fn stop(mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait().await;
    }
}

#[derive(Clone, Copy)]
enum Tp {
    Tcp,
    Ipc,
}

fn zf_endpoint(tp: Tp, dir: &tempfile::TempDir, name: &str) -> String {
    match tp {
        Tp::Tcp => "tcp://127.0.0.1:0".into(),
        Tp::Ipc => format!("ipc://{}/{name}.sock", dir.path().display()),
    }
}

fn py_endpoint(tp: Tp, dir: &tempfile::TempDir) -> String {
    match tp {
        Tp::Tcp => "tcp://127.0.0.1:*".into(),
        Tp::Ipc => format!("ipc://{}/py.sock", dir.path().display()),
    }
}

/// zfabric as CURVE server, letting only `client` in.
fn zf_server(keys: &CurveKeyPair, client: &CurveKeyPair) -> SocketConfig {
    SocketConfig::default()
        .curve(CurveConfig::new(keys.clone()).authorizer(AllowList::from_keys([*client.public()])))
}

/// zfabric as CURVE client of `server`.
fn zf_client(keys: &CurveKeyPair, server: &CurvePublicKey) -> SocketConfig {
    SocketConfig::default()
        .curve(CurveConfig::new(keys.clone()).server_key(*server))
        .reconnect(Duration::from_millis(20), Duration::from_millis(200))
}

macro_rules! both {
    ($name:ident, $body:path) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn tcp() {
                common::watchdog($body(Tp::Tcp)).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn ipc() {
                common::watchdog($body(Tp::Ipc)).await
            }
        }
    };
}

async fn libzmq_publishes_to_a_zfabric_curve_subscriber(tp: Tp) {
    let dir = tempfile::tempdir().unwrap();
    let (zf, py) = (CurveKeyPair::generate(), CurveKeyPair::generate());
    let mut sub: Subscriber<Item> = SocketBuilder::new()
        .config(zf_server(&zf, &py))
        .bind(zf_endpoint(tp, &dir, "sub"))
        .subscriber(&["py."])
        .await
        .unwrap();
    let ep = sub.endpoints()[0].to_string();
    let peer = Py::start("pub", "connect", &ep, 0, &py, Some(zf.public()));
    let first = sub.recv_timeout(Duration::from_secs(20)).await.unwrap();
    let mut prev = first.header().seq;
    for _ in 0..20 {
        let d = sub.recv_timeout(Duration::from_secs(10)).await.unwrap();
        // Our SUBSCRIBE reached libzmq's PUB inside a box: "other" is
        // filtered there.
        assert_eq!(d.topic_str(), Some("py.data"));
        assert_eq!(d.header().seq, prev + 1, "in order, no loss");
        assert_eq!(d.decode().unwrap().name, "py");
        prev = d.header().seq;
    }
    peer.stop().await;
}
both!(
    py_pub_zf_sub,
    libzmq_publishes_to_a_zfabric_curve_subscriber
);

async fn a_zfabric_publisher_connects_to_a_libzmq_curve_subscriber(tp: Tp) {
    let dir = tempfile::tempdir().unwrap();
    let (zf, py) = (CurveKeyPair::generate(), CurveKeyPair::generate());
    let mut peer = Py::start("sub", "bind", &py_endpoint(tp, &dir), 10, &py, None);
    let ep = peer.bound().await;
    let publisher: Publisher<Item> = SocketBuilder::new()
        .config(zf_client(&zf, py.public()))
        .connect(ep)
        .publisher()
        .await
        .unwrap();
    publisher.wait_connected().await;
    let reader = tokio::spawn(async move {
        let v = peer.lines(10).await;
        peer.stop().await;
        v
    });
    let mut n = 0u32;
    while !reader.is_finished() && n < 20_000 {
        let item = |name: &str| Item {
            name: name.into(),
            n,
        };
        publisher.publish("rs.items", &item("rs")).await.unwrap();
        publisher.publish("other", &item("no")).await.unwrap();
        n += 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let got = reader.await.unwrap();
    let mut prev: Option<u64> = None;
    for m in &got {
        // libzmq's SUBSCRIBE command reached our publisher through the box.
        assert_eq!(m["topic"], "rs.items");
        let seq = m["seq"].as_u64().unwrap();
        if let Some(p) = prev {
            assert_eq!(seq, p + 1);
        }
        prev = Some(seq);
    }
}
both!(
    zf_pub_py_sub,
    a_zfabric_publisher_connects_to_a_libzmq_curve_subscriber
);

async fn libzmq_pushes_to_a_zfabric_curve_puller(tp: Tp) {
    let dir = tempfile::tempdir().unwrap();
    let (zf, py) = (CurveKeyPair::generate(), CurveKeyPair::generate());
    let mut puller: Puller<Item> = SocketBuilder::new()
        .config(zf_server(&zf, &py))
        .bind(zf_endpoint(tp, &dir, "pull"))
        .puller()
        .await
        .unwrap();
    let ep = puller.endpoints()[0].to_string();
    let peer = Py::start("push", "connect", &ep, 50, &py, Some(zf.public()));
    for n in 0..50 {
        let d = puller.recv_timeout(Duration::from_secs(20)).await.unwrap();
        assert_eq!(
            d.decode().unwrap(),
            Item {
                name: "py".into(),
                n
            }
        );
    }
    peer.stop().await;
}
both!(py_push_zf_pull, libzmq_pushes_to_a_zfabric_curve_puller);

async fn a_zfabric_pusher_connects_to_a_libzmq_curve_puller(tp: Tp) {
    let dir = tempfile::tempdir().unwrap();
    let (zf, py) = (CurveKeyPair::generate(), CurveKeyPair::generate());
    let mut peer = Py::start("pull", "bind", &py_endpoint(tp, &dir), 30, &py, None);
    let ep = peer.bound().await;
    let pusher: Pusher<Item> = SocketBuilder::new()
        .config(zf_client(&zf, py.public()))
        .connect(ep)
        .pusher()
        .await
        .unwrap();
    pusher.wait_connected().await;
    for n in 0..30 {
        pusher
            .send(&Item {
                name: "rs".into(),
                n,
            })
            .await
            .unwrap();
    }
    let got = peer.lines(30).await;
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m["body"]["n"].as_u64().unwrap(), i as u64);
        assert_eq!(m["body"]["name"], "rs");
    }
    peer.stop().await;
}
both!(
    zf_push_py_pull,
    a_zfabric_pusher_connects_to_a_libzmq_curve_puller
);

async fn a_libzmq_dealer_makes_requests_to_a_zfabric_curve_server(tp: Tp) {
    let dir = tempfile::tempdir().unwrap();
    let (zf, py) = (CurveKeyPair::generate(), CurveKeyPair::generate());
    let server: Server<Item, Item> = SocketBuilder::new()
        .config(zf_server(&zf, &py))
        .bind(zf_endpoint(tp, &dir, "server"))
        .server()
        .await
        .unwrap();
    let ep = server.endpoints()[0].to_string();
    let _h = server.spawn(|req| async move {
        Ok::<_, RemoteError>(Item {
            name: format!("{}!", req.body.name),
            n: req.body.n * 10,
        })
    });
    let mut peer = Py::start("req", "connect", &ep, 8, &py, Some(zf.public()));
    let got = peer.lines(8).await;
    let mut seen: Vec<u64> = got
        .iter()
        .map(|m| {
            assert_eq!(m["kind"], 2);
            let n = m["n"].as_u64().unwrap();
            assert_eq!(m["reply"]["n"].as_u64().unwrap(), n * 10);
            n
        })
        .collect();
    seen.sort();
    assert_eq!(seen, (0..8).collect::<Vec<_>>());
    peer.stop().await;
}
both!(
    py_dealer_zf_router,
    a_libzmq_dealer_makes_requests_to_a_zfabric_curve_server
);

async fn a_zfabric_client_makes_requests_to_a_libzmq_curve_router(tp: Tp) {
    let dir = tempfile::tempdir().unwrap();
    let (zf, py) = (CurveKeyPair::generate(), CurveKeyPair::generate());
    let mut peer = Py::start("rep", "bind", &py_endpoint(tp, &dir), 5, &py, None);
    let ep = peer.bound().await;
    let client: Client<Item, Item> = SocketBuilder::new()
        .config(zf_client(&zf, py.public()))
        .connect(ep)
        .client()
        .await
        .unwrap();
    client.wait_connected().await;
    for n in 0..5 {
        let r = client
            .request(&Item {
                name: "rs".into(),
                n,
            })
            .await
            .unwrap();
        assert_eq!(
            r,
            Item {
                name: "rs!".into(),
                n: n * 10
            }
        );
    }
    assert_eq!(peer.line().await["served"], 5);
    peer.stop().await;
}
both!(
    zf_dealer_py_router,
    a_zfabric_client_makes_requests_to_a_libzmq_curve_router
);
