//! The application-level vocabulary every `zfabric` command shares: the
//! error type and its exit codes, the latency histogram, the `--metrics`
//! endpoint, logs and trace export.
//!
//! Guarantees: the commands (`cli`, `run`, `bench`, `tour`) depend on this
//! module and never on each other for these; a usage error always exits
//! with code 2. Does not: parse command lines, touch the fabric, or print
//! reports.

pub(crate) mod error;
pub(crate) mod health;
pub(crate) mod histogram;
pub(crate) mod logs;
pub(crate) mod metrics;
pub(crate) mod traces;

pub(crate) use error::{exit_code, BoxError, Incomplete, UsageError};
