"""The success classifier C(x): binary env success from one frame, class-balanced batches, BCE; and
its detector (threshold, persistence over frames) calibrated per episode on held-out episodes."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F

from w4rl_core.data.windows import FrameWindows
from w4rl_core.models.policy import CNNConfig, SuccessClassifier
from w4rl_core.models.success import calibrate, calibration_report
from w4rl_core.train.bc import frames_of
from w4rl_core.train.supervised import SupervisedConfig, fit, random_shift, windows_fingerprint
from w4rl_core.train.tracking import CurveLog
from w4rl_core.train.world_model import resolve_device


@torch.no_grad()
def frame_probs(clf: SuccessClassifier, w: FrameWindows, device) -> torch.Tensor:
    """The classifier's success probability for every frame of `w` (N,)."""
    if len(w.rgb) == 0:
        return torch.zeros(0)
    return torch.cat([clf.prob(frames_of(w, torch.arange(i, min(i + 512, len(w.rgb))), device)).cpu()
                      for i in range(0, len(w.rgb), 512)])


def classification_metrics(probs: torch.Tensor, w: FrameWindows, threshold: float = 0.5) -> dict:
    if len(w.rgb) == 0:
        return {"frames": 0}
    pred, label = probs > threshold, w.success.bool()
    tp, fp, fn = int((pred & label).sum()), int((pred & ~label).sum()), int((~pred & label).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    negatives = int((~label).sum())
    return {"frames": len(label), "positives": int(label.sum()), "precision": precision, "recall": recall,
            "f1": f1, "accuracy": float((pred == label).float().mean()),
            "false_positive_rate": fp / negatives if negatives else None, "threshold": threshold}


def _episodes(w: FrameWindows, probs: torch.Tensor, kinds: tuple[str, ...] | None = None):
    """Per episode of `w` (optionally of some kinds): (frame probabilities, real episode success)."""
    keep = [i for i, kind in enumerate(w.episode_kind) if kinds is None or kind in kinds]
    bounds = list(zip(w.episode_starts, w.episode_ends))
    return [probs[bounds[i][0]:bounds[i][1]].numpy() for i in keep], w.succeeded()[keep]


def split_for_check(val: FrameWindows) -> tuple[FrameWindows, FrameWindows]:
    """Held-out episodes in two disjoint halves, alternating within each kind: the first chooses the
    detector (threshold, persistence), the second checks it. A figure computed on the episodes that
    chose the detector would be in-sample, and flattering."""
    seen: dict[str, int] = {}
    first, second = [], []
    for i, kind in enumerate(val.episode_kind):
        (first if seen.get(kind, 0) % 2 == 0 else second).append(i)
        seen[kind] = seen.get(kind, 0) + 1
    return val.episodes(first), val.episodes(second)


def train_classifier(
    cnn: CNNConfig, config: SupervisedConfig, train: FrameWindows, val: FrameWindows, progress: bool = False,
    calibrate_on: FrameWindows | None = None, balanced: bool = True, log: CurveLog | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None, check: FrameWindows | None = None,
    init_from: str | os.PathLike[str] | None = None,
) -> tuple[SuccessClassifier, dict[str, Any]]:
    """Fit the classifier on `train`, then calibrate its episode-level detector on the episodes of
    `calibrate_on` (default: `val`).

    The report's `reward_calibration` is the figure that matters for refinement: on real BC
    episodes (kind `policy`) of `check` (held out, and not among the episodes that chose the
    detector), the true episode success rate next to the detector's. Without `check` it falls back
    to `val`'s and says it is in-sample when `val` also chose the detector. `init_from`: a saved
    classifier of the same architecture to fine-tune instead of fresh weights.
    """
    labels = train.success.bool()
    pos, neg = labels.nonzero().squeeze(-1), (~labels).nonzero().squeeze(-1)
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError(f"the classifier needs success and failure frames; got {len(pos)} / {len(neg)}")
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    clf = SuccessClassifier(cnn)
    if init_from is not None:  # fit's checkpoint identity covers the initial weights, so these too
        from w4rl_core.models.policy import load_classifier

        init, _ = load_classifier(init_from)
        if init.cnn_config != cnn:
            raise ValueError(f"{init_from}: the classifier to fine-tune has another architecture ({init.cnn_config}) "
                             f"than this one ({cnn}); train from scratch instead")
        clf.load_state_dict(init.state_dict())
    clf = clf.to(device)
    half = config.batch_size // 2

    def loss_fn(gen: torch.Generator) -> torch.Tensor:
        if balanced:  # half successes: they are a minority of frames
            idx = torch.cat([pos[torch.randint(len(pos), (half,), generator=gen)],
                             neg[torch.randint(len(neg), (config.batch_size - half,), generator=gen)]])
        else:  # frames as they come: probabilities at the data's own success rate
            idx = torch.randint(len(labels), (config.batch_size,), generator=gen)
        frames = random_shift(frames_of(train, idx, device), config.augment_shift, gen)
        return F.binary_cross_entropy_with_logits(clf(frames), labels[idx].float().to(device))

    curve = fit(clf, loss_fn, config, "train success classifier", progress, log, checkpoint_dir,
                windows_fingerprint(train) | {"balanced": balanced})
    clf.eval()
    train_probs, val_probs = frame_probs(clf, train, device), frame_probs(clf, val, device)
    report: dict[str, Any] = {"curve": curve, "train": classification_metrics(train_probs, train),
                              "val": classification_metrics(val_probs, val)}
    if calibrate_on is None:
        probs, truth = _episodes(val, val_probs)
    else:
        probs, truth = _episodes(calibrate_on, frame_probs(clf, calibrate_on, device))
    if len(truth) == 0:
        raise ValueError("no held-out episodes to calibrate the success detector on (world_model.val_fraction)")
    detector, grid = calibrate(probs, truth)
    if check is not None:
        bc_probs, bc_truth = _episodes(check, frame_probs(clf, check, device), ("policy",))
        of = "held-out BC rollouts that did not choose the detector (out of sample)"
    else:
        bc_probs, bc_truth = _episodes(val, val_probs, ("policy",))
        of = "held-out BC rollouts" + (" (in sample: they also chose the detector)" if calibrate_on is None else "")
    report |= {
        "detector": {"threshold": detector.threshold, "persistence": detector.persistence},
        "calibration_grid": grid,
        "reward_calibration": calibration_report(bc_probs, bc_truth, detector) | {"episodes_of": of},
        # In sample by construction: the episodes the detector was chosen on.
        "episode_calibration_all": calibration_report(probs, truth, detector) | {"episodes_of": "calibration episodes"},
    }
    return clf.cpu(), report
