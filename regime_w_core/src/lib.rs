//! Regime W core: scores groups of sampled solutions to one math question
//! (answer agreement, path consistency, counterfactual soundness), picks the
//! arm that combines them with a seeded bandit.
//!
//! Plain Rust; the PyO3 layer lives behind the `python` feature.

pub mod arms;
pub mod bandit;
pub mod batch;
pub mod counterfactual;
pub mod error;
pub mod expr;
pub mod extract;
pub mod number;
pub mod scores;
pub mod similarity;
pub mod solution;
pub mod steps;

#[cfg(feature = "python")]
mod python;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
