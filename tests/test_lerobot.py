"""LeRobot datasets <-> w4rl episodes (w4rl_core/data/lerobot/).

The datasets here are written by the helpers below in LeRobot's layouts, independently of the module
under test: v2.1 as LeRobot's recorder wrote it (one parquet and one mp4 per episode, jsonl metadata),
v3.0 as LeRobot's converter (src/lerobot/scripts/convert_dataset_v21_to_v30.py) makes it from v2.1:
parquet files concatenated, mp4 files remuxed back to back, from/to timestamps from the durations.
"""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from w4rl_core.data.episode import Episode
from w4rl_core.data.lerobot import (
    LeRobotFormatError,
    LeRobotMapping,
    export_lerobot,
    import_lerobot,
    read_lerobot,
)
from w4rl_core.data.store import EpisodeStore, StoreLayout

CAM = "observation.images.top"
FPS = 10
TASKS = ("pick the cube", "open the drawer")
ENCODERS = {  # test-side encoder settings (LeRobot's defaults for AV1; x264 for H.264)
    "libsvtav1": ("yuv420p", {"crf": "30", "preset": "12", "g": "2"}),
    "libx264": ("yuv420p", {"crf": "20", "g": "2"}),
    "libx264rgb": ("rgb24", {"crf": "0", "g": "2"}),
}


# ---------------------------------------------------------------------- synthetic episodes
BACKGROUNDS = np.array([(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40)], np.uint8)


def _frames(e: int, n: int, h: int, w: int) -> np.ndarray:
    """A flat background of a colour of its own per episode, and a moving white square: easy on the
    codec, and a frame from the wrong episode is far from every frame of the right one."""
    out = np.empty((n, h, w, 3), np.uint8)
    out[:] = BACKGROUNDS[e % len(BACKGROUNDS)]
    for t in range(n):
        y, x = (2 * t) % (h - 8), (3 * t) % (w - 8)
        out[t, y : y + 8, x : x + 8] = 255
    return out


def _raw_episode(e: int, n: int, h: int = 32, w: int = 32, succeed: bool = True) -> dict:
    rng = np.random.default_rng(100 + e)
    next_success = np.zeros(n, bool)
    if succeed:
        next_success[-3:] = True
    return {
        "frames": _frames(e, n, h, w),
        "action": rng.uniform(-1, 1, (n, 4)).astype(np.float32),
        "state": rng.normal(size=(n, 3)).astype(np.float32),
        "next.success": next_success,
        "next.reward": np.where(next_success, 1.0, rng.uniform(0, 0.5, n)).astype(np.float32),
        "task": TASKS[e % 2],
    }


def _expected_success(next_success: np.ndarray) -> np.ndarray:
    """LeRobot's next.success[t] describes frame t+1 (the module's time convention)."""
    out = np.concatenate([[False], next_success[:-1]])
    out[-1] |= next_success[-1]
    return out.astype(np.uint8)


# ---------------------------------------------------------------------- LeRobot-layout writers
def _encode(path: Path, frames: np.ndarray, codec: str, fps: int = FPS) -> None:
    pix_fmt, options = ENCODERS[codec]
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps, options=options)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = pix_fmt
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def _table(cols: dict[str, np.ndarray]) -> pa.Table:
    """Data columns as LeRobot's HF features store them: vectors as fixed-size lists, (1,) as scalars."""
    arrays = {}
    for key, values in cols.items():
        values = np.asarray(values)
        if values.ndim == 2:
            arrays[key] = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])
        else:
            arrays[key] = pa.array(values)
    return pa.table(arrays)


def _columns(path: Path) -> dict[str, np.ndarray]:
    table = pq.read_table(path)
    out = {}
    for name in table.column_names:
        col = table.column(name).combine_chunks()
        if pa.types.is_fixed_size_list(col.type):
            out[name] = col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), col.type.list_size)
        else:
            out[name] = col.to_numpy(zero_copy_only=False)
    return out


def _png(image: np.ndarray) -> dict:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return {"bytes": buf.getvalue(), "path": None}


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=4))


def write_v21(root: Path, episodes: list[dict], codec: str = "libsvtav1", image: bool = False) -> Path:
    """A LeRobot v2.1 dataset: utils.py before "Dataset v3" (DEFAULT_PARQUET_PATH, DEFAULT_VIDEO_PATH,
    EPISODES_PATH, TASKS_PATH, EPISODES_STATS_PATH) and LeRobotDatasetMetadata.save_episode."""
    h, w = episodes[0]["frames"].shape[1:3]
    tasks = list(dict.fromkeys(ep["task"] for ep in episodes))
    index = 0
    meta = root / "meta"
    meta.mkdir(parents=True)
    for e, ep in enumerate(episodes):
        n = len(ep["action"])
        cols = {"action": ep["action"], "observation.state": ep["state"]}
        for key in ("next.reward", "next.success"):
            if key in ep:
                cols[key] = ep[key]
        cols |= {
            "timestamp": (np.arange(n) / FPS).astype(np.float32),
            "frame_index": np.arange(n), "episode_index": np.full(n, e), "index": np.arange(index, index + n),
            "task_index": np.full(n, tasks.index(ep["task"])),
        }
        table = _table(cols)
        if image:
            table = table.append_column(CAM, pa.array([_png(f) for f in ep["frames"]],
                                                       pa.struct([("bytes", pa.binary()), ("path", pa.string())])))
        path = root / f"data/chunk-000/episode_{e:06d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
        if not image:
            _encode(root / f"videos/chunk-000/{CAM}/episode_{e:06d}.mp4", ep["frames"], codec)
        with open(meta / "episodes.jsonl", "a") as f:
            f.write(json.dumps({"episode_index": e, "tasks": [ep["task"]], "length": n}) + "\n")
        stats = {k: {"min": ep[k].min(0).tolist(), "max": ep[k].max(0).tolist(), "mean": ep[k].mean(0).tolist(),
                     "std": ep[k].std(0).tolist(), "count": [n]} for k in ("action",)}
        with open(meta / "episodes_stats.jsonl", "a") as f:
            f.write(json.dumps({"episode_index": e, "stats": stats}) + "\n")
        index += n
    with open(meta / "tasks.jsonl", "w") as f:
        for i, task in enumerate(tasks):
            f.write(json.dumps({"task_index": i, "task": task}) + "\n")
    video_info = {"video.fps": FPS, "video.height": h, "video.width": w, "video.channels": 3,
                  "video.codec": "av1" if codec == "libsvtav1" else "h264", "video.pix_fmt": ENCODERS[codec][0],
                  "video.is_depth_map": False, "has_audio": False}
    features = {
        CAM: {"dtype": "image" if image else "video", "shape": [h, w, 3], "names": ["height", "width", "channels"],
              **({} if image else {"info": video_info})},
        "action": {"dtype": "float32", "shape": [4], "names": None},
        "observation.state": {"dtype": "float32", "shape": [3], "names": None},
        "next.reward": {"dtype": "float32", "shape": [1], "names": None},
        "next.success": {"dtype": "bool", "shape": [1], "names": None},
    } | {k: {"dtype": dt, "shape": [1], "names": None} for k, dt in (
        ("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64"), ("index", "int64"),
        ("task_index", "int64"))}
    _write_json(meta / "info.json", {
        "codebase_version": "v2.1", "robot_type": None, "total_episodes": len(episodes), "total_frames": index,
        "total_tasks": len(tasks), "total_videos": 0 if image else len(episodes), "total_chunks": 1,
        "chunks_size": 1000, "fps": FPS, "splits": {"train": f"0:{len(episodes)}"},
        "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
        "video_path": None if image else "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4",
        "features": features,
    })
    return root


def _concat_videos(paths: list[Path], out: Path) -> None:
    """video_utils.concatenate_video_files: ffmpeg's concat demuxer, packets remuxed, no re-encode."""
    with tempfile.NamedTemporaryFile("w", suffix=".ffconcat", delete=False) as f:
        f.write("ffconcat version 1.0\n" + "".join(f"file '{p.resolve()}'\n" for p in paths))
    out.parent.mkdir(parents=True, exist_ok=True)
    with av.open(f.name, "r", format="concat", options={"safe": "0"}) as src, \
            av.open(str(out), "w", options={"movflags": "faststart"}) as dst:
        streams = {}
        for s in src.streams.video:
            streams[s.index] = dst.add_stream_from_template(template=s, opaque=True)
            streams[s.index].time_base = s.time_base
        for packet in src.demux():
            if packet.stream.index in streams and packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                dst.mux(packet)
    Path(f.name).unlink()


def _duration(path: Path) -> float:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return float(s.duration * s.time_base)


def convert_to_v30(v21: Path, root: Path, episodes_per_file: int = 2) -> Path:
    """convert_dataset_v21_to_v30.py: convert_info, convert_tasks, convert_data, convert_videos,
    convert_episodes_metadata, with files closed every `episodes_per_file` episodes (where LeRobot
    closes them by size)."""
    info = json.loads((v21 / "meta/info.json").read_text())
    episodes = [json.loads(line) for line in (v21 / "meta/episodes.jsonl").read_text().splitlines()]
    ep_stats = [json.loads(line) for line in (v21 / "meta/episodes_stats.jsonl").read_text().splitlines()]
    tasks = [json.loads(line) for line in (v21 / "meta/tasks.jsonl").read_text().splitlines()]
    rows, frames, video_ts = [], 0, 0.0
    for start in range(0, len(episodes), episodes_per_file):
        file_index = start // episodes_per_file
        group = episodes[start : start + episodes_per_file]
        data = [v21 / f"data/chunk-000/episode_{ep['episode_index']:06d}.parquet" for ep in group]
        out = root / f"data/chunk-000/file-{file_index:03d}.parquet"
        out.parent.mkdir(parents=True, exist_ok=True)
        pd.concat([pd.read_parquet(p) for p in data], ignore_index=True).to_parquet(out, index=False)
        videos = [v21 / f"videos/chunk-000/{CAM}/episode_{ep['episode_index']:06d}.mp4" for ep in group]
        _concat_videos(videos, root / f"videos/{CAM}/chunk-000/file-{file_index:03d}.mp4")
        video_ts = 0.0
        for ep, video in zip(group, videos):
            e, n = ep["episode_index"], ep["length"]
            duration = _duration(video)
            rows.append({
                "episode_index": e, "data/chunk_index": 0, "data/file_index": file_index,
                "dataset_from_index": frames, "dataset_to_index": frames + n,
                f"videos/{CAM}/chunk_index": 0, f"videos/{CAM}/file_index": file_index,
                f"videos/{CAM}/from_timestamp": video_ts, f"videos/{CAM}/to_timestamp": video_ts + duration,
                "tasks": ep["tasks"], "length": n,
                **{f"stats/action/{k}": v for k, v in ep_stats[e]["stats"]["action"].items()},
                "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0,
            })
            frames += n
            video_ts += duration
    path = root / "meta/episodes/chunk-000/file-000.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    pd.DataFrame({"task_index": [t["task_index"] for t in tasks]},
                 index=pd.Index([t["task"] for t in tasks], name="task")).to_parquet(root / "meta/tasks.parquet")
    action = {"min": np.min([s["stats"]["action"]["min"] for s in ep_stats], 0).tolist(),
              "max": np.max([s["stats"]["action"]["max"] for s in ep_stats], 0).tolist()}
    _write_json(root / "meta/stats.json", {"action": action})
    for key in ("total_chunks", "total_videos"):
        del info[key]
    info |= {"codebase_version": "v3.0", "data_files_size_in_mb": 100, "video_files_size_in_mb": 200,
             "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
             "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"}
    _write_json(root / "meta/info.json", info)
    return root


LENGTHS = (10, 15, 12)


@pytest.fixture
def raw() -> list[dict]:
    return [_raw_episode(e, n, succeed=e != 1) for e, n in enumerate(LENGTHS)]


def _mae(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def _check_against_raw(episodes: list[Episode], raw: list[dict], codec_mae: float) -> None:
    assert [len(ep) for ep in episodes] == [len(r["action"]) for r in raw]  # boundaries
    for e, (ep, r) in enumerate(zip(episodes, raw)):
        assert ep.task == r["task"]
        np.testing.assert_array_equal(ep.action, r["action"])
        np.testing.assert_array_equal(ep.state, r["state"])
        np.testing.assert_array_equal(ep.success, _expected_success(r["next.success"]))
        np.testing.assert_array_equal(ep.reward, np.concatenate([[0], r["next.reward"][:-1]]).astype(np.float32))
        assert ep.rgb.dtype == np.uint8 and ep.rgb.shape == r["frames"].shape
        assert _mae(ep.rgb, r["frames"]) < codec_mae, f"episode {e}: frames off by {_mae(ep.rgb, r['frames'])}"
        for other, ro in enumerate(raw):  # frames of the wrong episode would be far off
            k = min(len(ep), len(ro["frames"]))
            if other != e:
                assert _mae(ep.rgb[:k], ro["frames"][:k]) > 5 * codec_mae


# ---------------------------------------------------------------------- reading
def test_reads_v21_av1(tmp_path, raw):
    root = write_v21(tmp_path / "v21", raw, codec="libsvtav1")
    mapping = LeRobotMapping(camera=CAM, image_size=32, kinds={1: "policy"})
    episodes = read_lerobot(root, mapping)
    _check_against_raw(episodes, raw, codec_mae=6.0)
    assert [ep.kind for ep in episodes] == ["expert", "policy", "expert"]
    assert [ep.succeeded for ep in episodes] == [True, False, True]


def test_reads_v30_h264_as_converted_by_lerobot(tmp_path, raw):
    raw = raw + [_raw_episode(3, 18)]  # two episodes per data/video file: files 0 and 1
    v21 = write_v21(tmp_path / "v21", raw, codec="libx264")
    v30 = convert_to_v30(v21, tmp_path / "v30", episodes_per_file=2)
    assert len(list((v30 / "videos" / CAM / "chunk-000").glob("*.mp4"))) == 2
    mapping = LeRobotMapping(camera=CAM, image_size=32)
    from_v30 = read_lerobot(v30, mapping)
    _check_against_raw(from_v30, raw, codec_mae=6.0)
    # The same packets, remuxed: every frame decodes identically from the concatenated files.
    for a, b in zip(read_lerobot(v21, mapping), from_v30):
        np.testing.assert_array_equal(a.rgb, b.rgb)


def test_reads_image_features_exactly(tmp_path, raw):
    root = write_v21(tmp_path / "img", raw, image=True)
    episodes = read_lerobot(root, LeRobotMapping(camera=CAM, image_size=32))
    for ep, r in zip(episodes, raw):
        np.testing.assert_array_equal(ep.rgb, r["frames"])  # PNG is lossless and 32 px needs no resize


@pytest.mark.parametrize("fit", ["crop", "pad"])
def test_non_square_frames_are_cropped_or_padded_never_squashed(tmp_path, fit):
    raw = [_raw_episode(e, 10, h=24, w=32) for e in range(2)]
    for r in raw:  # red and blue bands at the sides, green between
        r["frames"][:] = (0, 200, 0)
        r["frames"][:, :, :4] = (220, 0, 0)
        r["frames"][:, :, -4:] = (0, 0, 220)
    root = write_v21(tmp_path / "wide", raw, codec="libx264rgb")
    episodes = read_lerobot(root, LeRobotMapping(camera=CAM, image_size=16, fit=fit))
    rgb = episodes[0].rgb.astype(int)
    assert rgb.shape == (10, 16, 16, 3)
    green, red, blue, black = (0, 200, 0), (220, 0, 0), (0, 0, 220), (0, 0, 0)

    def near(pixel, colour):
        return np.abs(pixel - np.array(colour)).max() <= 12

    if fit == "crop":  # the centre 24x24: the side bands are cut off
        assert all(near(rgb[t, y, x], green) for t in (0, 9) for y in (0, 8, 15) for x in (0, 8, 15))
    else:  # 32x32 with 4 black rows above and below: bands kept, aspect kept
        assert near(rgb[0, 0, 8], black) and near(rgb[0, 15, 8], black)
        assert near(rgb[0, 8, 0], red) and near(rgb[0, 8, 15], blue) and near(rgb[0, 8, 8], green)


@pytest.mark.parametrize("source", ["next.success", "next.reward", "labels", "demo_last_k", "last_transition"])
def test_success_sources(tmp_path, raw, source):
    if source == "last_transition":  # success only by the last action: kept on the last frame
        raw[1]["next.success"][:] = False
        raw[1]["next.success"][-1] = True
    root = write_v21(tmp_path / "ds", raw)
    extra = {"next.reward": {"reward_threshold": 0.9}, "labels": {"labels_file": str(tmp_path / "labels.json")},
             "demo_last_k": {}, "next.success": {}, "last_transition": {}}[source]
    (tmp_path / "labels.json").write_text(json.dumps({"0": True, "1": False, "2": True}))
    success = source if source != "last_transition" else "next.success"
    episodes = read_lerobot(root, LeRobotMapping(camera=CAM, image_size=32, success=success, last_k=2, **extra))
    for e, (ep, r) in enumerate(zip(episodes, raw)):
        n = len(r["action"])
        if source in ("next.success", "last_transition"):
            want = _expected_success(r["next.success"])
        elif source == "next.reward":
            want = _expected_success(r["next.reward"] >= 0.9)
        else:
            want = np.zeros(n, np.uint8)
            if source == "demo_last_k" or e != 1:
                want[-2:] = 1
        np.testing.assert_array_equal(ep.success, want, err_msg=f"episode {e}")
    if source == "last_transition":
        assert episodes[1].success.tolist() == [0] * (LENGTHS[1] - 1) + [1]


def test_import_writes_a_store_with_the_dataset_layout(tmp_path, raw):
    root = convert_to_v30(write_v21(tmp_path / "v21", raw), tmp_path / "v30")
    mapping = LeRobotMapping(camera=CAM, image_size=16, kinds={2: "eval"})
    store = import_lerobot(root, tmp_path / "store.zarr", mapping)
    assert store.n_episodes == 3 and store.episode_lengths.tolist() == list(LENGTHS)
    lay = store.layout
    actions = np.concatenate([r["action"] for r in raw])
    assert lay.image_size == (16, 16) and lay.state_dim == 3 and lay.fps == FPS and lay.camera == CAM
    np.testing.assert_allclose(lay.action_low, actions.min(0), rtol=1e-6)  # meta/stats.json
    np.testing.assert_allclose(lay.action_high, actions.max(0), rtol=1e-6)
    src = store.attrs["source"]
    assert src["codebase_version"] == "v3.0" and src["root"] == str(root)  # as given
    assert src["mapping"]["camera"] == CAM and src["mapping"]["kinds"] == {"2": "eval"}
    assert src["action_bounds_from"] == "meta/stats.json"
    assert store.episode_kind == ["expert", "expert", "eval"] and store.episode_task == [r["task"] for r in raw]
    for i, r in enumerate(raw):
        ep = store.episode(i)
        np.testing.assert_array_equal(ep.action, r["action"])
        np.testing.assert_array_equal(ep.success, _expected_success(r["next.success"]))
        assert ep.rgb.shape == (len(r["action"]), 16, 16, 3)


def test_import_of_one_kind_takes_its_first_episodes_with_the_whole_datasets_bounds(tmp_path, raw):
    """The pipeline's import stage: one kind's first n episodes; its action bounds are the whole
    dataset's, so every kind's store shares them; fewer episodes than asked for writes nothing."""
    root = convert_to_v30(write_v21(tmp_path / "v21", raw), tmp_path / "v30")
    mapping = LeRobotMapping(camera=CAM, image_size=16, kinds={1: "random"})
    whole = import_lerobot(root, tmp_path / "all.zarr", mapping)
    experts = import_lerobot(root, tmp_path / "expert.zarr", mapping, kind="expert", episodes=1)
    assert experts.n_episodes == 1 and experts.episode_kind == ["expert"]
    np.testing.assert_array_equal(experts.episode(0).action, whole.episode(0).action)
    assert (experts.layout.action_low, experts.layout.action_high) == (whole.layout.action_low,
                                                                       whole.layout.action_high)
    random = import_lerobot(root, tmp_path / "random.zarr", mapping, kind="random")
    np.testing.assert_array_equal(random.episode(0).action, whole.episode(1).action)
    for kind, n, says in (("random", 2, "1 random episodes, fewer than the 2 asked for"),
                          ("policy", None, "no policy episodes to import")):
        with pytest.raises(LeRobotFormatError, match=says):
            import_lerobot(root, tmp_path / "refused.zarr", mapping, kind=kind, episodes=n)
        assert not (tmp_path / "refused.zarr").exists()


# ---------------------------------------------------------------------- round trips
def _w4rl_episodes(lengths=(12, 20, 9), size=16) -> list[Episode]:
    """Episodes in w4rl's convention (collect.rollout): frame 0, the reset state, has no reward."""
    out = []
    for e, n in enumerate(lengths):
        rng = np.random.default_rng(e)
        success = np.zeros(n, np.uint8)
        if e != 1:
            success[n // 2 :] = 1
        reward = rng.uniform(0, 1, n).astype(np.float32)
        reward[0] = 0
        out.append(Episode(task=TASKS[e % 2], kind=("expert", "policy", "eval")[e], rgb=_frames(e, n, size, size),
                           action=rng.uniform(-1, 1, (n, 4)).astype(np.float32), reward=reward, success=success,
                           state=rng.normal(size=(n, 5)).astype(np.float32), scene=f"{e + 1:016x}" if e else ""))
    return out


def _store(url: Path, episodes: list[Episode]) -> EpisodeStore:
    layout = StoreLayout(image_size=(16, 16), action_low=(-1.0,) * 4, action_high=(1.0,) * 4, state_dim=5,
                         fps=20.0, camera="corner")
    store = EpisodeStore.create(url, layout)
    store.append(episodes)
    return store


def _same_but_frames(a: Episode, b: Episode) -> None:
    assert (a.task, a.kind, a.scene, len(a)) == (b.task, b.kind, b.scene, len(b))
    for name in ("action", "reward", "success", "state"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_lossless_round_trip_store_export_import(tmp_path):
    episodes = _w4rl_episodes()
    _store(tmp_path / "a.zarr", episodes)
    # Tiny file limits: every episode starts a new data and video file (LeRobot's roll-over).
    out = export_lerobot(tmp_path / "a.zarr", tmp_path / "lerobot", lossless=True,
                         data_file_size_in_mb=1e-6, video_file_size_in_mb=1e-6)
    key = "observation.images.corner"
    info = json.loads((out / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 20
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (3, 41, 2)
    assert info["splits"] == {"train": "0:3"}
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    assert info["features"][key]["dtype"] == "video" and info["features"][key]["shape"] == [16, 16, 3]
    assert info["features"][key]["info"]["video.codec"] == "h264"
    assert set(info["features"]) == {key, "action", "observation.state", "next.reward", "next.success", "timestamp",
                                     "frame_index", "episode_index", "index", "task_index"}
    assert sorted(p.name for p in (out / "data/chunk-000").iterdir()) == [f"file-{i:03d}.parquet" for i in range(3)]
    assert len(list((out / f"videos/{key}/chunk-000").glob("*.mp4"))) == 3
    meta = pq.read_table(out / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [(m["dataset_from_index"], m["dataset_to_index"]) for m in meta] == [(0, 12), (12, 32), (32, 41)]
    assert [m["data/file_index"] for m in meta] == [0, 1, 2]
    assert [m[f"videos/{key}/from_timestamp"] for m in meta] == [0.0, 0.0, 0.0]
    assert [m["w4rl/kind"] for m in meta] == ["expert", "policy", "eval"]
    assert np.asarray(meta[0][f"stats/{key}/mean"]).shape == (3, 1, 1)
    tasks = pd.read_parquet(out / "meta/tasks.parquet")
    assert tasks.index.name == "task" and list(tasks.index) == list(TASKS)
    stats = json.loads((out / "meta/stats.json").read_text())
    assert stats["action"]["count"] == [41] and len(stats["action"]["min"]) == 4
    data = pq.read_table(out / "data/chunk-000/file-001.parquet")
    assert data.column_names == ["action", "observation.state", "next.reward", "next.success", "timestamp",
                                 "frame_index", "episode_index", "index", "task_index"]
    assert data.column("index").to_pylist() == list(range(12, 32))

    mapping = LeRobotMapping(camera=key, image_size=16, action_low=(-1.0,) * 4, action_high=(1.0,) * 4)
    back = import_lerobot(out, tmp_path / "b.zarr", mapping)
    assert back.episode_lengths.tolist() == [12, 20, 9]
    for i, ep in enumerate(episodes):
        got = back.episode(i)
        _same_but_frames(got, ep)  # kind and scene come back from w4rl/kind, w4rl/scene
        np.testing.assert_array_equal(got.rgb, ep.rgb)


def test_av1_round_trip_of_episodes_keeps_all_but_frames_exactly(tmp_path):
    episodes = _w4rl_episodes(lengths=(14, 10, 17), size=32)
    out = export_lerobot(episodes, tmp_path / "av1", fps=15)
    info = json.loads((out / "meta/info.json").read_text())
    video = info["features"]["observation.images.main"]["info"]
    assert (video["video.codec"], video["video.pix_fmt"], video["video.fps"]) == ("av1", "yuv420p", 15)
    meta = pq.read_table(out / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    ts = [(m["videos/observation.images.main/from_timestamp"], m["videos/observation.images.main/to_timestamp"])
          for m in meta]
    assert ts == [(0.0, 14 / 15), (14 / 15, 24 / 15), (24 / 15, 41 / 15)]  # one file, episodes back to back
    back = read_lerobot(out, LeRobotMapping(camera="observation.images.main", image_size=32))
    for got, ep in zip(back, episodes):
        _same_but_frames(got, ep)
        assert _mae(got.rgb, ep.rgb) < 6.0


# ---------------------------------------------------------------------- refused input
def _rewrite(path: Path, change) -> None:
    cols = _columns(path)
    change(cols)
    pq.write_table(_table(cols), path)


def _ep(e: int) -> str:
    return f"data/chunk-000/episode_{e:06d}.parquet"


def _video(e: int) -> str:
    return f"videos/chunk-000/{CAM}/episode_{e:06d}.mp4"


def _set(cols, key, row, col, value):
    cols[key] = cols[key].copy()
    cols[key][row, col] = value


def _empty_episode(root: Path) -> None:
    _rewrite(root / _ep(1), lambda c: c.update({k: v[:0] for k, v in c.items()}))
    lines = (root / "meta/episodes.jsonl").read_text().splitlines()
    lines[1] = json.dumps({"episode_index": 1, "tasks": [TASKS[1]], "length": 0})
    (root / "meta/episodes.jsonl").write_text("\n".join(lines) + "\n")


def _swap_frames(cols):
    cols["frame_index"] = cols["frame_index"].copy()
    cols["frame_index"][[3, 4]] = cols["frame_index"][[4, 3]]


def _shift_timestamp(cols):
    cols["timestamp"] = cols["timestamp"].copy()
    cols["timestamp"][4] += 0.03


def _info(root: Path, **changes) -> None:
    info = json.loads((root / "meta/info.json").read_text())
    (root / "meta/info.json").write_text(json.dumps(info | changes))


def _v30_episode_rows(root: Path, change) -> None:
    path = root / "meta/episodes/chunk-000/file-000.parquet"
    rows = pq.read_table(path).to_pylist()
    change(rows)
    pq.write_table(pa.Table.from_pylist(rows), path)


def _shift_from_timestamp(rows):
    key = f"videos/{CAM}/from_timestamp"
    rows[1][key] += 0.05


STALE_STATS = {"action": {"min": [0.0] * 4, "max": [0.1] * 4}}

BAD_INPUTS = {
    # name: (dataset version, how it is broken, mapping changes, what the message must name)
    "unknown codebase_version": ("v2.1", lambda r: _info(r, codebase_version="v2.0"), {},
                                 ["meta/info.json", "codebase_version", "'v2.0'"]),
    "missing camera feature": ("v2.1", None, {"camera": "observation.images.wrist"},
                               ["meta/info.json", "features.observation.images.wrist", "camera"]),
    "missing state feature": ("v2.1", None, {"state": "observation.joints"},
                              ["meta/info.json", "features.observation.joints", "state"]),
    "missing action column": ("v2.1", lambda r: _rewrite(r / _ep(1), lambda c: c.pop("action")), {},
                              [_ep(1), "episode 1", "action", "missing column"]),
    "missing success column": ("v2.1", lambda r: _rewrite(r / _ep(2), lambda c: c.pop("next.success")), {},
                               [_ep(2), "episode 2", "next.success", "missing column"]),
    "NaN action": ("v2.1", lambda r: _rewrite(r / _ep(0), lambda c: _set(c, "action", 3, 0, np.nan)), {},
                   [_ep(0), "episode 0", "action", "NaN or inf", "frame 3"]),
    "inf state": ("v2.1", lambda r: _rewrite(r / _ep(2), lambda c: _set(c, "observation.state", 5, 1, np.inf)), {},
                  [_ep(2), "episode 2", "observation.state", "frame 5"]),
    "timestamp without a frame": ("v2.1", lambda r: _rewrite(r / _ep(1), _shift_timestamp), {},
                                  [_video(1), "episode 1", "timestamp", "within 0.0001 s", "frame 4"]),
    "video shorter than the data": ("v2.1", lambda r: _encode(r / _video(2), _frames(2, 7, 32, 32), "libsvtav1"), {},
                                    [_video(2), "episode 2", "7 video frames", "12 timestamps"]),
    "episode with no frames": ("v2.1", _empty_episode, {}, [_ep(1), "episode 1", "no frames"]),
    "non-monotonic frame_index": ("v2.1", lambda r: _rewrite(r / _ep(2), _swap_frames), {},
                                  [_ep(2), "episode 2", "frame_index", "not monotonic"]),
    "missing label": ("v2.1", None, {"success": "labels"}, ["labels.json", "episode 2", "label", "no label"]),
    "v3.0 from_timestamp off": ("v3.0", lambda r: _v30_episode_rows(r, _shift_from_timestamp), {},
                                [f"videos/{CAM}/chunk-000/file-000.mp4", "episode 1", "timestamp"]),
    "v3.0 index range off": ("v3.0", lambda r: _v30_episode_rows(
        r, lambda rows: rows[2].update({"dataset_from_index": 26})), {},
        ["data/chunk-000/file-001.parquet", "episode 2", "index", "dataset_from_index"]),
    "stale action stats": ("v3.0", lambda r: _write_json(r / "meta/stats.json", STALE_STATS), {},
                           ["meta/stats.json", "action.min/max", "dimension 0"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_refused_naming_file_episode_field_and_nothing_is_written(tmp_path, raw, case):
    version, breaks, changes, needles = BAD_INPUTS[case]
    root = write_v21(tmp_path / "v21", raw)
    if version == "v3.0":
        root = convert_to_v30(root, tmp_path / "v30")
    if breaks:
        breaks(root)
    (tmp_path / "labels.json").write_text(json.dumps({"0": True, "1": False}))
    if changes.get("success") == "labels":
        changes = changes | {"labels_file": str(tmp_path / "labels.json")}
    mapping = LeRobotMapping(**({"camera": CAM, "image_size": 32} | changes))
    dest = tmp_path / "out" / "store.zarr"
    with pytest.raises(LeRobotFormatError) as err:
        import_lerobot(root, dest, mapping)
    for needle in needles:
        assert needle in str(err.value), f"{needle!r} not in:\n{err.value}"
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_import_refuses_an_existing_destination(tmp_path, raw):
    root = write_v21(tmp_path / "v21", raw)
    dest = tmp_path / "store.zarr"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        import_lerobot(root, dest, LeRobotMapping(camera=CAM, image_size=32))
    assert [p.name for p in dest.iterdir()] == ["keep.txt"]


def test_failed_export_leaves_nothing(tmp_path):
    episodes = _w4rl_episodes()
    odd = Episode(task="t", kind="expert", rgb=np.zeros((5, 8, 8, 3), np.uint8), action=np.zeros((5, 4), np.float32),
                  reward=np.zeros(5, np.float32), success=np.zeros(5, np.uint8), state=np.zeros((5, 5), np.float32))
    with pytest.raises(ValueError, match="episode 3: rgb"):
        export_lerobot(episodes + [odd], tmp_path / "out", fps=10)  # fails after three episodes are written
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "out").mkdir()
    with pytest.raises(FileExistsError):
        export_lerobot(episodes, tmp_path / "out", fps=10)


@pytest.mark.parametrize("bad", [
    {"success": "next.reward"},  # no threshold
    {"success": "labels"},  # no labels file
    {"success": "always"},
    {"fit": "squash"},
    {"kinds": {0: "teleop"}},
    {"default_kind": "human"},
    {"action_low": (0.0,)},  # no action_high
    {"action_low": (1.0,), "action_high": (1.0,)},
    {"image_size": 4},
    {"last_k": 0},
])
def test_mapping_is_validated_at_construction(bad):
    with pytest.raises(ValueError):
        LeRobotMapping(**({"camera": CAM} | bad))
