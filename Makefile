# The two commands a newcomer runs: `make run` and `make test`. Both bootstrap first.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup run test lint typecheck pytest bench guest-image libvirtd clean

setup:
	@./scripts/setup.sh

libvirtd: setup
	@$(BIN)/wattvisor dev libvirtd-up

guest-image: setup
	@$(BIN)/wattvisor image build

run: setup libvirtd
	$(BIN)/wattvisor up

lint: setup
	$(BIN)/ruff check src tests bench

typecheck: setup
	$(BIN)/mypy

pytest: setup
	$(BIN)/pytest

# Strict mode: a test that needs missing infrastructure fails instead of skipping, so the
# suite cannot turn green by skipping (tests/support/strict_skips.py).
test pytest: export CI := true
test: lint typecheck pytest

bench: setup libvirtd
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .cache .mypy_cache .ruff_cache .pytest_cache
