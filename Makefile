# The two commands a newcomer runs: `make run` and `make test`. Both bootstrap first.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup run test lint typecheck pytest bench guest-image libvirtd clean

setup:
	@./scripts/setup.sh

libvirtd: setup
	@$(BIN)/wattvisor host libvirtd-up

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

test: lint typecheck pytest

bench: setup libvirtd
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .cache .mypy_cache .ruff_cache .pytest_cache
