#!/usr/bin/env bash
# Installs the .deb from DIST with dpkg into the system PostgreSQL 15 after removing the files
# `make install` put there, smoke-tests it (tests/package_smoke.py: CREATE EXTENSION, doctor(), one
# multicall against anvil, an upgrade from 0.1.0), then removes the package and puts the
# `make install` files back from PKG_DIR. Usage: scripts/package-smoke.sh DIST PKG_DIR
set -euo pipefail
dist="$1"
pkg_dir="$2"
source "$(dirname "$0")/deb-name.sh"
deb="$dist/$deb_file"
[ -f "$deb" ] || { echo "package-smoke: $deb missing (make package)" >&2; exit 1; }
extdir="$(pg_config --sharedir)/extension"
libdir="$(pg_config --pkglibdir)"
restore() {
  dpkg -r "$name" >/dev/null 2>&1 || true
  bash "$root/scripts/install-package.sh" "$pkg_dir" >/dev/null
}
trap restore EXIT
# 1. nothing of ours left outside the package
rm -f "$extdir"/audius_indexer.control "$extdir"/audius_indexer--*.sql "$libdir/audius_indexer.so"
# 2. dpkg -i (its dependencies are present: postgresql-15)
dpkg -i "$deb"
dpkg -s "$name" | grep -E '^(Status|Version|Depends):'
dpkg -L "$name" | grep -E 'audius_indexer\.(so|control)$|indexes.sql$|--0\.1\.0\.sql$'
# 3. the smoke test against the packaged files only
"$root/.venv/bin/python" "$root/tests/package_smoke.py"
