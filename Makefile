# One definition of "clean": make check (CI runs it too).
PYTHON ?= python3

.PHONY: check lint typecheck test bench demo

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

# The quick start's first look: postconf and a postmap round trip, on a scratch config.
demo:
	@set -e; d=$$(mktemp -d); printf 'myhostname = demo.example.org\n' > $$d/main.cf; \
	export SDMAIL_CONFIG_DIR=$$d; \
	echo '$$ postconf -x myhostname mydestination message_size_limit'; \
	$(PYTHON) -m sdmail.postconf -x myhostname mydestination message_size_limit; \
	printf 'alice@example.org  bob@example.net\n@example.com  catchall@example.net\n' > $$d/virtual; \
	echo "$$ postmap hash:$$d/virtual && postmap -q alice@example.org hash:$$d/virtual"; \
	$(PYTHON) -m sdmail.postmap hash:$$d/virtual; \
	$(PYTHON) -m sdmail.postmap -q alice@example.org hash:$$d/virtual; \
	rm -rf $$d
