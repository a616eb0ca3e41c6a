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
DEMO_CFG := configs/demo/upernet_vit-tiny_synthetic_ade20k.py
DEMO_DIR := work_dirs/demo_ade20k

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

$(DEMO_ADE)/.done: | setup
	$(PY) tools/dataset_converters/make_synthetic_ade20k.py -o $(DEMO_ADE) --num-train 48 --num-val 8 --seed 0
	@touch $@

demo-data: $(DEMO_ADE)/.done

# Fine-tune a tiny UperNet-ViT on synthetic ADE20K, then the seed's test command with ms+flip sliding windows.
demo: setup demo-data
	$(PY) tools/train.py $(DEMO_CFG) --work-dir $(DEMO_DIR)
	sh tools/dist_test.sh $(DEMO_CFG) $(DEMO_DIR)/iter_300.pth 1 --aug-test --eval mIoU --work-dir $(DEMO_DIR)

clean-venv:
	rm -rf $(VENV)
