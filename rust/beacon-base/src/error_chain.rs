//! Errors of the HTTP clients (reqwest, hyper, rustls) as one line a user can act on.

/// An error and its root cause on one line ("error sending request for url (…): invalid peer
/// certificate: UnknownIssuer"): the top-level message alone rarely says what to fix, and the
/// layers between (hyper's "client error (Canceled)") vary with timing, not with the cause.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut root = None;
    let mut source = error.source();
    while let Some(cause) = source {
        root = Some(cause);
        source = cause.source();
    }
    let text = error.to_string();
    match root.map(ToString::to_string) {
        Some(cause) if !text.contains(&cause) => format!("{text}: {cause}"),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("error sending request")]
    struct Outer(#[source] Middle);
    #[derive(Debug, thiserror::Error)]
    #[error("client error (Canceled)")]
    struct Middle(#[source] std::io::Error);

    #[test]
    fn the_top_and_the_root_cause() {
        let error = Outer(Middle(std::io::Error::other(
            "invalid peer certificate: UnknownIssuer",
        )));
        assert_eq!(
            error_chain(&error),
            "error sending request: invalid peer certificate: UnknownIssuer"
        );
        assert_eq!(error_chain(&std::io::Error::other("plain")), "plain");
    }
}
