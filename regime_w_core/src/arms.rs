//! The eight ways of turning (s_end, s_path, s_cf) into one coherence s_wm.

pub const N_ARMS: usize = 8;
pub const ARMS: [&str; N_ARMS] = ["W1", "W2", "W3", "W4", "M1", "M2", "M3", "M4"];
pub const ARM_NAMES: [&str; N_ARMS] = [
    "consensus",
    "branchial",
    "multiway merge",
    "causal invariance",
    "counterfactual",
    "grounded consensus",
    "gated",
    "balanced",
];

/// s_wm of every arm, in arm order.
pub fn arm_scores(s_end: f64, s_path: f64, s_cf: f64) -> [f64; N_ARMS] {
    [
        s_end,
        s_path,
        (s_end + s_path) / 2.0,
        s_end * s_path,
        s_cf,
        (s_end + s_cf) / 2.0,
        s_end * s_cf,
        (s_end + s_path + s_cf) / 3.0,
    ]
}
