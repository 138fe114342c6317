//! Percentiles of measured durations.

use std::time::Duration;

/// Summary of a set of samples (nearest-rank percentiles).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Summary {
    pub(crate) count: usize,
    pub(crate) min: Duration,
    pub(crate) p50: Duration,
    pub(crate) p90: Duration,
    pub(crate) p99: Duration,
    pub(crate) max: Duration,
    pub(crate) mean: Duration,
}

impl Summary {
    /// Summarize `samples` (sorted in place). `None` when there are none.
    pub(crate) fn of(samples: &mut [Duration]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let total: Duration = samples.iter().sum();
        let count = samples.len();
        Some(Self {
            count,
            min: samples[0],
            p50: percentile(samples, 50.0),
            p90: percentile(samples, 90.0),
            p99: percentile(samples, 99.0),
            max: samples[count - 1],
            mean: total / u32::try_from(count).unwrap_or(u32::MAX),
        })
    }
}

/// Nearest-rank percentile of sorted, non-empty `samples`.
fn percentile(samples: &[Duration], percent: f64) -> Duration {
    // Ranks are small (at most millions), so the f64 round trip is exact.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let rank = ((percent / 100.0) * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut samples: Vec<Duration> = (1..=100).rev().map(Duration::from_micros).collect();
        let summary = Summary::of(&mut samples).expect("samples");
        assert_eq!(summary.p50, Duration::from_micros(50));
        assert_eq!(summary.p90, Duration::from_micros(90));
        assert_eq!(summary.p99, Duration::from_micros(99));
        assert_eq!(summary.min, Duration::from_micros(1));
        assert_eq!(summary.max, Duration::from_micros(100));
        assert_eq!(summary.count, 100);
        assert!(Summary::of(&mut []).is_none());
    }
}
