#!/bin/bash
# Install what the build, the demo and the tests need on a Debian 12 machine (root): the apt
# packages that are missing and the musl target. Idempotent and quick when everything is there;
# `make test`, `make demo` and .ci/run call it.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

if [ "$(id -u)" != 0 ]; then
    echo "deps: must run as root (apt-get, and the tests create network namespaces)" >&2
    exit 1
fi

packages=(
    # kernel tools the tests and the demo drive, and the reference plugins (the oracle in /usr/lib/cni)
    iproute2 iputils-ping nftables iptables containernetworking-plugins
    # the C toolchain cargo links build scripts, proc-macros and the gnu test binaries with (gcc
    # only recommends libc6-dev, and apt runs here without recommends), the static musl build,
    # test helpers
    gcc libc6-dev musl-tools jq yq file strace make git ca-certificates
    # dhcp tests (dnsmasq as the server, systemd-socket-activate), VM tests for kernel features this host lacks
    # (on a machine with backports' qemu-utils 10.x, apt replaces it: Debian 12's qemu-system-x86 needs 7.2)
    dnsmasq-base qemu-system-x86 busybox-static systemd
    # firewalld backend tests: a private dbus-daemon and a real firewalld inside a test netns (never
    # started as a service: the tests run it with --nofork on their own bus and config dirs)
    dbus dbus-daemon firewalld
    # dhcp tests: ISC dhclient -6 proves the DHCPv6 server side (busybox udhcpc does DHCPv4)
    isc-dhcp-client
    # real-client tests (tests/clients.rs, docs/guides/clients.md): a cnitool built offline
    # from Debian's libcni sources, Podman 4.3 on its CNI backend with runc (crun refuses this host's
    # hybrid cgroups), a private containerd + ctr
    golang-go golang-github-appc-cni-dev podman runc crun containerd
)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    for attempt in 1 2 3; do
        apt-get update -qq && break
        echo "deps: apt-get update failed (attempt $attempt)" >&2
        sleep $((attempt * 5))
    done
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl || rustup target add x86_64-unknown-linux-musl
