#!/bin/sh
# Regenerates scripts/hot-text.ld: the linker script that puts the functions a plugin run
# executes first in the binary's text (docs/bench.md, "The exec"). Run it as root after changes
# to the ADD/DEL paths; `make build` links with the result. A stale script is never wrong: a
# function it does not name just stays in the ordinary text.
#
# 1. builds an unstripped profiling binary like the release one, without the script
#    (target/hot-text/);
# 2. in a throwaway world of network namespaces (a "host" netns and pod netnses, removed on exit;
#    addresses from 198.18.0.0/15), runs under valgrind's callgrind (every executed instruction):
#    bridge + host-local ADD, CHECK, DEL; the bench's full chain (bridge with ipMasq, portmap,
#    firewall, tuning, bandwidth) ADD, CHECK, DEL through the cnitool applet; VERSION;
# 3. samples the same bridge runs, untraced, with `perf record` (valgrind cannot run every path:
#    its /proc/self/exe is its own, and it has no fsopen);
# 4. examples/hot_text.rs turns the executed addresses into the script.
# Needs: valgrind, linux-perf, iproute2 (root). Usage: scripts/hot-text.sh [PODS] (default 150)
set -eu
cd "$(dirname "$0")/.."
PODS=${1:-150}
OUT=scripts/hot-text.ld
make -s build HOT_TEXT= CARGO_TARGET_DIR="$PWD/target/hot-text" CARGO_PROFILE_RELEASE_STRIP=false >/dev/null
BIN=$PWD/target/hot-text/x86_64-unknown-linux-musl/release/cni-multi
cargo build -q --release --example hot_text
ID=ht$$
HOST=$ID-h
TMP=$(mktemp -d)
cleanup() {
    ip netns del "$HOST" 2>/dev/null || true
    for i in $(seq 0 "$PODS"); do ip netns del "$ID-c$i" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM
mkdir "$TMP/bin" "$TMP/net.d" "$TMP/cache" "$TMP/prof"
cp "$BIN" "$TMP/bin/cni-multi"
for p in bridge host-local portmap firewall tuning bandwidth cnitool; do ln -s cni-multi "$TMP/bin/$p"; done
ip netns add "$HOST"
ip -n "$HOST" link set lo up
for i in $(seq 0 "$PODS"); do ip netns add "$ID-c$i"; done
cat > "$TMP/conf.json" <<JSON
{"cniVersion":"1.0.0","name":"$ID","type":"bridge","bridge":"br$ID","isGateway":true,
 "ipam":{"type":"host-local","dataDir":"$TMP/ipam","ranges":[[{"subnet":"198.18.0.0/16"}]]}}
JSON
cat > "$TMP/net.d/10-chain.conflist" <<JSON
{"cniVersion":"1.0.0","name":"${ID}ch","plugins":[
 {"type":"bridge","bridge":"bc$ID","isGateway":true,"ipMasq":true,
  "ipam":{"type":"host-local","dataDir":"$TMP/ipam2","ranges":[[{"subnet":"198.19.0.0/24"}]]}},
 {"type":"portmap","capabilities":{"portMappings":true}},
 {"type":"firewall"},
 {"type":"tuning","sysctl":{"net.ipv4.conf.eth0.send_redirects":"0"}},
 {"type":"bandwidth","ingressRate":1000000,"ingressBurst":100000,"egressRate":1000000,"egressBurst":100000}]}
JSON
VG="valgrind --tool=callgrind --dump-instr=yes --demangle=no --trace-children=yes -q"
# $1 command, $2 pod, $3 config file, then an optional tracer
plugin() {
    cmd=$1 pod=$2 conf=$3
    shift 3
    ip netns exec "$HOST" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin CNI_COMMAND="$cmd" CNI_CONTAINERID="c$pod" \
        CNI_NETNS="/run/netns/$ID-c$pod" CNI_IFNAME=eth0 CNI_PATH="$TMP/bin" "$@" "$TMP/bin/bridge" < "$conf"
}
plugin ADD 0 "$TMP/conf.json" > /dev/null # makes the bridge
plugin ADD 1 "$TMP/conf.json" $VG --callgrind-out-file="$TMP/prof/1-add.%p" > "$TMP/result.json"
printf '{"cniVersion":"1.0.0","name":"%s","type":"bridge","bridge":"br%s","isGateway":true,"ipam":{"type":"host-local","dataDir":"%s/ipam","ranges":[[{"subnet":"198.18.0.0/16"}]]},"prevResult":%s}' \
    "$ID" "$ID" "$TMP" "$(cat "$TMP/result.json")" > "$TMP/check.json"
plugin CHECK 1 "$TMP/check.json" $VG --callgrind-out-file="$TMP/prof/2-check.%p" > /dev/null
plugin DEL 1 "$TMP/conf.json" $VG --callgrind-out-file="$TMP/prof/3-del.%p" > /dev/null
for c in add check del; do
    ip netns exec "$HOST" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin NETCONFPATH="$TMP/net.d" CNI_PATH="$TMP/bin" \
        CNI_CACHE_DIR="$TMP/cache" CAP_ARGS='{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}' \
        $VG --callgrind-out-file="$TMP/prof/4-chain-$c.%p" "$TMP/bin/cnitool" "$c" "${ID}ch" "/run/netns/$ID-c$PODS" > /dev/null
done
echo '{"cniVersion":"1.0.0"}' | CNI_COMMAND=VERSION $VG --callgrind-out-file="$TMP/prof/5-version.%p" "$TMP/bin/bridge" > /dev/null
# untraced runs, sampled: every pod's ADD, then its DEL
cat > "$TMP/loop.sh" <<EOF
for i in \$(seq 2 $((PODS - 1))); do
    env -i CNI_COMMAND=ADD CNI_CONTAINERID=c\$i CNI_NETNS=/run/netns/$ID-c\$i CNI_IFNAME=eth0 CNI_PATH=$TMP/bin $TMP/bin/bridge < $TMP/conf.json > /dev/null
done
for i in \$(seq 2 $((PODS - 1))); do
    env -i CNI_COMMAND=DEL CNI_CONTAINERID=c\$i CNI_NETNS=/run/netns/$ID-c\$i CNI_IFNAME=eth0 CNI_PATH=$TMP/bin $TMP/bin/bridge < $TMP/conf.json > /dev/null
done
EOF
ip netns exec "$HOST" perf record -q -F 20000 -e cpu-clock -o "$TMP/perf.data" -- sh "$TMP/loop.sh" 2>/dev/null
perf script -i "$TMP/perf.data" -F ip,dso 2>/dev/null | awk -v bin="$TMP/bin/cni-multi" 'index($0, "(" bin ")") {print $1}' > "$TMP/prof/0-sampled.ips"
# the samples of the untraced runs first (the order of the text), then callgrind's files in the order above
./target/release/examples/hot_text "$BIN" "$OUT" $(ls "$TMP"/prof/* | sort -V)
# cargo does not see a changed linker script: relink on the next build
touch src/main.rs
