"""The Python face of regime_w_core: types, errors, array layout, stubs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import regime_w_core as rw

ROOT = Path(__file__).resolve().parent.parent
Q = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?"
)
GOOD = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips altogether.\n#### 72"
SLIP = "Natalia sold 48/2 = <<48/2=26>>26 clips in May.\nNatalia sold 48+26 = <<48+26=74>>74 clips altogether.\n#### 74"
CONSTANT = GOOD.replace("#### 72", "#### 7")
PROSE = "In May she sold 48 / 2 = 24 clips. Altogether 48 + 24 = 72 clips. The answer is 72."


def test_module_surface():
    assert rw.ARMS == ["W1", "W2", "W3", "W4", "M1", "M2", "M3", "M4"]
    assert len(rw.ARM_NAMES) == 8 and rw.ARM_NAMES[0] == "consensus"
    assert isinstance(rw.__version__, str)
    for name in rw.__all__:
        assert hasattr(rw, name), name


@pytest.mark.parametrize(
    ("text", "value", "flexible"),
    [
        ("#### 1,000", 1000.0, False),
        ("The answer is $18.00.", 18.0, False),
        ("Answer: -4 apples", -4.0, False),
        ("so\nA: 7", 7.0, False),
        ("\\boxed{3/4}", 0.75, False),
        ("she has 45% left", 45.0, True),
        ("<think>maybe 3</think> The answer is 4", 4.0, False),
    ],
)
def test_extract_answer(text, value, flexible):
    a = rw.extract_answer(text)
    assert a is not None
    assert a.value == pytest.approx(value)
    assert a.flexible is flexible
    assert isinstance(a.text, str) and "Answer(" in repr(a)


def test_extract_modes_and_bytes():
    assert rw.extract_answer("The answer is 5", mode="strict") is None
    assert rw.extract_answer("#### 5 then 6", mode="flexible").value == 6.0
    assert rw.extract_answer(b"\xff\xfe #### 12").value == 12.0
    assert rw.extract_answer("no numbers") is None
    assert rw.extract_answer("") is None
    with pytest.raises(ValueError, match="mode"):
        rw.extract_answer("1", mode="loose")
    with pytest.raises(TypeError, match="str or bytes"):
        rw.extract_answer(12)  # type: ignore[arg-type]


def test_extract_answers_and_equality():
    got = rw.extract_answers(["#### 3", "none", "x 2.50"])
    assert [a.value if a else None for a in got] == [3.0, None, 2.5]
    assert rw.answers_equal(18.0, 18.0000000001)
    assert not rw.answers_equal(18.0, 18.01)
    assert not rw.answers_equal(None, None)
    with pytest.raises(TypeError, match=r"texts\[1\] must be str"):
        rw.extract_answers(["1", 2])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="not a single str"):
        rw.extract_answers("12")


def test_score_groups_layout():
    s = rw.score_groups([[GOOD, SLIP, CONSTANT, PROSE], [GOOD]], golds=[72, "#### 72"], questions=[Q, None])
    assert (s.n_groups, s.n_solutions) == (2, 5)
    assert s.offsets.tolist() == [0, 4, 5]
    assert s.offsets.dtype == np.int64 and s.correct.dtype == np.int8
    assert s.answer_flexible.dtype == np.bool_
    assert s.arm_scores.shape == (5, 8) and s.group_arm_auc.shape == (2, 8)
    assert s.correct.tolist() == [1, 0, 0, 1, 1]
    for arr in (s.s_end, s.s_path, s.s_cf, s.arm_scores, s.group_s_end):
        assert np.all((arr >= 0) & (arr <= 1))
    np.testing.assert_array_equal(s.arm_scores[:, 0], s.s_end)
    np.testing.assert_allclose(s.arm_scores[:, 7], (s.s_end + s.s_path + s.s_cf) / 3)
    assert np.all(s.group_arm_auc[1] == -1)
    assert s.s_cf[0] > s.s_cf[1] and s.s_cf[0] > s.s_cf[2]
    assert "BatchScores" in repr(s)


def test_arrays_are_handed_over_not_copied():
    s = rw.score_groups([[GOOD, SLIP]])
    assert s.s_end.flags.owndata or s.s_end.base is not None
    assert s.arm_scores.base is not None  # a reshaped view of the Rust buffer
    assert s.correct.tolist() == [-1, -1]


def test_empty_and_number_free():
    s = rw.score_groups([["", "no numbers", GOOD]], questions=[Q])
    assert s.s_end[:2].tolist() == [0, 0] and s.s_path[:2].tolist() == [0, 0] and s.s_cf[:2].tolist() == [0, 0]
    assert np.isnan(s.answer[0])


@pytest.mark.parametrize(
    ("call", "exc", "msg"),
    [
        (lambda: rw.score_groups([[GOOD], []]), ValueError, "group 1 has no solutions"),
        (lambda: rw.score_groups([[GOOD]], golds=[1, 2]), ValueError, "golds has 2 entries"),
        (lambda: rw.score_groups([[GOOD]], questions=[]), ValueError, "questions has 0 entries"),
        (lambda: rw.score_groups([[GOOD, 3]]), TypeError, r"groups\[0\]\[1\] must be str"),
        (lambda: rw.score_groups([GOOD]), TypeError, "not a single str"),
        (lambda: rw.score_groups("abc"), TypeError, "not a str"),
        (lambda: rw.score_groups([[GOOD]], golds=[object()]), TypeError, "golds"),
        (lambda: rw.score_groups([[GOOD]], questions=[3]), TypeError, "questions"),
        (lambda: rw.score_groups(5), TypeError, "not iterable"),
    ],
)
def test_malformed_input_raises(call, exc, msg):
    with pytest.raises(exc, match=msg):
        call()


def test_pairwise_similarity():
    texts = [GOOD, SLIP, PROSE, ""]
    m = rw.pairwise_similarity(texts)
    assert m.shape == (4, 4)
    np.testing.assert_array_equal(m, m.T)
    assert m[0, 0] == 1.0 and m[3, 3] == 0.0
    p = rw.pairwise_similarity(texts, np.array([[0, 1], [1, 0], [2, 2]], dtype=np.int64))
    assert p.shape == (3,) and p[0] == p[1] == m[0, 1] and p[2] == 1.0
    with pytest.raises(ValueError, match="outside"):
        rw.pairwise_similarity(texts, np.array([[0, 9]], dtype=np.int64))
    with pytest.raises(ValueError, match="shape"):
        rw.pairwise_similarity(texts, np.zeros((2, 3), dtype=np.int64))


def test_bandit_roundtrip_and_learning():
    s = rw.score_groups([[GOOD, SLIP, CONSTANT, PROSE]] * 20, golds=[72] * 20, questions=[Q] * 20)
    b = rw.Bandit(seed=3)
    assert b.seed == 3 and b.n_updates == 0
    np.testing.assert_array_equal(b.alpha, np.ones(8))
    assert b.update(s) == 20 and b.n_updates == 20
    assert b.posterior_mean.shape == (8,)
    assert b.best_arm() == int(np.argmax(b.posterior_mean))
    arms, s_wm = b.assign(s, explore=False)
    assert arms.tolist() == [b.best_arm()] * 80
    np.testing.assert_array_equal(s_wm, s.arm_scores[np.arange(80), arms])
    clone = rw.Bandit.from_json(b.to_json())
    assert clone.choose(30).tolist() == b.choose(30).tolist()
    assert json.loads(b.to_json())["seed"] == 3
    assert "Bandit(" in repr(b)


def test_bandit_uninformative_groups_teach_nothing():
    s = rw.score_groups([[GOOD, GOOD], [SLIP, SLIP], [GOOD, SLIP]], golds=[72, 72, None])
    b = rw.Bandit()
    assert b.update(s) == 0
    np.testing.assert_array_equal(b.alpha, np.ones(8))


def test_bandit_bad_state():
    with pytest.raises(ValueError, match="prior_alpha"):
        rw.Bandit(prior_alpha=0.0)
    with pytest.raises(ValueError, match="JSON"):
        rw.Bandit.from_json("{not json")


def test_gil_released_for_threads():
    from concurrent.futures import ThreadPoolExecutor

    groups = [[GOOD, SLIP, PROSE] for _ in range(200)]
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda _: rw.score_groups(groups).s_path, range(4)))
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])


def test_stubs_match_runtime():
    proc = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "regime_w_core"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_pairs_accept_any_integer_array_like():
    texts = [GOOD, SLIP, PROSE]
    expected = rw.pairwise_similarity(texts, np.array([[0, 1], [1, 2]], dtype=np.int64))
    np.testing.assert_array_equal(rw.pairwise_similarity(texts, [(0, 1), (1, 2)]), expected)
    np.testing.assert_array_equal(rw.pairwise_similarity(texts, np.array([[0, 1], [1, 2]], dtype=np.int32)), expected)
    with pytest.raises(ValueError, match="shape"):
        rw.pairwise_similarity(texts, [0, 1])
    for not_indices in ([[0.9, 1.7]], [[True, False]], [["0", "1"]]):  # never truncated into other pairs
        with pytest.raises(ValueError, match="integer"):
            rw.pairwise_similarity(texts, not_indices)
    assert rw.pairwise_similarity(texts, np.empty((0, 2))).shape == (0,)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_scoring_works_in_a_forked_child():
    """The parent's rayon threads do not survive fork; the child must not hang."""
    groups = [[GOOD, SLIP, PROSE]] * 50
    parent = rw.score_groups(groups).s_path
    pid = os.fork()
    if pid == 0:  # child: exit code says whether it scored the same
        ok = False
        try:
            ok = np.array_equal(rw.score_groups(groups).s_path, parent)
        finally:
            os._exit(0 if ok else 1)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, 9)
    pytest.fail("scoring in a forked child hung")
