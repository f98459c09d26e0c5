# Sourced by scripts/build-deb.sh and scripts/package-smoke.sh: the Debian package's name, the
# version (Cargo.toml) and the file name of the .deb that `make package` writes.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)"
name="audius-indexer-postgresql-15"
arch="$(dpkg --print-architecture)"
deb_file="${name}_${version}_${arch}.deb"
