//! Topologies through real nodes: aggregator, async messaging, chain,
//! branch, gateway and forwarder; inproc and tcp.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{converge, endpoint, fast, watchdog, Tp};
use serde_bytes::ByteBuf;
use zfabric::node::{CallError, Node, NodeBuilder, ServeOptions};
use zfabric::resilience::DedupConfig;
use zfabric::topology::branch::{parallel, Router};
use zfabric::topology::chain::forward;
use zfabric::topology::events::{emit, Event, EventDelivery};
use zfabric::topology::gateway::{
    sign_jwt, Auth, Claims, Forwarder, Gateway, GatewayConfig, GatewayRequest, JwtAlgorithm,
    KeySource, KeySpec,
};
use zfabric::topology::{scatter_gather, Completion, Scatter, Target};
use zfabric::{Client, RemoteError, Request, RequestError};

fn builder(name: &str, tp: Tp, dir: &tempfile::TempDir, seed: Option<&Node>) -> NodeBuilder {
    let mut b = Node::builder(name).config(fast()).bind(endpoint(tp, dir));
    if let Some(s) = seed {
        b = b.seed(s.endpoints()[0].to_string());
    }
    b
}

async fn scatter_gather_reports_every_target_under_each_policy(tp: Tp) {
    let dir = tempfile::tempdir().unwrap();
    let caller = builder("caller", tp, &dir, None).start().await.unwrap();
    let quoter = |name: &'static str, delay_ms: u64, fails: bool| {
        builder(name, tp, &dir, Some(&caller))
            .serve("quote", move |req: Request<u32>| async move {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                if fails {
                    return Err(RemoteError::new("no_stock", name));
                }
                Ok::<_, RemoteError>(req.body + delay_ms as u32)
            })
            .start()
    };
    let fast_a = quoter("fast-a", 0, false).await.unwrap();
    let fast_b = quoter("fast-b", 5, false).await.unwrap();
    let broken = quoter("broken", 0, true).await.unwrap();
    let hung = quoter("hung", 60_000, false).await.unwrap();
    converge(&[&caller, &fast_a, &fast_b, &broken, &hung]).await;
    let all = Scatter::Members("quote".into());
    let deadline = Duration::from_millis(400);

    let g = scatter_gather::<u32, u32>(&caller, &all, &100, Completion::All, deadline)
        .await
        .unwrap();
    // All stops at the first failure; whatever is still out is reported.
    assert!(!g.satisfied());
    assert_eq!(g.replies.len() + g.failed.len() + g.timed_out.len(), 4);
    assert!(g
        .failed
        .iter()
        .any(|(t, e)| matches!(t, Target::Member(_, n) if n == "broken")
            && matches!(e, CallError::Request(RequestError::Remote(r)) if r.code == "no_stock")));

    let g = scatter_gather::<u32, u32>(&caller, &all, &100, Completion::Quorum(2), deadline)
        .await
        .unwrap();
    assert!(g.satisfied(), "{g:?}");
    assert_eq!(g.n, 4);
    assert_eq!(g.replies.len(), 2);

    let g = scatter_gather::<u32, u32>(&caller, &all, &100, Completion::ByDeadline, deadline)
        .await
        .unwrap();
    assert!(g.satisfied());
    assert_eq!(g.replies.len(), 2);
    assert_eq!(g.failed.len(), 1);
    assert!(matches!(&g.timed_out[..], [Target::Member(_, n)] if n == "hung"));
    let incomplete =
        scatter_gather::<u32, u32>(&caller, &all, &100, Completion::Quorum(3), deadline)
            .await
            .unwrap()
            .into_result()
            .unwrap_err();
    assert_eq!((incomplete.got, incomplete.needed), (2, 3));

    let g = scatter_gather::<u32, u32>(&caller, &all, &1, Completion::FirstSuccess, deadline)
        .await
        .unwrap();
    assert_eq!(g.replies.len(), 1);

    // Scatter over services (one member each).
    let services = Scatter::Services(vec!["quote".into(), "missing".into()]);
    let g = scatter_gather::<u32, u32>(&caller, &services, &1, Completion::ByDeadline, deadline)
        .await
        .unwrap();
    assert_eq!(g.replies.len() + g.failed.len() + g.timed_out.len(), 2);
    assert!(g
        .failed
        .iter()
        .any(|(t, e)| *t == Target::Service("missing".into())
            && matches!(e, CallError::NoSuchService(_))));
}

per_transport!(
    scatter_gather_reports_every_target_under_each_policy,
    scatter_gather_reports_every_target_under_each_policy
);

async fn each_consumer_group_handles_an_event_once_and_failures_are_redelivered(tp: Tp) {
    let dir = tempfile::tempdir().unwrap();
    let emitter = builder("orders", tp, &dir, None).start().await.unwrap();
    let billed = Arc::new(AtomicU32::new(0));
    let audited = Arc::new(AtomicU32::new(0));
    let flaky_calls = Arc::new(AtomicU32::new(0));
    let billing = |name: &'static str| {
        let billed = billed.clone();
        builder(name, tp, &dir, Some(&emitter))
            .consume(
                "billing",
                "order.",
                DedupConfig::default(),
                move |e: Event<u32>| {
                    let billed = billed.clone();
                    async move {
                        assert!(e.topic.starts_with("order."));
                        billed.fetch_add(e.body, Ordering::SeqCst);
                        Ok(())
                    }
                },
            )
            .start()
    };
    let b1 = billing("billing-1").await.unwrap();
    let b2 = billing("billing-2").await.unwrap();
    // The audit consumer fails its first delivery of every event and is
    // slower than the ack timeout on its second: only redelivery plus
    // dedup get it processed exactly once.
    let (a, f) = (audited.clone(), flaky_calls.clone());
    let audit = builder("audit", tp, &dir, Some(&emitter))
        .consume(
            "audit",
            "order.",
            DedupConfig::default(),
            move |e: Event<u32>| {
                let (a, f) = (a.clone(), f.clone());
                async move {
                    let n = f.fetch_add(1, Ordering::SeqCst);
                    if n % 2 == 0 {
                        return Err(RemoteError::new("busy", "try again"));
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    a.fetch_add(e.body, Ordering::SeqCst);
                    Ok(())
                }
            },
        )
        .start()
        .await
        .unwrap();
    let mut plain = b1.subscribe("order.", 16);
    converge(&[&emitter, &b1, &b2, &audit]).await;
    // Wait for the subscription to be gossiped.
    for _ in 0..200 {
        if emitter.members().iter().any(|m| !m.topics.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let delivery = EventDelivery::AtLeastOnce {
        ack_timeout: Duration::from_millis(150),
        max_attempts: 10,
        backoff: Duration::from_millis(10),
    };
    for amount in [1u32, 10, 100] {
        let r = emit(&emitter, "order.created", &amount, delivery)
            .await
            .unwrap();
        assert_eq!(r.acked.len(), 2, "{r:?}");
        assert!(r.lost.is_empty(), "{r:?}");
        assert!(r.redeliveries >= 1);
        assert_eq!(r.subscribers, 1);
    }
    assert_eq!(billed.load(Ordering::SeqCst), 111, "each event billed once");
    assert_eq!(
        audited.load(Ordering::SeqCst),
        111,
        "each event audited once"
    );
    for _ in 0..3 {
        plain.recv().await.unwrap();
    }

    // No consumer for the topic: nothing acked, nothing lost.
    let r = emit(&emitter, "invoice.sent", &1u32, delivery)
        .await
        .unwrap();
    assert!(r.acked.is_empty() && r.lost.is_empty());

    // At most once: the audit consumer's failed first attempt is lost.
    let r = emit(
        &emitter,
        "order.created",
        &1000u32,
        EventDelivery::at_most_once(),
    )
    .await
    .unwrap();
    assert_eq!(r.acked, vec!["billing/order.".to_string()]);
    assert_eq!(r.lost.len(), 1);
}

per_transport!(
    each_consumer_group_handles_an_event_once_and_failures_are_redelivered,
    each_consumer_group_handles_an_event_once_and_failures_are_redelivered
);

/// Choreography: orders → payments → shipping, by events alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_cooperate_by_events_without_a_controller() {
    common::watchdog(async {
        let dir = tempfile::tempdir().unwrap();
        let orders = builder("orders", Tp::Inproc, &dir, None)
            .start()
            .await
            .unwrap();
        let pay_builder = builder("payments", Tp::Inproc, &dir, Some(&orders));
        let me = pay_builder.handle();
        let payments = pay_builder
            .consume(
                "payments",
                "order.created",
                DedupConfig::default(),
                move |e: Event<u32>| {
                    let me = me.clone();
                    async move {
                        let node = me.node().ok_or_else(|| RemoteError::new("stopping", ""))?;
                        let r = emit(
                            &node,
                            "payment.done",
                            &e.body,
                            EventDelivery::at_least_once(),
                        )
                        .await
                        .map_err(|e| RemoteError::new("encode", e.to_string()))?;
                        if r.acked.is_empty() {
                            return Err(RemoteError::new("unshipped", "no shipper took it"));
                        }
                        Ok(())
                    }
                },
            )
            .start()
            .await
            .unwrap();
        let shipped = Arc::new(AtomicU32::new(0));
        let s = shipped.clone();
        let shipping = builder("shipping", Tp::Inproc, &dir, Some(&orders))
            .consume(
                "shipping",
                "payment.",
                DedupConfig::default(),
                move |e: Event<u32>| {
                    let s = s.clone();
                    async move {
                        s.fetch_add(e.body, Ordering::SeqCst);
                        Ok(())
                    }
                },
            )
            .start()
            .await
            .unwrap();
        converge(&[&orders, &payments, &shipping]).await;
        for order in 1..=5u32 {
            let r = emit(
                &orders,
                "order.created",
                &order,
                EventDelivery::at_least_once(),
            )
            .await
            .unwrap();
            assert_eq!(r.acked.len(), 1, "{r:?}");
        }
        assert_eq!(shipped.load(Ordering::SeqCst), 15);
    })
    .await
}

async fn a_chain_shrinks_the_deadline_counts_hops_and_stops_loops(tp: Tp) {
    let dir = tempfile::tempdir().unwrap();
    let c = builder("c", tp, &dir, None)
        .serve("c", |req: Request<()>| async move {
            Ok::<_, RemoteError>((
                zfabric::resilience::deadline::current_hops(),
                req.remaining().map(|d| d.as_millis() as u64),
            ))
        })
        .start()
        .await
        .unwrap();
    let hop = |name: &'static str, next: &'static str| {
        let b = builder(name, tp, &dir, Some(&c));
        let h = b.handle();
        b.serve_raw(
            name,
            ServeOptions::new(),
            forward(h, next, Duration::from_secs(60)),
        )
        .start()
    };
    let b = hop("b", "c").await.unwrap();
    let a = hop("a", "b").await.unwrap();
    let lb = builder("loop", tp, &dir, Some(&c));
    let lh = lb.handle();
    let looping = lb
        .serve_raw(
            "loop",
            ServeOptions::new(),
            forward(lh, "loop", Duration::from_secs(60)),
        )
        .start()
        .await
        .unwrap();
    let caller = builder("caller", tp, &dir, Some(&c)).start().await.unwrap();
    converge(&[&a, &b, &c, &looping, &caller]).await;
    let (hops, left): (u8, Option<u64>) = caller
        .request("a", &(), Duration::from_millis(2000))
        .await
        .unwrap();
    assert_eq!(hops, 3, "a → b → c");
    assert!(left.unwrap() <= 2000);
    let r = caller
        .request::<_, ()>("loop", &(), Duration::from_secs(20))
        .await;
    let Err(CallError::Request(RequestError::Remote(e))) = r else {
        panic!("{r:?}")
    };
    assert!(
        e.message.contains("too_many_hops") || e.code == "too_many_hops",
        "{e:?}"
    );
}

per_transport!(
    a_chain_shrinks_the_deadline_counts_hops_and_stops_loops,
    a_chain_shrinks_the_deadline_counts_hops_and_stops_loops
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn branches_run_concurrently_and_a_router_picks_by_content() {
    common::watchdog(async {
        let dir = tempfile::tempdir().unwrap();
        let tp = Tp::Tcp;
        let svc = builder("svc", tp, &dir, None)
            .serve("price", |req: Request<u32>| async move {
                Ok::<_, RemoteError>(req.body * 2)
            })
            .serve("stock", |req: Request<u32>| async move {
                Ok::<_, RemoteError>(req.body + 1)
            })
            .serve("bulk", |_: Request<u32>| async move {
                Ok::<_, RemoteError>(0u32)
            })
            .start()
            .await
            .unwrap();
        let caller = builder("caller", tp, &dir, Some(&svc))
            .start()
            .await
            .unwrap();
        converge(&[&svc, &caller]).await;
        let sum = parallel::<u32, u32, _>(
            &caller,
            &["price", "stock", "nowhere"],
            &10,
            Duration::from_secs(5),
            |outcomes| {
                assert!(matches!(outcomes[2].1, Err(CallError::NoSuchService(_))));
                outcomes
                    .into_iter()
                    .filter_map(|(_, r)| r.ok())
                    .sum::<u32>()
            },
        )
        .await;
        assert_eq!(sum, 20 + 11);
        let router = Router::new()
            .when(|q: &u32| *q >= 1000, "bulk")
            .otherwise("price");
        assert_eq!(
            router
                .call::<u32>(&caller, &5000, Duration::from_secs(5))
                .await
                .unwrap(),
            ("bulk".to_string(), 0)
        );
        assert_eq!(
            router
                .call::<u32>(&caller, &3, Duration::from_secs(5))
                .await
                .unwrap(),
            ("price".to_string(), 6)
        );
    })
    .await
}

async fn the_gateway_lets_only_authenticated_callers_reach_exposed_services(tp: Tp) {
    let dir = tempfile::tempdir().unwrap();
    let reached = Arc::new(AtomicU32::new(0));
    let r = reached.clone();
    let svc = builder("svc", tp, &dir, None)
        .serve("greet", move |req: Request<String>| {
            let r = r.clone();
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                Ok::<_, RemoteError>(format!("hello {}", req.body))
            }
        })
        .serve("admin", |_: Request<String>| async move {
            Ok::<_, RemoteError>("secret".to_string())
        })
        .start()
        .await
        .unwrap();
    let edge = Arc::new(builder("edge", tp, &dir, Some(&svc)).start().await.unwrap());
    converge(&[&svc, &edge]).await;
    let key = b"gateway-test-key";
    let cfg = GatewayConfig::new(Auth::jwt(key).unwrap(), &["greet"]).transform_reply(|_, body| {
        // Smart proxy: upper-case the greeting.
        let s: String = zfabric::wire::decode_body(&body)
            .map_err(|e| RemoteError::new("bad_reply", e.to_string()))?;
        zfabric::wire::encode_body(&s.to_uppercase())
            .map_err(|e| RemoteError::new("bad_reply", e.to_string()))
    });
    let gw = Gateway::start(&endpoint(tp, &dir), edge.clone(), cfg)
        .await
        .unwrap();
    let client: Client<GatewayRequest, ByteBuf> = Client::connect(&gw.endpoints()[0].to_string())
        .await
        .unwrap();
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 60;
    let good = sign_jwt(
        key,
        &Claims {
            sub: "ada".into(),
            exp,
            nbf: None,
            services: None,
        },
    );
    let body =
        |s: &str| ByteBuf::from(zfabric::wire::encode_body(&s.to_string()).unwrap().to_vec());
    let call = |token: String, service: &str| {
        let req = GatewayRequest {
            token,
            service: service.into(),
            body: body("ada"),
        };
        let client = &client;
        async move { client.request(&req).await }
    };
    let reply = call(good.clone(), "greet").await.unwrap();
    let s: String = zfabric::wire::decode_body(&reply).unwrap();
    assert_eq!(s, "HELLO ADA");
    assert_eq!(reached.load(Ordering::SeqCst), 1);

    for (token, service, code) in [
        ("".to_string(), "greet", "unauthorized"),
        (
            sign_jwt(
                b"wrong key",
                &Claims {
                    sub: "eve".into(),
                    exp,
                    nbf: None,
                    services: None,
                },
            ),
            "greet",
            "unauthorized",
        ),
        (
            sign_jwt(
                key,
                &Claims {
                    sub: "old".into(),
                    exp: 1,
                    nbf: None,
                    services: None,
                },
            ),
            "greet",
            "unauthorized",
        ),
        (good.clone(), "admin", "forbidden"),
        (
            sign_jwt(
                key,
                &Claims {
                    sub: "ro".into(),
                    exp,
                    nbf: None,
                    services: Some(vec!["other".into()]),
                },
            ),
            "greet",
            "forbidden",
        ),
    ] {
        let r = call(token, service).await;
        assert!(
            matches!(&r, Err(RequestError::Remote(e)) if e.code == code),
            "{r:?}"
        );
    }
    assert_eq!(
        reached.load(Ordering::SeqCst),
        1,
        "refused calls reached the service"
    );
}

per_transport!(
    the_gateway_lets_only_authenticated_callers_reach_exposed_services,
    the_gateway_lets_only_authenticated_callers_reach_exposed_services
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarder_bridges_publishers_to_subscribers() {
    common::watchdog(async {
        let dir = tempfile::tempdir().unwrap();
        let publisher: zfabric::Publisher<u32> = zfabric::Publisher::bind(&endpoint(Tp::Tcp, &dir))
            .await
            .unwrap();
        let up = publisher.endpoints()[0].to_string();
        let fwd = Forwarder::start(&[&up], &["weather."], &endpoint(Tp::Ipc, &dir))
            .await
            .unwrap();
        let mut sub: zfabric::Subscriber<u32> =
            zfabric::Subscriber::connect(&fwd.endpoints()[0].to_string(), &["weather."])
                .await
                .unwrap();
        // Publish until the whole path is up (pub/sub drops before that).
        let mut got = None;
        for i in 0..200u32 {
            publisher.publish("weather.paris", &i).await.unwrap();
            publisher.publish("sports.x", &i).await.unwrap();
            if let Ok(d) = sub.recv_timeout(Duration::from_millis(20)).await {
                got = Some(d);
                break;
            }
        }
        let d = got.expect("nothing crossed the forwarder");
        assert_eq!(d.topic_str(), Some("weather.paris"));
        assert!(fwd.forwarded() >= 1);
    })
    .await
}

/// A gateway holding only an identity provider's public key: RS256 tokens
/// signed with the private key pass; an HS256 token "signed" with the
/// public key (the algorithm-confusion attack) and an unsigned one do not.
#[tokio::test]
async fn a_gateway_with_a_public_key_accepts_its_tokens_and_refuses_algorithm_confusion() {
    watchdog(async {
        let dir = tempfile::tempdir().unwrap();
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jwt");
        let svc = Arc::new(
            builder("svc", Tp::Inproc, &dir, None)
                .serve("greet", |req: Request<String>| async move {
                    Ok::<_, RemoteError>(format!("hello {}", req.body))
                })
                .start()
                .await
                .unwrap(),
        );
        let edge = Arc::new(builder("edge", Tp::Inproc, &dir, Some(&svc)).start().await.unwrap());
        converge(&[&svc, &edge]).await;
        let auth = Auth::load(&KeySpec::Pem(
            JwtAlgorithm::RS256,
            KeySource::File(fixtures.join("rs256.pub.pem")),
        ))
        .unwrap();
        let gw = Gateway::start(&endpoint(Tp::Inproc, &dir), edge.clone(), GatewayConfig::new(auth, &["greet"]))
            .await
            .unwrap();
        let client: Client<GatewayRequest, ByteBuf> =
            Client::connect(&gw.endpoints()[0].to_string()).await.unwrap();
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 60;
        let claims = Claims {
            sub: "ada".into(),
            exp,
            nbf: None,
            services: None,
        };
        let private = std::fs::read(fixtures.join("rs256.key.pem")).unwrap();
        let rs256 = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_rsa_pem(&private).unwrap(),
        )
        .unwrap();
        let public = std::fs::read(fixtures.join("rs256.pub.pem")).unwrap();
        let confused = sign_jwt(&public, &claims);
        let call = |token: String| {
            let req = GatewayRequest {
                token,
                service: "greet".into(),
                body: ByteBuf::from(zfabric::wire::encode_body(&"ada".to_string()).unwrap().to_vec()),
            };
            let client = &client;
            async move { client.request(&req).await }
        };
        let reply = call(rs256).await.unwrap();
        let s: String = zfabric::wire::decode_body(&reply).unwrap();
        assert_eq!(s, "hello ada");
        let r = call(confused).await;
        assert!(
            matches!(&r, Err(RequestError::Remote(e)) if e.code == "unauthorized" && e.message.contains("algorithm")),
            "{r:?}"
        );
    })
    .await;
}

/// The shared-data pattern over the fabric: a data node over a redb file,
/// a caching node in front of it, a caller.
async fn shared_data_makes_one_customer_refuses_stale_updates_and_invalidates_caches(tp: Tp) {
    use zfabric::topology::shared_data::{
        self, CacheConfig, Cached, CreateCustomer, CustomerCache, DataStore, GetCustomer, Stored,
        UpdateCustomer, CHANGED_TOPIC, CREATE, UPDATE,
    };
    // Installs the test recorder before anything counts.
    let conflicts_before = common::counter(shared_data::DATA_REFUSED, "conflict");
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(DataStore::open(dir.path().join("customers.redb")).unwrap());
    let published = Arc::new(AtomicU32::new(0));
    let p = published.clone();
    let data = shared_data::serve(builder("data", tp, &dir, None), store.clone(), move |n| {
        p.fetch_add(n, Ordering::Relaxed);
    })
    .start()
    .await
    .unwrap();
    // A long TTL: anything fresh here is the invalidation's doing.
    let cache = CustomerCache::new(
        "orders.customer",
        CacheConfig {
            capacity: 64,
            ttl: Duration::from_secs(60),
        },
    );
    let orders = shared_data::serve_cached(
        builder("orders", tp, &dir, Some(&data)),
        "orders.customer",
        cache.clone(),
        Duration::from_secs(2),
    )
    .start()
    .await
    .unwrap();
    let listening = tokio::spawn(shared_data::listen(
        shared_data::subscribe(&orders, 64),
        cache.clone(),
    ));
    let caller = builder("caller", tp, &dir, Some(&data))
        .start()
        .await
        .unwrap();
    converge(&[&data, &orders, &caller]).await;
    // The data node knows of the cache's subscription before any change.
    common::eventually(400, Duration::from_millis(10), || async {
        data.members()
            .iter()
            .any(|m| m.topics.iter().any(|t| t == CHANGED_TOPIC))
            .then_some(())
    })
    .await;

    // Four concurrent creates of one email and a retry: one customer.
    let create = CreateCustomer {
        email: "Ada@Example.com".into(),
        name: "Ada".into(),
    };
    let t = Duration::from_secs(2);
    let answers = futures_util::future::join_all(
        (0..4).map(|_| caller.request::<_, Stored>(CREATE, &create, t)),
    )
    .await;
    let mut answers: Vec<Stored> = answers.into_iter().map(Result::unwrap).collect();
    answers.push(caller.request(CREATE, &create, t).await.unwrap());
    assert_eq!(answers.iter().filter(|s| s.created).count(), 1);
    let id = answers[0].customer.id;
    assert!(answers.iter().all(|s| s.customer.id == id), "{answers:?}");
    assert_eq!(store.rows().unwrap().customers, 1);

    // Through the cache: a miss, then a hit.
    let get = GetCustomer { id };
    let first: Cached = caller.request("orders.customer", &get, t).await.unwrap();
    let second: Cached = caller.request("orders.customer", &get, t).await.unwrap();
    assert!(!first.hit && second.hit, "{first:?} {second:?}");

    // A versioned update, then the same one, stale: a typed conflict.
    let update = UpdateCustomer {
        id,
        expected_version: 1,
        name: "Ada L.".into(),
    };
    let v2: Stored = caller.request(UPDATE, &update, t).await.unwrap();
    assert_eq!(v2.customer.version, 2);
    match caller.request::<_, Stored>(UPDATE, &update, t).await {
        Err(CallError::Request(RequestError::Remote(e))) => {
            assert_eq!(
                e.known_code(),
                Some(zfabric::wire::RemoteCode::Conflict),
                "{e}"
            )
        }
        other => panic!("a stale update must be a conflict: {other:?}"),
    }
    assert!(
        published.load(Ordering::Relaxed) >= 2,
        "create and update published"
    );
    // Counted by reason (other transports' runs may count too).
    assert!(common::counter(shared_data::DATA_REFUSED, "conflict") > conflicts_before);

    // The change event reached the cache: version 2, long before the TTL.
    let fresh: Cached = common::eventually(400, Duration::from_millis(10), || async {
        let c: Cached = caller.request("orders.customer", &get, t).await.unwrap();
        (c.customer.version == 2).then_some(c)
    })
    .await;
    assert_eq!(fresh.customer.name, "Ada L.");
    let stats = cache.stats();
    assert!(
        stats.evicted(shared_data::Eviction::Invalidated) >= 1,
        "{stats:?}"
    );
    assert!(common::counter(shared_data::CACHE_EVICTED, "invalidated") >= 1);
    listening.abort();
}
per_transport!(
    shared_data_one_customer_conflicts_and_invalidation,
    shared_data_makes_one_customer_refuses_stale_updates_and_invalidates_caches
);
