//! Head sampling, configured like the OpenTelemetry SDKs (`OTEL_TRACES_SAMPLER`, `_ARG`).

use crate::trace::context::TraceParent;
use crate::BeaconError;

/// The samplers of the OpenTelemetry specification.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sampler {
    /// Every trace.
    AlwaysOn,
    /// No trace.
    AlwaysOff,
    /// A fraction of traces, decided from the trace id so every service agrees.
    TraceIdRatio(f64),
    /// Follows the caller's sampled flag when there is a caller; else uses the root sampler.
    ParentBased(RootSampler),
}

/// The sampler a parent-based sampler uses for new traces.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RootSampler {
    /// Sample every new trace.
    AlwaysOn,
    /// Sample no new trace.
    AlwaysOff,
    /// Sample this fraction of new traces.
    TraceIdRatio(f64),
}

impl Default for Sampler {
    fn default() -> Self {
        Sampler::ParentBased(RootSampler::AlwaysOn)
    }
}

fn ratio(arg: Option<&str>) -> Result<f64, BeaconError> {
    let Some(arg) = arg.map(str::trim).filter(|a| !a.is_empty()) else {
        return Ok(1.0);
    };
    match arg.parse::<f64>() {
        Ok(value) if (0.0..=1.0).contains(&value) => Ok(value),
        _ => Err(BeaconError::InvalidSampler(format!(
            "OTEL_TRACES_SAMPLER_ARG={arg:?} is not a ratio between 0 and 1"
        ))),
    }
}

impl Sampler {
    /// Builds the sampler named like `OTEL_TRACES_SAMPLER`; `None` is the default
    /// (`parentbased_always_on`).
    pub fn from_name(name: Option<&str>, arg: Option<&str>) -> Result<Sampler, BeaconError> {
        Ok(match name.map(str::trim).unwrap_or("parentbased_always_on") {
            "" | "parentbased_always_on" => Sampler::ParentBased(RootSampler::AlwaysOn),
            "always_on" => Sampler::AlwaysOn,
            "always_off" => Sampler::AlwaysOff,
            "traceidratio" => Sampler::TraceIdRatio(ratio(arg)?),
            "parentbased_always_off" => Sampler::ParentBased(RootSampler::AlwaysOff),
            "parentbased_traceidratio" => Sampler::ParentBased(RootSampler::TraceIdRatio(ratio(arg)?)),
            other => {
                return Err(BeaconError::InvalidSampler(format!(
                    "OTEL_TRACES_SAMPLER={other:?} is not one of always_on, always_off, traceidratio, \\
                     parentbased_always_on, parentbased_always_off, parentbased_traceidratio"
                )))
            }
        })
    }

    /// Decides whether a span of this trace is recorded and exported.
    pub fn should_sample(&self, trace_id: &[u8; 16], parent: Option<&TraceParent>) -> bool {
        match (self, parent) {
            (Sampler::AlwaysOn, _) => true,
            (Sampler::AlwaysOff, _) => false,
            (Sampler::TraceIdRatio(r), _) => ratio_decision(*r, trace_id),
            (Sampler::ParentBased(_), Some(parent)) => parent.sampled(),
            (Sampler::ParentBased(RootSampler::AlwaysOn), None) => true,
            (Sampler::ParentBased(RootSampler::AlwaysOff), None) => false,
            (Sampler::ParentBased(RootSampler::TraceIdRatio(r)), None) => {
                ratio_decision(*r, trace_id)
            }
        }
    }
}

// The same rule as the Go and Java SDKs: the low 8 bytes of the trace id, as a 63-bit number,
// below ratio * 2^63.
fn ratio_decision(ratio: f64, trace_id: &[u8; 16]) -> bool {
    let mut low = [0u8; 8];
    low.copy_from_slice(&trace_id[8..]);
    let value = u64::from_be_bytes(low) >> 1;
    (value as f64) < ratio * (1u64 << 63) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parent(sampled: bool) -> TraceParent {
        TraceParent {
            trace_id: [1; 16],
            parent_id: [2; 8],
            flags: u8::from(sampled),
        }
    }

    #[test]
    fn parent_based_follows_the_caller() {
        let sampler = Sampler::default();
        assert!(sampler.should_sample(&[1; 16], Some(&parent(true))));
        assert!(!sampler.should_sample(&[1; 16], Some(&parent(false))));
        assert!(sampler.should_sample(&[1; 16], None));
    }

    #[test]
    fn ratio_samples_about_that_fraction() {
        let sampler = Sampler::from_name(Some("traceidratio"), Some("0.25")).unwrap();
        let sampled = (0..10_000u64)
            .filter(|i| {
                let mut id = [0u8; 16];
                id[8..].copy_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
                sampler.should_sample(&id, None)
            })
            .count();
        assert!((2_200..2_800).contains(&sampled), "{sampled}");
    }

    #[test]
    fn names_and_errors() {
        assert_eq!(Sampler::from_name(None, None).unwrap(), Sampler::default());
        assert_eq!(
            Sampler::from_name(Some("always_off"), None).unwrap(),
            Sampler::AlwaysOff
        );
        assert!(Sampler::from_name(Some("sometimes"), None).is_err());
        assert!(Sampler::from_name(Some("traceidratio"), Some("2")).is_err());
    }
}
