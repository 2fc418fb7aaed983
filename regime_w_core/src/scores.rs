//! The scores of one group: s_end, s_path, s_cf, the arms' s_wm, and the
//! within-group AUC that teaches the bandit.

use crate::arms::{arm_scores, N_ARMS};
use crate::counterfactual::{soundness, Question};
use crate::extract::answers_equal;
use crate::similarity::{combine, lcs_len, Dense, Pattern};
use crate::solution::Solution;

#[derive(Debug, Clone, PartialEq)]
pub struct GroupScores {
    pub answer: Vec<Option<f64>>,
    pub flexible: Vec<bool>,
    /// 1 / 0, or -1 when the gold answer is unknown.
    pub correct: Vec<i8>,
    pub s_end: Vec<f64>,
    pub s_path: Vec<f64>,
    pub s_cf: Vec<f64>,
    pub arms: Vec<[f64; N_ARMS]>,
    /// Largest answer cluster over K.
    pub group_s_end: f64,
    /// Per arm; -1 when the group is not mixed correct / incorrect.
    pub arm_auc: [f64; N_ARMS],
}

pub fn score_group<S: AsRef<str>>(texts: &[S], gold: Option<f64>, question: Option<&str>) -> GroupScores {
    let sols: Vec<Solution> = texts.iter().map(|t| Solution::parse(t.as_ref())).collect();
    let answer: Vec<Option<f64>> = sols.iter().map(Solution::answer_value).collect();
    let (s_end, group_s_end) = agreement(&answer);
    let s_path = path_consistency(&sols);
    let q = Question::parse(question);
    let s_cf: Vec<f64> = sols.iter().zip(&answer).map(|(s, &a)| soundness(&s.claims, a, &q)).collect();
    let arms: Vec<[f64; N_ARMS]> = (0..sols.len()).map(|i| arm_scores(s_end[i], s_path[i], s_cf[i])).collect();
    let correct: Vec<i8> = answer
        .iter()
        .map(|&a| match gold {
            Some(_) => i8::from(answers_equal(a, gold)),
            None => -1,
        })
        .collect();
    let arm_auc = std::array::from_fn(|arm| {
        let scores: Vec<f64> = arms.iter().map(|a| a[arm]).collect();
        within_group_auc(&scores, &correct).unwrap_or(-1.0)
    });
    GroupScores {
        flexible: sols.iter().map(|s| s.answer.as_ref().is_some_and(|a| a.flexible)).collect(),
        answer,
        correct,
        s_end,
        s_path,
        s_cf,
        arms,
        group_s_end,
        arm_auc,
    }
}

/// Per solution, the share of the others with an equal answer; and the
/// largest cluster over K. A lone solution agrees with itself.
fn agreement(answer: &[Option<f64>]) -> (Vec<f64>, f64) {
    let k = answer.len();
    let mut largest = 0usize;
    let s_end = answer
        .iter()
        .enumerate()
        .map(|(i, &a)| {
            if a.is_none() {
                return 0.0;
            }
            let same = answer.iter().enumerate().filter(|&(j, &b)| j != i && answers_equal(a, b)).count();
            largest = largest.max(same + 1);
            if k == 1 {
                1.0
            } else {
                same as f64 / (k - 1) as f64
            }
        })
        .collect();
    (s_end, largest as f64 / k.max(1) as f64)
}

/// Mean path similarity with the other solutions. Each row is summed in
/// sorted order so that permuting the group permutes the scores bit for bit.
fn path_consistency(sols: &[Solution]) -> Vec<f64> {
    let k = sols.len();
    if k == 1 {
        return vec![path_similarity(&sols[0], &sols[0])];
    }
    let dense = Dense::new(sols.iter().map(|s| s.tokens.as_slice()));
    let mut sim = vec![0.0f64; k * k];
    let mut set = |i: usize, j: usize, lcs: usize| {
        let s = combine(lcs, sols[i].tokens.len(), sols[j].tokens.len(), &sols[i].values, &sols[j].values);
        sim[i * k + j] = s;
        sim[j * k + i] = s;
    };
    for i in 0..k - 1 {
        let pattern = Pattern::new(&dense.streams[i], dense.vocab);
        let mut j = i + 1;
        while j + 1 < k {
            let (x, y) = pattern.lcs2(&dense.streams[j], &dense.streams[j + 1]);
            set(i, j, x);
            set(i, j + 1, y);
            j += 2;
        }
        if j < k {
            set(i, j, pattern.lcs(&dense.streams[j]));
        }
    }
    (0..k)
        .map(|i| {
            let mut row: Vec<f64> = (0..k).filter(|&j| j != i).map(|j| sim[i * k + j]).collect();
            row.sort_unstable_by(f64::total_cmp);
            (row.iter().sum::<f64>() / (k - 1) as f64).clamp(0.0, 1.0)
        })
        .collect()
}

/// Path similarity of two parsed solutions (symmetric, 1 for itself unless
/// empty, 0 with nothing shared).
pub fn path_similarity(a: &Solution, b: &Solution) -> f64 {
    combine(lcs_len(&a.tokens, &b.tokens), a.tokens.len(), b.tokens.len(), &a.values, &b.values)
}

/// AUC of `scores` ranking correct above incorrect (ties 1/2); `None` unless
/// the group holds both.
pub fn within_group_auc(scores: &[f64], correct: &[i8]) -> Option<f64> {
    let (mut wins, mut pairs) = (0.0, 0usize);
    for (i, &ci) in correct.iter().enumerate() {
        for (j, &cj) in correct.iter().enumerate() {
            if ci == 1 && cj == 0 {
                pairs += 1;
                wins += match scores[i].total_cmp(&scores[j]) {
                    std::cmp::Ordering::Greater => 1.0,
                    std::cmp::Ordering::Equal => 0.5,
                    std::cmp::Ordering::Less => 0.0,
                };
            }
        }
    }
    (pairs > 0).then(|| wins / pairs as f64)
}
