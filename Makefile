# The two commands of the README: `make demo` and `make test`. Each builds the
# project-local virtual environment (.venv) on first use.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
OUT ?= demo-out
# On a machine without a GPU, take torch's CPU build (a local wheel directory if
# the machine has one, else PyTorch's CPU index) so pip never pulls a CUDA build.
TORCH_SRC := $(if $(wildcard /opt/wheels/torch-2.13.0*),--find-links /opt/wheels,--extra-index-url https://download.pytorch.org/whl/cpu)

# pip would byte-compile the environment's 16,600 modules one by one (about 100 CPU-s); they are compiled once
# after the installs instead, on every core (compileall -j 0). They must be compiled at set-up: a machine that
# sets PYTHONDONTWRITEBYTECODE (this one does) never writes a .pyc, so every process would compile torch again.
# Like pip, compileall skips the few files that are not Python 3 (test data of some packages); its status is
# not the set-up's.
PIP := $(BIN)/pip install -q --no-compile

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) $(TORCH_SRC) torch==2.13.0
	# pyradiomics 3.0.1 ships an sdist only (3.1.0's sdist declares version 3.0.1a1, which pip refuses); its
	# setup.py imports numpy, so numpy is installed first and the build sees it (no build isolation)
	$(PIP) 'numpy>=1.26' setuptools wheel
	$(PIP) --no-build-isolation pyradiomics==3.0.1
	$(PIP) -e '.[dev]'
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib > /dev/null || true
	touch $@

.PHONY: setup demo test lint
setup: $(BIN)/.installed

demo: setup
	$(BIN)/dltr demo --out $(OUT)

lint: setup
	$(BIN)/ruff check .

test: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -n 2 --dist loadscope -m 'not serial' --durations=30
	$(BIN)/python -m pytest -q -m serial
