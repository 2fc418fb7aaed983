//! Property tests on every parsing entry point: arbitrary text never panics
//! and every score stays in [0, 1].

use proptest::prelude::*;
use regime_w_core::expr::Expr;
use regime_w_core::extract::{extract, Mode};
use regime_w_core::scores::{path_similarity, score_group};
use regime_w_core::solution::Solution;
use regime_w_core::steps::claims;

/// Text that looks like math more often than uniform strings do.
fn mathy() -> impl Strategy<Value = String> {
    let atoms = prop_oneof![
        Just("<<".to_owned()),
        Just(">>".to_owned()),
        Just("####".to_owned()),
        Just("The answer is".to_owned()),
        Just("\\boxed{".to_owned()),
        Just("</think>".to_owned()),
        "[0-9]{1,4}".prop_map(|s| s),
        "[-+*/x^%=()$., ×÷]".prop_map(|s| s),
        "[a-zA-Z ]{1,6}".prop_map(|s| s),
        Just("\n".to_owned()),
        any::<char>().prop_map(|c| c.to_string()),
    ];
    prop::collection::vec(atoms, 0..60).prop_map(|v| v.concat())
}

fn in_unit(v: f64) -> bool {
    (0.0..=1.0).contains(&v)
}

proptest! {
    #[test]
    fn extract_never_panics(t in mathy()) {
        for mode in [Mode::Auto, Mode::Strict, Mode::Flexible] {
            if let Some(a) = extract(&t, mode) {
                prop_assert!(a.value.is_finite());
            }
        }
    }

    #[test]
    fn expr_never_panics(t in "[-+*/x^%()0-9. ]{0,80}") {
        if let Ok(e) = Expr::parse(&t) {
            if let Some(v) = e.eval() {
                prop_assert!(v.is_finite());
            }
        }
    }

    #[test]
    fn claims_never_panic(t in mathy()) {
        for c in claims(&t) {
            prop_assert!(c.expr.leaves.len() >= 2);
        }
    }

    #[test]
    fn similarity_is_symmetric_and_bounded(a in mathy(), b in mathy()) {
        let (sa, sb) = (Solution::parse(&a), Solution::parse(&b));
        let ab = path_similarity(&sa, &sb);
        prop_assert_eq!(ab, path_similarity(&sb, &sa));
        prop_assert!(in_unit(ab));
        let aa = path_similarity(&sa, &sa);
        let expected = if sa.tokens.is_empty() && sa.values.is_empty() { 0.0 } else { 1.0 };
        prop_assert_eq!(aa, expected);
    }

    #[test]
    fn group_scores_bounded(texts in prop::collection::vec(mathy(), 1..6), q in mathy(), gold in prop::option::of(-100.0f64..100.0)) {
        let s = score_group(&texts, gold, Some(&q));
        for v in s.s_end.iter().chain(&s.s_path).chain(&s.s_cf).chain(s.arms.iter().flatten()) {
            prop_assert!(in_unit(*v), "{}", v);
        }
        prop_assert!(in_unit(s.group_s_end));
    }
}
