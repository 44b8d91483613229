//! The one error type of the core crate.

/// Everything the core can refuse. Each message is meant to be shown to a user as is.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BeaconError {
    /// Histogram bucket bounds that Prometheus could not represent or that make no sense.
    #[error(
        "buckets must be a non-empty, strictly increasing list of finite positive seconds; {0}"
    )]
    InvalidBuckets(String),
    /// A series cap of zero would drop every observation.
    #[error("max_series must be at least 1, got {0}")]
    InvalidSeriesCap(usize),
    /// A check name that cannot be used as a label value or JSON key safely.
    #[error("check name {0:?} is invalid: use 1 to 64 characters of letters, digits, '_', '-', '.' or ':'")]
    InvalidCheckName(String),
    /// The same check registered twice.
    #[error("check {0:?} is registered twice")]
    DuplicateCheck(String),
    /// An `OTEL_TRACES_SAMPLER` setting the SDK specification does not define.
    #[error("{0}")]
    InvalidSampler(String),
    /// The memory worker processes share could not be set up.
    #[error("cannot set up the metrics memory shared by the workers: {0}")]
    SharedMemory(String),
    /// Span export settings that cannot work (a bad endpoint URL, header, protocol).
    #[error("{0}")]
    InvalidExport(String),
    /// A result reported for a check that was never registered.
    #[error("check {0:?} is not registered")]
    UnknownCheck(String),
}
