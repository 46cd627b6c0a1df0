#!/bin/bash
# dist.sh BINARY ARCH VERSION OUTDIR [APPLETS]
# Packs BINARY (as cni-multi), one `NAME -> cni-multi` symlink per applet, install.sh, LICENSE and
# README.md into OUTDIR/cni-multi-linux-ARCH-VERSION.tgz and writes .sha256 and .sha512 beside it.
# The tarball is flat (files at its root), like the reference plugin tarballs, so
# `tar -xzf cni-multi-linux-amd64-vX.tgz -C /opt/cni/bin` installs every plugin name.
# Reproducible: sorted entries, mtime SOURCE_DATE_EPOCH (default 0), owner root:root, fixed modes,
# `gzip -n` (no name, no time). Same inputs give the same bytes, whatever the umask or file times.
set -euo pipefail

if [ $# -lt 4 ]; then
    echo "usage: $0 BINARY ARCH VERSION OUTDIR [APPLETS]" >&2
    exit 2
fi
bin=$1 arch=$2 version=$3 out=$4 applets=${5:-}
root=$(cd -- "$(dirname -- "$0")/.." && pwd)
epoch=${SOURCE_DATE_EPOCH:-0}
name="cni-multi-linux-$arch-$version"

[ -f "$bin" ] || { echo "dist.sh: no binary at $bin" >&2; exit 1; }
mkdir -p "$out"
out=$(cd -- "$out" && pwd)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

install -m 0755 "$bin" "$stage/cni-multi"
install -m 0755 "$root/install.sh" "$stage/install.sh"
install -m 0644 "$root/LICENSE" "$stage/LICENSE"
install -m 0644 "$root/README.md" "$stage/README.md"
for a in $applets; do
    case "$a" in
    cni-multi | . | .. | *[!A-Za-z0-9._-]*) echo "dist.sh: bad applet name $a" >&2; exit 1 ;;
    esac
    ln -s cni-multi "$stage/$a"
done

# GNU tar: sorted names, fixed times/owners/modes; gzip without name and time stamp
tar --sort=name --format=gnu --mtime="@$epoch" --owner=0 --group=0 --numeric-owner \
    --mode='u=rwX,go=rX' -C "$stage" -cf - $(cd "$stage" && ls -A | LC_ALL=C sort) | gzip -9 -n >"$out/$name.tgz.tmp"
mv -f "$out/$name.tgz.tmp" "$out/$name.tgz"
(cd "$out" && sha256sum "$name.tgz" >"$name.tgz.sha256" && sha512sum "$name.tgz" >"$name.tgz.sha512")
echo "$out/$name.tgz: $(stat -c %s "$out/$name.tgz") bytes, sha256 $(cut -d' ' -f1 "$out/$name.tgz.sha256")"
