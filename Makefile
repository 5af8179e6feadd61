# Two entry points (see README):  make demo   |   make test
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test bench

$(BIN)/python:
	$(PY) -m venv $(VENV)

install: $(BIN)/python
	bash tools/install_system_deps.sh
	bash tools/check_disk.sh $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[all]"

demo: install
	$(BIN)/posebert-refine examples/vtest_clip.mp4 --estimator yolo --out out/demo

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q tests
