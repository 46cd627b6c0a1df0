# cni-multi: one static multicall binary for every standard CNI plugin.
#
#   make / make build   the static release binary for x86_64-unknown-linux-musl
#   make test           build + every test (unit + integration; needs root: tests make network namespaces)
#   make test-clients   Podman 4.3 (CNI backend) and containerd's `ctr run --cni` over our plugins (root;
#                       the cnitool differential is part of `make test`); docs/guides/clients.md
#   make lint           rustfmt --check + clippy -D warnings on the gnu AND musl targets
#   make demo           two containers wired by the installed applets in throwaway namespaces (root)
#   make bench          ADD/DEL per pod at 10/100/1000 pods, cni-multi vs /usr/lib/cni (root)
#   make hot-text       regenerate scripts/hot-text.ld from profiles (root; valgrind, linux-perf)
#   make install        install.sh --dir $(INSTALL_DIR)  (FORCE=1 to replace foreign files)
#   make dist           reproducible release tarballs + .sha256/.sha512 in dist/
#   make dist-check     build the release twice in two clones and compare the bytes (slow, not in `make test`)
#
# Everything the machine needs is installed by .ci/run (Debian 12, as root).

SHELL        := /bin/bash
.SHELLFLAGS  := -eu -o pipefail -c
.DEFAULT_GOAL := build

CARGO        ?= cargo
TARGET       := x86_64-unknown-linux-musl
# cargo's output directory: CARGO_TARGET_DIR when set (absolute, or relative to this directory), else target/
TARGET_DIR   := $(abspath $(or $(CARGO_TARGET_DIR),target))
# so that cargo builds where we look, also for `make CARGO_TARGET_DIR=...`
export CARGO_TARGET_DIR := $(TARGET_DIR)
BIN          := $(TARGET_DIR)/$(TARGET)/release/cni-multi
VERSION      := $(shell sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n1)
# the time of the last commit, so the same commit gives the same bytes (0 outside git)
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
export SOURCE_DATE_EPOCH

# no build-machine paths in the binary: the source tree, cargo's registry and the toolchain
CARGO_HOME_DIR := $(or $(CARGO_HOME),$(HOME)/.cargo)
RUSTUP_HOME_DIR := $(or $(RUSTUP_HOME),$(HOME)/.rustup)
REMAP := --remap-path-prefix=$(CURDIR)=/build/cni-multi \
         --remap-path-prefix=$(CARGO_HOME_DIR)=/cargo \
         --remap-path-prefix=$(RUSTUP_HOME_DIR)=/rustup
# A static executable at a fixed address (not static-pie), as the reference plugins are built:
# nothing to relocate at start. A static-pie start-up relocated ~4,000 pointers, which copied
# every page of .data.rel.ro (18 copy-on-write faults) and cost ~75 us of each plugin run (a
# bridge ADD is ~1 ms). The stack, heap and mmap areas are still randomized.
STATIC := -C relocation-model=static
# Symbols mangled as v0, whose names carry no per-build hash but the crates' (HOT_TEXT names
# functions by them).
MANGLE := -C symbol-mangling-version=v0
# The functions a plugin run executes, first in the text and together (scripts/hot-text.ld,
# made by scripts/hot-text.sh): a bridge ADD faults in 7-9 of the text's 64 KiB windows, not 24
# (docs/bench.md, "The exec"). x86_64 only, for GNU ld (bfd) through cc (gold cannot read
# INSERT: link with HOT_TEXT= there); empty: the linker's own order. Cargo does not see the
# script change: scripts/hot-text.sh touches src/main.rs (do the same after pulling a new one).
HOT_TEXT ?= $(CURDIR)/scripts/hot-text.ld
comma := ,
HOT_LINK := $(if $(HOT_TEXT),-C link-arg=-Wl$(comma)-T$(comma)$(HOT_TEXT))
export CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUSTFLAGS := $(REMAP) $(STATIC) $(MANGLE) $(HOT_LINK)
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_RUSTFLAGS := $(REMAP) $(STATIC) $(MANGLE)
# rust-lld links static musl for aarch64 without a cross gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER ?= rust-lld

INSTALL_DIR  ?= /opt/cni/bin
FORCE        ?=
BENCH_PODS   ?= 10,100,1000
BENCH_ARGS   ?=
# architectures in `make dist` (their Rust targets are added with rustup when missing)
DIST_ARCHES  ?= amd64 arm64
# more targets `make test` runs after the cargo tests (the VM tests by default)
TEST_EXTRA   ?= test-vm

.PHONY: hot-text deps build test test-cargo test-vm test-clients lint fmt demo bench install dist dist-check clean

build:
	$(CARGO) build --locked --release --target $(TARGET)
	@file -L $(BIN) | grep -q 'static' || { file -L $(BIN); echo "error: $(BIN) is not statically linked" >&2; exit 1; }
	@echo "$(BIN): $$(stat -c %s $(BIN)) bytes"

test: deps build test-cargo $(TEST_EXTRA)

# scripts/hot-text.ld: the functions a plugin run executes, first in the text (docs/bench.md)
hot-text:
	scripts/hot-text.sh

# apt packages and the musl target, installed when missing (root; a no-op when all is there)
deps:
	bash scripts/deps.sh

# unit tests (src/) and the one integration binary (tests/tests.rs); kernel tests make their own namespaces
test-cargo:
	@if [ "$$(id -u)" != 0 ]; then echo "warning: not root: namespace tests will fail" >&2; fi
	CNI_MULTI_RELEASE_BIN=$(BIN) $(CARGO) test --locked -- --skip iface_vm::

# ipvlan, 8021q vlan, dummy and vrf tests: this machine's kernel lacks them, so they run in a VM
# booting Debian's stock kernel (../shared/vm/run-in-vm.sh); the test binary is built here.
# 1200 s: without KVM the VM emulates its CPU, and the kernel-gated differential cases run there too
test-vm:
	CNI_VM_TIMEOUT=$${CNI_VM_TIMEOUT:-1200} scripts/test-vm.sh

# tests that wait for real DHCP timers (dnsmasq's shortest lease is 2 min, so T1 is 60 s): #[ignore]d,
# so `make test` skips them; about 70 s each, run in parallel (tests/dhcp.rs `slow_*`)
.PHONY: test-slow
test-slow: deps
	$(CARGO) test --locked --test tests -- --ignored dhcp::slow_

# real clients from Debian (tests/clients.rs, marked #[ignore] so `make test` does not run them):
# Podman and containerd in a private mount namespace inside a test netns; cnitool is in `make test`
test-clients: deps
	$(CARGO) test --locked --test tests -- --ignored clients::

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings
	$(CARGO) clippy --locked --all-targets --target $(TARGET) -- -D warnings

fmt:
	$(CARGO) fmt --all

demo: deps build
	scripts/demo.sh $(BIN)

bench: build
	$(CARGO) run --locked --example bench -- --ours $(BIN) --reference /usr/lib/cni --pods $(BENCH_PODS) $(BENCH_ARGS)

install: build
	./install.sh --src $(BIN) --dir $(INSTALL_DIR) $(if $(FORCE),--force)

# ---- release artifacts: dist/cni-multi-linux-<arch>-v<version>.tgz + .sha256 + .sha512
dist: build
	@rm -rf dist && mkdir -p dist
	@set -- $(DIST_ARCHES); for arch in "$$@"; do \
	  case $$arch in \
	    amd64) triple=x86_64-unknown-linux-musl ;; \
	    arm64) triple=aarch64-unknown-linux-musl ;; \
	    *) echo "unknown arch $$arch" >&2; exit 1 ;; \
	  esac; \
	  if ! rustup target list --installed 2>/dev/null | grep -qx $$triple; then \
	    echo "make dist: installing the Rust target $$triple (rustup target add)" >&2; \
	    rustup target add $$triple; \
	  fi; \
	  [ $$arch = amd64 ] || $(CARGO) build --locked --release --target $$triple; \
	  scripts/dist.sh $(TARGET_DIR)/$$triple/release/cni-multi $$arch v$(VERSION) dist "$$($(BIN) --list 2>/dev/null | sed 's/[[:space:]].*//' || true)"; \
	done
	@ls -l dist

# two clean clones of HEAD at different paths, built one after the other: same bytes or fail
dist-check:
	scripts/dist-check.sh

clean:
	$(CARGO) clean
	rm -rf dist

# ---- docs: regenerate docs/plugins.md from the plugins' DOC consts (a test fails when it is stale)
.PHONY: docs
docs:
	UPDATE_DOCS=1 $(CARGO) test --locked --lib docs::tests::plugins_md_is_up_to_date

# ---- hardening (docs/hardening.md): fuzzing and the long stress/fault runs, not part of `make test`
FUZZ_TARGETS ?= config result cni_args store netlink nftables re2
FUZZ_SECONDS ?= 600
STRESS_N     ?= 200

.PHONY: fuzz stress

# each cargo-fuzz target in turn for FUZZ_SECONDS (nightly + cargo-fuzz); new inputs go to
# fuzz/corpus/<target>, crashes to fuzz/artifacts/<target>; seeds are testdata/fuzz/<target>
fuzz:
	cd fuzz && for t in $(FUZZ_TARGETS); do \
	  mkdir -p corpus/$$t && \
	  $(CARGO) +nightly fuzz run -O $$t corpus/$$t ../testdata/fuzz/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 -max_len=65536 || exit 1; \
	done

# concurrency stress at STRESS_N containers and fault injection at every crash point (root)
stress:
	CNI_MULTI_STRESS_N=$(STRESS_N) CNI_MULTI_FAULT_STRIDE=1 $(CARGO) test --locked --test tests -- stress:: faults::
