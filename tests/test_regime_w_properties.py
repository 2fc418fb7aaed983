"""Hypothesis over the bindings: any input is scored or refused cleanly,
never a crash; the invariants of REGIME_W.md hold from Python too."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import regime_w_core as rw

MATHY = st.lists(
    st.one_of(
        st.sampled_from(["<<", ">>", "####", "The answer is", "\\boxed{", "</think>", "=", "\n", " x ", "$", "%", "/"]),
        st.integers(-10_000, 10_000).map(str),
        st.text(max_size=6),
    ),
    max_size=40,
).map("".join)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def bounded(s: rw.BatchScores) -> bool:
    arrays = (s.s_end, s.s_path, s.s_cf, s.arm_scores, s.group_s_end)
    return all(bool(np.all((a >= 0) & (a <= 1))) for a in arrays)


@SETTINGS
@given(st.one_of(MATHY, st.text(), st.binary().map(lambda b: b)))
def test_extract_never_crashes(text):
    for mode in ("auto", "strict", "flexible"):
        a = rw.extract_answer(text, mode=mode)
        assert a is None or np.isfinite(a.value)


@SETTINGS
@given(st.lists(st.lists(MATHY, min_size=1, max_size=5), min_size=1, max_size=4), st.data())
def test_scores_bounded_and_permutation_equivariant(groups, data):
    golds = data.draw(st.lists(st.one_of(st.none(), st.floats(-1e6, 1e6), MATHY), min_size=len(groups), max_size=len(groups)))
    questions = data.draw(st.lists(st.one_of(st.none(), MATHY), min_size=len(groups), max_size=len(groups)))
    s = rw.score_groups(groups, golds=golds, questions=questions)
    assert bounded(s)
    perm = data.draw(st.permutations(range(len(groups[0]))))
    first = [groups[0][i] for i in perm]
    p = rw.score_groups([first], golds=golds[:1], questions=questions[:1])
    k = len(perm)
    for name in ("s_end", "s_path", "s_cf"):
        np.testing.assert_array_equal(getattr(p, name), getattr(s, name)[:k][list(perm)])


@SETTINGS
@given(st.lists(MATHY, min_size=1, max_size=6))
def test_similarity_symmetric_bounded(texts):
    m = rw.pairwise_similarity(texts)
    np.testing.assert_array_equal(m, m.T)
    assert np.all((m >= 0) & (m <= 1))
    diag = np.diag(m)
    assert np.all((diag == 0) | (diag == 1))


@SETTINGS
@given(st.lists(st.one_of(st.integers(), st.floats(), st.none(), st.binary(), st.lists(st.text())), min_size=1, max_size=3))
def test_non_strings_raise_type_error(bad):
    with pytest.raises(TypeError):
        rw.score_groups([["ok", *bad]])


@pytest.mark.parametrize(
    "text",
    [
        "",
        "(" * 100_000 + "1" + ")" * 100_000 + " = 1",
        "9^9^9^9 = 3",
        "1/0 = 5 and 5/(3-3) = 2",
        "12 apples + 3 = 15 pears. " * 40_000,  # ~1 MB
        "\ud800 lone surrogate 5",
        "no numbers at all",
    ],
    ids=["empty", "nested-100k", "huge-exponent", "division-by-zero", "one-megabyte", "surrogate", "no-numbers"],
)
def test_hostile_texts_regressions(text):
    s = rw.score_groups([[text, text, "#### 3"]], golds=[3], questions=[text])
    assert bounded(s)
    rw.extract_answer(text)
    rw.pairwise_similarity([text, "#### 3"])
