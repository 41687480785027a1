//! Latency samples and the figures made of them.

use std::time::Duration;

use serde_json::{json, Value};

/// Latencies of one phase, in microseconds, plus how long the phase ran.
#[derive(Debug, Default, Clone)]
pub struct Samples {
    micros: Vec<u64>,
    /// Calls that failed.
    pub errors: u64,
    /// Successful calls left out of the latencies (a keyset walk's first
    /// page), counted in [`rate`](Self::rate): the server served them.
    pub untimed: u64,
    /// Wall time of the phase.
    pub elapsed: Duration,
}

impl Samples {
    /// Records one successful call.
    pub fn push(&mut self, latency: Duration) {
        self.micros.push(latency.as_micros() as u64);
    }

    /// Adds another worker's samples.
    pub fn merge(&mut self, other: Samples) {
        self.micros.extend(other.micros);
        self.errors += other.errors;
        self.untimed += other.untimed;
    }

    /// Successful calls.
    pub fn count(&self) -> usize {
        self.micros.len()
    }

    /// Successful calls per second of wall time, untimed ones included.
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs <= 0.0 {
            0.0
        } else {
            (self.micros.len() as u64 + self.untimed) as f64 / secs
        }
    }

    /// The `q` quantile (0..=1) in milliseconds (nearest rank).
    pub fn quantile_ms(&mut self, q: f64) -> f64 {
        if self.micros.is_empty() {
            return 0.0;
        }
        self.micros.sort_unstable();
        let rank = ((q * self.micros.len() as f64).ceil() as usize).clamp(1, self.micros.len());
        self.micros[rank - 1] as f64 / 1000.0
    }

    /// `{ops, per_s, p50_ms, p95_ms, p99_ms, errors}`; `ops` counts the
    /// untimed calls too, the quantiles only the timed ones.
    pub fn figures(&mut self) -> Value {
        json!({
            "ops": self.count() as u64 + self.untimed,
            "per_s": round(self.rate()),
            "p50_ms": round(self.quantile_ms(0.50)),
            "p95_ms": round(self.quantile_ms(0.95)),
            "p99_ms": round(self.quantile_ms(0.99)),
            "errors": self.errors,
        })
    }
}

/// Two decimals are plenty.
pub fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// ours / ceiling, rounded; 0 when the ceiling is 0.
pub fn ratio(ours: f64, ceiling: f64) -> f64 {
    if ceiling <= 0.0 {
        0.0
    } else {
        (ours / ceiling * 1000.0).round() / 1000.0
    }
}

/// A figure with its ceiling, the ratio and whether the target ratio was met.
pub fn against(ours: f64, ceiling_name: &str, ceiling: f64, target_ratio: f64) -> Value {
    let r = ratio(ours, ceiling);
    json!({
        "ceiling": ceiling_name,
        "ceiling_per_s": round(ceiling),
        "ratio": r,
        "target_ratio": target_ratio,
        "met": r >= target_ratio,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let mut s = Samples::default();
        for ms in 1..=100 {
            s.push(Duration::from_millis(ms));
        }
        assert_eq!(s.quantile_ms(0.5), 50.0);
        assert_eq!(s.quantile_ms(0.99), 99.0);
        assert_eq!(s.quantile_ms(1.0), 100.0);
    }
}
