#!/usr/bin/env bash
# Builds the `cargo pgrx package` tree of a released version from its commit, for the upgrade tier
# (tests/upgrade/test_upgrade_live.py installs it into a private PostgreSQL tree, never into the system one).
# Usage: scripts/build-old-package.sh COMMIT VERSION OUT_DIR [PG_CONFIG]
#   OUT_DIR/src           the commit's files (git archive: the repository and its work tree untouched)
#   OUT_DIR/target        its own CARGO_TARGET_DIR (release build, its own Cargo.lock)
#   OUT_DIR/pgrx-package  the package tree (usr/...), with the SQL of the versions released before it
#                         (the commit's released/, sql/released/ before 0.3.0), exactly as that
#                         release's `make package-tree`
#   OUT_DIR/.built-from   the full commit id: present = done, so a second run does nothing
# The packaged audius_indexer--VERSION.sql must have the content of this tree's
# released/audius_indexer--VERSION.sql (what tests/upgrade/test_upgrade.py and `make install` use):
# byte for byte, or the same lines with independent blocks in another order (pgrx's order of
# blocks that do not depend on each other varies between builds). Anything else fails the build:
# the release on record would not be the one the commit builds.
set -euo pipefail
commit="$1"
version="$2"
out="$3"
pg_config="${4:-/usr/bin/pg_config}"
root="$(cd "$(dirname "$0")/.." && pwd)"
case "$out" in /*) ;; *) out="$root/$out" ;; esac

if ! git -C "$root" cat-file -e "${commit}^{commit}" 2>/dev/null; then
  echo "build-old-package: commit $commit (release $version) is not in this clone;" \
       "fetch the full history (e.g. git fetch --unshallow, or actions/checkout with fetch-depth: 0)" >&2
  exit 1
fi
full="$(git -C "$root" rev-parse "${commit}^{commit}")"
ext_rel="$("$pg_config" --sharedir)/extension"
lib_rel="$("$pg_config" --pkglibdir)"
pkg="$out/pgrx-package"
if [ "$(cat "$out/.built-from" 2>/dev/null || true)" = "$full" ] \
   && [ -f "$pkg$lib_rel/audius_indexer.so" ] && [ -f "$pkg$ext_rel/audius_indexer--$version.sql" ]; then
  echo "build-old-package: $version ($full) already built in $pkg"
  exit 0
fi

at_commit="$(git -C "$root" show "$full:Cargo.toml" | sed -n 's/^version = "\(.*\)"/\1/p' | head -1)"
if [ "$at_commit" != "$version" ]; then
  echo "build-old-package: Cargo.toml at $commit says version $at_commit, not $version" >&2
  exit 1
fi

start=$SECONDS
rm -rf "$out/.built-from" "$out/src" "$pkg" "$pkg.tmp"
mkdir -p "$out/src"
git -C "$root" archive --format=tar "$full" | tar -x -C "$out/src"
(
  cd "$out/src"
  CARGO_TARGET_DIR="$out/target" cargo pgrx package --pg-config "$pg_config" \
    --no-default-features --features pg15 --out-dir "$pkg.tmp"
)
for dir in "$out/src/released" "$out/src/sql/released"; do  # sql/released/ up to 0.2.0
  if [ -d "$dir" ]; then
    cp "$dir"/audius_indexer--*.sql "$pkg.tmp$ext_rel/"
  fi
done
built_sql="$pkg.tmp$ext_rel/audius_indexer--$version.sql"
record="$root/released/audius_indexer--$version.sql"
if [ -f "$record" ]; then
  if cmp -s "$built_sql" "$record"; then
    echo "build-old-package: audius_indexer--$version.sql is byte-identical to released/"
  elif cmp -s <(LC_ALL=C sort "$built_sql") <(LC_ALL=C sort "$record"); then
    # pgrx orders blocks that do not depend on each other differently from build to build (the
    # sweep and challenges blocks of 0.2.0 both require only bootstrap): same lines, other order.
    # tests/upgrade/test_upgrade_live.py checks that both scripts create the same catalog.
    echo "build-old-package: audius_indexer--$version.sql has the lines of released/ in another block order"
  else
    echo "build-old-package: $built_sql differs from $record:" >&2
    diff -u "$record" "$built_sql" | head -40 >&2 || true
    exit 1
  fi
fi
mv "$pkg.tmp" "$pkg"
echo "$full" > "$out/.built-from"
echo "build-old-package: $version ($full) built in $pkg in $((SECONDS - start)) s"
