"""World model training (overfit, resume after a kill, from a stream), checkpoint round trip, fidelity,
ImaginedEnv."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import make_episode, tiny_layout
from w4rl_core.data.store import EpisodeStore
from w4rl_core.data.stream import StreamConfig
from w4rl_core.data.windows import load_windows
from w4rl_core.eval.fidelity import FidelityConfig, evaluate_fidelity, moving_mask, psnr
from w4rl_core.models.accel import AccelConfig, FastSampler
from w4rl_core.models.policy import CNNConfig, SuccessClassifier
from w4rl_core.models.success import DetectorConfig, SuccessDetector
from w4rl_core.imagine.env import ImaginedEnv
from w4rl_core.models.unet import UNetConfig
from w4rl_core.models.world_model import WorldModel, WorldModelConfig, load_world_model, save_world_model
from w4rl_core.train import world_model as trainer
from w4rl_core.train.batches import StreamedWindows
from w4rl_core.train.world_model import WorldModelTrainConfig, train_world_model


def _smooth_episode(i: int, length: int = 14):
    """A moving bright square driven by the action: learnable, unlike random pixels."""
    ep = make_episode(length, seed=i)
    rgb = np.full((length, 16, 16, 3), 40, np.uint8)
    x = 2 + (i % 4)
    for t in range(length):
        ep.action[t] = [0.5, 0.0, 0.0, 0.0]
        pos = min(12, x + t // 2)
        rgb[t, 5:10, pos : pos + 4] = 220
    ep.rgb = rgb
    return ep


@pytest.fixture(scope="module")
def smooth_store(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("wm") / "s.zarr"
    EpisodeStore.create(path, tiny_layout()).append(_smooth_episode(i) for i in range(8))
    return str(path)


@pytest.fixture(scope="module")
def windows(smooth_store):
    return load_windows([smooth_store], image_size=16, val_fraction=0.25, seed=0)


def _streamed(store: str, shuffle_buffer: int = 32) -> StreamedWindows:
    """The train split `windows` holds in memory, to stream."""
    return StreamedWindows((store,), 16, 0.25, 0, StreamConfig(shuffle_buffer=shuffle_buffer))


def _val_only(store: str):
    return load_windows([store], image_size=16, val_fraction=0.25, seed=0, read_train=False)[1]


def _config(**unet):
    return WorldModelConfig(action_low=(-1.0,) * 4, action_high=(1.0,) * 4,
                            unet=UNetConfig(image_size=16, context_frames=2, channels=(16, 32), **unet))


def test_overfit_tiny_dataset_loss_falls(windows, tmp_path):
    train, val = windows
    cfg = WorldModelTrainConfig(steps=120, batch_size=16, lr=1e-3, log_every=10, val_every=60, checkpoint_every=1000)
    summary = train_world_model(_config(), cfg, train, val, tmp_path / "m", tmp_path / "ck", tmp_path / "c",
                                progress=False)
    assert summary["final_loss"] < 0.35 * summary["first_loss"], summary
    assert summary["val_loss"] < 0.5
    assert (tmp_path / "m/model.safetensors").exists() and not (tmp_path / "ck").exists()
    # The DVCLive run: one curve per metric, and the summary with the timings the model leaves out.
    curves = tmp_path / "c/plots/metrics"
    assert (curves / "loss.tsv").read_text().startswith("step\tloss\n")
    assert len((curves / "loss.tsv").read_text().splitlines()) == 1 + 12
    assert len((curves / "val_loss.tsv").read_text().splitlines()) == 1 + 2  # steps 60 and 120
    logged = json.loads((tmp_path / "c/metrics.json").read_text())
    assert logged["step"] == 120 and logged["train_samples_per_s"] > 0
    _, meta = load_world_model(tmp_path / "m")
    assert "train_samples_per_s" not in meta["training"] and "resumed_from_step" not in meta["training"]
    assert not (tmp_path / "c.partial").exists()


# (4, 6), killed at step 11: the checkpoint due at step 6 falls between two logged rows and waits for
# row 8; one taken at step 6 would lose the step-5 and -6 losses averaged into row 8, and the resumed
# curve would differ (the kill harness found this on the tiny profile: log_every 2, checkpoint_every 3).
@pytest.mark.parametrize("log_every, checkpoint_every, kill_at, resumed_from", [(5, 10, 15, 10), (4, 6, 11, 8)])
def test_resume_after_kill_gives_the_uninterrupted_result(windows, tmp_path, monkeypatch, log_every,
                                                          checkpoint_every, kill_at, resumed_from):
    train, val = windows
    cfg = WorldModelTrainConfig(steps=20, batch_size=4, log_every=log_every, val_every=100,
                                checkpoint_every=checkpoint_every)
    train_world_model(_config(), cfg, train, val, tmp_path / "a", tmp_path / "cka", tmp_path / "a-run", progress=False)

    real_step = trainer.Training.step
    calls = {"n": 0}

    def dying_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == kill_at:
            raise KeyboardInterrupt  # killed after the last checkpoint
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(trainer.Training, "step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        train_world_model(_config(), cfg, train, val, tmp_path / "b", tmp_path / "ckb", tmp_path / "b-run", progress=False)
    assert not (tmp_path / "b").exists() and not (tmp_path / "b-run").exists()  # no half-written outputs
    monkeypatch.setattr(trainer.Training, "step", real_step)
    summary = train_world_model(_config(), cfg, train, val, tmp_path / "b", tmp_path / "ckb", tmp_path / "b-run",
                                progress=False)
    assert summary["resumed_from_step"] == resumed_from
    a, _ = load_world_model(tmp_path / "a")
    b, _ = load_world_model(tmp_path / "b")
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    # The curves are the uninterrupted run's (replayed from the checkpoint), and so is the model's
    # metadata: the same files, the same DVC hash.
    for name in ("loss", "grad_norm", "val_loss"):
        curve = f"plots/metrics/{name}.tsv"
        assert (tmp_path / "a-run" / curve).read_text() == (tmp_path / "b-run" / curve).read_text(), name
    assert (tmp_path / "a/config.json").read_text() == (tmp_path / "b/config.json").read_text()


def test_training_from_a_stream_learns_and_saves_the_model(smooth_store, tmp_path):
    cfg = WorldModelTrainConfig(steps=40, batch_size=8, lr=2e-3, log_every=10, val_every=40, checkpoint_every=1000)
    summary = train_world_model(_config(), cfg, _streamed(smooth_store), _val_only(smooth_store), tmp_path / "m",
                                tmp_path / "ck", tmp_path / "c", progress=False)
    assert summary["data_source"] == "stream" and summary["train_episodes"] == 6
    # Measured 0.49 (the in-memory path on the same episodes: 0.48).
    assert summary["final_loss"] < 0.7 * summary["first_loss"], summary
    assert np.isfinite(summary["val_loss"])
    assert json.loads((tmp_path / "c/metrics.json").read_text())["data_source"] == "stream"
    model, meta = load_world_model(tmp_path / "m")
    assert meta["training"]["data_source"] == "stream" and isinstance(model, WorldModel)


def test_a_killed_streaming_run_resumes_its_weights_and_streams_a_new_epoch(smooth_store, tmp_path, monkeypatch):
    cfg = WorldModelTrainConfig(steps=12, batch_size=4, log_every=4, val_every=100, checkpoint_every=6)
    real_step, real_stream = trainer.Training.step, trainer.Training.window_stream
    calls, first_epochs = {"n": 0}, []

    def dying_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 9:
            raise KeyboardInterrupt  # killed at step 9; the last checkpoint is step 8 (due at 6, taken at row 8)
        return real_step(self, *args, **kwargs)

    def stream(self, train, first_epoch=0):
        first_epochs.append(first_epoch)
        return real_stream(self, train, first_epoch)

    monkeypatch.setattr(trainer.Training, "window_stream", stream)
    monkeypatch.setattr(trainer.Training, "step", dying_step)
    args = (_config(), cfg, _streamed(smooth_store), _val_only(smooth_store), tmp_path / "m", tmp_path / "ck",
            tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        train_world_model(*args, progress=False)
    monkeypatch.setattr(trainer.Training, "step", real_step)
    summary = train_world_model(*args, progress=False)
    assert summary["resumed_from_step"] == 8 and summary["steps"] == 12 and np.isfinite(summary["final_loss"])
    # The resumed stream starts after the epoch the killed run was in (8 steps x 4 windows of 72).
    assert first_epochs == [0, 0, 1]
    assert (tmp_path / "m/model.safetensors").exists() and not (tmp_path / "ck").exists()


def test_the_checkpoint_fingerprint_names_the_data_source_and_stream_settings(windows, smooth_store):
    train, _ = windows
    cfg, accel = WorldModelTrainConfig(), AccelConfig()

    def fingerprint(data) -> str:
        return trainer._fingerprint(_config(), cfg, accel, trainer._data_identity(data))

    streams = [_streamed(smooth_store, buffer).stream(3, seed=0, rank=0, world_size=1) for buffer in (32, 32, 64)]
    assert (streams[0].n_episodes, streams[0].n_frames) == (train.n_episodes, len(train.rgb))  # the same data
    assert fingerprint(train) != fingerprint(streams[0])
    assert fingerprint(streams[0]) == fingerprint(streams[1]) != fingerprint(streams[2])


def test_checkpoint_round_trip_is_safetensors_and_json(tmp_path):
    torch.manual_seed(0)
    model = WorldModel(_config()).eval()
    save_world_model(tmp_path / "m", model, meta={"note": "x"})
    loaded, meta = load_world_model(tmp_path / "m")
    assert meta == {"note": "x"}
    assert json.loads((tmp_path / "m/config.json").read_text())["config"]["action_encoding"] == "two_hot"
    ctx, act = torch.rand(2, 2, 3, 16, 16) * 2 - 1, torch.rand(2, 2, 4) * 2 - 1
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(model.predict(ctx, act, generator=g1), loaded.predict(ctx, act, generator=g2))
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_world_model(tmp_path / "nothing")


def test_fidelity_metrics_report_and_visuals(windows, tmp_path):
    _, val = windows
    torch.manual_seed(0)
    model = WorldModel(_config()).eval()
    sample = FastSampler(model, model.config.sampler, "cpu", AccelConfig(precision="float32"))
    clf = SuccessClassifier(CNNConfig(image_size=16, channels=(8, 8), hidden=8)).eval()
    detectors = {"coffee-pull-v3": SuccessDetector(clf, DetectorConfig(threshold=0.5, persistence=2))}
    m = evaluate_fidelity(sample, 2, val, FidelityConfig(horizon=8, episodes=4, strips=1, report_horizons=(1, 8)),
                          tmp_path / "fid.json", tmp_path / "rep", detectors=detectors)
    assert m["episodes"] == 2 and len(m["model"]["psnr_per_step"]) == 8
    assert set(m["model"]["psnr"]) == set(m["model"]["psnr_moving"]) == {"h1", "h8", "mean"}
    assert set(m["copy_last_frame"]["psnr_moving_se"]) == {"h1", "h8", "mean"}
    # An untrained model (its output layer starts at zero) loses to copying the last frame: the
    # comparison can fail.
    assert m["beats_copy_last_frame"]["psnr_mean"] is False
    agree = m["classifier_agreement"]
    assert agree["per_task"]["coffee-pull-v3"]["episodes"] == 2 and 0 <= agree["frame"] <= 1
    assert json.loads((tmp_path / "fid.json").read_text())["horizon"] == 8
    assert {"imagined_vs_real.html", "strips", "rollout_0.gif"} <= {p.name for p in (tmp_path / "rep").iterdir()}
    assert (tmp_path / "rep" / "strips" / "strip_0.png").exists()
    with pytest.raises(ValueError, match="lower fidelity.horizon"):
        evaluate_fidelity(sample, 2, val, FidelityConfig(horizon=40), tmp_path / "x.json", tmp_path / "x")


def test_moving_pixel_psnr_scores_only_what_moves():
    """A constructed case: one pixel lights up at step 1, a second at step 2; all else is static."""
    last = torch.full((1, 3, 4, 4), -1.0)  # the last context frame: black
    real = last[:, None].repeat(1, 2, 1, 1, 1)
    real[0, 0, :, 0, 0] = 1.0
    real[0, 1, :, 0, 0] = 1.0
    real[0, 1, :, 0, 1] = 1.0
    mask = moving_mask(last, real)
    assert mask.sum() == 2  # the two pixels that change over the window
    copy_last = last[:, None].expand_as(real)
    # Copying the last frame is wrong on 1 of the 2 moving pixels at step 1, on both at step 2; over
    # the full frame the same errors are diluted by 14 static, correct pixels.
    moving = psnr(copy_last, real, mask)[0]
    full = psnr(copy_last, real)[0]
    assert moving == pytest.approx([10 * np.log10(2), 0.0], abs=1e-5)
    assert full == pytest.approx([10 * np.log10(16), 10 * np.log10(8)], abs=1e-5)
    # A model right on the moving pixels and wrong on a static one: perfect moving PSNR, while
    # full-frame PSNR still charges the static error.
    model = real.clone()
    model[0, :, :, 3, 3] = 0.0
    assert np.isinf(psnr(model, real, mask)[0]).all() or (psnr(model, real, mask)[0] > 90).all()
    assert (psnr(model, real)[0] < 20).all()


def test_imagined_env_is_batched_seeded_and_frozen(windows):
    train, _ = windows
    torch.manual_seed(0)
    model = WorldModel(_config())
    class Bright:  # a stand-in success function: every frame counts
        def reset(self, n, device):
            pass

        def __call__(self, frames):
            prob = (frames.mean(dim=(1, 2, 3)) > -2).float()
            return prob > 0.5, prob

    env = ImaginedEnv(model, train, n_envs=3, success_fn=Bright())
    obs = env.reset(seed=5)
    assert obs.shape == (3, 3, 16, 16)
    nxt, info = env.step(torch.full((3, 4), 3.0))  # clipped to the bounds
    assert nxt.shape == (3, 3, 16, 16) and info["success"].all() and info["reward"].shape == (3,)
    assert info["uncertainty"].shape == (3,) and (info["uncertainty"] >= 0).all()
    # Episodes start at recorded episode starts: the context is the first T frames of one of them.
    starts = {int(s) for s in train.episode_starts}
    assert set(env._starts.tolist()) <= starts
    assert all(not p.requires_grad for p in model.parameters())
    again = env.reset(seed=5)
    assert torch.equal(obs, again)
    assert torch.equal(env.step(torch.full((3, 4), 1.0))[0], nxt)
    with pytest.raises(ValueError, match="no real episode"):
        ImaginedEnv(model, train, n_envs=1, tasks=["hammer-v3"])


def test_imagined_twins_keep_real_context_labels_and_episodes(windows):
    from w4rl_core.data.windows import FrameWindows
    from w4rl_core.imagine.replay import imagined_twins

    train, _ = windows
    torch.manual_seed(0)
    model = WorldModel(_config()).eval()
    sample = FastSampler(model, model.config.sampler, "cpu", AccelConfig(precision="float32"))
    twins = imagined_twins(sample, 2, train, horizon=6)
    assert twins.n_episodes == train.n_episodes and len(twins.rgb) == train.n_episodes * 8
    assert twins.episode_task == train.episode_task and twins.episode_kind == train.episode_kind
    for e, (s, end) in enumerate(zip(train.episode_starts, train.episode_ends)):
        t0 = int(twins.episode_starts[e])
        assert torch.equal(twins.rgb[t0 : t0 + 2], train.rgb[s : s + 2])  # the real context frames
        assert torch.equal(twins.success[t0 : t0 + 8], train.success[s : s + 8])  # the real outcome
        assert torch.equal(twins.action[t0 : t0 + 8], train.action[s : s + 8])
    assert twins.rgb.dtype == torch.uint8
    # Episodes of two FrameWindows as one; a selection of episodes as its own FrameWindows.
    both = FrameWindows.concat([train, twins])
    assert both.n_episodes == 2 * train.n_episodes and len(both.rgb) == len(train.rgb) + len(twins.rgb)
    picked = both.episodes([1, train.n_episodes + 1])
    assert torch.equal(picked.rgb[: int(picked.episode_ends[0])], train.rgb[train.episode_starts[1] : train.episode_ends[1]])
    assert picked.succeeded().tolist() == [bool(train.success[train.episode_starts[1] : train.episode_ends[1]].any())] * 2
    with pytest.raises(ValueError, match="T \\+ horizon"):
        imagined_twins(sample, 2, train, horizon=40)


def test_fine_tuning_starts_from_the_saved_weights_and_refuses_another_architecture(windows, tmp_path):
    """The flywheel's warm start: a run of the same architecture starts at the saved model's loss,
    not a fresh one's; a different architecture is refused before any step."""
    train, val = windows
    cfg = WorldModelTrainConfig(steps=60, batch_size=16, lr=1e-3, log_every=10, val_every=60, checkpoint_every=1000)
    first = train_world_model(_config(), cfg, train, val, tmp_path / "m0", tmp_path / "ck0", tmp_path / "c0",
                              progress=False)
    short = WorldModelTrainConfig(steps=10, batch_size=16, lr=1e-3, log_every=10, val_every=10, checkpoint_every=1000)
    tuned = train_world_model(_config(), short, train, val, tmp_path / "m1", tmp_path / "ck1", tmp_path / "c1",
                              progress=False, init_from=tmp_path / "m0")
    fresh = train_world_model(_config(), short, train, val, tmp_path / "m2", tmp_path / "ck2", tmp_path / "c2",
                              progress=False)
    assert tuned["first_loss"] < 0.6 * fresh["first_loss"], (first, tuned, fresh)
    with pytest.raises(ValueError, match="differs from this one in \\['unet'\\]"):
        train_world_model(_config(layers_per_block=2), short, train, val, tmp_path / "m3", tmp_path / "ck3",
                          tmp_path / "c3", progress=False, init_from=tmp_path / "m0")
    assert not (tmp_path / "m3").exists()
