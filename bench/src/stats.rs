//! Latency samples and their summary: every sample is kept and sorted once (the counts here are
//! at most a few hundred thousand), so percentiles are exact, not estimated.

use std::time::Duration;

/// Exact percentiles of a set of durations.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Latencies {
    sorted: Vec<Duration>,
}

impl Latencies {
    pub fn new(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        Self { sorted: samples }
    }

    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    /// The `p`-th percentile (0..=100) by the nearest-rank method; zero when empty.
    pub fn percentile(&self, p: f64) -> Duration {
        if self.sorted.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * self.sorted.len() as f64).ceil() as usize;
        self.sorted[rank.clamp(1, self.sorted.len()) - 1]
    }

    pub fn p50(&self) -> Duration {
        self.percentile(50.0)
    }

    pub fn p99(&self) -> Duration {
        self.percentile(99.0)
    }

    pub fn min(&self) -> Duration {
        self.sorted.first().copied().unwrap_or_default()
    }
}

/// The median of `values` (the lower middle for an even count); `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[(v.len() - 1) / 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn nearest_rank_percentiles() {
        let l = Latencies::new((1..=100).rev().map(ms).collect());
        assert_eq!(l.p50(), ms(50));
        assert_eq!(l.p99(), ms(99));
        assert_eq!(l.percentile(100.0), ms(100));
        assert_eq!(l.percentile(0.0), ms(1));
        assert_eq!(l.min(), ms(1));
        assert_eq!(l.len(), 100);
    }

    #[test]
    fn small_and_empty_sets() {
        let one = Latencies::new(vec![ms(7)]);
        assert_eq!(one.p50(), ms(7));
        assert_eq!(one.p99(), ms(7));
        let none = Latencies::default();
        assert!(none.is_empty());
        assert_eq!(none.p99(), Duration::ZERO);
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.0));
        assert_eq!(median(&[f64::NAN]), None);
        assert_eq!(median(&[]), None);
    }
}
