# One venv, one editable install: the Rust core is built by maturin (release
# profile) into python/regime_w_core, and looper_cli runs from the source tree.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export OMP_NUM_THREADS ?= 1

.PHONY: setup run test test-rust test-python wheel bench clean

setup: $(VENV)/.ready

$(VENV)/.ready: pyproject.toml regime_w_core/Cargo.toml $(wildcard regime_w_core/src/*.rs)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[train,report,dev]'
	$(PY) scripts/dev_path.py
	touch $@

# The main job: the whole pipeline on the built-in default (tiny model, synthetic problems, CPU).
run: setup
	$(VENV)/bin/looper pipeline

test: setup test-rust test-python

test-rust:
	cargo test -p regime_w_core --release -q

test-python: setup
	$(PY) -m pytest -q tests

wheel:
	$(PY) -m maturin build --release -o dist

bench: setup
	$(PY) benchmarks/bench_regime_w.py

clean:
	rm -rf target dist $(VENV)
