//! Histogram bucket bounds.

use crate::BeaconError;

/// Default upper bounds in seconds: the OpenTelemetry HTTP defaults, extended down to 1 ms and
/// up to 30 s so that both fast API calls and slow uploads land in a bucket that tells them apart.
pub const DEFAULT_BUCKETS: [f64; 17] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    30.0,
];

/// Validated bucket upper bounds (the implicit `+Inf` bucket is not listed).
#[derive(Clone, Debug, PartialEq)]
pub struct Buckets {
    seconds: Vec<f64>,
    // Observations are durations in nanoseconds: comparing integers keeps the hot path free of
    // float conversions and makes `le` inclusive exactly.
    nanos: Vec<u64>,
}

impl Buckets {
    /// Checks that the bounds are finite, positive and strictly increasing.
    pub fn new(seconds: &[f64]) -> Result<Self, BeaconError> {
        if seconds.is_empty() {
            return Err(BeaconError::InvalidBuckets("got an empty list".into()));
        }
        if seconds.len() > 100 {
            return Err(BeaconError::InvalidBuckets(format!(
                "got {} bounds, at most 100 are allowed",
                seconds.len()
            )));
        }
        for (i, bound) in seconds.iter().enumerate() {
            if !bound.is_finite() || *bound <= 0.0 {
                return Err(BeaconError::InvalidBuckets(format!(
                    "bound {bound} is not finite and positive"
                )));
            }
            if i > 0 && *bound <= seconds[i - 1] {
                return Err(BeaconError::InvalidBuckets(format!(
                    "{bound} does not come after {}",
                    seconds[i - 1]
                )));
            }
        }
        let nanos = seconds.iter().map(|s| (s * 1e9).round() as u64).collect();
        Ok(Buckets {
            seconds: seconds.to_vec(),
            nanos,
        })
    }

    /// The upper bounds in seconds.
    pub fn seconds(&self) -> &[f64] {
        &self.seconds
    }

    /// Number of finite bounds.
    pub fn len(&self) -> usize {
        self.seconds.len()
    }

    /// Never true for a validated value; present for API completeness.
    pub fn is_empty(&self) -> bool {
        self.seconds.is_empty()
    }

    /// Index of the bucket an observation belongs to; `len()` is the `+Inf` bucket.
    pub fn index_of(&self, nanos: u64) -> usize {
        self.nanos.partition_point(|bound| *bound < nanos)
    }
}

impl Default for Buckets {
    fn default() -> Self {
        Buckets::new(&DEFAULT_BUCKETS).expect("default buckets are valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_inclusive() {
        let buckets = Buckets::new(&[0.001, 0.01]).unwrap();
        assert_eq!(buckets.index_of(0), 0);
        assert_eq!(buckets.index_of(1_000_000), 0);
        assert_eq!(buckets.index_of(1_000_001), 1);
        assert_eq!(buckets.index_of(10_000_000), 1);
        assert_eq!(buckets.index_of(10_000_001), 2);
    }

    #[test]
    fn defaults_resolve_a_millisecond_and_ten_seconds() {
        let buckets = Buckets::default();
        assert_ne!(buckets.index_of(500_000), buckets.index_of(2_000_000));
        assert_ne!(
            buckets.index_of(9_000_000_000),
            buckets.index_of(12_000_000_000)
        );
        assert!(buckets.index_of(12_000_000_000) < buckets.len());
    }

    #[test]
    fn rejects_bad_bounds() {
        for bad in [
            &[][..],
            &[0.1, 0.1],
            &[0.2, 0.1],
            &[-1.0],
            &[0.0],
            &[f64::NAN],
            &[f64::INFINITY],
        ] {
            assert!(Buckets::new(bad).is_err(), "{bad:?} accepted");
        }
    }
}
