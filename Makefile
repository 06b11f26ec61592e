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

.PHONY: setup repro test test-fast bench clean-venv

setup: $(STAMP)

# Re-run setup whenever the pinned set or the project metadata changes.
$(STAMP): requirements.lock pyproject.toml infra/setup.sh
	bash infra/setup.sh
	touch $@

# `make repro PROFILE=gpu` switches params.yaml to profiles/gpu.yaml first (a visible git diff).
repro: setup
ifdef PROFILE
	cp profiles/$(PROFILE).yaml params.yaml
endif
	$(BIN)/dvc repro

test: setup
	$(BIN)/pytest

test-fast: setup
	$(BIN)/pytest -m "not slow"

# CPU-sized benchmarks (~15 min on 2 cores); each appends its table to benchmarks/results.md.
# On a GPU: bash benchmarks/gpu_job.sh (benchmarks/README.md).
bench: setup
	$(BIN)/python benchmarks/bench_data.py
	$(BIN)/python benchmarks/bench_store_open.py
	$(BIN)/python benchmarks/bench_world_model.py
	$(BIN)/python benchmarks/bench_ppo.py
	$(BIN)/python benchmarks/roofline.py
	$(BIN)/python benchmarks/bench_pipeline.py

clean-venv:
	rm -rf $(VENV)
