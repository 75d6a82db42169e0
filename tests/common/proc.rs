//! Child processes of a test: killed when the test ends, their output
//! read on a thread so that every wait for a line is bounded.

use std::io::{BufRead, BufReader, Read};
use std::process::Child;
use std::sync::mpsc;
use std::time::Duration;

/// Kills the child if the test ends before it does.
pub(crate) struct Reap(pub(crate) Child);
impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The lines a child prints on one of its streams, read on a thread so
/// that waiting for one is bounded.
pub(crate) struct Lines(mpsc::Receiver<String>);

impl Lines {
    pub(crate) fn of(stream: impl Read + Send + 'static) -> Self {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines(rx)
    }

    /// The next line, waiting at most `within` (a watchdog, not a timing
    /// assertion); `None` when the stream ended or nothing came.
    pub(crate) fn next(&self, within: Duration) -> Option<String> {
        self.0.recv_timeout(within).ok()
    }

    /// Skips lines until one contains `needle`; panics after `within`.
    pub(crate) fn find(&self, needle: &str, within: Duration) -> String {
        let give_up = std::time::Instant::now() + within;
        loop {
            let left = give_up.saturating_duration_since(std::time::Instant::now());
            match self.next(left) {
                Some(l) if l.contains(needle) => return l,
                Some(_) => continue,
                None => panic!("no line containing {needle:?}"),
            }
        }
    }

    /// Every line until the stream ends (bounded by `within`).
    pub(crate) fn rest(&self, within: Duration) -> Vec<String> {
        let give_up = std::time::Instant::now() + within;
        let mut v = Vec::new();
        loop {
            let left = give_up.saturating_duration_since(std::time::Instant::now());
            match self.0.recv_timeout(left) {
                Ok(l) => v.push(l),
                Err(_) => return v,
            }
        }
    }
}
