# The README's commands: `make demo` runs the main job, `make test` passes the tests.
# Both set themselves up: a .venv with a CPU build of torch, the core and every plugin in plugins/.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# GPU or Jetson users: make install TORCH="torch==2.13.0 --index-url <your CUDA wheel index>"
TORCH ?= torch==2.13.0
PLUGINS := $(sort $(wildcard plugins/*))
STAMP := $(VENV)/.edgeimg-installed
PYTEST_ARGS ?=
# make fuzz: seconds of fuzzing, split between the read path and the listener; then the full
# conformance table (every CT source x every mutation, every model; tests/conformance.py)
FUZZ_SECONDS ?= 300

.PHONY: install system-deps demo test test-fast bench soak fuzz lint format weights clean

$(STAMP): pyproject.toml $(wildcard plugins/*/pyproject.toml)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[dev]' $(addprefix -e ,$(PLUGINS))
	touch $@

install: $(STAMP)

system-deps:
	@sh scripts/system-deps.sh

demo: install
	@sh scripts/demo.sh

test: install system-deps
	$(BIN)/python -m pytest -q --durations=15 $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow and not integration" $(PYTEST_ARGS)

bench: install system-deps
	$(BIN)/python -m benchmarks

soak: install system-deps
	$(BIN)/python -m benchmarks.reliability --scale soak

fuzz: install system-deps
	EDGEIMG_FUZZ_SECONDS=$(FUZZ_SECONDS) $(BIN)/python -m pytest -q -s -o timeout=0 tests/test_fuzz.py
	EDGEIMG_CONFORMANCE=full $(BIN)/python -m pytest -q -s -o timeout=0 tests/test_conformance.py

lint: install
	$(BIN)/ruff check edgeimg plugins tests benchmarks testsupport scripts
	$(BIN)/ruff format --check edgeimg plugins tests benchmarks testsupport scripts

format: install
	$(BIN)/ruff format edgeimg plugins tests benchmarks testsupport scripts
	$(BIN)/ruff check --fix edgeimg plugins tests benchmarks testsupport scripts

weights: install
	@sh scripts/weights.sh

clean:
	rm -rf $(VENV) build dist *.egg-info plugins/*/*.egg-info .pytest_cache .ruff_cache
