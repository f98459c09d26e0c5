#!/usr/bin/env bash
# Installs what `make test` / `make demo` need, skipping whatever is already present.
# Idempotent; safe to re-run. Runs as root on Debian 12 (CI and dev machines).
set -euo pipefail
cd "$(dirname "$0")/.."

PGRX_VERSION=0.18.1
# prometheus-postgres-exporter: tests/operations/test_monitoring.py scrapes the extension with the real exporter.
# stunnel4, openssl: tests/balances/test_tls.py and make bench-rpc put TLS with a test CA in front of anvil.
APT_PKGS=(postgresql-15 postgresql-server-dev-15 libclang-dev clang pkg-config postgresql-15-cron sudo stunnel4 openssl
          prometheus-postgres-exporter)

log() { printf '[install-deps] %s\n' "$*"; }

# anvil keeps old chain states in ~/.foundry/anvil/tmp and removes them only on a clean exit; nodes
# killed by earlier runs (before tests/harness set --cache-path) left gigabytes there. With no anvil
# running, anything in that temp directory is garbage.
ANVIL_TMP="$HOME/.foundry/anvil/tmp"
if [ -d "$ANVIL_TMP" ] && ! pgrep -x anvil >/dev/null 2>&1 && [ -n "$(ls -A "$ANVIL_TMP" 2>/dev/null)" ]; then
  log "removing $(du -sh "$ANVIL_TMP" | cut -f1) of state left in $ANVIL_TMP by killed anvil nodes"
  find "$ANVIL_TMP" -mindepth 1 -maxdepth 1 -name 'anvil-state-*' -exec rm -rf {} +
fi

# A full `make test` writes ~2.5 GB under target/ (release + unit-test builds, the package).
# A disk that fills up mid-build shows up as an unexplained rustc failure, so say it up front.
free_kb=$(df -Pk . | awk 'NR==2 {print $4}')
if ((free_kb < 3 * 1024 * 1024)); then
  log "WARNING: only $((free_kb / 1024)) MB free on $(df -P . | awk 'NR==2 {print $6}'); the build needs ~2.5 GB"
else
  log "disk: $((free_kb / 1024 / 1024)) GB free"
fi

missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  log "apt: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  log "apt: all present"
fi

if cargo pgrx --version 2>/dev/null | grep -q "$PGRX_VERSION"; then
  log "cargo-pgrx $PGRX_VERSION: present"
else
  log "cargo-pgrx $PGRX_VERSION: installing (~8 min)"
  cargo install --locked cargo-pgrx --version "$PGRX_VERSION"
fi

PGRX_HOME="${PGRX_HOME:-$HOME/.pgrx}"
if grep -qs '^pg15 *= *"/usr/bin/pg_config"' "$PGRX_HOME/config.toml"; then
  log "pgrx init: present"
else
  log "pgrx init --pg15 /usr/bin/pg_config"
  cargo pgrx init --pg15 /usr/bin/pg_config
fi

# npm tooling (anvil, cast, solc-js) into a git-ignored folder, pinned by package-lock.json.
if [ -x tools/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil ] && [ -d tools/node_modules/solc ] \
   && cmp -s tools/package-lock.json tools/node_modules/.installed-package-lock.json 2>/dev/null; then
  log "npm tools: present"
else
  log "npm tools: npm ci"
  (cd tools && npm ci --no-audit --no-fund --loglevel=error)
  cp tools/package-lock.json tools/node_modules/.installed-package-lock.json
fi
# Python test runner (pytest + psycopg), pinned in tests/requirements.txt, into the git-ignored .venv.
if [ -x .venv/bin/pytest ] && cmp -s tests/requirements.txt .venv/.requirements.installed; then
  log "python venv: present"
else
  log "python venv: installing tests/requirements.txt"
  if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    log "apt: installing python3-venv (this python3 lacks venv/ensurepip)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
  fi
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r tests/requirements.txt
  cp tests/requirements.txt .venv/.requirements.installed
fi
# tests/ on the venv's import path (a .pth file), so tests, bench/*/run.py and scripts/*.py import
# the shared `harness` package without touching sys.path. Rewritten only when its content differs.
pth="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/audius_indexer_tests.pth"
if [ "$(cat "$pth" 2>/dev/null)" = "$PWD/tests" ]; then
  log "python venv: harness path present"
else
  log "python venv: writing $pth"
  printf '%s\n' "$PWD/tests" > "$pth"
fi
log "done"
