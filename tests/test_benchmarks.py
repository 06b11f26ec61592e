"""The benchmark scripts run end to end at tiny sizes (their numbers go to results.md, not here)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("args", [
    ["benchmarks/bench_world_model.py", "--image-size", "16", "--channels", "16,16", "--batches", "2",
     "--sampler-steps", "1", "--train-batches", "2,4", "--iters", "1", "--frames", "1", "--norm-groups", "8",
     "--no-append"],
    ["benchmarks/bench_data.py", "--episodes", "2", "--frames", "200", "--image-size", "16", "--feed-size", "8",
     "--feed-batch", "4", "--no-append"],
    ["benchmarks/bench_ppo.py", "--image-size", "16", "--channels", "16,16", "--n-envs", "2", "--horizon", "2",
     "--minibatches", "1", "--bc-batch", "2", "--iterations", "1", "--no-append"],
    ["benchmarks/roofline.py", "--image-size", "16", "--channels", "16,16", "--norm-groups", "8", "--no-append"],
    ["benchmarks/bench_store_open.py", "--episodes", "2", "--repeats", "2", "--no-append"],
    ["benchmarks/bench_bridge.py", "--requests", "8", "--clients", "1,2", "--deadline-s", "5", "--image-size", "16",
     "--no-append"],
    ["benchmarks/bench_stream.py", "--episodes", "4", "--episode-len", "30", "--batches", "2", "--latency-batches", "1",
     "--s3-latency-ms", "2", "--image-size", "16", "--batch", "4", "--loader-workers", "0", "--no-append"],
])
def test_benchmark_runs(args):
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert any(h in result.stdout for h in ("| benchmark |", "| what |", "| endpoint |"))  # the table was printed
