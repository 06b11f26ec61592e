"""Episode success from a per-frame classifier (persistence, calibration) and paired uplift."""

from __future__ import annotations

import numpy as np
import pytest

from w4rl_core.models.success import DetectorConfig, calibrate, calibration_report, episode_success


def test_episode_success_needs_a_run_of_frames_above_the_threshold():
    probs = np.array([[0.9, 0.1, 0.9, 0.1],   # isolated positives
                      [0.1, 0.9, 0.9, 0.1],   # a run of two
                      [0.6, 0.6, 0.6, 0.6]])  # long run, low confidence
    assert episode_success(probs, DetectorConfig(0.5, 1)).tolist() == [True, True, True]
    assert episode_success(probs, DetectorConfig(0.5, 2)).tolist() == [False, True, True]
    assert episode_success(probs, DetectorConfig(0.7, 2)).tolist() == [False, True, False]
    with pytest.raises(ValueError):
        DetectorConfig(threshold=1.0)


def test_calibration_picks_the_detector_that_gets_episodes_right():
    rng = np.random.default_rng(0)
    # Failed episodes with a few isolated false positives; successful ones with a persistent run.
    failed = [np.where(rng.random(30) < 0.1, 0.8, 0.1) for _ in range(20)]
    success = [np.concatenate([np.full(20, 0.1), np.full(10, 0.95)]) for _ in range(10)]
    probs, truth = failed + success, np.array([False] * 20 + [True] * 10)
    naive = calibration_report(probs, truth, DetectorConfig(0.5, 1))
    assert naive["classifier_success"] > 0.6 and naive["false_positive_episodes"] > 10  # compounding FPs
    detector, grid = calibrate(probs, truth)
    report = calibration_report(probs, truth, detector)
    assert report["accuracy"] == 1.0 and report["gap"] == 0.0
    assert detector.persistence >= 2 or detector.threshold > 0.8
    assert len(grid) == 35 and all({"threshold", "persistence", "accuracy"} <= set(r) for r in grid)
