#!/bin/sh
# Syscalls and netlink round trips of one bridge + host-local ADD, in a throwaway world of network
# namespaces (a "host" netns and a container netns, both removed on exit).
# Usage: scripts/netlink-syscalls.sh [BINARY]   (default: the static release binary)
set -eu
BIN=${1:-target/x86_64-unknown-linux-musl/release/cni-multi}
BIN=$(readlink -f "$BIN")
ID=nlsc$$
HOST=$ID-h CONT=$ID-c
TMP=$(mktemp -d)
cleanup() { ip netns del "$HOST" 2>/dev/null || true; ip netns del "$CONT" 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT INT TERM PIPE
mkdir "$TMP/bin"
cp "$BIN" "$TMP/bin/cni-multi"
ln -s cni-multi "$TMP/bin/bridge"
ln -s cni-multi "$TMP/bin/host-local"
ip netns add "$HOST"
ip netns add "$CONT"
ip -n "$HOST" link set lo up
cat > "$TMP/conf.json" <<JSON
{"cniVersion":"1.0.0","name":"$ID","type":"bridge","bridge":"br$ID","isGateway":true,
 "ipam":{"type":"host-local","dataDir":"$TMP/ipam","ranges":[[{"subnet":"198.18.40.0/24"}]]}}
JSON
add() { # $1: container id, then the tracer and its options
    cid=$1; shift
    ip netns exec "$HOST" env CNI_COMMAND=ADD CNI_CONTAINERID="$cid" CNI_NETNS="/run/netns/$CONT" \
        CNI_IFNAME="eth$cid" CNI_PATH="$TMP/bin" "$@" "$TMP/bin/bridge" < "$TMP/conf.json" > /dev/null
}
# the first ADD creates the bridge; measure the second (a pod joining an existing bridge)
add 0
add 1 strace -f -c -o "$TMP/count"
add 2 strace -f -e trace=sendto,sendmsg,recvfrom,recvmsg -o "$TMP/net"
total=$(awk '$NF == "total" {print $4}' "$TMP/count")
sends=$(grep -cE '^[0-9]+ +(sendto|sendmsg)\(' "$TMP/net" || true)
recvs=$(grep -cE '^[0-9]+ +(recvfrom|recvmsg)\(' "$TMP/net" || true)
peeks=$(grep -cE 'MSG_PEEK' "$TMP/net" || true)
grep -E '^[0-9]+ +(sendto|sendmsg)\(' "$TMP/net" > "$TMP/sends" || true
dumps=$(grep -cE 'NLM_F_DUMP|0x300' "$TMP/sends" || true)
getlink=$(grep -cE 'RTM_GETLINK|nlmsg_type=0x12 ' "$TMP/sends" || true)
echo "binary:            $BIN"
echo "syscalls (total):  $total"
echo "netlink sends:     $sends   (= round trips)"
echo "netlink receives:  $recvs   (of which MSG_PEEK: $peeks)"
echo "dump requests:     $dumps   (RTM_GETLINK requests: $getlink)"
echo "--- requests, in order (fd type flags) ---"
sed -E 's/^[0-9]+ +send[a-z]+\(([0-9]+), \[\{nlmsg_len=[0-9]+, nlmsg_type=([^,]+), nlmsg_flags=([^,]+),.*/fd\1 \2 \3/' "$TMP/sends" |
    sed -E 's#0x10 /\* NLMSG_\?\?\? \*/#RTM_NEWLINK#; s#0x12 /\* NLMSG_\?\?\? \*/#RTM_GETLINK#;
            s#0x14 /\* NLMSG_\?\?\? \*/#RTM_NEWADDR#; s#0x16 /\* NLMSG_\?\?\? \*/#RTM_GETADDR#;
            s#0x18 /\* NLMSG_\?\?\? \*/#RTM_NEWROUTE#; s#0x1a /\* NLMSG_\?\?\? \*/#RTM_GETROUTE#' |
    awk '{printf "  %2d %s\n", NR, $0}'
echo "--- strace -c (top 12) ---"
sed -n '1,2p' "$TMP/count"; grep -vE '^(%|-)' "$TMP/count" | sort -k4 -n -r | head -12
