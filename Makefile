# One definition of "clean": make check (CI runs it too).
PYTHON ?= python3

.PHONY: check lint typecheck test system-test bench demo deb up down

check: lint typecheck test system-test

lint:
	$(PYTHON) -m ruff check sdmail tests bench tools
	$(PYTHON) -m ruff format --check sdmail tests bench tools

typecheck:
	$(PYTHON) -m mypy sdmail

test:
	$(PYTHON) -m pytest tests --ignore=tests/system

# The installed package on a booted systemd (needs root): tests/system/.
system-test: deb
	$(PYTHON) -m pytest tests/system

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

# The Debian package: exactly one dist/sdmail_VERSION_all.deb (the outside checks use this).
# Build dependencies: debhelper dh-python python3-all python3-setuptools pybuild-plugin-pyproject
deb:
	rm -rf build/deb dist
	mkdir -p build/deb/src dist
	git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t build/deb/src
	cp -r packaging/debian build/deb/src/debian
	cp units/sdmail.sysusers build/deb/src/debian/sdmail.sysusers
	cp units/sdmail.tmpfiles build/deb/src/debian/sdmail.tmpfiles
	# Debian's own python3 builds the package (a pyenv python on PATH must not).
	cd build/deb/src && env PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg-buildpackage -us -uc -b >../build.log 2>&1 || { tail -30 ../build.log; exit 1; }
	mv build/deb/sdmail_*_all.deb dist/
	@ls dist/

# A working sdmail: on a host booted with systemd, install the package; elsewhere (a
# container, CI) boot it inside a systemd container and say how to reach it.
up: deb
	@if [ "$$(ps -p 1 -o comm=)" = systemd ]; then \
	  apt-get install -y ./dist/sdmail_*_all.deb && systemctl --no-pager status sdmail; \
	else \
	  $(PYTHON) tools/sdbox.py up dist/sdmail_*_all.deb; \
	fi

down:
	$(PYTHON) tools/sdbox.py down
