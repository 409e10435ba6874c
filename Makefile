# coldbrew — build, test, run.
#
#   make deps              install missing Debian packages (root; otherwise prints the command)
#   make                   build build/bin/{queue-proxy,activator,coldbrew,coffee}
#   make test              unit + scenario tests (ends with "N passed, N failed")
#   make test SANITIZE=1   the same under ASan + UBSan (build/san/)
#   make run               build, run the coffee example on the local platform
#   make bench             benchmark against nginx and HAProxy (bench/RESULTS.md)
#   make coldstart         cold starts on the local platform (bench/RESULTS.md)
#   make pressure          the multi-version pressure test (bench/RESULTS.md, bench/pressure.png)
#   make fuzz              build and briefly run the libFuzzer targets
#   make format            clang-format every C file
#   make install PREFIX=/usr/local
#
# Every target first installs the Debian packages it needs (as root; as
# another user it names the apt-get command in one line and stops), then
# runs make again for the real work (see "two stages" below).

PREFIX   ?= /usr/local
SANITIZE ?=
CC       ?= cc

# ---------------------------------------------------------------- dependencies
# What building needs (the Dockerfiles' build stage installs exactly this set:
# `make deps-build`), what `make run` adds (curl, to ask the example), then
# what testing, benchmarking and fuzzing add.
BUILD_PKGS := gcc make pkg-config libevent-dev node-llhttp libssl-dev libjemalloc-dev \
              libprotobuf-c-dev protobuf-c-compiler libjansson-dev uthash-dev libwslay-dev libyaml-dev \
              libnghttp2-dev
RUN_PKGS   := $(BUILD_PKGS) curl
TEST_PKGS  := libcmocka-dev curl wrk nginx-light haproxy python3 python3-websockets python3-yaml \
              clang libclang-rt-14-dev clang-format procps gnuplot-nox \
              python3-grpcio python3-grpc-tools python3-protobuf python3-h2 nghttp2-client \
              python3-cryptography openssl iproute2
DEB_PKGS   := $(BUILD_PKGS) $(TEST_PKGS)
# kubectl (for the kustomization check) comes from Debian's kubernetes-client
# unless some kubectl is already on PATH.
ifeq ($(shell command -v kubectl 2>/dev/null),)
DEB_PKGS   += kubernetes-client
endif

# ---------------------------------------------------------------- two stages
# Make reads the whole Makefile (every $(wildcard) and $(shell), e.g. the
# llhttp sources under /usr/share/llhttp) before it runs a single recipe, and
# does not read it again. So on a machine without the packages, one make
# cannot both install them and build with them. The first stage (this block)
# therefore only installs what the goals need and then runs make again with
# COLDBREW_STAGE=build; that second make reads the Makefile with everything
# present. Command-line settings (SANITIZE=1, PREFIX=...) and -j reach the
# second make through MAKEFLAGS.
ifneq ($(COLDBREW_STAGE),build)

GOALS := $(or $(MAKECMDGOALS),all)
# The packages one goal needs: the full set for tests, benchmarks, fuzzing and
# formatting, the run set for `make run`, nothing for `clean`, the build set
# for the rest (all, install, build/bin/..., deps-build).
FULL_GOALS := deps test unit scenario fuzz bench coldstart pressure images format format-check
pkgs_for    = $(if $(filter $(FULL_GOALS),$(1)),$(DEB_PKGS),$(if $(filter run,$(1)),$(RUN_PKGS),$(if $(filter clean,$(1)),,$(BUILD_PKGS))))
NEED_PKGS  := $(sort $(foreach g,$(GOALS),$(call pkgs_for,$(g))))
# dpkg-query names the installed ones ("ii"); an unknown name only goes to stderr.
HAVE_PKGS  := $(if $(NEED_PKGS),$(shell dpkg-query -W -f='$${db:Status-Abbrev} $${Package}\n' $(NEED_PKGS) 2>/dev/null | sed -n 's/^ii *//p'))
MISSING    := $(filter-out $(HAVE_PKGS),$(NEED_PKGS))
# What the second stage has left to do (deps and deps-build are done here).
BUILD_GOALS := $(filter-out deps deps-build,$(GOALS))

ifneq ($(MISSING),)
ifneq ($(shell id -u),0)
$(error deps: missing Debian packages; run: sudo apt-get install -y $(MISSING))
endif
endif

.PHONY: $(GOALS) coldbrew-deps coldbrew-build
$(GOALS): coldbrew-build
	@:
coldbrew-build: coldbrew-deps
	$(if $(BUILD_GOALS),@$(MAKE) --no-print-directory COLDBREW_STAGE=build $(BUILD_GOALS))
# Acquire::Retries: a mirror that drops one download must not fail a first run.
coldbrew-deps:
ifneq ($(MISSING),)
	@echo "deps: installing $(MISSING)"
	@apt-get -o Acquire::Retries=3 update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o Acquire::Retries=3 install -y -qq $(MISSING) >/dev/null
	@echo "deps: done"
else
	@$(if $(filter deps deps-build,$(GOALS)),echo "deps: all installed",:)
endif

else
# ---------------------------------------------------------------- second stage: the build

ifeq ($(SANITIZE),1)
BUILD    := build/san
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
OPT      := -O1 -g
MALLOC   :=
else
BUILD    := build
SANFLAGS :=
OPT      := -O2 -g
MALLOC   := -DCOLDBREW_JEMALLOC
MALLOC_LIB := -ljemalloc
endif

LLHTTP_SRC := /usr/share/llhttp
LLHTTP_INC := /usr/share/include/llhttp

CFLAGS  += $(OPT) $(SANFLAGS) -std=gnu11 -Wall -Wextra -Wno-unused-parameter -D_GNU_SOURCE \
           -I$(LLHTTP_INC) -I$(BUILD)/gen -Icommon $(MALLOC)
LDFLAGS += $(SANFLAGS)
LIBS    := -levent_core -ljansson -lprotobuf-c -lnghttp2 $(MALLOC_LIB) -lm
# The activator also speaks WebSocket (wslay, OpenSSL for the handshake's SHA-1) and resolves names (evdns).
AC_LIBS := -levent_extra -lwslay -lssl -lcrypto

COMMON_SRC := $(wildcard common/*/*.c)
# OTLP (common/telemetry/otlp.c): the messages from common/proto/otlp_*.proto.
OTLP_PROTO := otlp_common otlp_trace otlp_metrics
OTLP_OBJ   := $(OTLP_PROTO:%=$(BUILD)/obj/gen/%.pb-c.o)
OTLP_HDR   := $(OTLP_PROTO:%=$(BUILD)/gen/%.pb-c.h)
COMMON_OBJ := $(COMMON_SRC:%.c=$(BUILD)/obj/%.o) $(BUILD)/obj/gen/stat.pb-c.o $(OTLP_OBJ)
LLHTTP_OBJ := $(BUILD)/obj/llhttp/llhttp.o $(BUILD)/obj/llhttp/api.o $(BUILD)/obj/llhttp/http.o
QP_SRC     := $(wildcard queue-proxy/*.c)
# The queue-proxy's gRPC readiness probe speaks h2c (nghttp2) and grpc.health.v1.
QP_OBJ     := $(QP_SRC:%.c=$(BUILD)/obj/%.o) $(BUILD)/obj/gen/health.pb-c.o
# The queue-proxy serves TLS on 8112 (common/transport/transport.c, tls_ctx.c): OpenSSL.
QP_LIBS    := -lssl -lcrypto
# The activator's rooms, without main.o, so unit tests can link them.
AC_SRC     := $(filter-out activator/main.c,$(wildcard activator/*.c))
AC_OBJ     := $(AC_SRC:%.c=$(BUILD)/obj/%.o)
# The KPA autoscaler (a library: the local platform runs it in-process).
AS_SRC     := $(wildcard autoscaler/*.c)
AS_OBJ     := $(AS_SRC:%.c=$(BUILD)/obj/%.o)
# The local platform: the `coldbrew` command.
LOCAL_SRC  := $(wildcard local/*.c)
LOCAL_OBJ  := $(LOCAL_SRC:%.c=$(BUILD)/obj/%.o)
# ...without the command's entry points, so unit tests can link the rest.
LOCAL_LIB_OBJ := $(filter-out $(BUILD)/obj/local/main.o $(BUILD)/obj/local/cli.o,$(LOCAL_OBJ))
UNIT_SRC   := $(wildcard tests/unit/*_test.c)
UNIT_BIN   := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

BINS := $(BUILD)/bin/queue-proxy $(BUILD)/bin/activator $(BUILD)/bin/coffee $(BUILD)/bin/coldbrew

.PHONY: all test unit scenario run bench coldstart pressure images fuzz format format-check install clean
all: $(BINS)

# ---------------------------------------------------------------- build
# A pattern rule with two targets is one protoc-c run for both files (make
# treats a multi-target pattern rule as grouped), so -j never runs it twice.
$(BUILD)/gen/%.pb-c.c $(BUILD)/gen/%.pb-c.h: common/proto/%.proto
	@mkdir -p $(BUILD)/gen
	protoc-c --proto_path=common/proto --c_out=$(BUILD)/gen $<

$(BUILD)/obj/gen/%.pb-c.o: $(BUILD)/gen/%.pb-c.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/obj/llhttp/%.o: $(LLHTTP_SRC)/%.c
	@mkdir -p $(dir $@)
	$(CC) $(OPT) $(SANFLAGS) -I$(LLHTTP_INC) -c $< -o $@

# otlp_trace and otlp_metrics import otlp_common.
$(BUILD)/obj/gen/otlp_trace.pb-c.o $(BUILD)/obj/gen/otlp_metrics.pb-c.o: $(BUILD)/gen/otlp_common.pb-c.h

$(BUILD)/obj/%.o: %.c $(BUILD)/gen/stat.pb-c.h $(BUILD)/gen/health.pb-c.h $(OTLP_HDR)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libcoldbrew.a: $(COMMON_OBJ) $(LLHTTP_OBJ)
	ar rcs $@ $^

$(BUILD)/bin/queue-proxy: $(QP_OBJ) $(BUILD)/libcoldbrew.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $(QP_OBJ) $(BUILD)/libcoldbrew.a $(QP_LIBS) $(LIBS)

$(BUILD)/bin/activator: $(BUILD)/obj/activator/main.o $(BUILD)/libactivator.a $(BUILD)/libcoldbrew.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(AC_LIBS) $(LIBS)

$(BUILD)/bin/coffee: $(BUILD)/obj/examples/coffee/coffee.o
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ -levent

$(BUILD)/libactivator.a: $(AC_OBJ)
	ar rcs $@ $^

$(BUILD)/libautoscaler.a: $(AS_OBJ)
	ar rcs $@ $^

$(BUILD)/bin/coldbrew: $(LOCAL_OBJ) $(BUILD)/libautoscaler.a $(BUILD)/libcoldbrew.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ -lyaml $(AC_LIBS) $(LIBS)

$(BUILD)/liblocal.a: $(LOCAL_LIB_OBJ)
	ar rcs $@ $^

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libactivator.a $(BUILD)/liblocal.a $(BUILD)/libautoscaler.a $(BUILD)/libcoldbrew.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Iqueue-proxy -o $@ $< $(BUILD)/libactivator.a $(BUILD)/liblocal.a $(BUILD)/libautoscaler.a $(BUILD)/libcoldbrew.a -lyaml $(AC_LIBS) $(LIBS) -lcmocka

# The exporter alone, driven span by span (tests/scenario/test_otlp.py: the
# collector faults); test_trace.py runs the real queue-proxy and activator.
$(BUILD)/tests/otlp_driver: tests/scenario/otlp_driver.c $(BUILD)/libcoldbrew.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libcoldbrew.a -lssl -lcrypto $(LIBS) -lnghttp2

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

# ---------------------------------------------------------------- test
test: all $(UNIT_BIN) $(BUILD)/tests/otlp_driver
	@BUILD=$(BUILD) SANITIZE=$(SANITIZE) bash tests/run.sh

unit: $(UNIT_BIN)
	@BUILD=$(BUILD) ONLY=unit bash tests/run.sh

scenario: all $(BUILD)/tests/otlp_driver
	@BUILD=$(BUILD) ONLY=scenario bash tests/run.sh

# ---------------------------------------------------------------- run
# The local platform with the coffee example (v1/v2 split 70/30, scaled to zero).
run: all
	@echo "coldbrew: starting the local platform with examples/coffee.yaml"
	@exec $(BUILD)/bin/coldbrew run examples/coffee.yaml

# ---------------------------------------------------------------- bench
build/bench/loadgen: bench/loadgen.c
	@mkdir -p build/bench
	$(CC) -O2 -Wall -Wextra -o $@ $< -levent_core

bench: all build/bench/loadgen
	@bash bench/run.sh

# Local platform: cold starts, and the multi-version pressure test (bench/RESULTS.md, bench/pressure.png).
coldstart: all
	@/usr/bin/python3 bench/coldstart.py

pressure: all
	@/usr/bin/python3 bench/pressure.py

# The images, built with podman and run in pods as Kubernetes would (root;
# tests/images/run.sh installs podman itself).
images: all
	@bash tests/images/run.sh

# ---------------------------------------------------------------- fuzz
FUZZ_SRC := $(wildcard tests/fuzz/*.c)
FUZZ_BIN := $(FUZZ_SRC:tests/fuzz/%.c=build/fuzz/%)
FUZZ_FLAGS := -g -O1 -fsanitize=fuzzer,address,undefined -std=gnu11 -D_GNU_SOURCE -I$(LLHTTP_INC) -Ibuild/fuzz/gen -Icommon
# The local platform's parsers (fuzz_local) link beside the common core.
# ...and the queue-proxy's gRPC health check (fuzz_h2_probe).
FUZZ_LOCAL := local/manifest.c local/settings.c local/api.c local/certs.c autoscaler/kpa.c \
              queue-proxy/h2_probe.c
FUZZ_GEN   := build/fuzz/gen/stat.pb-c.c build/fuzz/gen/health.pb-c.c $(OTLP_PROTO:%=build/fuzz/gen/%.pb-c.c)
.PRECIOUS: build/fuzz/gen/%.pb-c.c $(BUILD)/gen/%.pb-c.c $(BUILD)/gen/%.pb-c.h
build/fuzz/gen/%.pb-c.c: common/proto/%.proto
	@mkdir -p build/fuzz/gen
	protoc-c --proto_path=common/proto --c_out=build/fuzz/gen $<
build/fuzz/%: tests/fuzz/%.c $(COMMON_SRC) $(FUZZ_LOCAL) $(FUZZ_GEN)
	@mkdir -p build/fuzz
	clang $(FUZZ_FLAGS) -o $@ $< $(COMMON_SRC) $(FUZZ_LOCAL) $(FUZZ_GEN) $(LLHTTP_SRC)/llhttp.c $(LLHTTP_SRC)/api.c $(LLHTTP_SRC)/http.c -levent_core -levent_extra -lwslay -lssl -lcrypto -ljansson -lprotobuf-c -lnghttp2 -lyaml -lm
fuzz: $(FUZZ_BIN)
	@for f in $(FUZZ_BIN); do n=$$(basename $$f); echo "fuzz: $$n for $${FUZZ_SECONDS:-20}s"; \
	  mkdir -p build/fuzz/corpus-$$n; \
	  if ! $$f -max_total_time=$${FUZZ_SECONDS:-20} -max_len=8192 -artifact_prefix=build/fuzz/ \
	       build/fuzz/corpus-$$n tests/fuzz/seeds-$$n > build/fuzz/$$n.log 2>&1; then \
	    tail -40 build/fuzz/$$n.log; echo "fuzz: $$n FAILED"; exit 1; fi; \
	  tail -1 build/fuzz/$$n.log; done

# ---------------------------------------------------------------- housekeeping
C_FILES = $(shell git ls-files --cached --others --exclude-standard '*.c' '*.h' 2>/dev/null || find . -name '*.[ch]' -not -path './build/*')
format:
	clang-format -i $(C_FILES)
format-check:
	@clang-format --dry-run --Werror $(C_FILES) && echo "format: clean"

install: all
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(BUILD)/bin/queue-proxy $(BUILD)/bin/activator $(BUILD)/bin/coldbrew $(BUILD)/bin/coffee $(DESTDIR)$(PREFIX)/bin/

clean:
	rm -rf build

endif
