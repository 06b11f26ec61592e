"""The success classifier C(x): binary env success from one frame, class-balanced batches, BCE."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from w4rl_core.data.windows import FrameWindows
from w4rl_core.models.policy import CNNConfig, SuccessClassifier
from w4rl_core.train.bc import frames_of
from w4rl_core.train.supervised import SupervisedConfig, fit, random_shift
from w4rl_core.train.world_model import resolve_device


@torch.no_grad()
def classification_metrics(clf: SuccessClassifier, w: FrameWindows, device, threshold: float = 0.5) -> dict:
    if len(w.rgb) == 0:
        return {"frames": 0}
    probs = torch.cat([clf.prob(frames_of(w, torch.arange(i, min(i + 512, len(w.rgb))), device)).cpu()
                       for i in range(0, len(w.rgb), 512)])
    pred, label = probs > threshold, w.success.bool()
    tp, fp, fn = int((pred & label).sum()), int((pred & ~label).sum()), int((~pred & label).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"frames": len(label), "positives": int(label.sum()), "precision": precision, "recall": recall,
            "f1": f1, "accuracy": float((pred == label).float().mean())}


def train_classifier(
    cnn: CNNConfig, config: SupervisedConfig, train: FrameWindows, val: FrameWindows, progress: bool = False
) -> tuple[SuccessClassifier, dict[str, Any]]:
    labels = train.success.bool()
    pos, neg = labels.nonzero().squeeze(-1), (~labels).nonzero().squeeze(-1)
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError(f"the classifier needs success and failure frames; got {len(pos)} / {len(neg)}")
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    clf = SuccessClassifier(cnn).to(device)
    half = config.batch_size // 2

    def loss_fn(gen: torch.Generator) -> torch.Tensor:
        # Balanced: successes are a minority of frames, and the refinement needs them recognized.
        idx = torch.cat([pos[torch.randint(len(pos), (half,), generator=gen)],
                         neg[torch.randint(len(neg), (config.batch_size - half,), generator=gen)]])
        frames = random_shift(frames_of(train, idx, device), config.augment_shift, gen)
        return F.binary_cross_entropy_with_logits(clf(frames), labels[idx].float().to(device))

    curve = fit(clf, loss_fn, config, "train success classifier", progress)
    clf.eval()
    report = {"curve": curve, "train": classification_metrics(clf, train, device),
              "val": classification_metrics(clf, val, device)}
    return clf.cpu(), report
