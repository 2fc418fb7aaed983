//! s_cf, counterfactual soundness: a solution is read as a dataflow chain of
//! claims whose leaves come from the question, from earlier results, or from
//! bare constants.
//!
//! `s_cf = (valid_claims + q) / (claims + 1) * use` where `q` in [0, 1]
//! averages how the answer is produced, grounded, dependent on the question
//! and built from the chain's claims, and `use` grows with the share of the question's numbers the
//! chain uses. Validity counts in whole claims and `q` at most one, so fixing
//! a wrong claim can never lower the first factor, and it never lowers `use`
//! (a fixed stated value only stops matching later leaves, which can then
//! resolve to the question).
//!
//! `use` is a factor, not a fifth of `q`: a one-claim answer built from two of
//! the question's numbers is valid, produced, grounded and dependent, and
//! without it scored above most correct multi-step solutions. A PPO policy
//! rewarded with s_wm found exactly that shortcut (issue 16).

use crate::number::numbers;
use crate::steps::Claim;

/// Question numbers kept: bounds the per-input perturbation pass.
const MAX_INPUTS: usize = 64;
/// Inputs perturbed one at a time per solution.
const MAX_PERTURBED: usize = 16;
/// `use` of a chain that touches none of the question's numbers: above 0, so
/// that replacing a grounded answer with a constant still lowers s_cf.
const UNUSED_QUESTION: f64 = 0.2;
/// Unit conversions and halves need no source in the question.
const CONVENTIONAL: [f64; 16] =
    [0.5, 1.0, 2.0, 3.0, 4.0, 7.0, 10.0, 12.0, 24.0, 30.0, 52.0, 60.0, 100.0, 365.0, 1000.0, 0.25];

/// The numbers of a question, deduplicated; `origin` maps each to the
/// written number it came from (`20%` gives 20 and 0.2, one origin).
#[derive(Debug, Clone, Default)]
pub struct Question {
    numbers: Vec<f64>,
    origin: Vec<usize>,
    n_origins: usize,
}

impl Question {
    pub fn parse(text: Option<&str>) -> Question {
        let mut q = Question::default();
        for n in numbers(text.unwrap_or(""), false) {
            if q.numbers.len() >= MAX_INPUTS {
                break;
            }
            if q.numbers.iter().any(|&m| close(m, n.value)) {
                continue;
            }
            q.numbers.push(n.value);
            q.origin.push(q.n_origins);
            if n.percent {
                q.numbers.push(n.value / 100.0);
                q.origin.push(q.n_origins);
            }
            q.n_origins += 1;
        }
        q
    }

    fn find(&self, x: f64) -> Option<usize> {
        self.numbers.iter().position(|&n| close(n, x)).map(|i| self.origin[i])
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1.0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The result of an earlier claim.
    Result(usize),
    /// A number of the question (its origin index).
    Input(usize),
    Const,
}

/// Where each leaf of each claim comes from. Earlier results win over
/// question numbers: the most recent matching result is the dataflow edge.
fn resolve(claims: &[Claim], q: &Question) -> Vec<Vec<Source>> {
    claims
        .iter()
        .enumerate()
        .map(|(k, c)| {
            c.expr
                .leaves
                .iter()
                .map(|&x| {
                    let earlier = (0..k).rev().find(|&j| close(claims[j].value(), x) || close(claims[j].stated, x));
                    match (earlier, q.find(x)) {
                        (Some(j), _) => Source::Result(j),
                        (None, Some(i)) => Source::Input(i),
                        (None, None) => Source::Const,
                    }
                })
                .collect()
        })
        .collect()
}

/// Counterfactual soundness in [0, 1].
pub fn soundness(claims: &[Claim], answer: Option<f64>, q: &Question) -> f64 {
    if claims.is_empty() {
        return 0.0;
    }
    let sources = resolve(claims, q);
    let valid = claims.iter().filter(|c| c.is_valid()).count();
    let quality = chain_quality(claims, &sources, answer, q);
    (valid as f64 + quality) / (claims.len() + 1) as f64 * question_use(&sources, q)
}

/// 1 without question numbers; else from UNUSED_QUESTION (none used) up to 1 (all used).
fn question_use(sources: &[Vec<Source>], q: &Question) -> f64 {
    if q.n_origins == 0 {
        return 1.0;
    }
    UNUSED_QUESTION + (1.0 - UNUSED_QUESTION) * coverage(sources, q)
}

/// The mean of: produced, grounding, dependence and integration (the share
/// of the claims the answer's ancestry holds: work the answer never uses is
/// a dead end, as in "2 x 8 = 16 ... he eats 2 x 16 = 32").
fn chain_quality(claims: &[Claim], sources: &[Vec<Source>], answer: Option<f64>, q: &Question) -> f64 {
    let producer = answer
        .and_then(|a| (0..claims.len()).rev().find(|&k| close(claims[k].stated, a) || close(claims[k].value(), a)));
    let scope = match producer {
        Some(a) => ancestry(sources, a),
        None => (0..claims.len()).collect(),
    };
    let produced = f64::from(u8::from(producer.is_some()));
    let grounding = grounding(claims, sources, &scope);
    let dependence = producer.map_or(0.0, |a| dependence(claims, sources, &scope, a, q));
    let integration = if producer.is_some() { scope.len() as f64 / claims.len() as f64 } else { 0.0 };
    (produced + grounding + dependence + integration) / 4.0
}

/// Claims the answer claim `a` depends on, itself included, ascending.
fn ancestry(sources: &[Vec<Source>], a: usize) -> Vec<usize> {
    let mut seen = vec![false; a + 1];
    let mut stack = vec![a];
    while let Some(k) = stack.pop() {
        if std::mem::replace(&mut seen[k], true) {
            continue;
        }
        stack.extend(sources[k].iter().filter_map(|s| match s {
            Source::Result(j) => Some(*j),
            _ => None,
        }));
    }
    (0..=a).filter(|&k| seen[k]).collect()
}

/// Share of leaves in scope with a source; conventional constants count half.
fn grounding(claims: &[Claim], sources: &[Vec<Source>], scope: &[usize]) -> f64 {
    let (mut total, mut grounded) = (0usize, 0.0);
    for &k in scope {
        for (s, &x) in sources[k].iter().zip(&claims[k].expr.leaves) {
            total += 1;
            grounded += match s {
                Source::Const if CONVENTIONAL.iter().any(|&c| close(c, x)) => 0.5,
                Source::Const => 0.0,
                _ => 1.0,
            };
        }
    }
    if total == 0 {
        0.0
    } else {
        grounded / total as f64
    }
}

/// Share of distinct question numbers the chain uses anywhere.
fn coverage(sources: &[Vec<Source>], q: &Question) -> f64 {
    let mut used = vec![false; q.n_origins];
    for s in sources.iter().flatten() {
        if let Source::Input(i) = s {
            used[*i] = true;
        }
    }
    used.iter().filter(|&&u| u).count() as f64 / q.n_origins as f64
}

/// A leaf that a counterfactual perturbs: a question number (all its uses)
/// or, without question numbers, one constant leaf `(claim, leaf)`.
#[derive(Clone, Copy, PartialEq)]
enum Target {
    Input(usize),
    Leaf(usize, usize),
}

/// Share of the inputs the answer claims to use whose perturbation moves it.
fn dependence(claims: &[Claim], sources: &[Vec<Source>], scope: &[usize], a: usize, q: &Question) -> f64 {
    let mut targets: Vec<Target> = Vec::new();
    for &k in scope {
        for (l, s) in sources[k].iter().enumerate() {
            let t = match s {
                Source::Input(i) => Target::Input(*i),
                Source::Const if q.n_origins == 0 => Target::Leaf(k, l),
                _ => continue,
            };
            if !targets.contains(&t) {
                targets.push(t);
            }
        }
    }
    targets.truncate(MAX_PERTURBED);
    if targets.is_empty() {
        return 0.0;
    }
    let base: Vec<f64> = claims.iter().map(Claim::value).collect();
    let moved = targets.iter().filter(|&&t| moves(claims, sources, &base, scope, a, t)).count();
    moved as f64 / targets.len() as f64
}

/// Re-evaluates the answer's ancestry (`scope`, ascending, ending at `a`)
/// with `target` perturbed and results propagated as deltas; whether claim
/// `a` changes. Claims outside the ancestry cannot reach `a`.
fn moves(claims: &[Claim], sources: &[Vec<Source>], base: &[f64], scope: &[usize], a: usize, target: Target) -> bool {
    let mut new = base[..=a].to_vec();
    let mut leaves = Vec::new();
    for &k in scope {
        leaves.clear();
        for (l, (s, &x)) in sources[k].iter().zip(&claims[k].expr.leaves).enumerate() {
            leaves.push(match *s {
                Source::Result(j) => x + (new[j] - base[j]),
                Source::Input(i) if target == Target::Input(i) => perturb(x),
                _ if target == Target::Leaf(k, l) => perturb(x),
                _ => x,
            });
        }
        new[k] = claims[k].expr.eval_with(&leaves).unwrap_or(base[k]);
    }
    !close(new[a], base[a])
}

/// A change no honest chain cancels by accident.
fn perturb(x: f64) -> f64 {
    x * 1.37 + 0.71
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::claims;

    const Q: &str = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether?";

    fn cf(text: &str, answer: f64) -> f64 {
        soundness(&claims(text), Some(answer), &Question::parse(Some(Q)))
    }

    #[test]
    fn reference_is_sound() {
        let s = cf("48/2 = <<48/2=24>>24 in May.\n48+24 = <<48+24=72>>72.\n#### 72", 72.0);
        assert!(s > 0.9, "{s}");
    }

    #[test]
    fn constant_answer_is_less_sound() {
        let good = cf("48/2 = <<48/2=24>>24 in May.\n48+24 = <<48+24=72>>72.\n#### 72", 72.0);
        let constant = cf("48/2 = <<48/2=24>>24 in May.\n48+24 = <<48+24=72>>72.\n#### 7", 7.0);
        assert!(constant < good, "{constant} {good}");
    }

    #[test]
    fn fixing_a_claim_never_lowers() {
        let wrong = cf("48/2 = <<48/2=26>>26 in May.\n48+26 = <<48+26=74>>74.\n#### 74", 74.0);
        let fixed = cf("48/2 = <<48/2=24>>24 in May.\n48+26 = <<48+26=74>>74.\n#### 74", 74.0);
        assert!(fixed >= wrong, "{fixed} {wrong}");
    }

    #[test]
    fn a_shortcut_that_skips_the_question_is_not_sound() {
        let q = Question::parse(Some("Tom has 3 boxes of 12 pencils and gives away 5 pencils. How many are left?"));
        let reference = soundness(&claims("3*12 = <<3*12=36>>36\n36-5 = <<36-5=31>>31\n#### 31"), Some(31.0), &q);
        let shortcut = soundness(&claims("3*12 = <<3*12=36>>36\n#### 36"), Some(36.0), &q);
        assert!(reference > 0.95, "{reference}");
        assert!(shortcut < 0.8, "{shortcut}");
    }

    #[test]
    fn work_the_answer_never_uses_lowers_it() {
        let used = cf("48/2 = <<48/2=24>>24 in May.\n48+24 = <<48+24=72>>72.\n#### 72", 72.0);
        let dead_end = cf("48/2 = <<48/2=24>>24 in May.\n48+48 = <<48+48=96>>96.\n#### 96", 96.0);
        assert!(dead_end < used, "{dead_end} {used}");
    }

    #[test]
    fn nothing_to_stand_on() {
        assert_eq!(soundness(&[], None, &Question::parse(None)), 0.0);
        assert_eq!(cf("no numbers", 1.0), 0.0);
    }
}
