# intilery-relay. `make demo` and `make test` do everything on a fresh Debian/Ubuntu machine with Swift 6.x.
SWIFT      ?= swift
PYTHON     ?= python3
PREFIX     ?= /usr/local
DESTDIR    ?=
BINDIR     ?= $(PREFIX)/bin
SYSCONFDIR ?= /etc
UNITDIR    ?= $(PREFIX)/lib/systemd/system
DOCDIR     ?= $(PREFIX)/share/doc/intilery-relay

# Debian packages the build and tests need.
APT_PACKAGES := libcurl4-openssl-dev libsqlite3-dev pkg-config

# Placeholder secrets so that the example config validates without a real account.
EXAMPLE_ENV := HOOK_AUTH='Bearer example' HOOK_SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw \
	CREDENTIALS_DIRECTORY=$(CURDIR)/config/example-credentials

.PHONY: all deps bench-deps build release test check-schema check-systemd demo bench install clean

all: build

deps:
	@command -v $(SWIFT) >/dev/null || { echo "swift not found: install Swift 6.x from swift.org and put it on PATH" >&2; exit 1; }
	@missing=""; \
	for package in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$package 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$package"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; \
	  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO="sudo"; \
	  else echo "Missing Debian packages:$$missing. Run: sudo apt-get update && sudo apt-get install -y$$missing" >&2; exit 1; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq$$missing >/dev/null \
	    || { echo "apt-get failed. Run: sudo apt-get update && sudo apt-get install -y$$missing" >&2; exit 1; }; \
	fi
	@$(PYTHON) -c 'import jsonschema' 2>/dev/null || $(PYTHON) -m pip install --quiet jsonschema \
	  || { echo "Run: $(PYTHON) -m pip install jsonschema" >&2; exit 1; }

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release

test: deps check-schema
	$(SWIFT) build --build-tests
	$(MAKE) --no-print-directory check-systemd
	$(SWIFT) test

# The unit as `make install` would write it, pointed at this checkout's binary so that verify can check ExecStart.
check-systemd: deps
	@command -v systemd-analyze >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null; \
	  else echo "Run: sudo apt-get install -y systemd" >&2; exit 1; fi; }
	@dir=$$(mktemp -d) && \
	sed -e 's|/usr/local/bin/intilery-relay|$(CURDIR)/.build/debug/intilery-relay|g' \
	    -e 's|/usr/local/share/doc/intilery-relay|$(CURDIR)|g' systemd/intilery-relay.service > $$dir/intilery-relay.service && \
	out=$$(systemd-analyze verify $$dir/intilery-relay.service 2>&1); rc=$$?; rm -rf $$dir; \
	if [ $$rc -ne 0 ] || [ -n "$$out" ]; then echo "systemd-analyze verify: $$out" >&2; exit 1; fi
	@systemd-analyze security --offline=yes --threshold=15 systemd/intilery-relay.service | tail -1
	@echo "systemd/intilery-relay.service: verify clean, exposure within 1.5"

# The example must validate against the schema that editors use, and the schema must be valid 2020-12.
check-schema: deps
	@$(PYTHON) config/validate-with-schema.py config/example.json

DEMO_DURATION ?= 20s

demo: release
	$(EXAMPLE_ENV) .build/release/intilery-relay check-config config/example.json
	.build/release/intilery-relay demo --duration $(DEMO_DURATION)

bench-deps: deps
	@command -v wrk >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; \
	  else echo "Run: sudo apt-get install -y wrk" >&2; exit 1; fi; }

# Not part of `make test`: speed is measured here, on a release build, never in timed unit tests.
bench: release bench-deps
	bench/simulator.sh
	@echo "== Ingest alone (poll, route, queue; no delivery), each backlog in a fresh process"
	.build/release/relay-bench ingest 100000
	.build/release/relay-bench ingest 400000
	@echo "== Delivery isolation"
	.build/release/relay-bench isolation 10000
	@echo "== Strict drain (ordering strict, one request at a time, after an outage)"
	.build/release/relay-bench strict 100000
	@echo "== Catch-up (a subscription 1,000,000 events behind, another one current with live traffic)"
	.build/release/relay-bench catchup 1000000
	.build/release/relay-bench e2e

install: release
	install -D -m 0755 .build/release/intilery-relay $(DESTDIR)$(BINDIR)/intilery-relay
	install -d -m 0755 $(DESTDIR)$(UNITDIR)
	sed -e 's|/usr/local/bin/intilery-relay|$(BINDIR)/intilery-relay|g' \
	    -e 's|/usr/local/share/doc/intilery-relay|$(DOCDIR)|g' \
	    -e 's|/etc/intilery-relay|$(SYSCONFDIR)/intilery-relay|g' \
	    systemd/intilery-relay.service > $(DESTDIR)$(UNITDIR)/intilery-relay.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/intilery-relay.service
	install -D -m 0644 config/example.json $(DESTDIR)$(SYSCONFDIR)/intilery-relay/example.json
	install -D -m 0644 config/intilery-relay.schema.json $(DESTDIR)$(SYSCONFDIR)/intilery-relay/intilery-relay.schema.json
	install -d -m 0700 $(DESTDIR)$(SYSCONFDIR)/intilery-relay/credentials
	install -D -m 0644 README.md $(DESTDIR)$(DOCDIR)/README.md

clean:
	rm -rf .build
