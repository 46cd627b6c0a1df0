#!/bin/bash
# demo.sh [BINARY | --plugins DIR]   (as root)
#
# Two containers on one bridge, wired by cni-multi's applets, in a world of throwaway network
# namespaces: a "host" namespace (the plugins run inside it, the bridge lives there) and two
# container namespaces. The machine's own namespace is never touched. The binary is installed
# with install.sh into a temp dir, and the plugins are run through those symlinks, as a runtime
# would. Shows each result, pings across, deletes, and proves nothing is left (links, leases).
# `--plugins DIR` runs another plugin directory instead (e.g. /usr/lib/cni, the reference).
set -euo pipefail

root=$(cd -- "$(dirname -- "$0")/.." && pwd)
bin=$root/target/x86_64-unknown-linux-musl/release/cni-multi
plugins=
case "${1:-}" in
--plugins) plugins=${2:?--plugins needs a directory} ;;
"") ;;
*) bin=$1 ;;
esac
[ "$(id -u)" = 0 ] || { echo "demo.sh: run as root (it creates network namespaces)" >&2; exit 1; }

tag=$$
host=cnidemo-host-$tag
ctrs=(cnidemo-a-$tag cnidemo-b-$tag)
bridge=cnidemo0
work=$(mktemp -d /tmp/cni-multi-demo.XXXXXX)

cleanup() {
    local rc=$?
    for ns in "${ctrs[@]}" "$host"; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$work"
    [ $rc = 0 ] || echo "demo.sh: FAILED (exit $rc); namespaces and temp files removed" >&2
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
inhost() { ip netns exec "$host" "$@"; }

step "world: host netns $host, containers ${ctrs[*]}"
ip netns add "$host"
inhost ip link set lo up
for c in "${ctrs[@]}"; do ip netns add "$c"; done

if [ -z "$plugins" ]; then
    step "install $bin into $work/bin (install.sh)"
    "$root/install.sh" --src "$bin" --dir "$work/bin"
    plugins=$work/bin
    ls -l "$plugins" | sed 's/^/  /'
fi

conf=$work/demo.conf
cat >"$conf" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "demo-net",
  "type": "bridge",
  "bridge": "$bridge",
  "isGateway": true,
  "ipam": {
    "type": "host-local",
    "ranges": [[{ "subnet": "198.18.0.0/24" }]],
    "dataDir": "$work/ipam"
  }
}
JSON
step "network config (bridge + host-local)"
cat "$conf"

cni() { # VERB CONTAINER-NS
    inhost env CNI_COMMAND="$1" CNI_CONTAINERID="demo-$2" CNI_NETNS="/run/netns/$2" CNI_IFNAME=eth0 \
        CNI_PATH="$plugins" "$plugins/bridge" <"$conf"
}

declare -A ip
gw=
for c in "${ctrs[@]}"; do
    step "ADD $c"
    out=$(cni ADD "$c") || { echo "$out"; echo "ADD failed" >&2; exit 1; }
    echo "$out" | jq .
    ip[$c]=$(echo "$out" | jq -r '.ips[0].address | split("/")[0]')
    [ -n "${ip[$c]}" ] && [ "${ip[$c]}" != null ] || { echo "no address in the result" >&2; exit 1; }
    gw=$(echo "$out" | jq -r '.ips[0].gateway')
    ip -n "$c" -brief addr show dev eth0
done

step "bridge $bridge in the host netns"
ip -n "$host" -brief addr show dev "$bridge"
ip -n "$host" -brief link show master "$bridge"

a=${ctrs[0]} b=${ctrs[1]}
step "ping ${ip[$b]} from $a, ${ip[$a]} from $b, and the gateway"
ip netns exec "$a" ping -c 2 -i 0.2 -W 2 "${ip[$b]}"
ip netns exec "$b" ping -c 2 -i 0.2 -W 2 "${ip[$a]}"
ip netns exec "$a" ping -c 1 -W 2 "$gw"

for c in "${ctrs[@]}"; do
    step "DEL $c"
    cni DEL "$c"
    echo "ok"
done
step "DEL again (must succeed: DEL is idempotent)"
cni DEL "$a" && echo ok

step "nothing left"
left=0
veths=$(ip -n "$host" -o link show type veth)
if [ -n "$veths" ]; then echo "veths left in the host netns:"; echo "$veths"; left=1; else echo "host netns: no veth"; fi
for c in "${ctrs[@]}"; do
    if ip -n "$c" link show dev eth0 >/dev/null 2>&1; then echo "$c still has eth0"; left=1; else echo "$c: no eth0"; fi
done
leases=$(find "$work/ipam" -type f ! -name lock ! -name 'last_reserved_ip.*' ! -name .cni-multi-index 2>/dev/null | sort)
if [ -n "$leases" ]; then echo "leases left:"; echo "$leases"; left=1; else echo "host-local store: no lease (only lock, last_reserved_ip and the private index)"; fi
echo "bridge $bridge stays in the host netns (as with the reference plugin); the world is removed on exit"
[ $left = 0 ] || exit 1

step "demo OK"
