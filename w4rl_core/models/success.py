"""From a per-frame success classifier to episode success, the way the robot counts it.

Meta-World (and our real-robot evaluation) calls an episode successful if the task is solved at
any step. A classifier with a small per-frame false-positive rate therefore calls most failed
episodes successful: 12-19% false positives per frame gave 70-90% "successful" episodes where
13-17% were (docs/design.md#classifier-false-positives). A `SuccessDetector` declares success only after `persistence`
consecutive frames above `threshold`, both chosen on held-out episodes at the level PPO uses the
reward: per episode (`calibrate`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class DetectorConfig:
    threshold: float = 0.5  # classifier probability above which a frame counts as a success
    persistence: int = 1  # consecutive such frames before the episode counts as a success

    def __post_init__(self) -> None:
        if not 0 < self.threshold < 1 or self.persistence < 1:
            raise ValueError(f"detector needs 0 < threshold < 1 and persistence >= 1, got {self}")


def episode_success(probs: np.ndarray, config: DetectorConfig) -> np.ndarray:
    """probs (E, L) per frame -> (E,) bool: a run of `persistence` frames above the threshold."""
    run = np.zeros(probs.shape[0], dtype=np.int64)
    hit = np.zeros(probs.shape[0], dtype=bool)
    for t in range(probs.shape[1]):
        run = np.where(probs[:, t] > config.threshold, run + 1, 0)
        hit |= run >= config.persistence
    return hit


THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98)
PERSISTENCES = (1, 2, 3, 5, 8)


def calibrate(
    probs: list[np.ndarray], truth: np.ndarray, thresholds: tuple[float, ...] = THRESHOLDS,
    persistences: tuple[int, ...] = PERSISTENCES,
) -> tuple[DetectorConfig, list[dict[str, Any]]]:
    """Pick (threshold, persistence) with the best balanced episode accuracy on held-out episodes.

    probs: per episode, the classifier's probability for each frame; truth: (E,) real episode
    success. Balanced accuracy (the mean of the rates of successes and of failures called right)
    does not depend on how many of the held-out episodes succeeded: held-out sets are mostly expert
    demonstrations, and plain accuracy there favours a detector that fires easily, the one failure
    mode refinement exploits. Ties go to the detector whose success rate is closest to the true
    rate, then to the lower threshold and persistence (the earliest reward that is equally right).
    """
    truth = np.asarray(truth, dtype=bool)
    rows = []
    for thr in thresholds:
        for k in persistences:
            cfg = DetectorConfig(thr, k)
            pred = np.array([episode_success(p[None], cfg)[0] for p in probs])
            rates = [float((pred[truth == c] == c).mean()) for c in (True, False) if (truth == c).any()]
            rows.append({"threshold": thr, "persistence": k, "balanced_accuracy": float(np.mean(rates)),
                         "accuracy": float((pred == truth).mean()),
                         "rate_gap": float(abs(pred.mean() - truth.mean()))})
    best = max(rows, key=lambda r: (r["balanced_accuracy"], -r["rate_gap"], -r["threshold"], -r["persistence"]))
    return DetectorConfig(best["threshold"], best["persistence"]), rows


def calibration_report(probs: list[np.ndarray], truth: np.ndarray, config: DetectorConfig) -> dict[str, Any]:
    """True vs detected episode success on real episodes, with the confusion counts."""
    pred = np.array([episode_success(p[None], config)[0] for p in probs], dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    n = len(truth)
    return {
        "episodes": n,
        "true_success": float(truth.mean()) if n else None,
        "classifier_success": float(pred.mean()) if n else None,
        "gap": float(pred.mean() - truth.mean()) if n else None,
        "false_positive_episodes": int((pred & ~truth).sum()),
        "false_negative_episodes": int((~pred & truth).sum()),
        "accuracy": float((pred == truth).mean()) if n else None,
    }


class SuccessDetector:
    """Streaming episode success over batched envs: the reward function of ImaginedEnv."""

    def __init__(self, classifier: torch.nn.Module, config: DetectorConfig) -> None:
        self.classifier = classifier
        self.config = config
        self._run: torch.Tensor | None = None

    def reset(self, n: int, device: torch.device) -> None:
        self._run = torch.zeros(n, dtype=torch.long, device=device)

    @torch.no_grad()
    def __call__(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._run is None:
            raise RuntimeError("reset() first")
        prob = self.classifier.prob(frames)
        self._run = torch.where(prob > self.config.threshold, self._run + 1, torch.zeros_like(self._run))
        return self._run >= self.config.persistence, prob


def load_success_detector(path, device: str | torch.device = "cpu") -> SuccessDetector:
    """The success classifier saved at `path` with the detector calibrated for it (its meta)."""
    from w4rl_core.models.policy import load_classifier

    clf, meta = load_classifier(path)
    clf = clf.to(device)
    for p in clf.parameters():
        p.requires_grad_(False)
    detector = meta.get("detector")
    if detector is None:
        raise ValueError(f"{path}: no calibrated detector in its config.json (retrain: `dvc repro train_reward`)")
    return SuccessDetector(clf, DetectorConfig(**detector))
