//! The invariants of REGIME_W.md, checked on the plain Rust API.

use regime_w_core::batch::{score_batch, BatchScores, Group};
use regime_w_core::counterfactual::{soundness, Question};
use regime_w_core::error::Error;
use regime_w_core::scores::score_group;
use regime_w_core::steps::claims;

const Q: &str = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?";
const GOOD: &str = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72";
const SLIP: &str = "Natalia sold 48/2 = <<48/2=26>>26 clips in May.\nNatalia sold 48+26 = <<48+26=74>>74 clips altogether in April and May.\n#### 74";
const PROSE: &str = "In May she sold 48 / 2 = 24 clips. Altogether 48 + 24 = 72 clips. The answer is 72.";
const CONSTANT: &str = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 7";

fn group() -> Vec<&'static str> {
    vec![GOOD, SLIP, PROSE, CONSTANT, "", "no numbers at all", GOOD, "#### 72"]
}

fn score(texts: &[&str]) -> regime_w_core::scores::GroupScores {
    score_group(texts, Some(72.0), Some(Q))
}

fn all_scores(s: &BatchScores) -> Vec<f64> {
    [&s.s_end, &s.s_path, &s.s_cf, &s.arm_scores, &s.group_s_end].into_iter().flatten().copied().collect()
}

#[test]
fn scores_in_unit_interval_never_nan() {
    let s = score(&group());
    for v in s.s_end.iter().chain(&s.s_path).chain(&s.s_cf).chain(s.arms.iter().flatten()) {
        assert!((0.0..=1.0).contains(v), "{v}");
    }
    assert!(s.arm_auc.iter().all(|&a| a == -1.0 || (0.0..=1.0).contains(&a)));
}

#[test]
fn empty_and_number_free_texts_score_zero() {
    let s = score(&["", "no numbers at all", GOOD]);
    for i in 0..2 {
        assert_eq!((s.s_end[i], s.s_path[i], s.s_cf[i]), (0.0, 0.0, 0.0), "solution {i}");
        assert_eq!(s.answer[i], None);
    }
    let lone = score(&[""]);
    assert_eq!((lone.s_end[0], lone.s_path[0], lone.s_cf[0]), (0.0, 0.0, 0.0));
}

#[test]
fn permutation_equivariance() {
    let texts = group();
    let base = score(&texts);
    let perm = [3usize, 7, 0, 5, 1, 6, 2, 4];
    let permuted: Vec<&str> = perm.iter().map(|&i| texts[i]).collect();
    let s = score(&permuted);
    for (k, &i) in perm.iter().enumerate() {
        assert_eq!(s.s_end[k], base.s_end[i]);
        assert_eq!(s.s_path[k], base.s_path[i]);
        assert_eq!(s.s_cf[k], base.s_cf[i]);
        assert_eq!(s.arms[k], base.arms[i]);
    }
    assert_eq!(s.group_s_end, base.group_s_end);
    assert_eq!(s.arm_auc, base.arm_auc);
}

#[test]
fn deterministic_across_thread_counts() {
    let texts: Vec<Vec<String>> =
        (0..64).map(|g| group().iter().map(|t| t.replace("48", &(40 + g % 9).to_string())).collect()).collect();
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let groups: Vec<Group<'_, String>> =
            texts.iter().map(|t| Group { solutions: t, gold: Some(72.0), question: Some(Q) }).collect();
        pool.install(|| score_batch(&groups).unwrap())
    };
    let (one, two) = (run(1), run(2));
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    // NaN marks a missing answer, so compare bit patterns, not floats.
    assert!(bits(&one.answer) == bits(&two.answer), "answers differ");
    assert!(bits(&all_scores(&one)) == bits(&all_scores(&two)), "scores differ");
    assert!(bits(&one.group_arm_auc) == bits(&two.group_arm_auc), "AUCs differ");
    assert!(one.correct == two.correct && one.offsets == two.offsets);
}

#[test]
fn identical_correct_solutions_agree_fully() {
    for k in [1, 2, 8] {
        let s = score(&vec![GOOD; k]);
        assert!(s.s_end.iter().all(|&v| v == 1.0), "k={k} {:?}", s.s_end);
        assert!(s.s_path.iter().all(|&v| v == 1.0), "k={k} {:?}", s.s_path);
        assert_eq!(s.group_s_end, 1.0);
        assert!(s.arm_auc.iter().all(|&a| a == -1.0), "all correct teaches nothing");
    }
}

fn s_cf(text: &str) -> f64 {
    let a = regime_w_core::extract::extract(text, regime_w_core::extract::Mode::Auto).map(|a| a.value);
    soundness(&claims(text), a, &Question::parse(Some(Q)))
}

#[test]
fn fixing_a_wrong_claim_never_lowers_s_cf() {
    // Only the first claim is fixed; the rest of the text still builds on 26.
    let fixed = SLIP.replacen("<<48/2=26>>26", "<<48/2=24>>24", 1);
    assert!(s_cf(&fixed) >= s_cf(SLIP), "{} < {}", s_cf(&fixed), s_cf(SLIP));
    let fixed_prose = "In May she sold 48 / 2 = 24 clips. Altogether 48 + 24 = 72 clips. The answer is 72.";
    let wrong_prose = "In May she sold 48 / 2 = 25 clips. Altogether 48 + 24 = 72 clips. The answer is 72.";
    assert!(s_cf(fixed_prose) >= s_cf(wrong_prose));
}

#[test]
fn unrelated_constant_answer_lowers_s_cf() {
    assert!(s_cf(CONSTANT) < s_cf(GOOD), "{} >= {}", s_cf(CONSTANT), s_cf(GOOD));
    let prose_constant = PROSE.replace("The answer is 72", "The answer is 13");
    assert!(s_cf(&prose_constant) < s_cf(PROSE));
}

#[test]
fn empty_group_is_an_error() {
    let empty: Vec<&str> = vec![];
    let groups = [
        Group { solutions: &[GOOD][..], gold: None, question: None },
        Group { solutions: &empty[..], gold: None, question: None },
    ];
    assert_eq!(score_batch(&groups), Err(Error::EmptyGroup { group: 1 }));
}

#[test]
fn correctness_and_auc_follow_gold() {
    let s = score(&[GOOD, SLIP, PROSE, CONSTANT]);
    assert_eq!(s.correct, vec![1, 0, 1, 0]);
    assert!(s.arm_auc.iter().all(|&a| (0.0..=1.0).contains(&a)));
    assert_eq!(score_group(&[GOOD, SLIP], None, None).correct, vec![-1, -1]);
}

/// Inputs that once broke something, kept by name.
mod regressions {
    use super::*;

    #[test]
    fn think_tail_offset_was_past_the_marker() {
        let a = regime_w_core::extract::extract("<think>3</think> The answer is 4", regime_w_core::extract::Mode::Auto);
        assert_eq!(a.map(|a| a.value), Some(4.0));
    }

    #[test]
    fn annotation_only_text_is_similar_to_itself() {
        // Tokens skip `<<...>>`, so only values remain: sim(a, a) was 0.5.
        let a = regime_w_core::solution::Solution::parse("<<2+3=5>>");
        assert_eq!(regime_w_core::scores::path_similarity(&a, &a), 1.0);
    }

    #[test]
    fn huge_inputs_stay_bounded() {
        let deep = format!("{}1{} = 1", "(".repeat(100_000), ")".repeat(100_000));
        let mega = "12 apples + 3 = 15 pears. ".repeat(40_000);
        let s = score(&[&deep, &mega, "9^9^9^9 = 5", "1/0 = 3", &mega]);
        assert!(s.s_cf.iter().chain(&s.s_path).all(|v| (0.0..=1.0).contains(v)));
    }
}
