# One definition of "clean": make check (CI runs it too).
PYTHON ?= python3

.PHONY: check lint typecheck test unit bench

check: lint typecheck test

lint:
	$(PYTHON) -m ruff check sdmail tests bench
	$(PYTHON) -m ruff format --check sdmail tests bench

typecheck:
	$(PYTHON) -m mypy sdmail

test:
	$(PYTHON) -m pytest tests

bench:
	$(PYTHON) bench/core
