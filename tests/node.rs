//! Multi-node fabrics in one process, on inproc, ipc and tcp.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{converge, endpoint, fast, Tp};
use zfabric::node::{CallError, MembershipConfig, MembershipEvent, Node, NodeConfig, PeerId};
use zfabric::RemoteError;

async fn start(
    name: &str,
    tp: Tp,
    dir: &tempfile::TempDir,
    seed: Option<&str>,
    service: Option<&str>,
) -> Node {
    let mut b = Node::builder(name).config(fast()).bind(endpoint(tp, dir));
    if let Some(s) = seed {
        b = b.seed(s);
    }
    if let Some(svc) = service {
        let me = name.to_string();
        b = b.serve(svc, move |req: zfabric::Request<u32>| {
            let me = me.clone();
            async move { Ok::<_, RemoteError>(format!("{me}:{}", req.body)) }
        });
    }
    b.start().await.unwrap()
}

async fn one_seed_finds_the_whole_fabric_and_anycast_spreads_the_load(tp: Tp) {
    let dir = tempfile::tempdir().unwrap();
    let seed = start("seed", tp, &dir, None, None).await;
    let seed_ep = seed.endpoints()[0].to_string();
    let a = start("a", tp, &dir, Some(&seed_ep), Some("echo")).await;
    let b = start("b", tp, &dir, Some(&seed_ep), Some("echo")).await;
    let c = start("c", tp, &dir, Some(&seed_ep), Some("echo")).await;
    // b and c only know the seed; they find each other through gossip.
    converge(&[&seed, &a, &b, &c]).await;

    let mut served = HashSet::new();
    for i in 0..30u32 {
        let r: String = seed
            .request("echo", &i, Duration::from_secs(5))
            .await
            .unwrap();
        let (who, n) = r.split_once(':').unwrap();
        assert_eq!(n, i.to_string());
        served.insert(who.to_string());
    }
    assert_eq!(served.len(), 3, "round-robin over every member: {served:?}");

    // Unicast to one named peer.
    let r: String = seed
        .request_peer(b.id(), "echo", &7u32, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(r, "b:7");
}
per_transport!(
    discovery_and_anycast,
    one_seed_finds_the_whole_fabric_and_anycast_spreads_the_load
);

async fn unknown_services_and_peers_are_typed_errors_at_once(tp: Tp) {
    let dir = tempfile::tempdir().unwrap();
    let a = start("a", tp, &dir, None, Some("echo")).await;
    let b = start("b", tp, &dir, Some(&a.endpoints()[0].to_string()), None).await;
    converge(&[&a, &b]).await;
    let r = b
        .request::<u32, String>("nope", &1, Duration::from_secs(5))
        .await;
    assert!(matches!(r, Err(CallError::NoSuchService(s)) if s == "nope"));
    let r = b
        .request_peer::<u32, String>(PeerId(12345), "echo", &1, Duration::from_secs(5))
        .await;
    assert!(matches!(r, Err(CallError::UnknownPeer(PeerId(12345)))));
    // A member asked for a service it does not serve answers with a typed
    // remote error.
    let r = a
        .request_peer::<u32, String>(b.id(), "echo", &1, Duration::from_secs(5))
        .await;
    match r {
        Err(CallError::Request(zfabric::RequestError::Remote(e))) => {
            assert_eq!(e.code, "no_such_service")
        }
        other => panic!("{other:?}"),
    }
}
per_transport!(
    typed_errors,
    unknown_services_and_peers_are_typed_errors_at_once
);

async fn a_client_node_calls_members_without_becoming_one(tp: Tp) {
    let dir = tempfile::tempdir().unwrap();
    let seed = start("seed", tp, &dir, None, None).await;
    let seed_ep = seed.endpoints()[0].to_string();
    let a = start("a", tp, &dir, Some(&seed_ep), Some("echo")).await;
    converge(&[&seed, &a]).await;
    let mut events = seed.events();
    let caller = Node::builder("caller")
        .client()
        .config(fast())
        .bind(endpoint(tp, &dir))
        .seed(seed_ep)
        .start()
        .await
        .unwrap();
    // The client learns the members from the seed's answer (so the seed
    // has read the client's hello by then) ...
    for _ in 0..400 {
        if caller.members().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(caller.members().len(), 2, "the client learns the members");
    for i in 0..5u32 {
        let r: String = caller
            .request("echo", &i, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(r, format!("a:{i}"));
    }
    // ... and neither the seed nor the member it called ever listed it.
    assert!(seed.members().iter().all(|m| m.id != caller.id()));
    assert!(a.members().iter().all(|m| m.id != caller.id()));
    while let Ok(ev) = events.try_recv() {
        assert!(
            !matches!(ev, MembershipEvent::Joined(id) | MembershipEvent::Rejoined(id) if id == caller.id()),
            "a client joined: {ev:?}"
        );
    }
    caller.shutdown(Duration::from_millis(200)).await;
}
per_transport!(
    client_node,
    a_client_node_calls_members_without_becoming_one
);

async fn a_member_that_dies_leaves_every_route(tp: Tp) {
    let dir = tempfile::tempdir().unwrap();
    let client = start("client", tp, &dir, None, None).await;
    let seed_ep = client.endpoints()[0].to_string();
    let a = start("a", tp, &dir, Some(&seed_ep), Some("echo")).await;
    let b = start("b", tp, &dir, Some(&seed_ep), Some("echo")).await;
    converge(&[&client, &a, &b]).await;
    let mut events = client.events();
    let dead = b.id();
    drop(b);
    // The client sees it go (bounded wait on the event, not on time).
    let gone = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Ok(MembershipEvent::Gone(id)) = events.recv().await {
                if id == dead {
                    return;
                }
            }
        }
    })
    .await;
    assert!(gone.is_ok(), "the dead member was never declared gone");
    // From then on every request goes to the survivor.
    for i in 0..10u32 {
        let r: String = client
            .request("echo", &i, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(r.starts_with("a:"), "{r}");
    }
    assert!(client.members().iter().all(|m| m.id != dead));
}
per_transport!(member_death, a_member_that_dies_leaves_every_route);

async fn a_member_that_leaves_is_dropped_at_once(tp: Tp) {
    // Expiry is a minute here: only the leave message can explain a quick
    // removal.
    let slow = NodeConfig {
        membership: MembershipConfig {
            heartbeat_interval: Duration::from_millis(50),
            suspect_after: Duration::from_secs(30),
            gone_after: Duration::from_secs(60),
            forget_after: Duration::from_secs(60),
        },
        ..NodeConfig::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let a = Node::builder("a")
        .config(slow.clone())
        .bind(endpoint(tp, &dir))
        .start()
        .await
        .unwrap();
    let b = Node::builder("b")
        .config(slow)
        .bind(endpoint(tp, &dir))
        .seed(a.endpoints()[0].to_string())
        .start()
        .await
        .unwrap();
    converge(&[&a, &b]).await;
    let mut events = a.events();
    let leaving = b.id();
    b.shutdown(Duration::from_secs(5)).await;
    let ev = tokio::time::timeout(Duration::from_secs(10), events.recv()).await;
    assert!(
        matches!(ev, Ok(Ok(MembershipEvent::Gone(id))) if id == leaving),
        "{ev:?}"
    );
    assert!(a.members().is_empty());
}
per_transport!(graceful_leave, a_member_that_leaves_is_dropped_at_once);

/// Waits (bounded) until `node` sees exactly `n` members in `group`.
async fn group_size(node: &Node, group: &str, n: usize) {
    for _ in 0..400 {
        if node
            .members()
            .iter()
            .filter(|m| m.groups.iter().any(|g| g == group))
            .count()
            == n
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("group {group} never had {n} members");
}

async fn multicast_reaches_every_member_and_reports_the_missing(tp: Tp) {
    let dir = tempfile::tempdir().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, u32)>();
    let sender = start("sender", tp, &dir, None, None).await;
    let seed_ep = sender.endpoints()[0].to_string();
    let mut members = Vec::new();
    for name in ["m1", "m2", "m3"] {
        let tx = tx.clone();
        let me = name.to_string();
        let n = Node::builder(name)
            .config(fast())
            .bind(endpoint(tp, &dir))
            .seed(seed_ep.clone())
            .group("audit", move |req: zfabric::Request<u32>| {
                let _ = tx.send((me.clone(), req.body));
                async { Ok::<_, RemoteError>(()) }
            })
            .start()
            .await
            .unwrap();
        members.push(n);
    }
    group_size(&sender, "audit", 3).await;

    let report = sender
        .multicast("audit", &1u32, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(report.delivered.len(), 3, "{report:?}");
    let mut got: Vec<String> = (0..3).map(|_| rx.try_recv().unwrap().0).collect();
    got.sort();
    assert_eq!(got, ["m1", "m2", "m3"]);

    // Leaving and joining at run time.
    members[0].leave_group("audit");
    group_size(&sender, "audit", 2).await;
    let report = sender
        .multicast("audit", &2u32, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(report.delivered.len(), 2);
    let tx2 = tx.clone();
    members[0].join("audit", move |req: zfabric::Request<u32>| {
        let _ = tx2.send(("m1-again".into(), req.body));
        async { Ok::<_, RemoteError>(()) }
    });
    group_size(&sender, "audit", 3).await;
    while rx.try_recv().is_ok() {}

    // A member that died (before it was declared gone) is reported missing.
    let dead = members.pop().unwrap();
    let dead_id = dead.id();
    drop(dead);
    let report = sender
        .multicast("audit", &3u32, Duration::from_millis(500))
        .await
        .unwrap();
    assert_eq!(report.delivered.len(), 2, "{report:?}");
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].0, dead_id);
}
per_transport!(
    multicast,
    multicast_reaches_every_member_and_reports_the_missing
);

async fn start_slow(
    name: &str,
    tp: Tp,
    dir: &tempfile::TempDir,
    seed: &str,
    delay: Duration,
) -> Node {
    let me = name.to_string();
    Node::builder(name)
        .config(fast())
        .bind(endpoint(tp, dir))
        .seed(seed)
        .serve("work", move |req: zfabric::Request<u32>| {
            let me = me.clone();
            async move {
                tokio::time::sleep(delay).await;
                Ok::<_, RemoteError>(format!("{me}:{}", req.body))
            }
        })
        .start()
        .await
        .unwrap()
}

async fn killing_a_member_mid_load_loses_no_idempotent_request(tp: Tp) {
    use std::sync::Arc;
    use zfabric::node::CallOptions;
    let dir = tempfile::tempdir().unwrap();
    let client = Arc::new(start("client", tp, &dir, None, None).await);
    let seed = client.endpoints()[0].to_string();
    let a = start_slow("a", tp, &dir, &seed, Duration::from_millis(300)).await;
    let b = start_slow("b", tp, &dir, &seed, Duration::from_millis(300)).await;
    converge(&[&client, &a, &b]).await;

    // On this current-thread runtime spawned tasks first run in spawn
    // order, so each group takes its round-robin turns in a row and is
    // spread over both members.
    let mut idem = Vec::new();
    for i in 0..10u32 {
        let c = client.clone();
        idem.push(tokio::spawn(async move {
            let opts = CallOptions::default()
                .timeout(Duration::from_secs(10))
                .idempotent();
            c.request_with::<u32, String>("work", &i, opts).await
        }));
    }
    let mut plain = Vec::new();
    for i in 0..10u32 {
        let c = client.clone();
        plain.push(tokio::spawn(async move {
            c.request::<u32, String>("work", &i, Duration::from_secs(10))
                .await
        }));
    }
    // Requests are in flight on both members (their handlers take 300 ms).
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(b);
    for (i, h) in idem.into_iter().enumerate() {
        let r = h
            .await
            .unwrap()
            .expect("an idempotent request survives a member's death");
        assert!(r.ends_with(&format!(":{i}")), "{r}");
    }
    let mut failed = 0;
    for h in plain {
        match h.await.unwrap() {
            Ok(_) => {}
            Err(CallError::Request(zfabric::RequestError::PeerGone)) => failed += 1,
            Err(e) => panic!("a non-idempotent failure must be typed PeerGone, got {e}"),
        }
    }
    assert!(failed > 0, "some plain requests were on the dead member");
}
mod anycast_retry {
    use super::*;
    #[tokio::test(flavor = "current_thread")]
    async fn inproc() {
        common::watchdog(killing_a_member_mid_load_loses_no_idempotent_request(
            Tp::Inproc,
        ))
        .await
    }
    #[tokio::test(flavor = "current_thread")]
    async fn ipc() {
        common::watchdog(killing_a_member_mid_load_loses_no_idempotent_request(
            Tp::Ipc,
        ))
        .await
    }
    #[tokio::test(flavor = "current_thread")]
    async fn tcp() {
        common::watchdog(killing_a_member_mid_load_loses_no_idempotent_request(
            Tp::Tcp,
        ))
        .await
    }
}

async fn least_outstanding_avoids_a_busy_member(tp: Tp) {
    use std::sync::Arc;
    use zfabric::node::CallOptions;
    let dir = tempfile::tempdir().unwrap();
    let client = Arc::new(start("client", tp, &dir, None, None).await);
    let seed = client.endpoints()[0].to_string();
    let slow = start_slow("slow", tp, &dir, &seed, Duration::from_secs(2)).await;
    let quick = start_slow("quick", tp, &dir, &seed, Duration::ZERO).await;
    converge(&[&client, &slow, &quick]).await;
    // Five requests held by the slow member...
    let mut held = Vec::new();
    for i in 0..5u32 {
        let (c, id) = (client.clone(), slow.id());
        held.push(tokio::spawn(async move {
            c.request_peer::<u32, String>(id, "work", &i, Duration::from_secs(10))
                .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // ...so every least-outstanding request goes to the quick one.
    for i in 0..6u32 {
        let opts = CallOptions::default().least_outstanding();
        let r: String = client.request_with("work", &i, opts).await.unwrap();
        assert!(r.starts_with("quick:"), "{r}");
    }
    for h in held {
        assert!(h.await.unwrap().unwrap().starts_with("slow:"));
    }
}
per_transport!(least_outstanding, least_outstanding_avoids_a_busy_member);

async fn publish_reaches_subscribers_on_every_node_by_prefix(tp: Tp) {
    let dir = tempfile::tempdir().unwrap();
    let publisher = start("pub", tp, &dir, None, None).await;
    let seed = publisher.endpoints()[0].to_string();
    let a = start("a", tp, &dir, Some(&seed), None).await;
    let b = start("b", tp, &dir, Some(&seed), None).await;
    converge(&[&publisher, &a, &b]).await;
    let mut sa = a.subscribe("prices.", 64);
    let mut sb = b.subscribe("prices.eu", 64);
    let b_news = b.subscribe("news", 64);
    // Wait (bounded) until the publisher knows both prefixes.
    for _ in 0..400 {
        let topics: usize = publisher.members().iter().map(|m| m.topics.len()).sum();
        if topics == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let n = publisher
        .publish("prices.eu.btc", &42u32, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(n, 2, "both matching subscriptions took it");
    let n = publisher
        .publish("prices.us.btc", &43u32, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(n, 1, "only a's prefix matches");
    let m = sa.recv().await.unwrap();
    assert_eq!(
        (m.topic.as_str(), m.decode::<u32>().unwrap()),
        ("prices.eu.btc", 42)
    );
    assert_eq!(sa.recv().await.unwrap().decode::<u32>().unwrap(), 43);
    assert_eq!(sb.recv().await.unwrap().decode::<u32>().unwrap(), 42);
    // Unsubscribing (dropping) reaches the publisher with the next hellos.
    drop(b_news);
    for _ in 0..400 {
        if publisher
            .publish("news.x", &1u32, Duration::from_secs(5))
            .await
            .unwrap()
            == 0
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the dropped subscription kept receiving");
}
per_transport!(
    fabric_pubsub,
    publish_reaches_subscribers_on_every_node_by_prefix
);

/// Wildcard patterns on fabric subscriptions: the publisher sends every
/// topic of the pattern's literal prefix, the subscriber keeps the ones
/// that match (`*` one token, `>` the rest); a malformed pattern is an
/// error.
async fn publish_reaches_wildcard_subscriptions_by_pattern(tp: Tp) {
    let dir = tempfile::tempdir().unwrap();
    let publisher = start("pub", tp, &dir, None, None).await;
    let seed = publisher.endpoints()[0].to_string();
    let a = start("a", tp, &dir, Some(&seed), None).await;
    converge(&[&publisher, &a]).await;
    assert!(a.subscribe_matching("orders.>.paid", 8).is_err());
    let mut paid = a.subscribe_matching("orders.*.paid", 64).unwrap();
    let mut eu = a.subscribe_matching("orders.eu.>", 64).unwrap();
    for _ in 0..400 {
        if publisher.members().iter().any(|m| !m.topics.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sent = [
        ("orders.eu.paid", 2),
        ("orders.us.paid", 1),
        ("orders.eu.new", 1),
        ("orders.us.x.paid", 0),
        ("orders.eu", 0),
    ];
    for (i, (topic, took)) in sent.iter().enumerate() {
        let n = publisher
            .publish(topic, &(i as u32), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(n, *took, "{topic}");
    }
    assert_eq!(paid.recv().await.unwrap().topic, "orders.eu.paid");
    assert_eq!(paid.recv().await.unwrap().topic, "orders.us.paid");
    assert_eq!(eu.recv().await.unwrap().topic, "orders.eu.paid");
    assert_eq!(eu.recv().await.unwrap().topic, "orders.eu.new");
}
per_transport!(wildcards, publish_reaches_wildcard_subscriptions_by_pattern);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_given_by_host_name_is_resolved() {
    common::watchdog(async {
        let dir = tempfile::tempdir().unwrap();
        let a = start("a", Tp::Tcp, &dir, None, Some("echo")).await;
        let zfabric::Endpoint::Tcp { port, .. } = a.endpoints()[0] else {
            unreachable!()
        };
        // "localhost" resolves to 127.0.0.1 (and maybe ::1, where nothing
        // listens: that address just never answers).
        let b = start(
            "b",
            Tp::Tcp,
            &dir,
            Some(&format!("tcp://localhost:{port}")),
            None,
        )
        .await;
        converge(&[&a, &b]).await;
        let r: String = b
            .request("echo", &5u32, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(r, "a:5");
    })
    .await
}

#[tokio::test]
async fn a_wildcard_bind_advertises_a_routable_address_and_an_explicit_advertise_wins() {
    common::watchdog(async {
        // Bound on 0.0.0.0: what peers are told is an address of this
        // host (never the wildcard), with the bound port, and it reaches
        // the node.
        let a = Node::builder("a")
            .config(fast())
            .bind("tcp://0.0.0.0:0")
            .serve("echo", |req: zfabric::Request<u32>| async move {
                Ok::<_, RemoteError>(format!("a:{}", req.body))
            })
            .start()
            .await
            .unwrap();
        let (
            zfabric::Endpoint::Tcp { host: bound, port },
            zfabric::Endpoint::Tcp {
                host,
                port: adv_port,
            },
        ) = (&a.bound_endpoints()[0], &a.endpoints()[0])
        else {
            unreachable!()
        };
        assert_eq!(bound, "0.0.0.0");
        assert_eq!(port, adv_port);
        let ip: std::net::IpAddr = host.parse().expect("an address");
        if ip.is_unspecified() {
            // No route and no resolvable host name: the node says so (a
            // warning) and advertises the wildcard; nothing else to check.
            eprintln!("SKIP: this host has no address to advertise");
            return;
        }
        assert!(!ip.is_loopback(), "{ip}");
        // An explicit advertise (a name, port 0: the bound port) is what
        // peers are told, and a peer seeded with it joins through it.
        let b = Node::builder("b")
            .config(fast())
            .bind("tcp://127.0.0.1:0")
            .advertise("tcp://localhost:0")
            .seed(a.endpoints()[0].to_string())
            .start()
            .await
            .unwrap();
        let zfabric::Endpoint::Tcp { port: b_port, .. } = b.bound_endpoints()[0] else {
            unreachable!()
        };
        assert_eq!(
            b.endpoints()[0].to_string(),
            format!("tcp://localhost:{b_port}")
        );
        converge(&[&a, &b]).await;
        let seen = a.members().into_iter().find(|m| m.name == "b").unwrap();
        assert_eq!(seen.endpoints, b.endpoints());
        let r: String = b
            .request("echo", &1u32, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(r, "a:1");
    })
    .await
}

#[tokio::test]
async fn seeds_that_do_not_resolve_or_do_not_answer_are_counted() {
    use zfabric::telemetry::SEED_FAILURES;
    common::watchdog(async {
        let (unresolved, unreachable) = (
            common::counter(SEED_FAILURES, "unresolved"),
            common::counter(SEED_FAILURES, "unreachable"),
        );
        // A port nothing listens on: bound, then closed.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let n = Node::builder("lonely")
            .config(fast())
            .bind("tcp://127.0.0.1:0")
            .seed("tcp://no-such-seed.invalid:7000")
            .seed(format!("tcp://127.0.0.1:{port}"))
            .start()
            .await
            .unwrap();
        for _ in 0..400 {
            if common::counter(SEED_FAILURES, "unresolved") > unresolved
                && common::counter(SEED_FAILURES, "unreachable") > unreachable
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(common::counter(SEED_FAILURES, "unresolved") > unresolved);
        assert!(common::counter(SEED_FAILURES, "unreachable") > unreachable);
        assert!(n.members().is_empty());
    })
    .await
}

/// A member whose connection broke is skipped for another member even by
/// a call that is not idempotent (nothing is sent to it), before it
/// expires and before its breaker opens. Found by the Compose test: a
/// killed replica failed 10 plain calls per caller until the breaker saw
/// enough of them.
#[tokio::test]
async fn a_member_whose_link_is_down_is_skipped_even_by_calls_that_are_not_idempotent() {
    common::watchdog(async {
        let serve = |name: &'static str| {
            Node::builder(name)
                .bind("tcp://127.0.0.1:0")
                .serve("svc", move |_: zfabric::Request<u32>| async move {
                    Ok::<_, RemoteError>(name.to_string())
                })
        };
        // Default timings: the dead member stays a member for 2.5 s.
        let a = serve("a").start().await.unwrap();
        let seed = a.endpoints()[0].to_string();
        let b = serve("b").seed(seed.clone()).start().await.unwrap();
        let c = Node::builder("c")
            .bind("tcp://127.0.0.1:0")
            .seed(seed)
            .start()
            .await
            .unwrap();
        converge(&[&a, &b, &c]).await;
        // Both members answer (links made to each).
        let mut seen = HashSet::new();
        for _ in 0..20 {
            let r: String = c
                .request("svc", &1u32, Duration::from_secs(5))
                .await
                .unwrap();
            seen.insert(r);
        }
        assert_eq!(seen.len(), 2, "{seen:?}");
        let b_id = b.id();
        drop(b); // its sockets close; it sends no leave
                 // Until c's link to b is known to be down: a call to b by name
                 // then fails at once, unsent.
        let mut down = false;
        for _ in 0..300 {
            match c
                .request_peer::<_, String>(b_id, "svc", &1u32, Duration::from_millis(200))
                .await
            {
                Err(CallError::Request(zfabric::RequestError::PeerGone)) => {
                    down = true;
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
        assert!(down, "c never saw its link to b go down");
        assert!(
            c.members().iter().any(|m| m.id == b_id),
            "b expired already"
        );
        for i in 0..20 {
            let r: Result<String, _> = c.request("svc", &1u32, Duration::from_secs(5)).await;
            assert_eq!(r.as_deref().ok(), Some("a"), "call {i}: {r:?}");
        }
    })
    .await
}

#[tokio::test]
async fn a_malformed_seed_is_refused_at_start() {
    let r = Node::builder("x")
        .bind("inproc://x-bad-seed")
        .seed("tcp://no-port")
        .start()
        .await;
    assert!(matches!(r, Err(zfabric::OpenError::Endpoint(_))), "{r:?}");
}

/// Heartbeats and expiry on tokio's paused clock: the timings are exact.
#[tokio::test(start_paused = true)]
async fn failure_detection_follows_the_configured_timings_and_a_restarted_member_rejoins() {
    let cfg = MembershipConfig::default();
    let serve = |name: &'static str, seed: Option<&'static str>| async move {
        let mut b = Node::builder(name)
            .bind(format!("inproc://paused-{name}"))
            .serve("echo", move |req: zfabric::Request<u32>| async move {
                Ok::<_, RemoteError>(format!("{name}:{}", req.body))
            });
        if let Some(s) = seed {
            b = b.seed(s);
        }
        b.start().await.unwrap()
    };
    let a = serve("a", None).await;
    let b = serve("b", Some("inproc://paused-a")).await;
    converge(&[&a, &b]).await;
    // Run a while in virtual time: heartbeats keep b alive.
    tokio::time::sleep(cfg.gone_after * 4).await;
    assert_eq!(a.peer_state(b.id()), Some(zfabric::node::PeerState::Alive));

    let mut events = a.events();
    let dead = b.id();
    drop(b);
    let killed = tokio::time::Instant::now();
    let mut suspected_after = None;
    let gone_after = loop {
        match events.recv().await.unwrap() {
            MembershipEvent::Suspected(id) if id == dead => {
                suspected_after = Some(killed.elapsed())
            }
            MembershipEvent::Gone(id) if id == dead => break killed.elapsed(),
            _ => {}
        }
    };
    // Its last hello is at most one heartbeat old when it dies, and expiry
    // is checked every half heartbeat.
    let early = cfg.gone_after - cfg.heartbeat_interval;
    let late = cfg.gone_after + cfg.heartbeat_interval / 2;
    assert!(
        gone_after >= early && gone_after <= late,
        "gone after {gone_after:?}"
    );
    let s = suspected_after.expect("suspect before gone");
    assert!(
        s >= cfg.suspect_after - cfg.heartbeat_interval
            && s <= cfg.suspect_after + cfg.heartbeat_interval / 2,
        "{s:?}"
    );

    // A restarted member (same endpoint, new process) rejoins and gets traffic.
    let b2 = serve("b", Some("inproc://paused-a")).await;
    converge(&[&a, &b2]).await;
    let r: String = a
        .request_peer(b2.id(), "echo", &1u32, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(r, "b:1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_without_seeds_find_each_other_by_beacon() {
    use zfabric::node::BeaconConfig;
    common::watchdog(async {
        let sa = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let sb = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let (pa, pb) = (sa.local_addr().unwrap(), sb.local_addr().unwrap());
        let beacon = |s, target| {
            BeaconConfig::from_socket(s, vec![target]).interval(Duration::from_millis(50))
        };
        let a = Node::builder("a")
            .config(fast())
            .bind("tcp://127.0.0.1:0")
            .beacon(beacon(sa, pb))
            .serve("echo", |req: zfabric::Request<u32>| async move {
                Ok::<_, RemoteError>(format!("a:{}", req.body))
            })
            .start()
            .await
            .unwrap();
        // Junk on the beacon port is dropped and changes nothing.
        let junk = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        junk.send_to(b"not a beacon", pa).unwrap();
        let b = Node::builder("b")
            .config(fast())
            .bind("tcp://127.0.0.1:0")
            .beacon(beacon(sb, pa))
            .start()
            .await
            .unwrap();
        junk.send_to(b"ZFB1\xc1", pb).unwrap();
        converge(&[&a, &b]).await;
        let r: String = b
            .request("echo", &3u32, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(r, "a:3");
    })
    .await
}

/// With a fabric key, beacons are authenticated: two nodes holding the
/// key find each other, and what goes on the wire is a keyed beacon
/// (`ZFB2`), not the open one. (Refusals of unkeyed, tampered, stale and
/// other-key beacons are unit-tested in `node::beacon`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_with_a_fabric_key_find_each_other_by_authenticated_beacon() {
    use zfabric::node::{BeaconConfig, BeaconKey};
    common::watchdog(async {
        let key = BeaconKey::new(b"a fabric key of thirty-two bytes").unwrap();
        let sa = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let sb = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tap = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let (pa, pb, pt) = (
            sa.local_addr().unwrap(),
            sb.local_addr().unwrap(),
            tap.local_addr().unwrap(),
        );
        let beacon = |s, targets| {
            BeaconConfig::from_socket(s, targets)
                .interval(Duration::from_millis(50))
                .key(key.clone())
        };
        let a = Node::builder("a")
            .config(fast())
            .bind("tcp://127.0.0.1:0")
            .beacon(beacon(sa, vec![pb, pt]))
            .serve("echo", |req: zfabric::Request<u32>| async move {
                Ok::<_, RemoteError>(format!("a:{}", req.body))
            })
            .start()
            .await
            .unwrap();
        let b = Node::builder("b")
            .config(fast())
            .bind("tcp://127.0.0.1:0")
            .beacon(beacon(sb, vec![pa]))
            .start()
            .await
            .unwrap();
        converge(&[&a, &b]).await;
        let r: String = b
            .request("echo", &4u32, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(r, "a:4");
        let mut buf = [0u8; 600];
        tap.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let (n, _) = tap.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..4], b"ZFB2", "a keyed beacon on the wire");
        assert!(n > 4 + 8 + 32);
    })
    .await
}

async fn shutdown_finishes_the_requests_in_progress(tp: Tp) {
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let a = Arc::new(start("a", tp, &dir, None, None).await);
    let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel::<()>();
    let b = Node::builder("b")
        .config(fast())
        .bind(endpoint(tp, &dir))
        .seed(a.endpoints()[0].to_string())
        .serve("work", move |req: zfabric::Request<u32>| {
            let _ = started_tx.send(());
            async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                Ok::<_, RemoteError>(format!("b:{}", req.body))
            }
        })
        .start()
        .await
        .unwrap();
    converge(&[&a, &b]).await;
    let (caller, id) = (a.clone(), b.id());
    let in_progress = tokio::spawn(async move {
        caller
            .request_peer::<u32, String>(id, "work", &9, Duration::from_secs(10))
            .await
    });
    // Shut b down while its handler is running.
    started.recv().await.unwrap();
    b.shutdown(Duration::from_secs(5)).await;
    assert_eq!(
        in_progress.await.unwrap().unwrap(),
        "b:9",
        "the request in progress was answered"
    );
    assert!(a.members().is_empty(), "and b has left");
}
per_transport!(graceful_drain, shutdown_finishes_the_requests_in_progress);

async fn unicast_reaches_one_named_peer_with_the_callers_identity(tp: Tp) {
    let dir = tempfile::tempdir().unwrap();
    let a = start("a", tp, &dir, None, None).await;
    let b = start("b", tp, &dir, Some(&a.endpoints()[0].to_string()), None).await;
    converge(&[&a, &b]).await;
    // No inbox yet: a typed refusal, not a hang.
    match a.unicast(b.id(), &"early", Duration::from_secs(5)).await {
        Err(CallError::Request(zfabric::RequestError::Remote(e))) => assert_eq!(e.code, "no_inbox"),
        other => panic!("{other:?}"),
    }
    let mut inbox = b.inbox(8);
    a.unicast(b.id(), &"hello b", Duration::from_secs(5))
        .await
        .unwrap();
    let m = inbox.recv().await.unwrap();
    assert_eq!(m.decode::<String>().unwrap(), "hello b");
    assert_eq!(m.from, a.id(), "the receiver knows which node sent it");
    let r = a.unicast(PeerId(999), &"x", Duration::from_secs(5)).await;
    assert!(matches!(r, Err(CallError::UnknownPeer(PeerId(999)))));
}
per_transport!(
    unicast,
    unicast_reaches_one_named_peer_with_the_callers_identity
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_can_listen_on_inproc_and_tcp_at_once() {
    common::watchdog(async {
        let a = Node::builder("a")
            .config(fast())
            .bind("inproc://mixed-a")
            .bind("tcp://127.0.0.1:0")
            .serve("echo", |req: zfabric::Request<u32>| async move {
                Ok::<_, RemoteError>(format!("a:{}", req.body))
            })
            .start()
            .await
            .unwrap();
        assert_eq!(a.endpoints().len(), 2);
        let tcp = a
            .endpoints()
            .iter()
            .find(|e| !e.is_inproc())
            .unwrap()
            .to_string();
        // One peer joins over tcp, one over inproc.
        let b = start(
            "b",
            Tp::Tcp,
            &tempfile::tempdir().unwrap(),
            Some(&tcp),
            None,
        )
        .await;
        let c = Node::builder("c")
            .config(fast())
            .bind("inproc://mixed-c")
            .seed("inproc://mixed-a")
            .start()
            .await
            .unwrap();
        converge(&[&a, &b, &c]).await;
        for n in [&b, &c] {
            let r: String = n
                .request("echo", &1u32, Duration::from_secs(5))
                .await
                .unwrap();
            assert_eq!(r, "a:1");
        }
    })
    .await
}

/// Every type a public node method returns can be named from
/// `zfabric::node` (so users can store and pass them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_a_node_method_returns_can_be_named() {
    use zfabric::node::{BreakerEvent, Direct, NodeInbox, NodeSubscription, Published};
    common::watchdog(async {
        let dir = tempfile::tempdir().unwrap();
        let node = start("named", Tp::Inproc, &dir, None, None).await;
        let mut inbox: NodeInbox = node.inbox(1);
        let _sub: NodeSubscription = node.subscribe("t.", 1);
        let log: Vec<BreakerEvent> = node.breaker_log();
        assert!(log.is_empty());
        let e = node.unicast(node.id(), &1u32, Duration::from_secs(5)).await;
        assert!(
            matches!(e, Err(CallError::UnknownPeer(_))),
            "a node is not its own member"
        );
        let none: Option<Direct> = tokio::time::timeout(Duration::ZERO, inbox.recv())
            .await
            .ok()
            .flatten();
        assert!(none.is_none());
        let _: Option<Published> = None;
        node.shutdown(Duration::from_secs(1)).await;
    })
    .await
}

/// A node call travels as header fields (op, service, call id, priority,
/// hops) and the caller's body bytes, which reach the handler and come
/// back unchanged, whatever their size (up to 64 KiB here) and whether or
/// not they are MessagePack.
async fn a_call_carries_its_fields_in_the_header_and_the_body_unchanged(tp: Tp) {
    use bytes::Bytes;
    use zfabric::node::{CallOptions, ServeOptions};
    use zfabric::wire::NodeOp;

    let dir = tempfile::tempdir().unwrap();
    let server = Node::builder("raw-server")
        .config(fast())
        .bind(endpoint(tp, &dir))
        .serve_raw(
            "raw.echo",
            ServeOptions::new(),
            |req: zfabric::Request<Bytes>| async move {
                let h = &req.header;
                // Echo the fields back ahead of the body, to check them
                // on the caller's side.
                let mut out = format!(
                    "{:?}|{:?}|{}|{}|{}|",
                    h.op,
                    h.service.as_deref(),
                    h.call_id,
                    h.priority,
                    h.hops
                )
                .into_bytes();
                out.extend_from_slice(&req.body);
                Ok::<_, RemoteError>(Bytes::from(out))
            },
        )
        .start()
        .await
        .unwrap();
    let seed = server.endpoints()[0].to_string();
    let caller = start("raw-caller", tp, &dir, Some(&seed), None).await;
    converge(&[&server, &caller]).await;

    for size in [0usize, 64, 1024, 16 * 1024, 64 * 1024] {
        // Not MessagePack: the node never looks inside.
        let body: Bytes = (0..size).map(|i| (i * 7 + 3) as u8).collect();
        let opts = CallOptions::default()
            .timeout(Duration::from_secs(5))
            .priority(7)
            .call_id(0xfeed_0000 + size as u64);
        let reply = caller
            .request_raw("raw.echo", body.clone(), opts)
            .await
            .unwrap();
        let fields = format!(
            "{:?}|{:?}|{}|7|1|",
            Some(NodeOp::Call),
            Some("raw.echo"),
            0xfeed_0000 + size as u64
        );
        assert_eq!(&reply[..fields.len()], fields.as_bytes(), "size {size}");
        assert_eq!(&reply[fields.len()..], &body[..], "size {size}");
    }
    caller.shutdown(Duration::from_secs(1)).await;
    server.shutdown(Duration::from_secs(1)).await;
}
per_transport!(
    raw_call_fields,
    a_call_carries_its_fields_in_the_header_and_the_body_unchanged
);

/// Within a process the body is never copied: a call to the node's own
/// service and one over inproc hand the handler the caller's buffer, and
/// the handler's reply comes back as that same buffer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn within_a_process_a_call_body_is_the_callers_buffer() {
    use bytes::Bytes;
    use zfabric::node::{CallOptions, ServeOptions};
    common::watchdog(async {
        let dir = tempfile::tempdir().unwrap();
        let serve = |name: &str| {
            Node::builder(name)
                .config(fast())
                .bind(endpoint(Tp::Inproc, &dir))
                .serve_raw(
                    "same",
                    ServeOptions::new(),
                    |req: zfabric::Request<Bytes>| async move { Ok::<_, RemoteError>(req.body) },
                )
        };
        let server = serve("server").start().await.unwrap();
        let seed = server.endpoints()[0].to_string();
        let caller = serve("caller").seed(seed).start().await.unwrap();
        converge(&[&server, &caller]).await;
        let body = Bytes::from(vec![9u8; 16 * 1024]);
        let opts = || CallOptions::default().timeout(Duration::from_secs(5));
        // Its own service: no socket at all.
        let own = caller
            .request_peer_raw(caller.id(), "same", body.clone(), opts())
            .await
            .unwrap();
        assert_eq!(own.as_ptr(), body.as_ptr(), "a local call copies nothing");
        // Another node over inproc.
        let other = caller
            .request_peer_raw(server.id(), "same", body.clone(), opts())
            .await
            .unwrap();
        assert_eq!(
            other.as_ptr(),
            body.as_ptr(),
            "an inproc call copies nothing"
        );
        caller.shutdown(Duration::from_secs(1)).await;
        server.shutdown(Duration::from_secs(1)).await;
    })
    .await
}
