#!/bin/bash
# dist-check.sh: prove `make dist` is reproducible. Clones HEAD twice into two different paths,
# runs `make dist` in each (separate target dirs, so nothing is shared but the crate sources), and
# compares the tarballs byte for byte. Uncommitted changes are not part of the check.
# Slow (two full release builds): not part of `make test`. DIST_ARCHES defaults to amd64 here.
set -euo pipefail

root=$(cd -- "$(dirname -- "$0")/.." && pwd)
arches=${DIST_ARCHES:-amd64}
work=$(mktemp -d /tmp/cni-multi-dist-check.XXXXXX)
trap 'rm -rf "$work"' EXIT

for side in a b/deeper/path; do
    git clone -q "$root" "$work/$side"
    echo "== building in $work/$side"
    make -C "$work/$side" --no-print-directory dist DIST_ARCHES="$arches" >"$work/${side%%/*}.log" 2>&1 ||
        { tail -n 30 "$work/${side%%/*}.log" >&2; exit 1; }
done
status=0
for f in "$work"/a/dist/*; do
    g="$work/b/deeper/path/dist/${f##*/}"
    if cmp -s "$f" "$g"; then
        echo "same bytes: ${f##*/} ($(stat -c %s "$f") bytes)"
    else
        echo "DIFFERENT: ${f##*/}" >&2
        status=1
    fi
done
[ "$(ls "$work/a/dist" | wc -l)" -gt 0 ] || { echo "no artifacts" >&2; exit 1; }
exit $status
