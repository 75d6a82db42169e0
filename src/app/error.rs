//! Errors of the commands and how they map to exit codes.
//!
//! Guarantees: [`UsageError`] (bad flags, endpoints, JSON bodies, topology
//! or config files) exits with 2, anything else with 1; the message is the
//! error's one line. Does not: decide what is a usage error (the command
//! that checks its input does).

/// Any error a command returns; its `Display` is printed as one line.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A usage, endpoint, body, topology-file or config-file error: exit
/// code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UsageError(pub(crate) String);

/// A sending command finished, but not everything it sent is known to
/// have been delivered (exit code 3).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Incomplete(pub(crate) String);

/// The process exit code for a command's error: 2 for a [`UsageError`],
/// 3 for [`Incomplete`] delivery, 1 for anything else.
pub(crate) fn exit_code(e: &BoxError) -> i32 {
    if e.downcast_ref::<UsageError>().is_some() {
        2
    } else if e.downcast_ref::<Incomplete>().is_some() {
        3
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_errors_exit_2_and_others_1() {
        let usage: BoxError = UsageError("bad".into()).into();
        let other: BoxError = "broken".into();
        assert_eq!(exit_code(&usage), 2);
        assert_eq!(exit_code(&other), 1);
    }
}
