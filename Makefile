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

# the bundled clip's pedestrians are ~60 px tall in a 768 px video: the detector is upscaled to 960
# (the default never upscales; the run would say so in a warning)
demo: install
	$(BIN)/posebert-refine examples/vtest_clip.mp4 --estimator yolo --imgsz 960 --out out/demo

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q tests
