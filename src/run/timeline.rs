//! What happens while the loads run: the faults, on schedule, and a
//! progress line once a second.
//!
//! Guarantees: each fault of the file is applied once, in `at_s` order,
//! no earlier than its time (checked every 20 ms), and reported with the
//! time it was applied; progress goes to stderr only, so `--json` stdout
//! stays one object. Does not: decide what a fault does to a node (the
//! member does).

use std::time::{Duration, Instant};

use super::load::Progress;
use super::member::Member;
use super::report::FaultReport;
use super::spec::{FaultSpec, LoadSpec};

/// The faults still to apply, earliest first.
#[derive(Debug)]
pub(super) struct FaultPlan {
    pending: std::iter::Peekable<std::vec::IntoIter<FaultSpec>>,
}

impl FaultPlan {
    pub(super) fn new(faults: &[FaultSpec]) -> Self {
        let mut faults = faults.to_vec();
        faults.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
        FaultPlan {
            pending: faults.into_iter().peekable(),
        }
    }

    /// The next fault due `at_s` seconds into the run, if any (call until
    /// `None`).
    pub(super) fn due(&mut self, at_s: f64) -> Option<FaultSpec> {
        self.pending.next_if(|f| at_s >= f.at_s)
    }
}

/// Applies `faults` to `members` on schedule and shows progress (when
/// `show`) until `done()`; returns the faults as applied.
pub(super) async fn watch(
    start: Instant,
    members: &mut [Member],
    mut faults: FaultPlan,
    loads: &[(LoadSpec, std::sync::Arc<Progress>)],
    show: bool,
    done: impl Fn() -> bool,
) -> Vec<FaultReport> {
    let mut applied = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut last_progress = Instant::now();
    while !done() {
        tick.tick().await;
        while let Some(f) = faults.due(start.elapsed().as_secs_f64()) {
            if let Some(m) = members.iter_mut().find(|m| m.name() == f.node) {
                m.apply(f.kind, f.delay_ms, f.count).await;
            }
            applied.push(FaultReport {
                at_s: start.elapsed().as_secs_f64(),
                kind: f.kind,
                node: f.node.clone(),
            });
            if show {
                eprintln!(
                    "  [{:>5.1}s] fault: {:?} {}",
                    start.elapsed().as_secs_f64(),
                    f.kind,
                    f.node
                );
            }
        }
        if show && last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            let parts: Vec<String> = loads.iter().map(|(l, p)| p.line(l)).collect();
            eprintln!(
                "  [{:>5.1}s] {}",
                start.elapsed().as_secs_f64(),
                parts.join(" | ")
            );
        }
    }
    applied
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::spec::FaultKind;

    fn fault(at_s: f64, node: &str) -> FaultSpec {
        FaultSpec {
            at_s,
            kind: FaultKind::Kill,
            node: node.into(),
            delay_ms: 0.0,
            count: 0,
        }
    }

    #[test]
    fn faults_come_due_once_in_time_order() {
        let mut plan = FaultPlan::new(&[fault(2.0, "b"), fault(1.0, "a"), fault(1.0, "c")]);
        assert!(plan.due(0.5).is_none());
        let now: Vec<String> = std::iter::from_fn(|| plan.due(1.0))
            .map(|f| f.node)
            .collect();
        assert_eq!(now, ["a", "c"]);
        assert!(plan.due(1.5).is_none());
        assert_eq!(plan.due(9.0).map(|f| f.node).as_deref(), Some("b"));
        assert!(plan.due(99.0).is_none());
    }
}
