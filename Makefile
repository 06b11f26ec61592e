# Two commands for users: `make repro` and `make test`. Both set up .venv first when needed.
SHELL := /bin/bash
VENV  := .venv
BIN   := $(VENV)/bin
STAMP := $(VENV)/.setup-stamp
export MUJOCO_GL ?= egl
# Stages call `w4rl` and `dvc` from the project environment.
export PATH := $(CURDIR)/$(BIN):$(PATH)
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1
export DVC_NO_ANALYTICS ?= 1

.PHONY: setup repro flywheel exp test test-fast bench clean-venv

setup: $(STAMP)

# Re-run setup whenever the pinned set or the project metadata changes.
$(STAMP): requirements.txt pyproject.toml infra/setup.sh
	bash infra/setup.sh
	touch $@

# `make repro PROFILE=gpu` switches params.yaml to profiles/gpu.yaml first (a visible git diff).
repro: setup
ifdef PROFILE
	cp profiles/$(PROFILE).yaml params.yaml
endif
	$(BIN)/dvc repro

# `make flywheel ROUNDS=n`: n rounds of the data flywheel here (docs/flywheel.md), each round
# `dvc repro` + a commit of the run + promotion + the evaluation episodes fed back (a second commit).
ROUNDS ?= 1
flywheel: setup
	$(BIN)/w4rl flywheel run --rounds $(ROUNDS)

# `make exp PROFILE=cpu [EXP_ARGS='-S refine.ppo.lr=3e-5']`: queue a whole profile as a DVC
# experiment (its params.yaml goes into the queued snapshot; the workspace's params.yaml is put back),
# then `dvc queue start -j N` runs it and `dvc exp show` compares it.
exp: setup
	@test -n "$(PROFILE)" || { echo "usage: make exp PROFILE=<name> [EXP_ARGS='-S key=value ...']" >&2; exit 2; }
	@test -f profiles/$(PROFILE).yaml || { echo "no profiles/$(PROFILE).yaml" >&2; exit 2; }
	cp params.yaml .params.yaml.keep && cp profiles/$(PROFILE).yaml params.yaml; \
	$(BIN)/dvc exp run --queue -n $(PROFILE)-$$(date -u +%Y%m%d-%H%M%S) $(EXP_ARGS); status=$$?; \
	mv .params.yaml.keep params.yaml; exit $$status

# One pytest-xdist worker per core of the 2-core dev/CI machine (override: make test TEST_WORKERS=4).
# The shared tiny pipeline run is built once per session, in the background, by tests/tiny_run_build.py
# (conftest starts it; the workers wait for its result file): --dist loadgroup cannot keep the tests
# that need it on one worker under pytest 9.2 (xdist rewrites item._nodeid, pytest 9.2 reads
# item._id: pytest-dev/pytest-xdist#1386), so every test is its own unit, as measured.
TEST_WORKERS ?= 2
test: setup
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup

test-fast: setup
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup -m "not slow"

# CPU-sized benchmarks (~15 min on 2 cores); each appends its table to benchmarks/results.md.
# On a GPU: bash benchmarks/gpu_job.sh (benchmarks/README.md).
bench: setup
	$(BIN)/python benchmarks/bench_data.py
	$(BIN)/python benchmarks/bench_store_open.py
	$(BIN)/python benchmarks/bench_bridge.py
	$(BIN)/python benchmarks/bench_world_model.py
	$(BIN)/python benchmarks/bench_ppo.py
	$(BIN)/python benchmarks/roofline.py
	$(BIN)/python benchmarks/bench_pipeline.py

clean-venv:
	rm -rf $(VENV)
