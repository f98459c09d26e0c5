# audius_indexer — the two commands that matter: `make demo` and `make test`.
# Every target installs what is missing first (scripts/install-deps.sh is idempotent).
SHELL := /bin/bash
PG_CONFIG ?= /usr/bin/pg_config
CARGO ?= cargo
PYTEST ?= .venv/bin/pytest
PYTEST_ARGS ?=
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: all deps build install package-tree package old-package package-smoke unit check integration test demo bench-triggers bench-challenges bench-rpc bench-sweep-scale bench-status bench-http fmt clean

all: build

deps:
	@bash scripts/install-deps.sh

PKG_DIR := target/pgrx-package
# Release build of the extension (fat LTO) installed into the system PostgreSQL 15 directories.
# Files are renamed into place (scripts/install-package.sh), so running servers are not disturbed.
# The package also carries the SQL of every released version (released/) so that
# CREATE EXTENSION ... VERSION '<old>' and the upgrade scripts (sql/audius_indexer--*--*.sql, copied
# by cargo pgrx) work.
EXT_DIR_IN_PKG = $(PKG_DIR)$(shell $(PG_CONFIG) --sharedir)/extension
install: package-tree
	bash scripts/install-package.sh $(PKG_DIR)

package-tree: deps
	rm -rf $(PKG_DIR)
	$(CARGO) pgrx package --pg-config $(PG_CONFIG) --no-default-features --features pg15 --out-dir $(PKG_DIR)
	cp released/audius_indexer--*.sql $(EXT_DIR_IN_PKG)/

# Debian package of the same files (dist/audius-indexer-postgresql-15_<version>_amd64.deb).
package: package-tree
	bash scripts/build-deb.sh $(PKG_DIR) dist

# The last release's package tree, built from its commit (scripts/build-old-package.sh: git archive
# into target/old/<version>/src, its own CARGO_TARGET_DIR, the package in target/old/<version>/
# pgrx-package; nothing when already built). Never installed into the system directories: the
# upgrade tier (tests/upgrade/test_upgrade_live.py) installs it into a private PostgreSQL tree. The commit
# must be in the clone (CI: full history). A clean build takes about 3.5 min on 2 cores.
OLD_VERSION := 0.2.0
OLD_COMMIT := 2d27bcf
old-package: deps
	bash scripts/build-old-package.sh $(OLD_COMMIT) $(OLD_VERSION) target/old/$(OLD_VERSION) $(PG_CONFIG)

# Tier 5: the .deb installed with dpkg in place of the `make install` files, smoke-tested, then
# removed again and the `make install` files put back.
package-smoke: package
	bash scripts/package-smoke.sh dist $(PKG_DIR)

build: deps
	$(CARGO) build --release --no-default-features --features pg15

# Tier 1: the pure core (crates/core: ABI, RPC, chunking, logs, challenge rules, trigger payloads;
# no pgrx dependency) and the extension crate's own unit tests: plain #[test] + property tests, no
# PostgreSQL (the #[pg_test]s compiled into the same binary are skipped: they are `make check`).
unit: deps
	$(CARGO) test -p audius_indexer_core
	$(CARGO) test -p audius_indexer --lib --no-default-features --features pg15 -- --skip pg_tests::

# Tier 1b: a debug build and the #[pg_test]s (src/pg_tests.rs): the SPI glue (sweep write and claim,
# challenge processors, Rust triggers, enrollment, follow queue) against real tables in a throwaway
# PostgreSQL 15 cluster run as the postgres OS user; no chain, no RPC node. About 15 s after touching
# one .rs file. scripts/check.sh runs `cargo pgrx test pg15 --runas postgres --pgdata
# target/pgcheck/pgdata` with the test build installed into a private copy of the PostgreSQL tree
# (target/pgcheck/tree), never into the system directories `make install` and pytest use.
# CHECK_ARGS: a test-name filter, e.g. `make check CHECK_ARGS=follow`.
CHECK_ARGS ?=
check: deps
	bash scripts/check.sh $(CHECK_ARGS)

# Tiers 2-4: real PostgreSQL 15 clusters (as the postgres OS user) + real anvil + Multicall3.
# The reliability suites record what they observed (tests/.build/suites); docs/reliability.md is
# rewritten from this run's tables after a full run (no PYTEST_ARGS), and the target fails when a
# suite the document lists did not record one.
integration: install old-package
	rm -rf tests/.build/suites
	$(PYTEST) tests $(PYTEST_ARGS)
	if [ -z "$(PYTEST_ARGS)" ]; then .venv/bin/python scripts/suite-tables.py; fi

test: unit check integration package-smoke

demo: install
	.venv/bin/python scripts/demo.py

bench-triggers: install
	.venv/bin/python bench/triggers/run.py

bench-challenges: install
	.venv/bin/python bench/challenges/run.py

# RPC read path + stale sweep vs the bare RPC work (bench/rpc/README.md). viem (the client-side
# baseline) lives in bench/rpc/node_modules, pinned by bench/rpc/package-lock.json, installed here
# only when missing: not in tools/, not needed by make test. BENCH_RPC_ARGS passes options through.
BENCH_RPC_ARGS ?=
bench-rpc: install
	@test -f bench/rpc/node_modules/viem/package.json || (cd bench/rpc && npm ci --no-audit --no-fund)
	.venv/bin/python bench/rpc/run.py $(BENCH_RPC_ARGS)

bench-sweep-scale: install
	.venv/bin/python bench/rpc/run.py --sweep-scale $(BENCH_RPC_ARGS)

# The HTTP client of the RPC transport, chosen by measurement: ureq (the project's Agents) vs
# hyper-util + hyper-rustls, over http:// and https:// (stunnel4) against anvil (bench/http/README.md,
# docs/performance.md#one-http-stack). No PostgreSQL. BENCH_HTTP_ARGS passes options through.
bench-http: deps
	.venv/bin/python bench/http/run.py $(BENCH_HTTP_ARGS)

# The monitoring queries (status views, health(), sql/prometheus-queries.yaml) on 3.15M wallets, next
# to 0.2.0's count(*) (bench/status/run.py --help). BENCH_STATUS_ARGS passes options through.
BENCH_STATUS_ARGS ?=
bench-status: install
	.venv/bin/python bench/status/run.py $(BENCH_STATUS_ARGS)

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
	rm -rf .venv tools/node_modules tests/.build dist
