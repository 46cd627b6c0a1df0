#!/bin/bash
# Build a cnitool from Debian's libcni sources (golang-github-appc-cni-dev 1.1.2, /usr/share/gocode)
# with Debian's Go (golang-go 1.19), offline: GOPATH mode, no module download, GOPROXY=off.
#
# Debian ships libcni and pkg/ but not upstream's cnitool/ directory, so the `main` below is a thin
# command line over libcni written for these tests. It keeps upstream cnitool's contract:
#   cnitool add|check|del NETWORK NETNS-PATH
#   NETCONFPATH (default /etc/cni/net.d), CNI_PATH, CNI_IFNAME (default eth0),
#   CNI_ARGS ("K=V;K=V"), CAP_ARGS (JSON object of capability args),
#   container id "cnitool-" + the first 20 hex digits of sha512(NETNS-PATH),
#   the ADD result printed with the result type's Print (indented JSON on stdout),
#   errors on stderr with exit status 1.
# One addition so tests never write /var/lib/cni: CNI_CACHE_DIR (libcni's cache dir) when set.
# Everything that matters to a plugin (config loading, conflist chaining, prevResult, version
# conversion, cache, CHECK/DEL with the cached result) is libcni's own code.
#
# Usage: scripts/build-cnitool.sh [OUT]   (default target/clients/cnitool; a no-op when OUT is
# newer than this script). Prints OUT.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/target/clients/cnitool}
mkdir -p "$(dirname "$out")"
# concurrent test runs build once: the second waits for the first, then finds it fresh
exec 9>"$out.lock"
flock 9
if [ -x "$out" ] && [ "$out" -nt "$0" ]; then
    echo "$out"
    exit 0
fi
src=/usr/share/gocode/src/github.com/containernetworking/cni/libcni
command -v go >/dev/null || { echo "build-cnitool: no go (apt-get install golang-go)" >&2; exit 1; }
[ -d "$src" ] || { echo "build-cnitool: no $src (apt-get install golang-github-appc-cni-dev)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/cni-multi-cnitool-XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/gopath/src/cnitool" "$(dirname "$out")"
cat > "$work/gopath/src/cnitool/main.go" <<'GO'
package main

import (
	"context"
	"crypto/sha512"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
)

func fail(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, format+"\n", a...)
	os.Exit(1)
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func main() {
	if len(os.Args) < 4 {
		fail("usage: %s add|check|del NETWORK NETNS-PATH", filepath.Base(os.Args[0]))
	}
	verb, network, netnsArg := os.Args[1], os.Args[2], os.Args[3]

	list, err := libcni.LoadConfList(envOr("NETCONFPATH", "/etc/cni/net.d"), network)
	if err != nil {
		fail("%v", err)
	}

	var pairs [][2]string
	for _, kv := range strings.Split(os.Getenv("CNI_ARGS"), ";") {
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			fail("invalid CNI_ARGS pair %q", kv)
		}
		pairs = append(pairs, [2]string{k, v})
	}
	caps := map[string]interface{}{}
	if s := os.Getenv("CAP_ARGS"); s != "" {
		if err := json.Unmarshal([]byte(s), &caps); err != nil {
			fail("CAP_ARGS: %v", err)
		}
	}

	netns, err := filepath.Abs(netnsArg)
	if err != nil {
		fail("%v", err)
	}
	sum := sha512.Sum512([]byte(netns))
	rt := &libcni.RuntimeConf{
		ContainerID:    fmt.Sprintf("cnitool-%x", sum)[:len("cnitool-")+20],
		NetNS:          netns,
		IfName:         envOr("CNI_IFNAME", "eth0"),
		Args:           pairs,
		CapabilityArgs: caps,
	}
	paths := filepath.SplitList(os.Getenv("CNI_PATH"))
	var cni *libcni.CNIConfig
	if dir := os.Getenv("CNI_CACHE_DIR"); dir != "" {
		cni = libcni.NewCNIConfigWithCacheDir(paths, dir, nil)
	} else {
		cni = libcni.NewCNIConfig(paths, nil)
	}

	ctx := context.TODO()
	switch verb {
	case "add":
		res, err := cni.AddNetworkList(ctx, list, rt)
		if res != nil {
			_ = res.Print()
		}
		if err != nil {
			fail("%v", err)
		}
	case "check":
		if err := cni.CheckNetworkList(ctx, list, rt); err != nil {
			fail("%v", err)
		}
	case "del":
		if err := cni.DelNetworkList(ctx, list, rt); err != nil {
			fail("%v", err)
		}
	default:
		fail("unknown verb %q (add, check, del)", verb)
	}
}
GO
(
    cd "$work/gopath/src/cnitool"
    GO111MODULE=off GOPROXY=off GOFLAGS= GOPATH="$work/gopath:/usr/share/gocode" \
        GOCACHE="$root/target/clients/go-cache" CGO_ENABLED=0 \
        go build -o "$out.tmp" .
)
mv "$out.tmp" "$out"
echo "$out"
