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
# And the tests alone: promtool (in Debian's prometheus package) checks the metrics page and the alert rules, and
# `top` is tried in a real terminal under tmux. (On a machine run by systemd, the prometheus package also starts a
# Prometheus server on :9090: `sudo systemctl disable --now prometheus` if it is not wanted.)
TEST_APT_PACKAGES := prometheus tmux postgresql curl iproute2

# Placeholder secrets so that the example config validates without a real account.
EXAMPLE_ENV := HOOK_AUTH='Bearer example' HOOK_SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw \
	CREDENTIALS_DIRECTORY=$(CURDIR)/config/example-credentials

# The release binary carries the Swift runtime (stdlib, Foundation, Dispatch) so that it runs without the
# toolchain, and no $ORIGIN search path (a package's binary must find its libraries where the system keeps them).
RELEASE_FLAGS := -c release --static-swift-stdlib --disable-local-rpath
RELEASE_DIR   := .build/release
# Man pages and shell completions, made from the binary's own help by `make release`.
RELEASE_SHARE := $(RELEASE_DIR)/share
DEB_DIR       ?= .build/deb

.PHONY: all deps test-deps bench-deps deb-deps build release stamp-commit test check-schema check-systemd demo bench install deb check-deb check-install clean

all: build

# Installs the Debian packages named in $(1) that are missing (as root, or with passwordless sudo), or names the
# command to run.
define apt_install
	@missing=""; \
	for package in $(1); do \
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
endef

deps:
	@command -v $(SWIFT) >/dev/null || { echo "swift not found: install Swift 6.x from swift.org and put it on PATH" >&2; exit 1; }
	$(call apt_install,$(APT_PACKAGES))
	@$(PYTHON) -c 'import jsonschema' 2>/dev/null || $(PYTHON) -m pip install --quiet jsonschema \
	  || { echo "Run: $(PYTHON) -m pip install jsonschema" >&2; exit 1; }

build: deps stamp-commit
	$(SWIFT) build

# Products only: a plain `swift build` would also compile targets the binaries do not link (RelayPostgres, with
# BoringSSL under it), minutes of release compiling for nothing.
release: deps stamp-commit
	$(SWIFT) build $(RELEASE_FLAGS) --product intilery-relay
	$(SWIFT) build $(RELEASE_FLAGS) --product relay-bench
	$(SWIFT) build $(RELEASE_FLAGS) --product generate-manual
	rm -rf $(RELEASE_SHARE) && mkdir -p $(RELEASE_SHARE)/man $(RELEASE_SHARE)/completions
	$(RELEASE_DIR)/generate-manual $(RELEASE_DIR)/intilery-relay --multi-page \
	  --date "$$(git log -1 --format=%cs 2>/dev/null || date +%F)" --output-directory $(RELEASE_SHARE)/man
	packaging/man-names $(RELEASE_SHARE)/man
	$(RELEASE_DIR)/intilery-relay --generate-completion-script bash > $(RELEASE_SHARE)/completions/intilery-relay.bash
	$(RELEASE_DIR)/intilery-relay --generate-completion-script zsh > $(RELEASE_SHARE)/completions/_intilery-relay
	$(RELEASE_DIR)/intilery-relay --generate-completion-script fish > $(RELEASE_SHARE)/completions/intilery-relay.fish

# The commit `intilery-relay version` prints, in a header only the one C file includes (rewritten only when it
# changes, so that it costs one file's compile; the C file is touched too, for a build that never saw the header).
# "-modified" when tracked files differ from the commit.
stamp-commit:
	@git="git -c safe.directory=$(CURDIR)"; \
	commit=$$($$git rev-parse --short=12 HEAD 2>/dev/null || echo unknown); \
	if [ "$$commit" != unknown ] && [ -n "$$($$git status --porcelain --untracked-files=no 2>/dev/null)" ]; then commit="$$commit-modified"; fi; \
	printf '#define RELAY_GIT_COMMIT "%s"\n' "$$commit" > Sources/CBuildInfo/commit.h.new; \
	if cmp -s Sources/CBuildInfo/commit.h.new Sources/CBuildInfo/commit.h; then rm Sources/CBuildInfo/commit.h.new; \
	else mv Sources/CBuildInfo/commit.h.new Sources/CBuildInfo/commit.h; touch Sources/CBuildInfo/build_info.c; fi

test-deps: deps
	$(call apt_install,$(TEST_APT_PACKAGES))

test: test-deps check-schema stamp-commit
	$(SWIFT) build --build-tests
	$(MAKE) --no-print-directory check-systemd
	scripts/with-postgres $(SWIFT) test

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
	@command -v wrk >/dev/null && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk postgresql >/dev/null; \
	  else echo "Run: sudo apt-get install -y wrk postgresql" >&2; exit 1; fi; }

# Not part of `make test`: speed is measured here, on a release build, never in timed unit tests.
bench: release bench-deps
	bench/simulator.sh
	@echo "== Ingest alone (poll, route, queue; no delivery), each backlog in a fresh process"
	.build/release/relay-bench ingest 100000
	.build/release/relay-bench ingest 400000
	@echo "== The state store's writer alone (over half a batched drain's CPU), one subscription and five"
	.build/release/relay-bench store 100000 1
	.build/release/relay-bench store 100000 5
	@echo "== Delivery isolation"
	.build/release/relay-bench isolation 10000
	@echo "== Strict drain (ordering strict, one request at a time, after an outage)"
	.build/release/relay-bench strict 100000
	@echo "== Catch-up (a subscription 1,000,000 events behind, another one current with live traffic)"
	.build/release/relay-bench catchup 1000000
	@echo "== Several instances on PostgreSQL (a throwaway cluster): scale-out, beside SQLite, failover"
	scripts/with-postgres .build/release/relay-bench postgres
	.build/release/relay-bench e2e

# Installs what `make release` built; builds nothing, so that `sudo make install` runs no compiler, apt-get or pip.
install:
	@test -x $(RELEASE_DIR)/intilery-relay -a -d $(RELEASE_SHARE)/man || { \
	  echo "Nothing built to install: run 'make release' first (as yourself), then 'sudo make install'." >&2; exit 1; }
	install -D -m 0755 $(RELEASE_DIR)/intilery-relay $(DESTDIR)$(BINDIR)/intilery-relay
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
	install -d -m 0755 $(DESTDIR)$(DOCDIR)/docs $(DESTDIR)$(DOCDIR)/config $(DESTDIR)$(PREFIX)/share/man/man1
	install -m 0644 docs/*.md docs/*.yml $(DESTDIR)$(DOCDIR)/docs/
	install -m 0644 config/example.json config/intilery-relay.schema.json $(DESTDIR)$(DOCDIR)/config/
	install -m 0644 $(RELEASE_SHARE)/man/*.1 $(DESTDIR)$(PREFIX)/share/man/man1/
	install -D -m 0644 $(RELEASE_SHARE)/completions/intilery-relay.bash $(DESTDIR)$(PREFIX)/share/bash-completion/completions/intilery-relay
	install -D -m 0644 $(RELEASE_SHARE)/completions/_intilery-relay $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_intilery-relay
	install -D -m 0644 $(RELEASE_SHARE)/completions/intilery-relay.fish $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/intilery-relay.fish

# intilery-relay_<version>_<arch>.deb in $(DEB_DIR).
deb: release deb-deps
	rm -f $(DEB_DIR)/intilery-relay_*.deb
	packaging/build-deb $(DEB_DIR)

# What CI checks of the package: its contents, lintian, and the packaged binary run without the toolchain.
check-deb: deb
	packaging/check-deb $(DEB_DIR)/intilery-relay_*.deb

# `make install` refuses to build (nothing built: it names the command), and installs every file where PREFIX says.
check-install: release
	@if out=$$($(MAKE) --no-print-directory install RELEASE_DIR=/nonexistent DESTDIR=/nonexistent 2>&1); then \
	  echo "check-install: install without a build did not fail" >&2; exit 1; fi; \
	echo "$$out" | grep -q "run 'make release' first" || { echo "check-install: unexpected: $$out" >&2; exit 1; }
	@root=$$(mktemp -d) && trap 'rm -rf "$$root"' EXIT && \
	$(MAKE) --no-print-directory install DESTDIR=$$root PREFIX=/usr >/dev/null && \
	for path in usr/bin/intilery-relay usr/lib/systemd/system/intilery-relay.service etc/intilery-relay/example.json \
	    usr/share/doc/intilery-relay/docs/operations.md usr/share/doc/intilery-relay/docs/alerts.yml usr/share/man/man1/intilery-relay.1 \
	    usr/share/bash-completion/completions/intilery-relay; do \
	  test -e $$root/$$path || { echo "check-install: $$path not installed" >&2; exit 1; }; done && \
	grep -q '^ExecStart=/usr/bin/intilery-relay run' $$root/usr/lib/systemd/system/intilery-relay.service && \
	echo "check-install: make install refuses to build and installs every file"

deb-deps:
	@missing=""; for tool in dpkg-shlibdeps:dpkg-dev lintian:lintian; do \
	  command -v $${tool%%:*} >/dev/null || missing="$$missing $${tool##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; \
	  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO="sudo"; \
	  else echo "Run: sudo apt-get install -y$$missing" >&2; exit 1; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq$$missing >/dev/null; fi

clean:
	rm -rf .build
