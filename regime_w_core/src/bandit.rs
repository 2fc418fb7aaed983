//! Seeded Thompson sampling over the eight arms with Beta posteriors.
//!
//! The generator is our own xoshiro256** so that a saved state replays the
//! same stream on any platform and crate version; the whole state is a small
//! serde value saved next to the rollouts.

use serde::{Deserialize, Serialize};

use crate::arms::N_ARMS;
use crate::error::Error;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bandit {
    pub seed: u64,
    pub alpha: [f64; N_ARMS],
    pub beta: [f64; N_ARMS],
    pub n_updates: u64,
    rng: [u64; 4],
}

impl Bandit {
    pub fn new(seed: u64, prior_alpha: f64, prior_beta: f64) -> Result<Bandit, Error> {
        check_prior(prior_alpha, "prior_alpha")?;
        check_prior(prior_beta, "prior_beta")?;
        let mut sm = seed;
        let rng = std::array::from_fn(|_| splitmix64(&mut sm));
        Ok(Bandit { seed, alpha: [prior_alpha; N_ARMS], beta: [prior_beta; N_ARMS], n_updates: 0, rng })
    }

    pub fn posterior_mean(&self) -> [f64; N_ARMS] {
        std::array::from_fn(|a| self.alpha[a] / (self.alpha[a] + self.beta[a]))
    }

    /// Best posterior mean; the lowest index wins ties.
    pub fn best_arm(&self) -> usize {
        argmax(&self.posterior_mean())
    }

    /// One Thompson draw: the arm whose sampled success rate is highest.
    pub fn sample_arm(&mut self) -> usize {
        let draws: [f64; N_ARMS] = std::array::from_fn(|a| self.sample_beta(self.alpha[a], self.beta[a]));
        argmax(&draws)
    }

    pub fn choose(&mut self, n_groups: usize) -> Vec<usize> {
        (0..n_groups).map(|_| self.sample_arm()).collect()
    }

    /// Full-information update: every arm learns from each informative
    /// group's AUC (a fractional Bernoulli outcome). `auc` is (G, 8) with -1
    /// for groups that teach nothing; returns how many groups taught.
    pub fn update(&mut self, auc: &[f64]) -> usize {
        let mut informative = 0;
        for row in auc.chunks_exact(N_ARMS) {
            if row.iter().any(|&x| !(0.0..=1.0).contains(&x)) {
                continue;
            }
            for (a, &x) in row.iter().enumerate() {
                self.alpha[a] += x;
                self.beta[a] += 1.0 - x;
            }
            informative += 1;
        }
        self.n_updates += informative as u64;
        informative
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a bandit of finite numbers serialises")
    }

    pub fn from_json(text: &str) -> Result<Bandit, Error> {
        let b: Bandit =
            serde_json::from_str(text).map_err(|e| Error::BadBandit(format!("bandit state is not valid JSON: {e}")))?;
        for (&a, &be) in b.alpha.iter().zip(&b.beta) {
            check_prior(a, "alpha")?;
            check_prior(be, "beta")?;
        }
        Ok(b)
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.rng;
        let out = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        out
    }

    /// Uniform in (0, 1), never 0 so logs stay finite.
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// Marsaglia-Tsang; shapes below 1 are boosted by `U^(1/a)`.
    fn sample_gamma(&mut self, shape: f64) -> f64 {
        if shape < 1.0 {
            let u = self.uniform();
            return self.sample_gamma(shape + 1.0) * u.powf(1.0 / shape);
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = (1.0 + c * x).powi(3);
            if v > 0.0 && self.uniform().ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                return d * v;
            }
        }
    }

    fn sample_beta(&mut self, a: f64, b: f64) -> f64 {
        let x = self.sample_gamma(a);
        let y = self.sample_gamma(b);
        if x + y > 0.0 {
            x / (x + y)
        } else {
            0.5
        }
    }
}

fn check_prior(v: f64, name: &str) -> Result<(), Error> {
    if v.is_finite() && v > 0.0 && v < 1e12 {
        Ok(())
    } else {
        Err(Error::BadBandit(format!("{name} must be a positive finite number, got {v}")))
    }
}

fn splitmix64(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn argmax(xs: &[f64; N_ARMS]) -> usize {
    (0..N_ARMS).fold(0, |best, a| if xs[a] > xs[best] { a } else { best })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_and_replayable() {
        let mut a = Bandit::new(7, 1.0, 1.0).unwrap();
        let mut b = Bandit::from_json(&a.to_json()).unwrap();
        assert_eq!(a.choose(50), b.choose(50));
        let c = Bandit::new(8, 1.0, 1.0).unwrap().choose(50);
        assert_ne!(a.choose(50), c);
    }

    #[test]
    fn learns_the_better_arm() {
        let mut b = Bandit::new(0, 1.0, 1.0).unwrap();
        let mut row = [0.3; N_ARMS];
        row[5] = 0.9;
        let auc: Vec<f64> = (0..50).flat_map(|_| row).chain([-1.0; N_ARMS]).collect();
        assert_eq!(b.update(&auc), 50);
        assert_eq!(b.best_arm(), 5);
        assert_eq!(b.n_updates, 50);
        let picks = b.choose(100);
        assert!(picks.iter().filter(|&&a| a == 5).count() > 90);
    }

    #[test]
    fn rejects_bad_state() {
        assert!(Bandit::new(0, 0.0, 1.0).is_err());
        assert!(Bandit::from_json("{").is_err());
        assert!(Bandit::from_json("[1]").is_err());
    }
}
