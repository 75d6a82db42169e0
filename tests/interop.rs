//! Interop with a Python peer (pyzmq + msgpack) written only from
//! docs/PROTOCOL.md: it publishes to, subscribes to, pushes to, pulls from
//! and makes requests to zfabric over tcp.

mod common;
#[path = "interop/curve.rs"]
mod curve;

use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use zfabric::{Publisher, Puller, Pusher, RemoteError, Server, Subscriber};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Item {
    name: String,
    n: u32,
}

const PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/peer.py");

/// Makes sure python3 can import zmq and msgpack, installing them from PyPI
/// if needed (once per test binary); these tests need them.
fn python_ready() {
    static READY: OnceLock<bool> = OnceLock::new();
    let ok = *READY.get_or_init(|| common::python_with("zmq, msgpack", &["pyzmq", "msgpack"]));
    assert!(
        ok,
        "the interop test needs python3 with pyzmq and msgpack (pip install pyzmq msgpack)"
    );
}

fn peer(mode: &str, endpoint: &str, count: u32) -> Child {
    python_ready();
    Command::new("python3")
        .args([PEER, mode, endpoint, &count.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 starts")
}

async fn lines(child: &mut Child, n: usize) -> Vec<Value> {
    let out = child.stdout.take().unwrap();
    let mut r = BufReader::new(out).lines();
    let mut v = Vec::new();
    while v.len() < n {
        match tokio::time::timeout(Duration::from_secs(30), r.next_line()).await {
            Ok(Ok(Some(l))) => v.push(serde_json::from_str(&l).expect("peer prints JSON")),
            other => panic!("python peer ended early after {} lines: {other:?}", v.len()),
        }
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_publishes_to_a_zfabric_subscriber() {
    common::watchdog(async {
        let mut sub: Subscriber<Item> = Subscriber::bind("tcp://127.0.0.1:0", &["py."])
            .await
            .unwrap();
        let ep = sub.endpoints()[0].to_string();
        let mut child = peer("pub", &ep, 0);
        let first = sub.recv_timeout(Duration::from_secs(20)).await.unwrap();
        let mut prev = first.header().seq;
        assert_eq!(first.topic_str(), Some("py.data"));
        for _ in 0..20 {
            let d = sub.recv_timeout(Duration::from_secs(10)).await.unwrap();
            let item = d.decode().unwrap();
            assert_eq!(item.name, "py");
            assert_eq!(d.header().seq, prev + 1, "in order, no loss");
            assert_eq!(item.n as u64, d.header().seq);
            prev = d.header().seq;
        }
        assert_eq!(sub.lost(), 0);
        drop(child.stdin.take()); // tells the peer to stop
        let _ = child.wait().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_subscribes_to_a_zfabric_publisher() {
    common::watchdog(async {
        let publisher: Publisher<Item> = Publisher::bind("tcp://127.0.0.1:0").await.unwrap();
        let ep = publisher.endpoints()[0].to_string();
        let mut child = peer("sub", &ep, 10);
        let reader = tokio::spawn(async move {
            let v = lines(&mut child, 10).await;
            let _ = child.wait().await;
            v
        });
        // Publish until the peer has what it wants (it may join late).
        let mut n = 0u32;
        while !reader.is_finished() && n < 20_000 {
            publisher
                .publish(
                    "rs.items",
                    &Item {
                        name: "rs".into(),
                        n,
                    },
                )
                .await
                .unwrap();
            publisher
                .publish(
                    "other",
                    &Item {
                        name: "no".into(),
                        n,
                    },
                )
                .await
                .unwrap();
            n += 1;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let got = reader.await.unwrap();
        let mut prev: Option<u64> = None;
        for m in &got {
            assert_eq!(m["topic"], "rs.items");
            assert_eq!(m["kind"], 0);
            assert_eq!(m["id_len"], 16);
            assert_eq!(m["body"]["name"], "rs");
            let seq = m["seq"].as_u64().unwrap();
            assert_eq!(m["body"]["n"].as_u64().unwrap(), seq);
            if let Some(p) = prev {
                assert_eq!(seq, p + 1);
            }
            prev = Some(seq);
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_pushes_to_and_pulls_from_zfabric() {
    common::watchdog(async {
        let mut puller: Puller<Item> = Puller::bind("tcp://127.0.0.1:0").await.unwrap();
        let ep = puller.endpoints()[0].to_string();
        let mut child = peer("push", &ep, 50);
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
        let _ = child.wait().await;

        let pusher: Pusher<Item> = Pusher::bind("tcp://127.0.0.1:0").await.unwrap();
        let ep = pusher.endpoints()[0].to_string();
        let mut child = peer("pull", &ep, 20);
        let reader = tokio::spawn(async move {
            let v = lines(&mut child, 20).await;
            let _ = child.wait().await;
            v
        });
        // A bound pusher has no peer until the puller connects.
        let mut sent = 0u32;
        for _ in 0..2_000 {
            if sent == 20 {
                break;
            }
            match pusher
                .send(&Item {
                    name: "rs".into(),
                    n: sent,
                })
                .await
            {
                Ok(()) => sent += 1,
                Err(zfabric::SendError::NoPeer) => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                Err(e) => panic!("{e}"),
            }
        }
        let got = reader.await.unwrap();
        for (i, m) in got.iter().enumerate() {
            assert_eq!(m["body"]["n"].as_u64().unwrap(), i as u64);
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_makes_requests_to_a_zfabric_server() {
    common::watchdog(async {
        let server: Server<Item, Item> = Server::bind("tcp://127.0.0.1:0").await.unwrap();
        let ep = server.endpoints()[0].to_string();
        let _h = server.spawn(|req| async move {
            assert!(req.remaining().is_some(), "the deadline travelled");
            Ok::<_, RemoteError>(Item {
                name: format!("{}!", req.body.name),
                n: req.body.n * 10,
            })
        });
        let mut child = peer("req", &ep, 8);
        let got = lines(&mut child, 9).await;
        let _ = child.wait().await;
        let mut seen = Vec::new();
        for m in &got {
            if m["bad"] == true {
                assert_eq!(m["kind"], 3);
                assert_eq!(m["error"]["code"], "bad_request");
            } else {
                assert_eq!(m["kind"], 2);
                let n = m["n"].as_u64().unwrap();
                assert_eq!(m["reply"]["n"].as_u64().unwrap(), n * 10);
                assert_eq!(m["reply"]["name"], "py!");
                seen.push(n);
            }
        }
        seen.sort();
        assert_eq!(seen, (0..8).collect::<Vec<_>>());
    })
    .await
}
