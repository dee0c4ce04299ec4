"""TCAV scores and magnitudes on hand-computed numbers."""

import numpy as np
import pytest

from tcavkit.scoring import directional_derivatives, tcav_scores


def test_scores_match_hand_computation():
    grads = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.5]])
    cavs = np.array([[1.0, 0.0], [0.0, 1.0]])
    # D = [[1, 0], [0, 1], [-1, 0.5]]
    np.testing.assert_allclose(directional_derivatives(grads, cavs), [[1, 0], [0, 1], [-1, 0.5]])
    scores = tcav_scores(grads, cavs)
    # CAV 0: derivatives 1, 0, -1 -> one of three strictly positive; mean 0; 1 / (1 + 1)
    # CAV 1: derivatives 0, 1, 0.5 -> two of three positive; mean 0.5; 1.5 / 1.5
    np.testing.assert_allclose(scores.tcav_score, [1 / 3, 2 / 3])
    np.testing.assert_allclose(scores.magnitude, [0.0, 0.5])
    np.testing.assert_allclose(scores.magnitude_ratio, [0.5, 1.0])


def test_flipped_cav_gives_one_minus_score_without_zero_derivatives():
    rng = np.random.default_rng(0)
    grads = rng.normal(size=(40, 7))
    cavs = rng.normal(size=(5, 7))
    forward = tcav_scores(grads, cavs)
    backward = tcav_scores(grads, -cavs)
    np.testing.assert_allclose(backward.tcav_score, 1 - forward.tcav_score)
    np.testing.assert_allclose(backward.magnitude, -forward.magnitude, rtol=1e-5)
    np.testing.assert_allclose(backward.magnitude_ratio, 1 - forward.magnitude_ratio, rtol=1e-5)


def test_all_zero_gradients_are_defined():
    scores = tcav_scores(np.zeros((4, 3)), np.eye(3))
    assert np.all(scores.tcav_score == 0)
    assert np.all(scores.magnitude == 0)
    assert np.all(scores.magnitude_ratio == pytest.approx(0.5))
