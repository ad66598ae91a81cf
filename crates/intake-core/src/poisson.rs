//! The Poisson upper tail, P(X ≥ x) for X ~ Poisson(μ): how surprising a
//! window's count is against the count its baseline expects. Computed in log
//! space so that counts in the thousands neither overflow nor lose the tail.

/// ln(n!), exact by summation for small n and by Stirling's series above
/// (error below 1e-10 from n = 64 on).
pub fn ln_factorial(n: u64) -> f64 {
    if n < 64 {
        return (2..=n).map(|i| (i as f64).ln()).sum();
    }
    let x = n as f64;
    x * x.ln() - x + 0.5 * (2.0 * std::f64::consts::PI * x).ln() + 1.0 / (12.0 * x)
        - 1.0 / (360.0 * x * x * x)
}

/// P(X ≥ x) for X ~ Poisson(mu). 1 for x = 0 or when `mu` is not positive
/// and finite only for x = 0 (a zero mean makes any count ≥ 1 impossible: 0).
pub fn upper_tail(x: u64, mu: f64) -> f64 {
    if x == 0 {
        return 1.0;
    }
    if !(mu.is_finite() && mu > 0.0) {
        return 0.0;
    }
    if (x as f64) <= mu {
        // Not in the upper tail: 1 - P(X < x), summing down from x - 1,
        // where the terms fall (j / mu < 1), in log space as above.
        let top = x - 1;
        let ln_top = top as f64 * mu.ln() - mu - ln_factorial(top);
        let mut sum = 0.0f64;
        let mut term = 1.0f64;
        let mut j = top;
        loop {
            sum += term;
            if j == 0 || term < 1e-17 * sum {
                break;
            }
            term *= j as f64 / mu;
            j -= 1;
        }
        return (1.0 - (ln_top + sum.ln()).exp()).clamp(0.0, 1.0);
    }
    // Terms fall from x on (mu / (j + 1) < 1): sum until they stop mattering.
    let ln_first = x as f64 * mu.ln() - mu - ln_factorial(x);
    let mut sum = 0.0f64;
    let mut term = 1.0f64;
    let mut j = x;
    while term > 1e-17 * sum.max(1e-300) && j < x + 10_000 {
        sum += term;
        j += 1;
        term *= mu / j as f64;
    }
    (ln_first + sum.ln()).exp().clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_cases_match_the_closed_form() {
        // P(X >= 1) = 1 - e^-mu.
        let mu: f64 = 0.7;
        assert!((upper_tail(1, mu) - (1.0 - (-mu).exp())).abs() < 1e-12);
        // P(X >= 3; 2) = 1 - e^-2 (1 + 2 + 2).
        assert!((upper_tail(3, 2.0) - (1.0 - (-2.0f64).exp() * 5.0)).abs() < 1e-12);
        assert_eq!(upper_tail(0, 5.0), 1.0);
        assert_eq!(upper_tail(4, 0.0), 0.0);
    }

    #[test]
    fn stirling_joins_the_exact_sum() {
        let exact: f64 = (2..=64u64).map(|i| (i as f64).ln()).sum();
        assert!((ln_factorial(64) - exact).abs() < 1e-9);
    }

    #[test]
    fn the_tail_falls_with_the_count_and_stays_finite_for_large_counts() {
        let a = upper_tail(20, 5.0);
        let b = upper_tail(30, 5.0);
        assert!(a > b && b > 0.0, "{a} {b}");
        // 2,000 against a mean of 1,000 is beyond f64: 0, never NaN.
        let c = upper_tail(2_000, 1_000.0);
        assert!(c.is_finite() && c < 1e-100);
        // Around the mean the tail is about a half.
        let d = upper_tail(1_000, 1_000.0);
        assert!((0.45..0.55).contains(&d), "{d}");
    }
}
