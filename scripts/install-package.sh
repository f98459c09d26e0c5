#!/usr/bin/env bash
# Installs a `cargo pgrx package` tree (DIR/usr/...) into the system PostgreSQL directories.
# Each file is copied under a temporary name next to its destination and renamed into place: a
# running server that has the old library mapped keeps its inode and does not crash (an in-place
# overwrite, which is what `cargo pgrx install` does, can SIGBUS it).
# Usage: scripts/install-package.sh PKG_DIR [ROOT]
# ROOT (default /) puts the files under ROOT instead: tests/upgrade/test_upgrade_live.py installs into a
# private copy of the PostgreSQL tree (ROOT/usr/lib/postgresql/15/...) that way, never into /usr.
set -euo pipefail
pkg="$1"
root="${2:-/}"
[ -d "$pkg" ] || { echo "no package directory $pkg" >&2; exit 1; }
[ -d "$root" ] || { echo "no root directory $root" >&2; exit 1; }
root="$(cd "$root" && pwd)"
cd "$pkg"
find . -type f | while read -r f; do
  dest="${root%/}/${f#./}"
  tmp="$(dirname "$dest")/.$(basename "$dest").tmp.$$"
  install -D -m 0644 "$f" "$tmp"
  mv -f "$tmp" "$dest"
  echo "installed $dest"
done
