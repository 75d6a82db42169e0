//! Liveness and readiness of a `zfabric` command, as its HTTP listener
//! reports them (`/healthz`, `/readyz`) for Kubernetes probes.
//!
//! - **Alive** (`/healthz` 200): the process runs and its runtime answers
//!   HTTP. There is no other condition: a live process that is not ready
//!   should not be restarted.
//! - **Ready** (`/readyz` 200): the command says so once it can do its
//!   work: its sockets are bound, and for `node` it has joined the fabric
//!   (sees a member) or has no seeds, with its services serving. Until
//!   then, and whenever the command says it is not ready any more, 503
//!   with the reason.
//!
//! - **Stopping**: once the command got SIGTERM/SIGINT it is not ready
//!   for good ([`set_stopping`]): `/readyz` answers 503 while it leaves
//!   the fabric and drains, so a load balancer takes it out first.
//!
//! Guarantees: one state per process, set only by the command; starts
//! not ready ("starting"); stopping is final. Does not: probe the fabric
//! itself.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Set once the command stops: readiness can no longer change.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// The process's readiness: `Ok(())` or the reason it is not ready.
static READY: Mutex<Result<(), String>> = Mutex::new(Err(String::new()));

/// The command can do its work now.
pub(crate) fn set_ready() {
    if STOPPING.load(Ordering::SeqCst) {
        return;
    }
    if let Ok(mut r) = READY.lock() {
        *r = Ok(());
    }
}

/// The command cannot do its work, for `reason`.
pub(crate) fn set_not_ready(reason: impl Into<String>) {
    if STOPPING.load(Ordering::SeqCst) {
        return;
    }
    if let Ok(mut r) = READY.lock() {
        *r = Err(reason.into());
    }
}

/// The command is stopping (leaving, draining): not ready, for good.
pub(crate) fn set_stopping(reason: impl Into<String>) {
    if let Ok(mut r) = READY.lock() {
        STOPPING.store(true, Ordering::SeqCst);
        *r = Err(reason.into());
    }
}

/// `Ok(())` when ready, else why not.
pub(crate) fn readiness() -> Result<(), String> {
    match READY.lock() {
        Ok(r) => match &*r {
            Err(why) if why.is_empty() => Err("starting".into()),
            other => other.clone(),
        },
        Err(_) => Err("readiness state unavailable".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_starts_not_ready_and_says_when_it_is() {
        // One process-wide state: this test owns it (no other test sets it).
        assert_eq!(readiness(), Err("starting".into()));
        set_ready();
        assert_eq!(readiness(), Ok(()));
        set_not_ready("no member seen");
        assert_eq!(readiness(), Err("no member seen".into()));
        set_ready();
        // Stopping is final: nothing makes it ready again.
        set_stopping("stopping");
        set_ready();
        set_not_ready("other");
        assert_eq!(readiness(), Err("stopping".into()));
    }
}
