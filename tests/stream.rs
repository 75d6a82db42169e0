//! Durable streams through real nodes: replay, the live tail, committed
//! positions across consumer restarts, consumer groups sharing and
//! handing over partitions, a host restarted under its consumers, remote
//! appends. inproc and tcp.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{converge, endpoint, fast, watchdog, Tp};
use parking_lot::Mutex;
use zfabric::node::{Node, NodeBuilder};
use zfabric::stream::client::Target;
use zfabric::stream::{
    consumer, ConsumerConfig, ConsumerHandle, FsyncPolicy, LogConfig, NewRecord, OffsetStore,
    StartFrom, Stream, StreamClient, StreamConfig, StreamHost,
};

fn builder(name: &str, tp: Tp, dir: &tempfile::TempDir, seed: Option<&Node>) -> NodeBuilder {
    let mut b = Node::builder(name).config(fast()).bind(endpoint(tp, dir));
    if let Some(s) = seed {
        b = b.seed(s.endpoints()[0].to_string());
    }
    b
}

/// A stream `name` with `partitions`, opened in `dir` and hosted on a
/// new node `producer`.
async fn hosted(tp: Tp, dir: &tempfile::TempDir, name: &str, partitions: u32) -> (Stream, Node) {
    let (stream, _) = Stream::open(&dir.path().join(name), name, config(partitions)).unwrap();
    let host = StreamHost::new(stream.clone(), Default::default()).unwrap();
    let producer = host
        .serve_on(builder("producer", tp, dir, None))
        .start()
        .await
        .unwrap();
    (stream, producer)
}

/// A plain node joined through `seed`.
async fn joined(name: &str, tp: Tp, dir: &tempfile::TempDir, seed: &Node) -> Node {
    builder(name, tp, dir, Some(seed)).start().await.unwrap()
}

fn config(partitions: u32) -> StreamConfig {
    StreamConfig {
        partitions,
        log: LogConfig {
            fsync: FsyncPolicy::Os,
            ..LogConfig::default()
        },
    }
}

/// What handlers saw: `(partition, offset)` → times, and bodies in order.
#[derive(Default, Clone)]
struct Seen(Arc<Mutex<HashMap<(u32, u64), u32>>>);

impl Seen {
    fn handler(
        &self,
    ) -> impl Fn(zfabric::stream::StreamRecord) -> std::future::Ready<Result<(), zfabric::RemoteError>>
           + Send
           + Sync
           + 'static {
        let seen = self.0.clone();
        move |r| {
            *seen.lock().entry((r.partition, r.offset)).or_default() += 1;
            std::future::ready(Ok(()))
        }
    }
    fn distinct(&self) -> usize {
        self.0.lock().len()
    }
    fn twice(&self) -> usize {
        self.0.lock().values().filter(|&&n| n > 1).count()
    }
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..1500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not reached: {what}");
}

async fn append(stream: &Stream, p: u32, n: u32, tag: &str) {
    for i in 0..n {
        stream
            .append(
                p,
                NewRecord {
                    id: u64::from(i) + 1,
                    body: Bytes::from(format!("{tag}-{i}")),
                    ..NewRecord::default()
                },
            )
            .await
            .unwrap();
    }
}

async fn a_consumer_replays_follows_the_tail_and_resumes_where_it_committed(tp: Tp) {
    let dir = tempfile::tempdir().unwrap();
    let (stream, producer) = hosted(tp, &dir, "orders", 2).await;
    append(&stream, 0, 30, "a").await;
    append(&stream, 1, 20, "b").await;
    let c1 = joined("consumer", tp, &dir, &producer).await;
    converge(&[&producer, &c1]).await;
    let store = OffsetStore::open(&dir.path().join("consumer.redb")).unwrap();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let b = bodies.clone();
    let handle = consumer("orders")
        .offsets(store.clone(), "billing")
        .run(&c1, move |r| {
            if r.partition == 0 {
                b.lock().push(r.body.clone());
            }
            std::future::ready(Ok(()))
        })
        .unwrap();
    until("replayed", || handle.stats().processed == 50).await;
    // The live tail: appended after the consumer caught up.
    append(&stream, 0, 10, "c").await;
    until("followed the tail", || handle.stats().processed == 60).await;
    let stats = handle.stop().await;
    assert_eq!(stats.positions.get(&0), Some(&40));
    assert_eq!(stats.positions.get(&1), Some(&20));
    let got = bodies.lock().clone();
    let want: Vec<Bytes> = (0..30)
        .map(|i| format!("a-{i}"))
        .chain((0..10).map(|i| format!("c-{i}")))
        .map(Bytes::from)
        .collect();
    assert_eq!(got, want, "partition 0 in offset order, each once");
    // Restarted: only what came since its last commit.
    append(&stream, 1, 5, "d").await;
    let seen = Seen::default();
    let handle = consumer("orders")
        .offsets(store, "billing")
        .run(&c1, seen.handler())
        .unwrap();
    until("resumed", || handle.stats().processed == 5).await;
    let stats = handle.stop().await;
    assert_eq!(stats.processed, 5);
    assert!(seen
        .0
        .lock()
        .keys()
        .all(|&(p, o)| p == 1 && (20..25).contains(&o)));
    c1.shutdown(Duration::from_secs(1)).await;
    producer.shutdown(Duration::from_secs(1)).await;
}

async fn start_positions_are_earliest_latest_an_offset_or_a_time(tp: Tp) {
    let dir = tempfile::tempdir().unwrap();
    let (stream, _) = Stream::open(&dir.path().join("s"), "ticks", config(1)).unwrap();
    for i in 0..10u64 {
        stream
            .append(
                0,
                NewRecord {
                    id: i + 1,
                    timestamp_ms: Some(1_000 + i * 100),
                    body: Bytes::from(vec![i as u8]),
                    ..NewRecord::default()
                },
            )
            .await
            .unwrap();
    }
    let host = StreamHost::new(stream.clone(), Default::default()).unwrap();
    let producer = host
        .serve_on(builder("producer", tp, &dir, None))
        .start()
        .await
        .unwrap();
    let c = joined("c", tp, &dir, &producer).await;
    converge(&[&producer, &c]).await;
    for (from, first) in [
        (StartFrom::Earliest, 0u64),
        (StartFrom::Offset(7), 7),
        (StartFrom::Time(1_450), 5),
        (StartFrom::Latest, 10),
    ] {
        let seen = Seen::default();
        let h = consumer("ticks")
            .from(from)
            .run(&c, seen.handler())
            .unwrap();
        until("positioned", || h.stats().positions.contains_key(&0)).await;
        until("consumed", || h.stats().positions.get(&0) == Some(&10)).await;
        let stats = h.stop().await;
        assert_eq!(stats.processed, 10 - first, "{from:?}");
        assert_eq!(
            seen.0.lock().keys().map(|k| k.1).min(),
            (first < 10).then_some(first)
        );
    }
    c.shutdown(Duration::from_secs(1)).await;
    producer.shutdown(Duration::from_secs(1)).await;
}

async fn group(node: &Node, seen: &Seen) -> ConsumerHandle {
    consumer("events")
        .group("billing")
        .config(ConsumerConfig {
            rebalance: Duration::from_millis(50),
            poll: Duration::from_millis(100),
            ..ConsumerConfig::default()
        })
        .run(node, seen.handler())
        .unwrap()
}

async fn a_group_shares_partitions_and_hands_them_over_without_processing_twice(tp: Tp) {
    let dir = tempfile::tempdir().unwrap();
    let (stream, producer) = hosted(tp, &dir, "events", 8).await;
    let a = joined("a", tp, &dir, &producer).await;
    let b = joined("b", tp, &dir, &producer).await;
    converge(&[&producer, &a, &b]).await;
    let seen = Seen::default();
    let ha = group(&a, &seen).await;
    let hb = group(&b, &seen).await;
    // Both own some once each sees the other in the group.
    until("shared", || {
        let (x, y) = (ha.stats().owned, hb.stats().owned);
        !x.is_empty() && !y.is_empty() && x.len() + y.len() == 8
    })
    .await;
    for p in 0..8 {
        append(&stream, p, 25, "e").await;
    }
    until("all processed", || seen.distinct() == 200).await;
    // b leaves gracefully: a takes over its partitions at b's commits.
    let sb = hb.stop().await;
    b.shutdown(Duration::from_secs(1)).await;
    until("a owns all", || ha.stats().owned.len() == 8).await;
    for p in 0..8 {
        append(&stream, p, 5, "f").await;
    }
    until("all processed again", || seen.distinct() == 240).await;
    // A newcomer takes some over.
    let c = joined("c", tp, &dir, &producer).await;
    converge(&[&producer, &a, &c]).await;
    let hc = group(&c, &seen).await;
    until("rebalanced", || !hc.stats().owned.is_empty()).await;
    until("a gave some up", || {
        ha.stats().owned.len() + hc.stats().owned.len() == 8 && ha.stats().owned.len() < 8
    })
    .await;
    for p in 0..8 {
        append(&stream, p, 5, "g").await;
    }
    until("all processed a third time", || seen.distinct() == 280).await;
    let (sa, sc) = (ha.stop().await, hc.stop().await);
    assert_eq!(seen.twice(), 0, "a record was processed twice");
    assert_eq!(sa.processed + sb.processed + sc.processed, 280);
    for n in [a, c, producer] {
        n.shutdown(Duration::from_secs(1)).await;
    }
}

async fn consumers_ride_out_a_restart_of_the_host(tp: Tp) {
    let dir = tempfile::tempdir().unwrap();
    let sdir = dir.path().join("events");
    let (stream, _) = Stream::open(&sdir, "events", config(2)).unwrap();
    let host = StreamHost::new(stream.clone(), Default::default()).unwrap();
    let producer = host
        .serve_on(builder("producer", tp, &dir, None))
        .start()
        .await
        .unwrap();
    let seed = producer.endpoints()[0].to_string();
    let a = joined("a", tp, &dir, &producer).await;
    converge(&[&producer, &a]).await;
    let seen = Seen::default();
    let solo = Seen::default();
    let ha = group(&a, &seen).await;
    let hs = consumer("events").run(&a, solo.handler()).unwrap();
    append(&stream, 0, 10, "x").await;
    append(&stream, 1, 10, "x").await;
    until("processed", || {
        seen.distinct() == 20 && solo.distinct() == 20
    })
    .await;
    // The host goes away and comes back on a new node with the same log.
    producer.shutdown(Duration::from_secs(1)).await;
    drop(host);
    stream.close().unwrap();
    drop(stream);
    let (stream, _) = Stream::open(&sdir, "events", config(2)).unwrap();
    append(&stream, 0, 10, "y").await;
    let host = StreamHost::new(stream.clone(), Default::default()).unwrap();
    let mut b = host.serve_on(
        Node::builder("producer-2")
            .config(fast())
            .bind(endpoint(tp, &dir)),
    );
    if tp != Tp::Inproc {
        b = b.seed(a.endpoints()[0].to_string());
    } else {
        let _ = &seed;
        b = b.seed(a.endpoints()[0].to_string());
    }
    let producer = b.start().await.unwrap();
    append(&stream, 1, 10, "y").await;
    until("processed after the restart", || {
        seen.distinct() == 40 && solo.distinct() == 40
    })
    .await;
    ha.stop().await;
    hs.stop().await;
    assert_eq!(seen.twice(), 0);
    assert_eq!(solo.twice(), 0);
    a.shutdown(Duration::from_secs(1)).await;
    producer.shutdown(Duration::from_secs(1)).await;
}

async fn records_appended_through_the_service_are_read_back(tp: Tp) {
    let dir = tempfile::tempdir().unwrap();
    let (stream, producer) = hosted(tp, &dir, "audit", 4).await;
    let c = joined("c", tp, &dir, &producer).await;
    converge(&[&producer, &c]).await;
    let client = StreamClient::new(&c, "audit", Duration::from_secs(2));
    let a = client
        .append(
            Target::Key(b"customer-7".to_vec()),
            vec![Bytes::from_static(b"one"), Bytes::from_static(b"two")],
        )
        .await
        .unwrap();
    assert_eq!((a.first, a.count), (0, 2));
    assert_eq!(a.partition, stream.partition_for_key(b"customer-7"));
    let recs = client.fetch(a.partition, 0, 10).await.unwrap();
    assert_eq!(
        recs.iter().map(|r| r.body.as_ref()).collect::<Vec<_>>(),
        [b"one".as_ref(), b"two"]
    );
    assert!(recs.iter().all(|r| r.id != 0));
    let info = client.info().await.unwrap();
    assert_eq!(info.log_id, stream.log_id());
    assert_eq!(info.partitions.len(), 4);
    assert!(matches!(
        client
            .append(Target::Partition(9), vec![Bytes::new()])
            .await,
        Err(zfabric::stream::client::ClientError::NoPartition { partitions: 4, .. })
    ));
    assert!(matches!(
        client.fetch(0, 99, 1).await,
        Err(zfabric::stream::client::ClientError::OutOfRange { .. })
    ));
    c.shutdown(Duration::from_secs(1)).await;
    producer.shutdown(Duration::from_secs(1)).await;
}

macro_rules! both {
    ($($name:ident),*) => {
        mod inproc { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::watchdog(super::$name(super::Tp::Inproc)).await } )* }
        mod tcp { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::watchdog(super::$name(super::Tp::Tcp)).await } )* }
    };
}

both!(
    a_consumer_replays_follows_the_tail_and_resumes_where_it_committed,
    start_positions_are_earliest_latest_an_offset_or_a_time,
    a_group_shares_partitions_and_hands_them_over_without_processing_twice,
    consumers_ride_out_a_restart_of_the_host,
    records_appended_through_the_service_are_read_back
);

mod durable_events {
    use super::*;
    use zfabric::resilience::DedupConfig;
    use zfabric::topology::events::{emit, EmitError, Event, EventDelivery};
    use zfabric::topology::outbox::{Outbox, OutboxConfig};

    fn outbox_config(settle: Duration) -> OutboxConfig {
        OutboxConfig {
            settle,
            ..OutboxConfig::default()
        }
    }

    async fn durable_events_wait_in_the_outbox_across_a_restart_of_the_emitter(tp: Tp) {
        let dir = tempfile::tempdir().unwrap();
        let odir = dir.path().join("outbox");
        // The emitter holds events while no group consumes them.
        let (outbox, _) = Outbox::open(&odir, outbox_config(Duration::from_secs(60))).unwrap();
        let emitter = outbox
            .relay_on(builder("orders", tp, &dir, None))
            .start()
            .await
            .unwrap();
        for i in 0..10u32 {
            let r = emit(&emitter, "order.created", &i, EventDelivery::durable())
                .await
                .unwrap();
            assert_eq!(r.outbox, Some(u64::from(i)));
        }
        assert_eq!(outbox.pending(), 10);
        emitter.shutdown(Duration::from_secs(1)).await;
        outbox.close().unwrap();
        drop(outbox);
        // A consumer group appears; the emitter comes back on the same
        // directory and relays what it had kept.
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let billing = builder("billing", tp, &dir, None)
            .consume(
                "billing",
                "order.",
                DedupConfig::default(),
                move |e: Event<u32>| {
                    s.lock().push(e.body);
                    async { Ok(()) }
                },
            )
            .start()
            .await
            .unwrap();
        let (outbox, _) = Outbox::open(&odir, outbox_config(Duration::from_millis(300))).unwrap();
        assert_eq!(outbox.pending(), 10);
        let emitter = outbox
            .relay_on(builder("orders-2", tp, &dir, Some(&billing)))
            .start()
            .await
            .unwrap();
        until("relayed", || outbox.pending() == 0).await;
        let mut got = seen.lock().clone();
        got.sort_unstable();
        assert_eq!(got, (0..10).collect::<Vec<_>>());
        // A node without an outbox refuses durable events plainly.
        assert!(matches!(
            emit(&billing, "order.created", &1u32, EventDelivery::durable()).await,
            Err(EmitError::NoOutbox)
        ));
        emitter.shutdown(Duration::from_secs(1)).await;
        billing.shutdown(Duration::from_secs(1)).await;
    }

    fn billing(
        tp: Tp,
        dir: &tempfile::TempDir,
        name: &str,
        seed: &Node,
        seen: &Arc<Mutex<Vec<u32>>>,
    ) -> NodeBuilder {
        let s = seen.clone();
        builder(name, tp, dir, Some(seed)).consume(
            "billing",
            "order.",
            DedupConfig::default(),
            move |e: Event<u32>| {
                s.lock().push(e.body);
                async { Ok(()) }
            },
        )
    }

    async fn events_for_a_group_that_is_away_wait_in_the_outbox_until_it_is_back(tp: Tp) {
        let dir = tempfile::tempdir().unwrap();
        let (outbox, _) = Outbox::open(
            &dir.path().join("outbox"),
            outbox_config(Duration::from_millis(100)),
        )
        .unwrap();
        let emitter = outbox
            .relay_on(builder("orders", tp, &dir, None))
            .start()
            .await
            .unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let b1 = billing(tp, &dir, "billing-1", &emitter, &seen)
            .start()
            .await
            .unwrap();
        converge(&[&emitter, &b1]).await;
        until("the group is known", || {
            emitter.serving("@ev/billing/order.").len() == 1
        })
        .await;
        emit(&emitter, "order.created", &0u32, EventDelivery::durable())
            .await
            .unwrap();
        until("delivered", || outbox.pending() == 0).await;
        // The group goes away; what is emitted meanwhile stays in the outbox.
        b1.shutdown(Duration::from_secs(1)).await;
        until("the group is gone", || {
            emitter.serving("@ev/billing/order.").is_empty()
        })
        .await;
        for i in 1..=10u32 {
            emit(&emitter, "order.created", &i, EventDelivery::durable())
                .await
                .unwrap();
        }
        // Several relay rounds pass without the group: nothing is dropped.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(outbox.pending(), 10);
        // The group is back (another member): it gets every one.
        let _b2 = billing(tp, &dir, "billing-2", &emitter, &seen)
            .start()
            .await
            .unwrap();
        until("relayed after the group came back", || {
            outbox.pending() == 0
        })
        .await;
        let mut got = seen.lock().clone();
        got.sort_unstable();
        got.dedup();
        assert_eq!(got, (0..=10).collect::<Vec<_>>());
        emitter.shutdown(Duration::from_secs(1)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn away_inproc() {
        watchdog(events_for_a_group_that_is_away_wait_in_the_outbox_until_it_is_back(Tp::Inproc))
            .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn away_tcp() {
        watchdog(events_for_a_group_that_is_away_wait_in_the_outbox_until_it_is_back(Tp::Tcp)).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn inproc() {
        watchdog(durable_events_wait_in_the_outbox_across_a_restart_of_the_emitter(Tp::Inproc))
            .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tcp() {
        watchdog(durable_events_wait_in_the_outbox_across_a_restart_of_the_emitter(Tp::Tcp)).await
    }
}
