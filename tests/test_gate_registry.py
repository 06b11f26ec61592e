"""Gate rules (property-style over random metrics), registry immutability (local and S3), lineage."""

from __future__ import annotations

import json

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from w4rl_core.models.policy import CNNConfig, GaussianPolicy, PolicyConfig, save_policy
from w4rl_core.registry.gate import GateRules, decide
from w4rl_core.registry.lineage import task_lineage
from w4rl_core.registry.registry import Registry, RegistryConflict

TASK = "door-lock-v3"
RULES = GateRules(min_psnr_mean=25.0, min_ssim_mean=0.5, require_beats_copy_last_frame=True, min_uplift=0.05,
                  regression_margin=0.02, min_episodes=10)
rate = st.floats(0, 1, allow_nan=False)


def fidelity(psnr: float, ssim: float = 0.9, base: float = 20.0) -> dict:
    return {"model": {"psnr": {"mean": psnr}, "ssim": {"mean": ssim}}, "copy_last_frame": {"psnr": {"mean": base}}}


def policy(bc: float, refined: float, n: int = 20, half_width: float = 0.1) -> dict:
    """metrics/policy.json as `evaluate` writes it: the candidate's own paired uplift on n distinct
    unseen scenes, its interval, and the task's over every seed."""
    uplift = refined - bc
    ci = [uplift - half_width, uplift + half_width]
    entry = {"bc": {"success_rate": bc, "episodes": n}, "refined": {"success_rate": refined, "episodes": n},
             "scenes": {"episodes_per_policy": n, "distinct": n, "overlap_training": 0, "overlap_selection": 0},
             "candidate": {"seed": 0, "success_rate": refined, "episodes": n, "distinct_scenes": n, "uplift": uplift,
                           "uplift_ci95": ci, "selected_iteration": 5},
             "uplift": uplift, "uplift_ci95": ci}
    return {"per_task": {TASK: entry}, "overall": {k: entry[k] for k in ("bc", "refined", "uplift", "uplift_ci95")}}


def versus(promoted: float, candidate: float, half: float = 0.1) -> dict:
    """The candidate against the promoted policy on the same scenes (what promote measures)."""
    return {"uplift": candidate - promoted, "ci95": [candidate - promoted - half, candidate - promoted + half],
            "scenes": 20}


def verdict(fid, pol, promoted=None) -> dict:
    return decide(RULES, fid, pol, [TASK], promoted or {})["tasks"][TASK]


@settings(max_examples=200, deadline=None)
@given(psnr=st.floats(0, 60), ssim=st.floats(0, 1), base=st.floats(0, 60), bc=rate, refined=rate,
       promoted=st.one_of(st.none(), rate), n=st.integers(0, 100))
def test_gate_promotes_exactly_when_every_rule_holds(psnr, ssim, base, bc, refined, promoted, n):
    v = verdict(fidelity(psnr, ssim, base), policy(bc, refined, n),
                {TASK: versus(promoted, refined)} if promoted is not None else {})
    expected = (psnr >= 25 and ssim >= 0.5 and psnr > base and refined - bc >= 0.05 and n >= 10
                and (promoted is None or (refined >= promoted - 0.02 and refined - promoted + 0.1 >= 0)))
    assert v["promote"] is expected
    assert v["promote"] == (not v["failed_rules"])


@settings(max_examples=100, deadline=None)
@given(bc=rate, refined=rate)
def test_gate_refuses_on_missing_or_malformed_metrics(bc, refined):
    good_fid, good_pol = fidelity(40.0), policy(bc, refined)
    for fid, pol in [(None, good_pol), (good_fid, None), ({"model": {}}, good_pol),
                     (fidelity(float("nan")), good_pol), (good_fid, {"per_task": {}}),
                     (good_fid, {"per_task": {TASK: {"bc": {"success_rate": "high"}, "refined": {}}}})]:
        v = verdict(fid, pol)
        assert v["promote"] is False
        assert any("missing or malformed" in r["reason"] for r in v["rules"] if not r["passed"])


@settings(max_examples=100, deadline=None)
@given(promoted=st.floats(0.1, 1), drop=st.floats(0.021, 0.1))
def test_gate_refuses_a_regression_against_the_promoted_policy(promoted, drop):
    refined = promoted - drop
    v = verdict(fidelity(40.0), policy(max(0.0, refined - 0.1), refined), {TASK: versus(promoted, refined)})
    assert not v["promote"] and "non_regression" in v["failed_rules"]


@settings(max_examples=100, deadline=None)
@given(psnr=st.floats(0, 24.99))
def test_gate_refuses_low_fidelity(psnr):
    v = verdict(fidelity(psnr, base=-1.0), policy(0.1, 0.9))
    assert not v["promote"] and v["failed_rules"] == ["fidelity_psnr"]


def test_without_an_evaluation_robot_the_gate_says_not_promotable(tmp_path, monkeypatch):
    """robot.evaluation false: the evaluate stage's own record (no robot touched), then the gate on it."""
    from pipelines.params import load_params
    from pipelines.stages import policy as stage

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"collect": {"tasks": [TASK]},
                                                          "robot": {"evaluation": False}}))
    record = stage.evaluate(load_params(tmp_path / "params.yaml"))
    assert record["evaluated"] is False and (tmp_path / "data/eval").is_dir()
    assert json.loads((tmp_path / "metrics/policy.json").read_text()) == record
    v = verdict(fidelity(40.0), record)
    assert not v["promote"] and v["failed_rules"] == ["evaluated_on_robot"]
    assert v["decision"] == ("not evaluated on a robot: not promotable "
                             "(no evaluation robot configured (robot.evaluation: false))")


def _policy_dir(tmp_path, seed=0):
    import torch

    torch.manual_seed(seed)
    d = tmp_path / f"policy{seed}"
    save_policy(d, GaussianPolicy(PolicyConfig((-1.0,) * 4, (1.0,) * 4, CNNConfig(image_size=16, channels=(8,)))))
    return d


RECORD = {"task": TASK, "metrics": {"refined": {"success_rate": 0.5}}, "lineage": {}, "git": {}, "gate": {}}


def test_local_registry_refuses_to_overwrite(tmp_path):
    reg = Registry(str(tmp_path / "registry"))
    first = reg.register(_policy_dir(tmp_path), RECORD)
    assert first["policy_id"].startswith(f"{TASK}@") and len(first["policy_sha256"]) == 64
    with pytest.raises(RegistryConflict, match="immutable"):
        reg.register(_policy_dir(tmp_path), RECORD)  # same weights -> same id
    second = reg.register(_policy_dir(tmp_path, seed=1), {**RECORD, "metrics": {"refined": {"success_rate": 0.7}}})
    assert [r["policy_id"] for r in reg.records()] == [first["policy_id"], second["policy_id"]]
    reg.promote(TASK, second["policy_id"], after=0)
    assert reg.promoted()[TASK]["policy_id"] == second["policy_id"]
    assert (tmp_path / "registry/policies" / first["policy_id"] / "model.safetensors").exists()
    with pytest.raises(KeyError, match="no policy"):
        reg.get("nope@000")


@pytest.mark.s3
def test_s3_registry_refuses_to_overwrite(s3_env, tmp_path):
    reg = Registry(f"s3://{s3_env['bucket']}/registry")
    first = reg.register(_policy_dir(tmp_path), RECORD)
    assert reg.get(first["policy_id"])["policy_sha256"] == first["policy_sha256"]
    with pytest.raises(RegistryConflict):
        reg.register(_policy_dir(tmp_path), RECORD)
    with pytest.raises(RegistryConflict):  # the conditional put itself, not only the pre-check
        reg._store.put_new(f"records/{first['policy_id']}.json", b"{}")
    assert json.loads(reg._store.get(f"records/{first['policy_id']}.json"))["task"] == TASK


def test_lineage_reads_dataset_and_model_hashes_from_dvc_lock():
    lock = yaml.safe_load("""
stages:
  collect@door-lock-v3-expert:
    outs: [{path: data/episodes/demos/door-lock-v3/expert.zarr, md5: aaa.dir}]
  collect_policy@door-lock-v3:
    outs: [{path: data/episodes/rollouts/door-lock-v3/policy.zarr, md5: bbb.dir}]
  train_world_model:
    outs: [{path: data/models/world_model, md5: ccc.dir}]
  train_reward@door-lock-v3:
    outs: [{path: data/models/reward/door-lock-v3, md5: ddd.dir}]
  train_reward@soccer-v3:
    outs: [{path: data/models/reward/soccer-v3, md5: eee.dir}]
  import@door-lock-v3-random:
    deps: [{path: data/raw/door-lock-v3, md5: fff.dir}, {path: w4rl_core/data/lerobot, md5: ggg.dir}]
    outs: [{path: data/episodes/demos/door-lock-v3/random.zarr, md5: hhh.dir}]
""")
    lin = task_lineage(lock, TASK)
    assert lin["datasets"] == {"data/episodes/demos/door-lock-v3/expert.zarr": "aaa.dir",
                               "data/episodes/demos/door-lock-v3/random.zarr": "hhh.dir",
                               "data/episodes/rollouts/door-lock-v3/policy.zarr": "bbb.dir"}
    assert lin["recorded"] == {"data/raw/door-lock-v3": "fff.dir"}  # the LeRobot dataset, not the code
    assert lin["world_model"] == {"data/models/world_model": "ccc.dir"}
    assert lin["classifier"] == {"data/models/reward/door-lock-v3": "ddd.dir"}
    assert lin["bc_policy"] == {} and lin["refined_policy"] == {}


def test_run_report_holds_every_section(tmp_path):
    from w4rl_core.eval.run_report import build_run_report

    fid = fidelity(30.0) | {"visuals": []}
    fid["model"]["psnr"] = {"h1": 33.0, "mean": 30.0}
    fid["model"]["ssim"] = {"h1": 0.9, "mean": 0.8}
    fid["copy_last_frame"] = {"psnr": {"h1": 40.0, "mean": 33.0}, "ssim": {"h1": 0.99, "mean": 0.9}}
    pol = policy(0.2, 0.4, n=10)
    gate = decide(RULES, fid, pol, [TASK], {})
    drift = {"reference": ["a"], "current": ["b"], "reference_episodes": 3, "current_episodes": 4,
             "columns": {"length": {"method": "K-S", "value": 0.5, "threshold": 0.05, "drift": False}}}
    build_run_report(tmp_path / "r.html", title="run", smoke_scale=True, drift=drift, fidelity=fid,
                     fidelity_dir=None, policy=pol, gate=gate)
    page = (tmp_path / "r.html").read_text()
    for words in ("SMOKE-SCALE", "Dataset drift", "PSNR h1", "95% CI (seeds x scenes)", "candidate uplift", "REFUSE",
                  "fidelity_beats_copy_last_frame"):
        assert words in page


def test_every_horizon_rule_needs_full_frame_and_moving_pixels_at_each_horizon():
    rules = GateRules(require_beats_copy_last_every_horizon=True)
    horizons = {"h1": 30.0, "h8": 28.0, "mean": 28.0}
    fid = {"model": {"psnr": dict(horizons), "psnr_moving": dict(horizons), "ssim": {"mean": 0.9}},
           "copy_last_frame": {"psnr": {k: v - 1 for k, v in horizons.items()},
                               "psnr_moving": {k: v - 1 for k, v in horizons.items()}}}
    ok = decide(rules, fid, policy(0.2, 0.3), [TASK], {})["tasks"][TASK]
    assert ok["promote"], ok["failed_rules"]
    fid["copy_last_frame"]["psnr_moving"]["h1"] = 31.0  # the baseline wins at one horizon on moving pixels
    bad = decide(rules, fid, policy(0.2, 0.3), [TASK], {})["tasks"][TASK]
    assert bad["failed_rules"] == ["fidelity_psnr_moving_beats_copy_last_every_horizon"]
    rule = next(r for r in bad["rules"] if r["rule"] == bad["failed_rules"][0])
    assert rule["value"] == pytest.approx(-1.0)


@settings(max_examples=100, deadline=None)
@given(bc=rate, refined=rate, half=st.floats(0, 0.5))
def test_uplift_interval_rules_need_the_lower_end_above_the_threshold(bc, refined, half):
    rules = GateRules(min_uplift=-1.0, min_uplift_ci_low=0.0, min_overall_uplift=0.1, min_overall_uplift_ci_low=0.0)
    v = decide(rules, fidelity(40.0), policy(bc, refined, half_width=half), [TASK], {})["tasks"][TASK]
    low = refined - bc - half
    expected = {"uplift_ci_low", "overall_uplift_ci_low"} if low < 0 else set()
    if refined - bc < 0.1:
        expected.add("overall_uplift")
    if refined - bc <= 0:
        expected.add("refinement_gave_something")
    assert set(v["failed_rules"]) == expected


def _promotion_workspace(tmp_path, monkeypatch):
    """A workspace whose gate passed TASK, with a promoted incumbent in the local registry."""
    from dataclasses import replace
    from pathlib import Path

    from pipelines.params import load_params
    from pipelines.paths import FIDELITY_METRICS, GATE_RECORD, POLICY_METRICS, refined_dir
    from pipelines.stages import gate as stage

    root = Path(__file__).resolve().parents[1]
    params = load_params(root / "params.yaml")
    params = replace(params, gate={"min_psnr_mean": 25.0, "regression_margin": 0.02},
                     collect=replace(params.collect, tasks=(TASK,), episode_len=8),
                     evaluate=replace(params.evaluate, episodes=3, workers=1))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(stage, "stale_stages", lambda repo=".": {})  # the DVC side is tested end to end
    incumbent = Registry("registry").register(_policy_dir(tmp_path, seed=5),
                                              {**RECORD, "metrics": {"refined": {"success_rate": 0.9}}})
    Registry("registry").promote(TASK, incumbent["policy_id"], after=0)
    save_policy(Path(refined_dir(TASK)), GaussianPolicy(PolicyConfig((-1.0,) * 4, (1.0,) * 4,
                                                                     CNNConfig(image_size=16, channels=(8,)))))
    Path("metrics").mkdir()
    Path(FIDELITY_METRICS).write_text(json.dumps(fidelity(30.0)))
    Path(POLICY_METRICS).write_text(json.dumps(policy(0.1, 0.5)))
    Path("dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    stage.gate(params)
    assert json.loads(Path(GATE_RECORD).read_text())["tasks"][TASK]["promote"]  # the stage passed it
    return params, root / "params.yaml", incumbent, stage


@pytest.mark.parametrize("promoted_rate, refused", [(0.9, True), (0.5, False)])
def test_promote_compares_the_candidate_with_the_promoted_policy_on_the_same_scenes(
        tmp_path, monkeypatch, promoted_rate, refused):
    """The non-regression rule is applied at promotion, against the registry as it is then, on the
    candidate's own evaluation scenes: a gate decision that passed does not promote a candidate
    worse than the task's promoted policy there."""
    params, params_path, incumbent, stage = _promotion_workspace(tmp_path, monkeypatch)
    seen = []

    def compare(params_, task, entry, record, registry):
        seen.append(record["policy_id"])
        return versus(promoted_rate, entry["candidate"]["success_rate"])

    monkeypatch.setattr(stage, "compare_with_promoted", compare)
    if refused:
        with pytest.raises(stage.PromotionRefused, match=f"{TASK}: .*candidate - promoted success"):
            stage.promote(params, params_path)
        assert len(Registry("registry").records()) == 1 and Registry("registry").head(TASK)[0] == 1
    else:
        [record] = stage.promote(params, params_path)
        assert record["gate"]["compared_with_promoted"]["uplift"] == 0.0
        assert Registry("registry").head(TASK)[0] == 2
    assert seen == [incumbent["policy_id"]]


def test_the_promoted_policy_runs_the_candidates_evaluation_scenes(tmp_path, monkeypatch):
    """compare_with_promoted for real: the incumbent's weights come out of the registry (checked
    against their sha256) and run in the simulator on exactly the candidate's scenes."""
    from pathlib import Path

    from pipelines.stages.policy import eval_config
    from w4rl_core.eval.policy_eval import evaluate_policy

    params, _, incumbent, stage = _promotion_workspace(tmp_path, monkeypatch)
    e = params.evaluate
    config = eval_config(params, TASK, "evaluation", e.episodes, e.seed, e.workers)
    candidate = evaluate_policy(str(_policy_dir(tmp_path, seed=7)), config, stage.candidate_store(TASK, 0),
                                       progress=False)
    entry = json.loads(Path("metrics/policy.json").read_text())["per_task"][TASK]
    comparison = stage.compare_with_promoted(params, TASK, entry, incumbent, Registry("registry"))
    assert comparison["pairs"] == comparison["scenes"] == e.episodes == len(set(candidate["scenes"]))
    assert comparison["promoted_policy"] == incumbent["policy_id"] and len(comparison["ci95"]) == 2


def test_promotions_are_versioned_and_one_from_a_stale_version_is_refused(tmp_path):
    reg = Registry(str(tmp_path / "registry"))
    a = reg.register(_policy_dir(tmp_path, seed=1), RECORD)["policy_id"]
    b = reg.register(_policy_dir(tmp_path, seed=2), RECORD)["policy_id"]
    assert reg.head(TASK) == (0, None) and reg.promoted() == {}  # registered is not promoted
    assert reg.promote(TASK, a, after=0) == 1
    with pytest.raises(RegistryConflict, match=f"lost a race: {TASK} version 1 was taken by {a}"):
        reg.promote(TASK, b, after=0)  # checked against version 0, which is no longer current
    assert reg.head(TASK) == (1, a) and reg.promoted()[TASK]["policy_id"] == a
    assert reg.promote(TASK, b, after=1) == 2 and reg.promoted()[TASK]["promotion_version"] == 2
    with pytest.raises(KeyError, match="no policy"):
        reg.promote(TASK, f"{TASK}@000000000000", after=2)  # only registered policies


RACE = """
import pathlib, sys, time
from w4rl_core.registry.registry import Registry, RegistryConflict
root, task, policy_id, barrier = sys.argv[1], sys.argv[2], sys.argv[3], pathlib.Path(sys.argv[4])
registry = Registry(root)
version, _ = registry.head(task)  # what this promotion checked its candidate against
# A barrier, not a clock: neither promotes before both have read the head (a start time a few
# seconds ahead assumed both processes would have started by then).
(barrier / policy_id.replace("@", "_")).touch()
deadline = time.time() + 60
while len(list(barrier.iterdir())) < 2 and time.time() < deadline:
    time.sleep(0.0005)
try:
    print("won", registry.promote(task, policy_id, after=version))
except RegistryConflict as err:
    print("lost:", err)
    sys.exit(3)
"""


@pytest.mark.parametrize("backend", ["local", pytest.param("s3", marks=pytest.mark.s3)])
def test_two_processes_promoting_at_the_same_moment_exactly_one_wins(backend, tmp_path, request):
    import subprocess
    import sys

    root = str(tmp_path / "registry")
    if backend == "s3":
        root = f"s3://{request.getfixturevalue('s3_env')['bucket']}/registry"
    reg = Registry(root)
    ids = [reg.register(_policy_dir(tmp_path, seed=s), RECORD)["policy_id"] for s in (1, 2)]
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", RACE, root, TASK, pid, str(barrier)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for pid in ids]
    results = [(p.wait(timeout=120), p.stdout.read(), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 3], results
    winner = ids[[code for code, _, _ in results].index(0)]
    loser_output = next(out for code, out, _ in results if code == 3)
    assert f"version 1 was taken by {winner}" in loser_output
    assert reg.head(TASK) == (1, winner) and reg.promoted()[TASK]["policy_id"] == winner
    assert len(reg._store.list(f"promotions/{TASK}/")) == 1  # nothing half-written by the loser


def test_records_from_before_promotion_versions_still_count_as_promoted(tmp_path):
    reg = Registry(str(tmp_path / "registry"))
    old = {**RECORD, "policy_id": f"{TASK}@0123456789ab", "registered_at": "2026-01-01T00:00:00+00:00"}
    reg._store.put_new(f"records/{old['policy_id']}.json", json.dumps(old).encode())  # a format-1 record
    assert reg.promoted()[TASK]["policy_id"] == old["policy_id"]  # still the baseline non-regression uses
    new = reg.register(_policy_dir(tmp_path, seed=3), RECORD)["policy_id"]
    assert reg.promoted()[TASK]["policy_id"] == old["policy_id"]  # registered only
    reg.promote(TASK, new, after=reg.promoted()[TASK].get("promotion_version", 0))
    assert reg.promoted()[TASK]["policy_id"] == new


@pytest.mark.s3
def test_s3_outage_during_a_promotion_fails_cleanly_and_a_rerun_completes(tmp_path, monkeypatch):
    """The registry's S3 server stops between registration and promotion: bounded retries, then a
    failure naming the URL and the operation (never the secret), nothing promoted; the server
    comes back and the same promotion completes. A missing bucket is named too."""
    import time

    import boto3
    from moto.server import ThreadedMotoServer

    from conftest import free_port
    from w4rl_core.registry.registry import RegistryUnavailable

    secret = "s3cr3t-never-in-messages"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"

    def server() -> ThreadedMotoServer:
        s = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        s.start()
        return s

    running = server()
    try:
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="reg")
        reg = Registry("s3://reg/registry", endpoint_url=endpoint, retries=2, timeout_s=2)
        policy_id = reg.register(_policy_dir(tmp_path, seed=1), RECORD)["policy_id"]
        missing = Registry("s3://no-such-bucket/registry", endpoint_url=endpoint, retries=2, timeout_s=2)
        with pytest.raises(RegistryUnavailable, match=r"registry list s3://no-such-bucket/registry/.* refused: NoSuchBucket"):
            missing.promoted()
        running.stop()

        started = time.monotonic()
        with pytest.raises(RegistryUnavailable) as err:
            reg.promote(TASK, policy_id, after=0)
        assert time.monotonic() - started < 60  # bounded: 2 attempts with 2 s timeouts and backoff
        message = str(err.value)
        assert "s3://reg/registry/" in message and "after 2 attempts" in message and secret not in message

        running = server()  # back, with its data (moto keeps state in the process)
        assert reg.head(TASK) == (0, None)  # the failed promotion published nothing
        assert reg.promote(TASK, policy_id, after=0) == 1 and reg.promoted()[TASK]["policy_id"] == policy_id
    finally:
        running.stop()


def test_the_fed_back_datas_drift_is_named_and_refuses_only_when_asked():
    drifted = {"dataset_drift": True, "dataset_test": "FAIL: Share of Drifted Columns", "drifted": ["return"],
               "drifted_share": 0.6, "report": "data/flywheel/rounds/drift-round-0/drift.html"}
    calm = drifted | {"dataset_drift": False, "drifted": [], "drifted_share": 0.0}
    for drift, refuse, passed, words in [
            (None, True, True, "flywheel round 0"), (calm, True, True, "no dataset drift"),
            (drifted, False, True, "drifted columns: return"), (drifted, True, False, "drifted columns: return"),
            ({"unexpected": 1}, False, False, "missing or malformed")]:
        rules = GateRules(**{**RULES.__dict__, "refuse_on_drift": refuse})
        v = decide(rules, fidelity(40.0), policy(0.1, 0.9), [TASK], {},
                   drift=None if drift is None else {TASK: drift})["tasks"][TASK]
        (rule,) = [r for r in v["rules"] if r["rule"] == "data_drift"]
        assert rule["passed"] is passed and words in rule["reason"], (drift, refuse, rule)
        assert v["promote"] is passed


def test_setting_the_flywheel_round_keeps_the_params_files_comments(tmp_path):
    from pipelines.stages.flywheel import set_round

    path = tmp_path / "params.yaml"
    path.write_text("collect:\n  tasks: [a]   # keep me\nflywheel:\n  round: 0   # rounds fed back\n"
                    "  warm_start: true\nrobot:\n  kind: simulator\n")
    set_round(path, 3)
    assert path.read_text() == ("collect:\n  tasks: [a]   # keep me\nflywheel:\n  round: 3   # rounds fed back\n"
                                "  warm_start: true\nrobot:\n  kind: simulator\n")
    bare = tmp_path / "bare.yaml"
    bare.write_text("collect:\n  tasks: [a]\n")
    set_round(bare, 1)
    assert yaml.safe_load(bare.read_text())["flywheel"] == {"round": 1}
