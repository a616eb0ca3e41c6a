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

demo-data: data/demo/.done

# The whole chain at toy scale: MAE pretraining -> UperNet ADE20K (ss + ms+flip) -> Mask R-CNN COCO -> report.
demo: setup demo-data
	$(PY) tools/pipeline.py configs/pipelines/demo.yaml
	@echo; cat results/leaderboard.md

clean-venv:
	rm -rf $(VENV)
