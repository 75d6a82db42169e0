//! Resilience through a node: bulkhead isolation and rejection, deadlines
//! across hops, breakers, retry budgets, idempotent consumers.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use common::{converge, endpoint, eventually, fast, Tp};
use tokio::sync::Semaphore;
use zfabric::node::{CallError, CallOptions, Node, NodeConfig, ServeOptions};
use zfabric::resilience::{BreakerConfig, BudgetConfig, Bulkhead, BulkheadConfig, DedupConfig};
use zfabric::{RemoteError, Request, RequestError};

async fn caller(tp: Tp, dir: &tempfile::TempDir, seed: &Node, config: NodeConfig) -> Node {
    Node::builder("caller")
        .config(config)
        .bind(endpoint(tp, dir))
        .seed(seed.endpoints()[0].to_string())
        .start()
        .await
        .unwrap()
}

/// A handler gate: handlers wait on it until the test opens it.
fn gate() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(0))
}

async fn a_saturated_bulkhead_leaves_its_neighbour_unaffected_and_refuses_at_once(tp: Tp) {
    let dir = tempfile::tempdir().unwrap();
    let slow_bh = Bulkhead::new("slow", BulkheadConfig::new(2, 2));
    let shut = gate();
    let g = shut.clone();
    let server = Node::builder("server")
        .config(fast())
        .bind(endpoint(tp, &dir))
        .serve_with(
            "slow",
            ServeOptions::new().bulkhead(slow_bh.clone()),
            move |req: Request<u32>| {
                let g = g.clone();
                async move {
                    let _p = g.acquire().await.unwrap();
                    Ok::<_, RemoteError>(req.body)
                }
            },
        )
        .serve_with(
            "fast",
            ServeOptions::new().bulkhead(Bulkhead::new("fast", BulkheadConfig::new(4, 4))),
            |req: Request<u32>| async move { Ok::<_, RemoteError>(req.body + 1) },
        )
        .start()
        .await
        .unwrap();
    let client = Arc::new(caller(tp, &dir, &server, fast()).await);
    converge(&[&server, &client]).await;

    // Fill the slow bulkhead: two running, two waiting.
    let mut stuck = Vec::new();
    for i in 0..4u32 {
        let c = client.clone();
        stuck.push(tokio::spawn(async move {
            c.request::<_, u32>("slow", &i, Duration::from_secs(30))
                .await
        }));
    }
    eventually(500, Duration::from_millis(10), || async {
        (slow_bh.in_flight() == 2 && slow_bh.queued() == 2).then_some(())
    })
    .await;

    // One more is refused at once: the gate is still shut, so nothing it
    // waits for could have happened.
    let r = client
        .request::<_, u32>("slow", &9, Duration::from_secs(30))
        .await;
    assert!(matches!(r, Err(CallError::Rejected { .. })), "{r:?}");
    assert!(slow_bh.rejected() >= 1);

    // The fast service answers everything within a deadline the slow
    // service's requests cannot meet (they wait for the gate).
    for i in 0..50u32 {
        let r: u32 = client
            .request("fast", &i, Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(r, i + 1);
    }
    assert_eq!(slow_bh.in_flight(), 2, "slow requests still held");
    assert!(stuck.iter().all(|h| !h.is_finished()));

    // Open the gate: every accepted slow request completes.
    shut.add_permits(100);
    for h in stuck {
        h.await.unwrap().unwrap();
    }
}

per_transport!(
    a_saturated_bulkhead_leaves_its_neighbour_unaffected_and_refuses_at_once,
    a_saturated_bulkhead_leaves_its_neighbour_unaffected_and_refuses_at_once
);

/// A blocking gate (for handlers that block their thread).
#[derive(Default)]
struct BlockingGate {
    open: Mutex<bool>,
    cv: Condvar,
}

impl BlockingGate {
    fn wait(&self) {
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.cv.wait(open).unwrap();
        }
    }
    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.cv.notify_all();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_handlers_in_a_thread_bulkhead_do_not_stall_the_shared_runtime() {
    common::watchdog(async {
        let dir = tempfile::tempdir().unwrap();
        // As many blocking handlers as the runtime has workers: on the
        // shared runtime they would stall every other service.
        let cpu = Bulkhead::new("cpu", BulkheadConfig::new(2, 2).threads(2));
        let blocked = Arc::new(BlockingGate::default());
        let b = blocked.clone();
        let server = Node::builder("server")
            .config(fast())
            .bind(endpoint(Tp::Inproc, &dir))
            .serve_with(
                "crunch",
                ServeOptions::new().bulkhead(cpu.clone()),
                move |req: Request<u32>| {
                    let b = b.clone();
                    async move {
                        b.wait();
                        Ok::<_, RemoteError>(req.body)
                    }
                },
            )
            .serve("echo", |req: Request<u32>| async move {
                Ok::<_, RemoteError>(req.body)
            })
            .start()
            .await
            .unwrap();
        let client = Arc::new(caller(Tp::Inproc, &dir, &server, fast()).await);
        converge(&[&server, &client]).await;
        let mut held = Vec::new();
        for i in 0..2u32 {
            let c = client.clone();
            held.push(tokio::spawn(async move {
                c.request::<_, u32>("crunch", &i, Duration::from_secs(30))
                    .await
            }));
        }
        eventually(500, Duration::from_millis(10), || async {
            (cpu.in_flight() == 2).then_some(())
        })
        .await;
        for i in 0..20u32 {
            let r: u32 = client
                .request("echo", &i, Duration::from_secs(2))
                .await
                .unwrap();
            assert_eq!(r, i);
        }
        blocked.open();
        for h in held {
            h.await.unwrap().unwrap();
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_onward_call_inherits_the_remaining_deadline_and_late_work_is_not_started() {
    common::watchdog(async {
        let dir = tempfile::tempdir().unwrap();
        let ran = Arc::new(AtomicU32::new(0));
        let shut = gate();
        let (r2, g) = (ran.clone(), shut.clone());
        let back = Node::builder("back")
            .config(fast())
            .bind(endpoint(Tp::Inproc, &dir))
            .serve("remaining", |req: Request<()>| async move {
                Ok::<_, RemoteError>(req.remaining().map(|d| d.as_millis() as u64))
            })
            .serve_with(
                "single",
                ServeOptions::new().bulkhead(Bulkhead::new("single", BulkheadConfig::new(1, 4))),
                move |_: Request<()>| {
                    let (r, g) = (r2.clone(), g.clone());
                    async move {
                        r.fetch_add(1, Ordering::SeqCst);
                        let _p = g.acquire().await.unwrap();
                        Ok::<_, RemoteError>(())
                    }
                },
            )
            .start()
            .await
            .unwrap();
        // The middle node's handler calls onwards with a generous timeout
        // of its own; the caller's deadline must win.
        let onward = Arc::new(caller(Tp::Inproc, &dir, &back, fast()).await);
        let o = onward.clone();
        let middle = Node::builder("middle")
            .config(fast())
            .bind(endpoint(Tp::Inproc, &dir))
            .seed(back.endpoints()[0].to_string())
            .serve("front", move |_: Request<()>| {
                let o = o.clone();
                async move {
                    o.request::<_, Option<u64>>("remaining", &(), Duration::from_secs(60))
                        .await
                        .map_err(|e| RemoteError::new("onward", e.to_string()))
                }
            })
            .start()
            .await
            .unwrap();
        let client = caller(Tp::Inproc, &dir, &back, fast()).await;
        converge(&[&back, &onward, &middle, &client]).await;
        let left: Option<u64> = client
            .request("front", &(), Duration::from_millis(1500))
            .await
            .unwrap();
        let left = left.expect("the back end saw a deadline");
        assert!(left <= 1500, "back end had {left} ms left of a 1.5 s call");

        // Late work is not started: one call holds the only slot; a second
        // waits in the queue past its deadline and the caller times out.
        let held = {
            let c = Arc::new(client);
            let c2 = c.clone();
            (
                c,
                tokio::spawn(async move {
                    c2.request::<_, ()>("single", &(), Duration::from_secs(30))
                        .await
                }),
            )
        };
        eventually(500, Duration::from_millis(10), || async {
            (ran.load(Ordering::SeqCst) == 1).then_some(())
        })
        .await;
        let r = held
            .0
            .request::<_, ()>("single", &(), Duration::from_millis(200))
            .await;
        assert!(
            matches!(r, Err(CallError::Request(RequestError::Timeout(_)))),
            "{r:?}"
        );
        shut.add_permits(10);
        held.1.await.unwrap().unwrap();
        // Let the queue settle: the expired request must not have run.
        held.0
            .request::<_, ()>("single", &(), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(ran.load(Ordering::SeqCst), 2, "the late request ran");
    })
    .await
}

/// Breaker behaviour through a node, on tokio's paused clock.
#[tokio::test(start_paused = true)]
async fn a_breaker_opens_fails_fast_half_opens_and_closes() {
    let failing = Arc::new(AtomicBool::new(true));
    let ran = Arc::new(AtomicU32::new(0));
    let (f, r) = (failing.clone(), ran.clone());
    let server = Node::builder("flaky")
        .bind("inproc://breaker-flaky")
        .serve("flaky", move |_: Request<()>| {
            let (f, r) = (f.clone(), r.clone());
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                if f.load(Ordering::SeqCst) {
                    Err(RemoteError::new("boom", "dependency down"))
                } else {
                    Ok(())
                }
            }
        })
        .start()
        .await
        .unwrap();
    let open_for = Duration::from_secs(2);
    let config = NodeConfig {
        breaker: Some(BreakerConfig {
            window: 4,
            minimum_calls: 4,
            failure_rate: 0.5,
            half_open_calls: 1,
            open_for,
            ..BreakerConfig::default()
        }),
        ..NodeConfig::default()
    };
    let client = Node::builder("client")
        .config(config)
        .bind("inproc://breaker-client")
        .seed("inproc://breaker-flaky")
        .start()
        .await
        .unwrap();
    converge(&[&server, &client]).await;
    let call = || client.request::<_, ()>("flaky", &(), Duration::from_secs(1));

    for _ in 0..4 {
        assert!(matches!(
            call().await,
            Err(CallError::Request(RequestError::Remote(_)))
        ));
    }
    // Open: refused without reaching the service.
    assert!(matches!(call().await, Err(CallError::CircuitOpen { .. })));
    assert_eq!(ran.load(Ordering::SeqCst), 4);

    // After the cool-down one trial goes through; it fails: open again.
    tokio::time::sleep(open_for).await;
    assert!(matches!(
        call().await,
        Err(CallError::Request(RequestError::Remote(_)))
    ));
    assert!(matches!(call().await, Err(CallError::CircuitOpen { .. })));
    assert_eq!(ran.load(Ordering::SeqCst), 5);

    // The dependency recovers; the next trial succeeds and closes it.
    failing.store(false, Ordering::SeqCst);
    tokio::time::sleep(open_for).await;
    call().await.unwrap();
    for _ in 0..5 {
        call().await.unwrap();
    }
    assert_eq!(ran.load(Ordering::SeqCst), 11);
}

async fn anycast_skips_a_member_whose_breaker_is_open(tp: Tp) {
    let dir = tempfile::tempdir().unwrap();
    let member = |name: &'static str, fails: bool| {
        let ep = endpoint(tp, &dir);
        async move {
            Node::builder(name)
                .config(fast())
                .bind(ep)
                .serve("svc", move |_: Request<()>| async move {
                    if fails {
                        Err(RemoteError::new("boom", name))
                    } else {
                        Ok::<_, RemoteError>(name.to_string())
                    }
                })
                .start()
                .await
                .unwrap()
        }
    };
    let bad = member("bad", true).await;
    let good = member("good", false).await;
    let mut cfg = fast();
    cfg.breaker = Some(BreakerConfig {
        window: 4,
        minimum_calls: 4,
        open_for: Duration::from_secs(60),
        ..BreakerConfig::default()
    });
    let client = Node::builder("client")
        .config(cfg)
        .bind(endpoint(tp, &dir))
        .seed(bad.endpoints()[0].to_string())
        .seed(good.endpoints()[0].to_string())
        .start()
        .await
        .unwrap();
    converge(&[&bad, &good, &client]).await;
    let mut results = Vec::new();
    for _ in 0..40 {
        results.push(
            client
                .request::<_, String>("svc", &(), Duration::from_secs(5))
                .await,
        );
    }
    let failures = results.iter().filter(|r| r.is_err()).count();
    assert!((4..=5).contains(&failures), "{failures} failures");
    assert!(results[20..]
        .iter()
        .all(|r| matches!(r, Ok(n) if n == "good")));
}

per_transport!(
    anycast_skips_a_member_whose_breaker_is_open,
    anycast_skips_a_member_whose_breaker_is_open
);

async fn a_busy_member_is_retried_elsewhere_and_retries_stay_within_the_budget(tp: Tp) {
    let dir = tempfile::tempdir().unwrap();
    // "busy" holds its only slot for the whole test and queues nothing.
    let busy_bh = Bulkhead::new("busy", BulkheadConfig::new(1, 0));
    let shut = gate();
    let g = shut.clone();
    let busy = Node::builder("busy")
        .config(fast())
        .bind(endpoint(tp, &dir))
        .serve_with(
            "svc",
            ServeOptions::new().bulkhead(busy_bh.clone()),
            move |_: Request<u32>| {
                let g = g.clone();
                async move {
                    let _p = g.acquire().await.unwrap();
                    Ok::<_, RemoteError>("busy".to_string())
                }
            },
        )
        .start()
        .await
        .unwrap();
    let mut cfg = fast();
    // Breakers off: this test is about the budget alone.
    cfg.breaker = None;
    cfg.retry_budget = BudgetConfig {
        ratio: 0.1,
        min_per_second: 0,
        window: Duration::from_secs(60),
    };
    let client = Arc::new(caller(tp, &dir, &busy, cfg).await);
    converge(&[&busy, &client]).await;
    let c = client.clone();
    let holder = tokio::spawn(async move {
        c.request::<_, String>("svc", &0u32, Duration::from_secs(30))
            .await
    });
    eventually(500, Duration::from_millis(10), || async {
        (busy_bh.in_flight() == 1).then_some(())
    })
    .await;

    // With only the busy member, idempotent calls are refused; retries
    // are capped at 10% of first attempts.
    let calls = 100u64;
    for i in 0..calls {
        let r = client
            .request_with::<_, String>("svc", &(i as u32), CallOptions::default().idempotent())
            .await;
        assert!(matches!(r, Err(CallError::Rejected { .. })), "{r:?}");
    }
    let retries = busy_bh.rejected() - calls;
    assert!(
        (1..=calls / 10).contains(&retries),
        "{retries} retries for {calls} calls"
    );

    // Add a free member: idempotent calls refused by the busy one are
    // retried there and all succeed.
    let free = Node::builder("free")
        .config(fast())
        .bind(endpoint(tp, &dir))
        .seed(busy.endpoints()[0].to_string())
        .serve("svc", |_: Request<u32>| async move {
            Ok::<_, RemoteError>("free".to_string())
        })
        .start()
        .await
        .unwrap();
    converge(&[&busy, &client, &free]).await;
    let budget_cfg = NodeConfig {
        retry_budget: BudgetConfig::default(),
        ..fast()
    };
    let client2 = caller(tp, &dir, &busy, budget_cfg).await;
    converge(&[&busy, &client, &free, &client2]).await;
    for i in 0..10u32 {
        let r: String = client2
            .request_with("svc", &i, CallOptions::default().idempotent())
            .await
            .unwrap();
        assert_eq!(r, "free");
    }
    shut.add_permits(10);
    holder.await.unwrap().unwrap();
}

per_transport!(
    a_busy_member_is_retried_elsewhere_and_retries_stay_within_the_budget,
    a_busy_member_is_retried_elsewhere_and_retries_stay_within_the_budget
);

#[derive(serde::Serialize, serde::Deserialize)]
struct Signup {
    email: String,
}

async fn duplicates_are_processed_once(tp: Tp) {
    let dir = tempfile::tempdir().unwrap();
    let charged = Arc::new(AtomicU32::new(0));
    let mailed = Arc::new(AtomicU32::new(0));
    let (c, m) = (charged.clone(), mailed.clone());
    let server = Node::builder("server")
        .config(fast())
        .bind(endpoint(tp, &dir))
        .serve_with(
            "charge",
            ServeOptions::new().dedup(DedupConfig::default()),
            move |_: Request<u32>| {
                let c = c.clone();
                async move { Ok::<_, RemoteError>(c.fetch_add(1, Ordering::SeqCst) + 1) }
            },
        )
        .serve_with(
            "welcome",
            ServeOptions::new().dedup_by(DedupConfig::default(), |s: &Signup| s.email.clone()),
            move |_: Request<Signup>| {
                let m = m.clone();
                async move { Ok::<_, RemoteError>(m.fetch_add(1, Ordering::SeqCst) + 1) }
            },
        )
        .start()
        .await
        .unwrap();
    let a = caller(tp, &dir, &server, fast()).await;
    let b = caller(tp, &dir, &server, fast()).await;
    converge(&[&server, &a, &b]).await;

    // Natural key: the same logical message delivered twice.
    let opts = CallOptions::default().call_id(42);
    let first: u32 = a.request_with("charge", &100, opts).await.unwrap();
    let again: u32 = a.request_with("charge", &100, opts).await.unwrap();
    assert_eq!((first, again), (1, 1));
    let other: u32 = a
        .request("charge", &100, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(other, 2, "a new message is processed");

    // Business key: the same address from two callers.
    let s = Signup {
        email: "ada@example.com".into(),
    };
    let x: u32 = a
        .request("welcome", &s, Duration::from_secs(5))
        .await
        .unwrap();
    let y: u32 = b
        .request("welcome", &s, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!((x, y), (1, 1));
    assert_eq!(mailed.load(Ordering::SeqCst), 1);
    assert_eq!(charged.load(Ordering::SeqCst), 2);
}

per_transport!(duplicates_are_processed_once, duplicates_are_processed_once);

/// Finding 3 of issue 14, in the library on tokio's paused clock: a
/// server killed (dropped without leaving) and restarted on the same
/// endpoint 2 s later. A caller whose calls wait for a member
/// (`CallOptions::wait_for_member`) reaches the restarted server once it
/// is found, instead of failing every call at once while the dead
/// member's breaker is open; one that does not wait still fails fast.
#[tokio::test(start_paused = true)]
async fn calls_that_wait_for_a_member_reach_a_server_restarted_on_the_same_endpoint() {
    const EP: &str = "inproc://restart-echo";
    let ep = EP;
    let served = Arc::new(AtomicU32::new(0));
    let start = |served: Arc<AtomicU32>| async move {
        Node::builder("echo")
            .bind(EP)
            .serve("echo", move |r: Request<u32>| {
                let served = served.clone();
                async move {
                    served.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, RemoteError>(r.body)
                }
            })
            .start()
            .await
            .unwrap()
    };
    let first = start(Arc::new(AtomicU32::new(0))).await;
    let client = Node::builder("client")
        .bind("inproc://restart-client")
        .seed(ep)
        .start()
        .await
        .unwrap();
    converge(&[&first, &client]).await;
    let wait = CallOptions::default()
        .timeout(Duration::from_secs(1))
        .wait_for_member();
    assert_eq!(
        client
            .request_with::<_, u32>("echo", &1, wait)
            .await
            .unwrap(),
        1
    );

    drop(first); // killed: no leave
    let restarted = {
        let served = served.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            start(served).await
        })
    };
    let (mut ok, mut failed, mut fast_fail_seen) = (0u32, 0u32, false);
    for i in 0..300u32 {
        match client.request_with::<_, u32>("echo", &i, wait).await {
            Ok(v) => {
                assert_eq!(v, i);
                ok += 1;
            }
            Err(e) => {
                failed += 1;
                if !fast_fail_seen && matches!(e, CallError::CircuitOpen { .. }) {
                    // Without waiting, the same call fails at once.
                    let t = tokio::time::Instant::now();
                    let r = client
                        .request::<_, u32>("echo", &i, Duration::from_secs(1))
                        .await;
                    assert!(matches!(r, Err(CallError::CircuitOpen { .. })), "{r:?}");
                    assert_eq!(t.elapsed(), Duration::ZERO, "fail fast");
                    fast_fail_seen = true;
                }
            }
        }
    }
    let _second = restarted.await.unwrap();
    println!("300 calls across a kill + restart after 2 s: {ok} ok, {failed} failed");
    assert!(fast_fail_seen, "the dead member's breaker opened");
    assert_eq!(
        served.load(Ordering::SeqCst),
        ok,
        "every reply came from the restarted server"
    );
    assert!(
        ok >= 280,
        "{ok} of 300 reached the restarted server, {failed} failed"
    );
}
