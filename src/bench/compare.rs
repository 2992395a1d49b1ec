//! `tandem bench --compare A.json B.json`: is B faster than A? The ratio
//! of means, Welch's t-test (unequal variances) for the p-value, and Cohen's
//! d for the size of the effect, for prompt processing and generation.

use serde::Serialize;
use statrs::distribution::{ContinuousCDF, StudentsT};

#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// mean(B) / mean(A).
    pub ratio: f64,
    /// Two-sided p-value of Welch's t-test; None with fewer than 2 samples each.
    pub p_value: Option<f64>,
    /// Cohen's d with the pooled standard deviation.
    pub cohens_d: Option<f64>,
}

fn mean_var(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let m = x.iter().sum::<f64>() / n;
    let v = x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1.0);
    (m, v)
}

pub fn compare(a: &[f64], b: &[f64]) -> Comparison {
    let ratio = (b.iter().sum::<f64>() / b.len() as f64) / (a.iter().sum::<f64>() / a.len() as f64);
    if a.len() < 2 || b.len() < 2 {
        return Comparison {
            ratio,
            p_value: None,
            cohens_d: None,
        };
    }
    let ((ma, va), (mb, vb)) = (mean_var(a), mean_var(b));
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let se2 = va / na + vb / nb;
    let pooled = (((na - 1.0) * va + (nb - 1.0) * vb) / (na + nb - 2.0)).sqrt();
    let d = if pooled > 0.0 {
        Some((mb - ma) / pooled)
    } else {
        None
    };
    if se2 == 0.0 {
        return Comparison {
            ratio,
            p_value: Some(if ma == mb { 1.0 } else { 0.0 }),
            cohens_d: d,
        };
    }
    let t = (mb - ma) / se2.sqrt();
    // Welch–Satterthwaite degrees of freedom.
    let df = se2 * se2 / ((va / na).powi(2) / (na - 1.0) + (vb / nb).powi(2) / (nb - 1.0));
    let p = StudentsT::new(0.0, 1.0, df)
        .map(|dist| 2.0 * (1.0 - dist.cdf(t.abs())))
        .ok();
    Comparison {
        ratio,
        p_value: p,
        cohens_d: d,
    }
}

#[cfg(test)]
mod tests {
    use super::compare;

    #[test]
    fn welch_matches_a_textbook_example() {
        // Equal means: no effect.
        let c = compare(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]);
        assert_eq!(c.ratio, 1.0);
        assert!((c.p_value.unwrap() - 1.0).abs() < 1e-12);
        // scipy.stats.ttest_ind(b, a, equal_var=False): t = 2.0740, df = 10.209, p = 0.0642799977;
        // Cohen's d (pooled sd, numpy) = 0.9275275.
        let a = [19.8, 20.4, 19.6, 17.8, 18.5, 18.9, 18.3, 18.9, 19.5, 22.0];
        let b = [28.2, 26.6, 20.1, 23.3, 25.2, 22.1, 17.7, 27.6, 20.6, 13.7];
        let c = compare(&a, &b);
        assert!((c.p_value.unwrap() - 0.064_279_997_7).abs() < 1e-8, "{c:?}");
        assert!((c.cohens_d.unwrap() - 0.927_527_5).abs() < 1e-6, "{c:?}");
    }

    #[test]
    fn one_sample_gives_no_test() {
        let c = compare(&[1.0], &[2.0]);
        assert_eq!(c.ratio, 2.0);
        assert!(c.p_value.is_none());
    }
}
