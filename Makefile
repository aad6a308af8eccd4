# The two commands of the README: `make demo` and `make test`. Both set up .venv and build the
# interfaces first when needed (scripts/setup.sh is idempotent and quick once done).
SHELL := /bin/bash
ENV := . scripts/env.sh &&
DEMO_OUT ?= output/demo
PYTEST_ARGS ?=

.PHONY: setup demo test lint bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	@$(ENV) python -P -m showroom_ros.ros.demo --out $(DEMO_OUT)

test: setup
	@bash scripts/install_test_deps.sh
	@$(ENV) ruff check showroom_ros test benchmarks launch
	@$(ENV) pytest $(PYTEST_ARGS)

lint: setup
	@$(ENV) ruff check showroom_ros test benchmarks launch

bench: setup
	@$(ENV) python -P benchmarks/bench_node.py

clean:
	rm -rf build install log output
