# The README's two commands: `make demo` and `make test`. Both set up .venv first (idempotent).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.setup-done
PYTEST_ARGS ?=

.PHONY: setup test lint format demo demo-data clean-venv
DEMO_ADE := data/demo/ade/ADEChallengeData2016

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt tools/build_mmcv.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt pip==26.3 setuptools wheel==0.48.0 ninja==1.13.2
	@# torch first (the default CUDA build: it runs on CPU too), then what mmcv's build imports.
	$(PIP) install -q -c constraints.txt torch torchvision mmengine numpy opencv-python
	$(PY) tools/build_mmcv.py
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	$(PY) tools/build_mmcv.py --check
	@# The HTML report's test opens the page in a headless Chromium, the Debian package; when it cannot be
	@# installed (not root, no apt, no network) the set-up goes on and that one test is skipped.
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1; } || \
	  echo 'note: Chromium not installed (apt-get install chromium failed); the HTML report test will be skipped'
	@# The cluster tests (-m slurm) start a one-node Slurm from Debian's slurm-wlm and munge (tests/slurm_cluster.py,
	@# which also installs them itself when it can); without root or apt they are skipped with that reason.
	@command -v slurmctld >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge) >/dev/null 2>&1; } || \
	  echo 'note: slurm-wlm/munge not installed (apt-get install failed); the Slurm tests will be skipped'
	@touch $(STAMP)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: setup lint
	$(PY) -m pytest $(PYTEST_ARGS)

data/demo/.done: | setup
	$(PY) -m mae_dense.data.synthetic ade20k -o $(DEMO_ADE) --num-train 48 --num-val 8 --seed 0
	$(PY) -m mae_dense.data.synthetic coco -o data/demo/coco --num-train 24 --num-val 6 --seed 0
	$(PY) -m mae_dense.data.synthetic image-folder -o data/demo/pretrain --num-train 64 --seed 0
	@touch $@

# its own stamp, so a checkout whose data/demo/.done predates the depth benchmark gets it too
data/demo/nyu/.done: | setup
	$(PY) -m mae_dense.data.synthetic nyu -o data/demo/nyu --num-train 32 --num-val 8 --seed 0
	@touch $@

demo-data: data/demo/.done data/demo/nyu/.done

# The whole suite at toy scale: two backbones (a tiny MAE pretrained here, random init) x UperNet ADE20K
# (ss + ms+flip), the frozen linear probe, Mask R-CNN COCO and the linear depth probe (NYU) -> results
# store -> leaderboard (md, json, html, figures).
demo: setup demo-data
	$(PY) -m mae_dense pipeline configs/pipelines/demo.yaml
	@echo; sed -n '/^## Leaderboard/,/^## Published/p' results/leaderboard.md

clean-venv:
	rm -rf $(VENV)
