//! Criterion benches of the resilience parts: what a request pays to pass
//! through a bulkhead, a breaker, a retry budget and a dedup window,
//! against the same work without them, in the same run.
//!
//! ```sh
//! cargo bench --bench resilience
//! ```
//! Target: a semaphore bulkhead adds under 1 µs per request. The overload
//! behaviour (p99 of accepted requests at 2x capacity, rejection latency)
//! is measured by `cargo run --release --example overload`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use tokio::runtime::Runtime;
use zfabric::resilience::{
    BreakerConfig, BudgetConfig, Bulkhead, BulkheadConfig, CircuitBreaker, DedupConfig, DedupKey,
    IdempotentConsumer, Outcome, RetryBudget,
};

fn current_thread() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// The same trivial async work with and without a bulkhead around it.
fn bulkhead_pass(c: &mut Criterion) {
    let rt = current_thread();
    let mut g = c.benchmark_group("bulkhead_pass");
    g.bench_function("baseline/direct", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(async { 1u64 }.await) })
    });
    let sem = Bulkhead::new("bench", BulkheadConfig::default());
    g.bench_function("zfabric/semaphore", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(sem.run(None, async { 1u64 }).await) })
    });
    let deadline = Some(zfabric::Deadline::after(Duration::from_secs(3600)));
    g.bench_function("zfabric/semaphore_with_deadline", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(sem.run(deadline, async { 1u64 }).await) })
    });
    // A thread bulkhead hands the work to another thread and back: the
    // price of isolation from blocking work, against tokio::spawn on the
    // caller's runtime.
    let mt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    g.bench_function("baseline/spawn", |b| {
        b.to_async(&mt)
            .iter(|| async { black_box(tokio::spawn(async { 1u64 }).await) })
    });
    let thr = Bulkhead::new("bench-threads", BulkheadConfig::default().threads(1));
    g.bench_function("zfabric/threads", |b| {
        b.to_async(&mt)
            .iter(|| async { black_box(thr.run(None, async { 1u64 }).await) })
    });
    g.finish();
}

/// The plain state machines, per call.
fn state_machines(c: &mut Criterion) {
    let mut g = c.benchmark_group("resilience_state");
    let mut breaker = CircuitBreaker::new(BreakerConfig::default());
    g.bench_function("breaker_acquire_record", |b| {
        b.iter(|| {
            let now = Instant::now();
            let _ = black_box(breaker.try_acquire(now));
            black_box(breaker.record(Outcome::Success, Duration::from_micros(50), now))
        })
    });
    let mut budget = RetryBudget::new(BudgetConfig::default());
    g.bench_function("retry_budget_deposit", |b| {
        b.iter(|| budget.deposit(black_box(Instant::now())))
    });
    let rt = current_thread();
    let consumer = IdempotentConsumer::<u64>::new("bench", DedupConfig::default());
    let mut n = 0u64;
    g.bench_function("dedup_new_key", |b| {
        b.to_async(&rt).iter(|| {
            n += 1;
            let key = DedupKey::Natural(1, n);
            let c = &consumer;
            async move { black_box(c.process(key, || async { Ok::<_, ()>(1u64) }).await) }
        })
    });
    g.finish();
}

mod group {
    // criterion_group! generates an undocumented `pub fn`.
    #![allow(missing_docs)]
    use super::*;
    criterion_group!(benches, bulkhead_pass, state_machines);
}
criterion_main!(group::benches);
