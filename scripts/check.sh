#!/usr/bin/env bash
# `make check`: a debug build of the extension and its tests that need a database but no chain (the
# #[pg_test]s of src/pg_tests.rs, plus the crate's plain #[test]s, which live in the same test binary),
# through `cargo pgrx test pg15 --runas postgres --pgdata <dir>`.
#
# Nothing here touches the system PostgreSQL directories, which `make install` and the pytest tiers
# use (and which running servers may have mapped): `cargo pgrx test` installs the test build into a
# private copy of the PostgreSQL tree under target/pgcheck/tree (PostgreSQL finds pkglibdir and
# sharedir relative to its own binary, as tests/upgrade/test_upgrade_live.py relies on too), chosen through
# a private PGRX_HOME whose config.toml names that copy's pg_config. The copy is made once and again
# only when the system PostgreSQL changes. The test cluster runs as the postgres OS user (initdb and
# postgres refuse root; pgrx uses sudo, installed by `make deps`), its PGDATA under
# target/pgcheck/pgdata, removed by pgrx when the run ends. (With CARGO_TARGET_DIR set, all of it lives
# under $CARGO_TARGET_DIR/pgcheck instead.)
#
# Usage: scripts/check.sh [TESTNAME]   (a substring of the test names, e.g. pg_tests:: or follow_)
# Runs one at a time (flock): two runs would install into the same tree.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_CONFIG=${PG_CONFIG:-/usr/bin/pg_config}
ROOT=${CARGO_TARGET_DIR:-$PWD/target}/pgcheck
TREE=$ROOT/tree
PGRX_HOME_DIR=$ROOT/pgrx-home
PGDATA_BASE=$ROOT/pgdata

log() { printf '[check] %s\n' "$*"; }

mkdir -p "$ROOT"
exec 9>"$ROOT/.lock"
if ! flock -n 9; then
  log "another make check is running; waiting for it"
  flock 9
fi

# --- the private PostgreSQL tree -------------------------------------------------------------------
bindir=$("$PG_CONFIG" --bindir)             # /usr/lib/postgresql/15/bin
libroot=$(dirname "$bindir")               # /usr/lib/postgresql/15 (bin, lib)
sharedir=$("$PG_CONFIG" --sharedir)         # /usr/share/postgresql/15
incdir=$("$PG_CONFIG" --pkgincludedir)      # /usr/include/postgresql (headers: linked, not copied)
stamp="$("$PG_CONFIG" --version) $(stat -c %Y "$bindir/postgres") $libroot $sharedir $incdir"
if [ "$(cat "$TREE/.stamp" 2>/dev/null)" != "$stamp" ]; then
  log "private PostgreSQL tree: copying $libroot and $sharedir into $TREE"
  rm -rf "$TREE"
  mkdir -p "$TREE$(dirname "$libroot")" "$TREE$(dirname "$sharedir")" "$TREE$(dirname "$incdir")"
  cp -a "$libroot" "$TREE$libroot"
  cp -a "$sharedir" "$TREE$sharedir"
  ln -s "$incdir" "$TREE$incdir"
  # none of the installed audius_indexer files: the tree gets the test build only
  rm -f "$TREE$libroot"/lib/audius_indexer*.so "$TREE$sharedir"/extension/audius_indexer*
  printf '%s' "$stamp" >"$TREE/.stamp"
fi
tree_pg_config=$TREE$bindir/pg_config
[ "$("$tree_pg_config" --pkglibdir)" = "$TREE$libroot/lib" ] || {
  log "ERROR: $tree_pg_config does not report the private tree ($("$tree_pg_config" --pkglibdir))"
  exit 1
}

# --- PGRX_HOME naming that pg_config (rewritten only when it changes: pgrx-pg-sys's build script
# watches this file, and a new mtime would rebuild pgrx and everything above it)
mkdir -p "$PGRX_HOME_DIR"
config=$(printf '[configs]\npg15 = "%s"\n' "$tree_pg_config")
if [ "$(cat "$PGRX_HOME_DIR/config.toml" 2>/dev/null)" != "$config" ]; then
  printf '%s\n' "$config" >"$PGRX_HOME_DIR/config.toml"
fi

# --- PGDATA: a directory the postgres user may create clusters in; leftovers of killed runs go
mkdir -p "$PGDATA_BASE"
chown postgres:postgres "$PGDATA_BASE"
chmod 0700 "$PGDATA_BASE"
for d in "$PGDATA_BASE"/15-*; do
  [ -d "$d" ] || continue
  pid=${d##*-}
  if ! kill -0 "$pid" 2>/dev/null; then
    if [ -f "$d/postmaster.pid" ]; then
      runuser -u postgres -- "$TREE$bindir/pg_ctl" stop -D "$d" -m immediate >/dev/null 2>&1 || true
    fi
    log "removing $d (left by an interrupted run)"
    rm -rf "$d"
  fi
done

# RUST_BACKTRACE would be handed to the test server by pgrx and put a backtrace into every ERROR.
export PGRX_HOME=$PGRX_HOME_DIR
exec env -u RUST_BACKTRACE cargo pgrx test pg15 --runas postgres --pgdata "$PGDATA_BASE" \
  --no-default-features --features pg15 "$@"
