#!/usr/bin/env bash
# Builds audius-indexer-postgresql-15_<version>_amd64.deb from a `make package-tree` directory.
# Usage: scripts/build-deb.sh PKG_DIR OUT_DIR
# Contents: the library and extension files exactly as `make install` places them (all released
# versions and upgrade scripts included), plus /usr/share/doc/audius-indexer-postgresql-15/ with the
# README, docs/, sql/indexes.sql (run it with psql after installing), sql/prometheus-queries.yaml (for
# prometheus-postgres-exporter --extend.query-path) and a copyright file.
set -euo pipefail
pkg_dir="$1"
out_dir="$2"
source "$(dirname "$0")/deb-name.sh"
[ -d "$pkg_dir/usr" ] || { echo "build-deb: $pkg_dir has no usr/ tree (run make package-tree)" >&2; exit 1; }
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
cp -a "$pkg_dir/usr" "$stage/usr"
doc="$stage/usr/share/doc/$name"
mkdir -p "$doc/docs" "$stage/DEBIAN"
install -m 0644 "$root/README.md" "$doc/README.md"
install -m 0644 "$root"/docs/*.md "$doc/docs/"
install -m 0644 "$root/sql/indexes.sql" "$doc/indexes.sql"
install -m 0644 "$root/sql/prometheus-queries.yaml" "$doc/prometheus-queries.yaml"
cat > "$doc/copyright" <<COPY
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: audius_indexer
License: Apache-2.0
 On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0.
COPY
find "$stage/usr" -type d -exec chmod 0755 {} +
find "$stage/usr" -type f -exec chmod 0644 {} +
size="$(du -sk "$stage/usr" | cut -f1)"
cat > "$stage/DEBIAN/control" <<CTRL
Package: $name
Version: $version
Architecture: $arch
Maintainer: audius_indexer maintainers <maintainers@audius-indexer.invalid>
Depends: postgresql-15, libc6, libgcc-s1
Section: database
Priority: optional
Installed-Size: $size
Homepage: https://github.com/audius-indexer/audius_indexer
Description: Audius/Ethereum indexer hot paths inside PostgreSQL 15
 A PostgreSQL extension (CREATE EXTENSION audius_indexer): AUDIO balances through
 Multicall3, the stale sweep and the Transfer-log follower as background workers,
 incremental challenge processors, and the Audius dedupe triggers in Rust.
 After installing: add audius_indexer to shared_preload_libraries for the workers,
 run /usr/share/doc/$name/indexes.sql with psql, and see README.md there.
CTRL
mkdir -p "$out_dir"
deb="$out_dir/$deb_file"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb"
