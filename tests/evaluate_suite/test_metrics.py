"""Metric functions against scikit-learn and hand-computed values."""

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, top_k_accuracy_score

from evaluate_suite.metrics import (
    accuracy, balanced_accuracy, bootstrap_ci, group_accuracy, retrieval_recall, seed_summary, top_k_accuracy,
)


@pytest.mark.parametrize("seed", range(5))
def test_accuracy_and_balanced_accuracy_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    refs = rng.integers(0, 7, size=200)
    preds = np.where(rng.random(200) < 0.4, refs, rng.integers(0, 7, size=200))
    assert accuracy(preds, refs) == pytest.approx(accuracy_score(refs, preds))
    assert balanced_accuracy(preds, refs) == pytest.approx(balanced_accuracy_score(refs, preds))
    assert accuracy(torch.tensor(preds), torch.tensor(refs)) == pytest.approx(accuracy_score(refs, preds))


@pytest.mark.parametrize("seed,k", [(0, 1), (1, 3), (2, 5), (3, 10)])
def test_top_k_matches_sklearn(seed, k):
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(300, 12))
    refs = rng.integers(0, 12, size=300)
    expected = top_k_accuracy_score(refs, scores, k=k, labels=np.arange(12))
    assert top_k_accuracy(scores, refs, k) == pytest.approx(expected)


def test_top_k_by_hand():
    scores = np.array([[0.1, 0.9, 0.5], [0.8, 0.1, 0.2], [0.3, 0.2, 0.1]])
    refs = np.array([2, 2, 0])
    assert top_k_accuracy(scores, refs, 1) == pytest.approx(1 / 3)  # only row 2
    assert top_k_accuracy(scores, refs, 2) == pytest.approx(1.0)  # row 0's 0.5 and row 1's 0.2 are second


def test_retrieval_recall_clip_definition_by_hand():
    # 3 images, 5 texts; image 0 owns texts 0,1; image 1 owns 2,3; image 2 owns 4.
    relevant = np.zeros((3, 5), dtype=bool)
    relevant[0, [0, 1]] = relevant[1, [2, 3]] = relevant[2, 4] = True
    sim = np.array([
        [0.2, 0.9, 0.1, 0.95, 0.0],  # best text 3 (wrong), second text 1 (right): miss@1, hit@2
        [0.1, 0.0, 0.8, 0.3, 0.2],  # best text 2: hit@1
        [0.5, 0.4, 0.3, 0.2, 0.1],  # text 4 is its last: miss@1..4
    ])
    r = retrieval_recall(sim, relevant, ks=(1, 2))
    assert r["image_to_text_recall@1"] == pytest.approx(1 / 3)
    assert r["image_to_text_recall@2"] == pytest.approx(2 / 3)
    # text->image, per text column: t0 -> img2 (0.5) wrong; t1 -> img0 right; t2 -> img1 right;
    # t3 -> img0 (0.95) wrong; t4 -> img1 (0.2) wrong, img2 (0.1) third.
    assert r["text_to_image_recall@1"] == pytest.approx(2 / 5)
    # @2: t0 second is img0 (0.2) right; t3 second is img1 right; t4 second is img2? 0.2,0.1,0.0 -> img1, img2 right
    assert r["text_to_image_recall@2"] == pytest.approx(5 / 5)


def test_retrieval_recall_rejects_orphans():
    with pytest.raises(ValueError, match="text columns \\[1\\]"):
        retrieval_recall(np.zeros((1, 2)), np.array([[True, False]]))


def test_group_accuracy_worst_best_gap():
    correct = [1, 1, 0, 1, 0, 0, 1]
    groups = ["Japan", "Japan", "Chad", "Chad", "Peru", None, "Peru"]
    b = group_accuracy(correct, groups, min_group_size=2)
    assert b.accuracy == {"Chad": 0.5, "Japan": 1.0, "Peru": 0.5}
    assert b.counts == {"Chad": 2, "Japan": 2, "Peru": 2}
    assert (b.worst_group, b.best_group, b.gap) == ("Chad", "Japan", 0.5)
    assert b.ranked_groups == ["Chad", "Japan", "Peru"] and b.small_groups == {}


def test_small_groups_are_listed_not_ranked():
    # 25 items in A (60% right), 21 in B (100%), 2 in C (0%): C would be "worst" at any size; at 20 it is only listed.
    correct = [1] * 15 + [0] * 10 + [1] * 21 + [0, 0]
    groups = ["A"] * 25 + ["B"] * 21 + ["C"] * 2
    b = group_accuracy(correct, groups)  # default min_group_size 20
    assert b.min_group_size == 20
    assert b.counts == {"A": 25, "B": 21, "C": 2} and b.accuracy["C"] == 0.0
    assert b.small_groups == {"C": 2} and b.ranked_groups == ["A", "B"]
    assert (b.worst_group, b.worst_accuracy, b.best_group, b.gap) == ("A", 0.6, "B", pytest.approx(0.4))
    # One large group cannot be ranked against anything: no worst, no gap, but every n is still there.
    single = group_accuracy([1, 0, 0], ["A", "B", "B"], min_group_size=2)
    assert single.ranked_groups == ["B"] and single.small_groups == {"A": 1}
    assert (single.worst_group, single.gap, single.ranked) == (None, None, False)
    assert group_accuracy([1, 0], [None, None]) is None


def test_bootstrap_ci_is_seeded_and_brackets_the_mean():
    values = np.random.default_rng(0).integers(0, 2, size=400)
    a = bootstrap_ci(values, seed=3)
    b = bootstrap_ci(values, seed=3)
    assert a == b
    assert a.low < values.mean() < a.high
    assert a.high - a.low == pytest.approx(2 * 1.96 * np.sqrt(0.25 / 400), rel=0.25)
    median = bootstrap_ci(values, statistic=np.median, n_resamples=50)
    assert median.estimate in (0.0, 1.0)


def test_seed_summary():
    s = seed_summary({0: 0.5, 1: 0.7, 2: 0.6})
    assert s.mean == pytest.approx(0.6)
    assert s.std == pytest.approx(0.1)
    assert seed_summary({4: 0.3}).std == 0.0


def test_empty_inputs_raise():
    with pytest.raises(ValueError, match="empty"):
        accuracy([], [])
    with pytest.raises(ValueError, match="entries"):
        accuracy([1], [1, 2])
