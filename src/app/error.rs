//! Errors of the commands and how they map to exit codes.
//!
//! Guarantees: [`UsageError`] (bad flags, endpoints, JSON bodies, topology
//! or config files) and an endpoint that cannot be bound or opened as
//! given (address in use, permission, a path that is not a socket: the
//! library's [`zfabric::OpenError`] other than `Connect`) exit with 2,
//! anything else (a peer that failed, requests that failed, an internal
//! error) with 1; the message is the error's one line. Does not: decide
//! what is a usage error (the command that checks its input does).

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

/// Exit code of bad usage, configuration or an endpoint that cannot be
/// bound.
pub(crate) const EXIT_USAGE: i32 = 2;
/// Exit code of a failure at run time.
pub(crate) const EXIT_FAILURE: i32 = 1;
/// Exit code of a sending command that knows not all it sent left.
pub(crate) const EXIT_INCOMPLETE: i32 = 3;

/// The process exit code for a command's error: 2 for a [`UsageError`]
/// or a bind/endpoint error, 3 for [`Incomplete`] delivery, 1 for
/// anything else.
pub(crate) fn exit_code(e: &BoxError) -> i32 {
    if e.downcast_ref::<UsageError>().is_some() || e.downcast_ref::<zfabric::BindError>().is_some()
    {
        return EXIT_USAGE;
    }
    if e.downcast_ref::<Incomplete>().is_some() {
        return EXIT_INCOMPLETE;
    }
    match e.downcast_ref::<zfabric::OpenError>() {
        Some(zfabric::OpenError::Connect(_)) | None => EXIT_FAILURE,
        Some(_) => EXIT_USAGE,
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

    #[tokio::test]
    async fn an_address_in_use_exits_2() {
        let first = zfabric::SocketBuilder::new()
            .bind("tcp://127.0.0.1:0")
            .server::<u8, u8>()
            .await
            .unwrap();
        let ep = first.endpoints()[0].to_string();
        let e: BoxError = zfabric::SocketBuilder::new()
            .bind(ep)
            .server::<u8, u8>()
            .await
            .unwrap_err()
            .into();
        assert!(e.to_string().contains("address in use"), "{e}");
        assert_eq!(exit_code(&e), 2);
    }
}
