# clusterd - plain GNU make, out of tree into build/.
#
#   make                  build everything (build/bin, build/lib)
#   make check            build and run every test; ends "N passed, M failed"
#   make SANITIZE=address,undefined check    the same under sanitizers
#   make WERROR=1         warnings are errors (CI)
#   make fuzz FUZZ_SECONDS=N                 run every libFuzzer target
#   make bench-store      store benchmark (figures against fdatasync)
#   make bench            bench-store, then clusterd against etcd 3.4
#   make format | format-check | lint
#   make deps             install every Debian package used (root)
#   make demo             the narrated tour
#   make lab-checker      the fault lab's checker (Go; build/lab-checker)
#   make checker-test     its unit tests (go test)
#   V=1                   show the commands

SHELL := /bin/bash
# CI (which sets CI=true) builds with warnings as errors.
ifeq ($(CI),true)
WERROR ?= 1
endif
CC ?= cc
ifeq ($(origin CC),default)
CC := gcc
endif

ifneq ($(SANITIZE),)
BUILD ?= build/san
SANFLAGS := -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
else
BUILD ?= build
SANFLAGS :=
endif

Q := $(if $(V),,@)
say = $(if $(V),,@printf '  %-7s %s\n' $(1) $(2);)

PKGS := lmdb libprotobuf-c libuv raft cmocka zlib libcrypto libsystemd libmicrohttpd libmnl
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
        -Wpointer-arith -Wwrite-strings -Wformat=2 -Wundef -Wvla \
        -Wcast-qual -Wnull-dereference -Wimplicit-fallthrough
CFLAGS ?= -O2 -g
ALL_CFLAGS := -std=gnu11 $(WARN) $(if $(filter 1,$(WERROR)),-Werror) \
              -D_GNU_SOURCE -I. -I$(BUILD)/gen $(PKG_CFLAGS) $(SANFLAGS) \
              -fPIC $(CFLAGS)
ALL_LDFLAGS := $(SANFLAGS) $(LDFLAGS)
LIBS := $(PKG_LIBS) -luv -lpthread

GEN := $(BUILD)/gen
OBJ := $(BUILD)/obj
BIN := $(BUILD)/bin
LIBDIR := $(BUILD)/lib
TESTBIN := $(BUILD)/tests

PROTOS := $(wildcard proto/*.proto)
PB_C := $(patsubst proto/%.proto,$(GEN)/%.pb-c.c,$(PROTOS))
PB_H := $(PB_C:.c=.h)

LIB_SRC := $(wildcard lib/*.c)
STORE_SRC := $(wildcard storage/*.c)
PROTO_SRC := $(wildcard proto/*.c)

CORE_OBJ := $(patsubst %.c,$(OBJ)/%.o,$(LIB_SRC) $(STORE_SRC) $(PROTO_SRC)) \
            $(patsubst $(GEN)/%.c,$(OBJ)/gen/%.o,$(PB_C))
CLIENT_OBJ := $(patsubst %.c,$(OBJ)/%.o,$(LIB_SRC) $(STORE_SRC))
# cluster/: every file but the programs' mains is library code.
CLUSTER_MAINS := cluster/main.c cluster/clusterctl.c cluster/store_tool.c
CLUSTER_SRC := $(filter-out $(CLUSTER_MAINS),$(wildcard cluster/*.c))
CLUSTER_OBJ := $(patsubst %.c,$(OBJ)/%.o,$(CLUSTER_SRC))
# agents/: the child side; every file but the child's main is library code.
AGENT_MAINS := agents/child_main.c
AGENT_SRC := $(filter-out $(AGENT_MAINS),$(wildcard agents/*.c))
AGENT_OBJ := $(patsubst %.c,$(OBJ)/%.o,$(AGENT_SRC))
CORE_LIBS := $(LIBDIR)/libcdagent.a $(LIBDIR)/libcdcluster.a $(LIBDIR)/libcdcore.a

UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(patsubst tests/unit/%.c,$(TESTBIN)/%,$(UNIT_SRC))
UNIT_SCRIPTS := $(wildcard tests/unit/test_*.sh)
INTEG_SRC := $(wildcard tests/integration/test_*.c)
INTEG_BIN := $(patsubst tests/integration/%.c,$(TESTBIN)/%,$(INTEG_SRC))
# Shell integration tests (the VIP's, in network namespaces: root only).
INTEG_SCRIPTS := $(wildcard tests/integration/test_*.sh)
TOOL_SRC := $(wildcard tests/tools/*.c)
TOOL_BIN := $(patsubst tests/tools/%.c,$(TESTBIN)/%,$(TOOL_SRC))
BENCH_SRC := $(wildcard tests/bench/*.c)
BENCH_BIN := $(patsubst tests/bench/%.c,$(BIN)/%,$(BENCH_SRC))

.PHONY: all check unit deps ensure-deps fuzz bench bench-store format \
        format-check lint demo clean raft-version
.DEFAULT_GOAL := all

PROGRAMS := $(BIN)/clusterd $(BIN)/clusterd-store $(BIN)/clusterd-read \
            $(BIN)/clusterctl $(if $(wildcard agents/child_main.c),$(BIN)/clusterd-child)

all: raft-version $(LIBDIR)/libcdcore.a $(LIBDIR)/libclusterd.a \
     $(LIBDIR)/libclusterd.so $(PROGRAMS) $(UNIT_BIN) $(INTEG_BIN) \
     $(TOOL_BIN) $(TESTBIN)/liblostwrites.so $(BENCH_BIN)

# Fail early and clearly when Debian's own libraft 0.15 is what would link.
raft-version: $(BUILD)/raft-version.ok
$(BUILD)/raft-version.ok: cluster/raft_version.h
	$(Q)mkdir -p $(@D)
	$(Q)printf '#include "cluster/raft_version.h"\nint main(void){return 0;}\n' \
	  | $(CC) -x c -I. $(PKG_CFLAGS) - -o $(BUILD)/raft-version.bin $(PKG_LIBS) \
	  || { echo "error: libraft >= 0.22.1 is required (run 'make deps')" >&2; exit 1; }
	$(Q)touch $@

$(GEN)/%.pb-c.c $(GEN)/%.pb-c.h: proto/%.proto
	$(call say,PROTOC,$<)
	$(Q)mkdir -p $(GEN)
	$(Q)protoc-c --proto_path=proto --c_out=$(GEN) $<

# Generated code is third-party style: compile it without our strictest flags.
$(OBJ)/gen/%.o: $(GEN)/%.c $(PB_H)
	$(call say,CC,$<)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) -std=gnu11 -I$(GEN) $(PKG_CFLAGS) $(SANFLAGS) -fPIC $(CFLAGS) -w -c $< -o $@

$(OBJ)/%.o: %.c $(PB_H)
	$(call say,CC,$<)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

$(LIBDIR)/libcdcore.a: $(CORE_OBJ)
	$(call say,AR,$@)
	$(Q)mkdir -p $(@D)
	$(Q)rm -f $@ && ar rcs $@ $^

$(LIBDIR)/libcdcluster.a: $(CLUSTER_OBJ)
	$(call say,AR,$@)
	$(Q)mkdir -p $(@D)
	$(Q)rm -f $@ && ar rcs $@ $^

$(LIBDIR)/libcdagent.a: $(AGENT_OBJ)
	$(call say,AR,$@)
	$(Q)mkdir -p $(@D)
	$(Q)rm -f $@ && ar rcs $@ $(AGENT_OBJ)

# libclusterd: the read-only client library for programs on a node.
$(LIBDIR)/libclusterd.a: $(CLIENT_OBJ)
	$(call say,AR,$@)
	$(Q)mkdir -p $(@D)
	$(Q)rm -f $@ && ar rcs $@ $^
$(LIBDIR)/libclusterd.so: $(CLIENT_OBJ)
	$(call say,LD,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) -shared -Wl,-soname,libclusterd.so.1 \
	  -Wl,--version-script=storage/libclusterd.map $(ALL_LDFLAGS) \
	  $^ -o $@ $$(pkg-config --libs lmdb zlib) -lpthread

$(BIN)/clusterd-store: cluster/store_tool.c $(CORE_LIBS)
	$(call say,CCLD,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) -MMD -MP $< -o $@ $(ALL_LDFLAGS) $(CORE_LIBS) $(LIBS)

$(BIN)/clusterd: cluster/main.c $(CORE_LIBS)
	$(call say,CCLD,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) -MMD -MP $< -o $@ $(ALL_LDFLAGS) $(CORE_LIBS) $(LIBS)

$(BIN)/clusterd-child: agents/child_main.c $(CORE_LIBS)
	$(call say,CCLD,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) -MMD -MP $< -o $@ $(ALL_LDFLAGS) $(CORE_LIBS) $(LIBS)

$(BIN)/clusterctl: cluster/clusterctl.c $(CORE_LIBS)
	$(call say,CCLD,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) -MMD -MP $< -o $@ $(ALL_LDFLAGS) $(CORE_LIBS) $(LIBS)

# The example reader uses only the public header and the shared library.
$(BIN)/clusterd-read: storage/examples/clusterd_read.c $(LIBDIR)/libclusterd.so
	$(call say,CCLD,$@)
	$(Q)mkdir -p $(@D)
	$(Q)ln -sf libclusterd.so $(LIBDIR)/libclusterd.so.1
	$(Q)$(CC) $(ALL_CFLAGS) -Istorage $< -o $@ $(ALL_LDFLAGS) -L$(LIBDIR) \
	  -Wl,-rpath,'$$ORIGIN/../lib' -lclusterd

$(TESTBIN)/%: tests/unit/%.c $(CORE_LIBS)
	$(call say,CCLD,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) -MMD -MP $< -o $@ $(ALL_LDFLAGS) $(CORE_LIBS) $(LIBS)

# Integration tests start real clusterd processes: they need the binary.
$(TESTBIN)/test_%: tests/integration/test_%.c tests/integration/harness.c \
                   tests/integration/harness.h $(CORE_LIBS) $(PROGRAMS)
	$(call say,CCLD,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) -MMD -MP $< tests/integration/harness.c -o $@ \
	  $(ALL_LDFLAGS) $(CORE_LIBS) $(LIBS)

$(TESTBIN)/%: tests/tools/%.c $(CORE_LIBS)
	$(call say,CCLD,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) -MMD -MP $< -o $@ $(ALL_LDFLAGS) $(CORE_LIBS) $(LIBS)

# The power-loss shim: the source of the lostwrites command, built as an
# object for LD_PRELOAD (never with sanitizers: it loads into any program).
$(TESTBIN)/liblostwrites.so: tests/tools/lostwrites.c
	$(call say,LD,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) -std=gnu11 $(WARN) $(if $(filter 1,$(WERROR)),-Werror) -D_GNU_SOURCE \
	  -DLW_SHIM -fPIC -shared $(CFLAGS) $< -o $@ -ldl -lpthread

# The NFQUEUE delayer alone links libnetfilter_queue.
$(TESTBIN)/nfq_delay: LIBS += $(shell pkg-config --libs libnetfilter_queue 2>/dev/null)

$(BIN)/%: tests/bench/%.c $(CORE_LIBS)
	$(call say,CCLD,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) -MMD -MP $< -o $@ $(ALL_LDFLAGS) $(CORE_LIBS) $(LIBS)

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

# --- setup -------------------------------------------------------------
deps:
	$(Q)sh deploy/deps.sh

# Quick when everything is installed; installs (as root) what is missing.
ensure-deps:
	$(Q)sh deploy/deps.sh >/dev/null || { [ "$$(id -u)" = 0 ] && sh deploy/deps.sh; }

# --- tests -------------------------------------------------------------
check: ensure-deps
	$(Q)$(MAKE) --no-print-directory all $(if $(wildcard $(GO)),$(BUILD)/lab-checker)
	$(Q)BUILD=$(BUILD) bash tests/run-tests.sh $(UNIT_BIN) $(UNIT_SCRIPTS) $(INTEG_BIN) $(INTEG_SCRIPTS)

# --- the fault lab's checker (Go, tests/lab/checker) --------------------
# Porcupine is pinned in its go.mod/go.sum and comes from the Go module
# proxy; -mod=readonly: a build never edits them.  Without Go, make check
# skips the checker's tests (they say so).
GO ?= $(firstword $(shell command -v go 2>/dev/null) /usr/local/go/bin/go)
GO_ENV := GOFLAGS='-mod=readonly -buildvcs=false'
CHECKER_SRC := $(filter-out %_test.go,$(wildcard tests/lab/checker/*.go)) \
               tests/lab/checker/go.mod tests/lab/checker/go.sum
.PHONY: lab-checker checker-test
lab-checker: $(BUILD)/lab-checker
$(BUILD)/lab-checker: $(CHECKER_SRC)
	$(call say,GO,$@)
	$(Q)mkdir -p $(@D)
	$(Q)cd tests/lab/checker && $(GO_ENV) $(GO) build -o $(abspath $@) .

checker-test:
	$(Q)cd tests/lab/checker && $(GO_ENV) $(GO) test ./...

# --- fuzzing (clang libFuzzer, ASan + UBSan) ---------------------------
FUZZ_SECONDS ?= 60
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BIN := $(patsubst tests/fuzz/%.c,build/fuzz/%,$(FUZZ_SRC))
FUZZ_FLAGS := -std=gnu11 -g -O1 -D_GNU_SOURCE -I. -Ibuild/fuzz/gen $(PKG_CFLAGS) \
              -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
FUZZ_LIB_SRC := $(LIB_SRC) $(STORE_SRC) $(PROTO_SRC) cluster/client.c cluster/childid.c \
                cluster/config.c cluster/metrics.c cluster/vip.c \
                agents/health.c

build/fuzz/gen/%.pb-c.c build/fuzz/gen/%.pb-c.h: proto/%.proto
	$(Q)mkdir -p build/fuzz/gen
	$(Q)protoc-c --proto_path=proto --c_out=build/fuzz/gen $<

build/fuzz/%: tests/fuzz/%.c $(FUZZ_LIB_SRC) $(patsubst proto/%.proto,build/fuzz/gen/%.pb-c.c,$(PROTOS))
	$(call say,FUZZ,$@)
	$(Q)mkdir -p $(@D)
	$(Q)clang $(FUZZ_FLAGS) $< $(FUZZ_LIB_SRC) \
	  $(patsubst proto/%.proto,build/fuzz/gen/%.pb-c.c,$(PROTOS)) -o $@ $(PKG_LIBS)

fuzz: ensure-deps $(FUZZ_BIN)
	$(Q)bash tests/fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_BIN)

# --- benchmarks --------------------------------------------------------
bench-store: ensure-deps
	$(Q)$(MAKE) --no-print-directory $(BIN)/bench_store
	$(Q)$(BIN)/bench_store --dir $(BUILD)/bench-store.d

# bench: the store's, then the cluster's: clusterd against etcd 3.4, side
# by side (tests/bench/bench.sh; about 6 minutes, BENCH_SECONDS=2
# BENCH_ROUNDS=1 BENCH_KILLS=5 BENCH_TRANSFERS=5 for a quick look).
bench: bench-store
	$(Q)$(MAKE) --no-print-directory bench-cluster
	$(Q)$(MAKE) --no-print-directory bench-children
	$(Q)$(MAKE) --no-print-directory bench-failover

.PHONY: bench-cluster
bench-cluster: ensure-deps
	$(Q)$(MAKE) --no-print-directory $(BIN)/clusterd $(BIN)/bench_cluster
	$(Q)BUILD=$(BUILD) bash tests/bench/bench.sh
	$(Q)BUILD=$(BUILD) bash tests/bench/elections.sh

# bench-children: fan-out to 100 and 1,000 simulated children, a child's
# catch-up of 100k changes, cache reads against etcd's serializable reads
# (tests/bench/children.sh; about 2 minutes).
.PHONY: bench-children
bench-children: ensure-deps
	$(Q)$(MAKE) --no-print-directory $(BIN)/clusterd $(BIN)/bench_cluster $(BIN)/bench_children
	$(Q)BUILD=$(BUILD) bash tests/bench/children.sh

# bench-failover: requests through the VIP after kill -9 / SIGSTOP of its
# holder, clusterd (default, fast) against keepalived (VRRPv2 advert_int 1,
# VRRPv3 0.1) in network namespaces (tests/lab/bench-failover.sh; root;
# about 8 minutes, FAILOVER_ROUNDS=3 for a quick look).
.PHONY: bench-failover
bench-failover: ensure-deps
	$(Q)$(MAKE) --no-print-directory $(BIN)/clusterd $(BIN)/clusterctl $(TESTBIN)/vip_probe
	$(Q)BUILD=$(BUILD) bash tests/lab/bench-failover.sh

# --- the fault lab (tests/lab, docs/lab.md; root: network namespaces) --
# lab: the standard suite, every scenario under 3 seeds (SEED=N for one,
# LAB_ONLY="a b" for some), at most 10 minutes.  lab-extended: 5 parents,
# more scenarios, a sanitizer build of clusterd, both profiles (about an
# hour).  lab-controls: negative controls the checks must catch.
LAB_TIMEOUT ?= 660
.PHONY: lab lab-extended lab-controls
lab: ensure-deps
	$(Q)$(MAKE) --no-print-directory all lab-checker
	$(Q)BUILD=$(BUILD) timeout -k 30 $(LAB_TIMEOUT) bash tests/lab/suite.sh standard

lab-extended: ensure-deps
	$(Q)$(MAKE) --no-print-directory all lab-checker
	$(Q)$(MAKE) --no-print-directory SANITIZE=address,undefined all
	$(Q)BUILD=$(BUILD) LAB_SAN=build/san timeout -k 30 4800 bash tests/lab/suite.sh extended

lab-controls: ensure-deps
	$(Q)$(MAKE) --no-print-directory all lab-checker
	$(Q)BUILD=$(BUILD) timeout -k 30 900 bash tests/lab/suite.sh controls

# --- style -------------------------------------------------------------
STYLE_SRC = $(shell git ls-files '*.c' '*.h' 2>/dev/null || find lib storage proto cluster agents tests -name '*.[ch]')

format:
	$(Q)clang-format -i $(STYLE_SRC)

format-check:
	$(Q)clang-format --dry-run --Werror $(STYLE_SRC) && echo "format-check: clean"

lint: $(PB_H)
	$(Q)clang-tidy --quiet $(filter %.c,$(STYLE_SRC)) -- -std=gnu11 -D_GNU_SOURCE -I. -Istorage -I$(GEN) $(PKG_CFLAGS) 2>&1 \
	  | { grep -v -E '^[0-9]+ warnings? generated|^Suppressed|^Use -header-filter' || true; } | tee $(BUILD)/clang-tidy.log
	$(Q)! grep -q -E 'warning:|error:' $(BUILD)/clang-tidy.log
	$(Q)cppcheck --quiet --error-exitcode=1 --std=c11 --enable=warning,performance,portability \
	  --inline-suppr --suppress=missingIncludeSystem \
	  --suppress=preprocessorErrorDirective:cluster/raft_version.h \
	  -I. -D__GNUC__ lib storage proto cluster agents tests
	@echo "lint: clean"

demo: ensure-deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)bash tests/demo.sh $(BUILD)

# --- containers (deploy/container, deploy/compose) ----------------------
# image: the Debian bookworm base under the tag the Dockerfile names
# (debootstrap + docker import, skipped when the tag exists: no registry
# is needed), then the clusterd image.  compose-test: 3 parents, 2
# children and the VIP on a bridge network, a failover, then teardown.
# The classic builder keeps the build stage as an untagged image (the
# cache of the next build); 'docker image prune --filter
# label=org.clusterd.stage=build' removes it.
IMAGE ?= clusterd:latest
BASE_IMAGE ?= debian:bookworm
.PHONY: image compose-test
image: ensure-deps
	$(Q)sh deploy/container/base.sh $(BASE_IMAGE)
	$(Q)docker build -q -f deploy/container/Dockerfile --build-arg BASE=$(BASE_IMAGE) \
	  -t $(IMAGE) . >/dev/null && echo "image: $(IMAGE) built"

compose-test: image
	$(Q)IMAGE=$(IMAGE) bash tests/compose/test.sh

clean:
	rm -rf build
