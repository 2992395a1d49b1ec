//! Mean, median and tail percentiles of a sample.

use serde::Serialize;

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Summary {
    pub mean: f64,
    pub median: f64,
    pub p90: f64,
    pub p99: f64,
    pub n: usize,
}

impl Summary {
    pub fn of(values: &[f64]) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        let mut v = values.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        // Nearest-rank percentile.
        let pct = |p: f64| v[((p / 100.0 * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Self {
            mean: v.iter().sum::<f64>() / v.len() as f64,
            median: pct(50.0),
            p90: pct(90.0),
            p99: pct(99.0),
            n: v.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(|i| i as f64).collect();
        let s = super::Summary::of(&v);
        assert_eq!((s.median, s.p90, s.p99, s.mean), (50.0, 90.0, 99.0, 50.5));
        assert_eq!(super::Summary::of(&[3.0]).p99, 3.0);
        assert_eq!(super::Summary::of(&[]).n, 0);
    }
}
