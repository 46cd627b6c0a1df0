#!/usr/bin/env bash
# Run the tests that need kernel features this machine's kernel may lack (ipvlan, 8021q vlan,
# dummy, vrf: tests/iface_vm.rs) inside a VM booting Debian's stock kernel.
#
# The integration test binary is built here on the host; only its VM tests run in the VM,
# with CI=true so that a missing kernel feature fails instead of skipping.
#
#   scripts/test-vm.sh [extra test-binary args]      (needs root, like the VM runner)
#
# Environment: CNI_VM_RUNNER overrides the runner (default: ../shared/vm/run-in-vm.sh next to
# the repository); CNI_VM_TEST_FILTER (default iface_vm) picks the tests; CNI_VM_TIMEOUT (default 600 s) and the runner's other CNI_VM_* settings apply.
set -euo pipefail

top=$(git rev-parse --show-toplevel)
runner=${CNI_VM_RUNNER:-$top/../shared/vm/run-in-vm.sh}
[ -x "$runner" ] || { echo "test-vm: VM runner not found at $runner" >&2; exit 2; }
cd "$top"

# Build (no run) the one integration test binary and the cni-multi binary it execs.
build_log=$(cargo test --locked --test tests --no-run 2>&1) || { printf '%s\n' "$build_log" >&2; exit 1; }
bin=$(printf '%s\n' "$build_log" | sed -n 's/.*Executable tests\/tests\.rs (\(.*\))$/\1/p' | tail -n 1)
[ -n "$bin" ] && [ -x "$bin" ] || { printf '%s\n' "$build_log" >&2; echo "test-vm: test binary not found" >&2; exit 1; }
case $bin in /*) ;; *) bin=$top/$bin ;; esac

export CNI_VM_TIMEOUT=${CNI_VM_TIMEOUT:-600}
echo "test-vm: running iface_vm tests from $bin in the VM" >&2
exec "$runner" "$top" env CI=true RUST_BACKTRACE=1 "$bin" "${CNI_VM_TEST_FILTER:-iface_vm}" --test-threads=2 "$@"
