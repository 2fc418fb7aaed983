//! Many groups at once: rayon over groups, each group scored sequentially,
//! so results never depend on the thread count.

use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;

use crate::arms::N_ARMS;
use crate::error::Error;
use crate::extract::{extract, Answer, Mode};
use crate::scores::{path_similarity, score_group, GroupScores};
use crate::solution::Solution;

/// Set in a forked child: the global rayon pool's threads did not survive
/// the fork, and work sent to it would wait forever.
static FORKED: AtomicBool = AtomicBool::new(false);

/// Marks this process as a forked child (called from an at-fork hook).
pub fn mark_forked() {
    FORKED.store(true, Ordering::SeqCst);
}

/// Runs `f` on the global pool, or in a forked child on a fresh pool of its
/// own (the cost of building it, ~0.1 ms, is nothing next to a batch).
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if !FORKED.load(Ordering::SeqCst) {
        return f();
    }
    // Failing to spawn threads leaves nothing to run on: a panic, which
    // the bindings turn into a Python exception.
    rayon::ThreadPoolBuilder::new().build().expect("spawn rayon threads in a forked child").install(f)
}

/// Flat per-solution arrays; group `g` owns rows `offsets[g]..offsets[g+1]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchScores {
    pub offsets: Vec<i64>,
    pub answer: Vec<f64>,
    pub answer_flexible: Vec<bool>,
    pub correct: Vec<i8>,
    pub s_end: Vec<f64>,
    pub s_path: Vec<f64>,
    pub s_cf: Vec<f64>,
    /// Row-major (N, 8).
    pub arm_scores: Vec<f64>,
    pub group_s_end: Vec<f64>,
    /// Row-major (G, 8).
    pub group_arm_auc: Vec<f64>,
}

/// A group to score: its solutions, and optionally gold and question.
pub struct Group<'a, S> {
    pub solutions: &'a [S],
    pub gold: Option<f64>,
    pub question: Option<&'a str>,
}

pub fn score_batch<S: AsRef<str> + Sync>(groups: &[Group<'_, S>]) -> Result<BatchScores, Error> {
    if let Some(g) = groups.iter().position(|g| g.solutions.is_empty()) {
        return Err(Error::EmptyGroup { group: g });
    }
    let scored: Vec<GroupScores> = groups.par_iter().map(|g| score_group(g.solutions, g.gold, g.question)).collect();
    Ok(flatten(&scored))
}

fn flatten(groups: &[GroupScores]) -> BatchScores {
    let n: usize = groups.iter().map(|g| g.answer.len()).sum();
    let mut out = BatchScores {
        offsets: Vec::with_capacity(groups.len() + 1),
        answer: Vec::with_capacity(n),
        answer_flexible: Vec::with_capacity(n),
        correct: Vec::with_capacity(n),
        s_end: Vec::with_capacity(n),
        s_path: Vec::with_capacity(n),
        s_cf: Vec::with_capacity(n),
        arm_scores: Vec::with_capacity(n * N_ARMS),
        group_s_end: Vec::with_capacity(groups.len()),
        group_arm_auc: Vec::with_capacity(groups.len() * N_ARMS),
    };
    out.offsets.push(0);
    for g in groups {
        out.answer.extend(g.answer.iter().map(|a| a.unwrap_or(f64::NAN)));
        out.answer_flexible.extend(&g.flexible);
        out.correct.extend(&g.correct);
        out.s_end.extend(&g.s_end);
        out.s_path.extend(&g.s_path);
        out.s_cf.extend(&g.s_cf);
        out.arm_scores.extend(g.arms.iter().flatten());
        out.group_s_end.push(g.group_s_end);
        out.group_arm_auc.extend(&g.arm_auc);
        out.offsets.push(out.answer.len() as i64);
    }
    out
}

pub fn extract_many<S: AsRef<str> + Sync>(texts: &[S], mode: Mode) -> Vec<Option<Answer>> {
    texts.par_iter().map(|t| extract(t.as_ref(), mode)).collect()
}

/// Path similarity of index pairs, each text parsed once.
pub fn pairwise<S: AsRef<str> + Sync>(texts: &[S], pairs: &[(i64, i64)]) -> Result<Vec<f64>, Error> {
    let n = texts.len();
    for (p, &(a, b)) in pairs.iter().enumerate() {
        for index in [a, b] {
            if usize::try_from(index).map_or(true, |i| i >= n) {
                return Err(Error::PairOutOfRange { pair: p, index, n });
            }
        }
    }
    let sols: Vec<Solution> = texts.par_iter().map(|t| Solution::parse(t.as_ref())).collect();
    Ok(pairs.par_iter().map(|&(a, b)| path_similarity(&sols[a as usize], &sols[b as usize])).collect())
}

/// The full symmetric (n, n) matrix, row-major.
pub fn similarity_matrix<S: AsRef<str> + Sync>(texts: &[S]) -> Vec<f64> {
    let n = texts.len();
    let sols: Vec<Solution> = texts.par_iter().map(|t| Solution::parse(t.as_ref())).collect();
    let upper: Vec<Vec<f64>> =
        (0..n).into_par_iter().map(|i| (i..n).map(|j| path_similarity(&sols[i], &sols[j])).collect()).collect();
    let mut m = vec![0.0; n * n];
    for (i, row) in upper.iter().enumerate() {
        for (d, &s) in row.iter().enumerate() {
            m[i * n + i + d] = s;
            m[(i + d) * n + i] = s;
        }
    }
    m
}
