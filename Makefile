# keydrift -- replication-lag monitoring and repair for Redis.
#
#   make            release build (./keydrift)
#   make deps       install missing build and test dependencies (Debian)
#   make test       deps, then unit + integration tests, sanitizer build, fuzz corpus replay
#   make demo       build and run `keydrift demo`
#   make install    PREFIX=/usr/local DESTDIR=
#   make format     clang-format the tree; `make format-check` only checks
#   make bench      benchmarks (see bench/README.md)

VERSION   := 0.1.0
PREFIX    ?= /usr/local
DESTDIR   ?=
O         ?= build
CC        ?= cc
PYTHON    ?= /usr/bin/python3

PKGS      := hiredis libcurl sqlite3 libmicrohttpd jansson libxxhash
# Expanded lazily, so `make deps` can install pkg-config first.
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS))
PKG_LIBS   = $(shell pkg-config --libs $(PKGS))

OPTFLAGS  ?= -O2 -g
WARNFLAGS := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
             -Wformat=2 -Wvla -Wno-format-nonliteral -Wno-format-truncation
CPPFLAGS  += -D_GNU_SOURCE -DKEYDRIFT_VERSION='"$(VERSION)"' -Iagent -Iexporters -Istorage
ALL_CFLAGS = -std=c11 $(OPTFLAGS) $(WARNFLAGS) $(PKG_CFLAGS) $(CPPFLAGS) $(CFLAGS) -MMD -MP
ALL_LIBS   = $(PKG_LIBS) -lpthread -lm $(LDLIBS)

LIB_SRCS  := $(filter-out agent/main.c,$(wildcard agent/*.c exporters/*.c storage/*.c))
LIB_OBJS  := $(LIB_SRCS:%.c=$(O)/%.o)
UNIT_SRCS := $(wildcard tests/unit/*.c)
UNIT_OBJS := $(UNIT_SRCS:%.c=$(O)/%.o)
FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)
FUZZERS   := $(FUZZ_SRCS:tests/fuzz/%.c=build-fuzz/%)

.PHONY: all deps test check unit integration asan fuzz-replay fuzz demo install clean \
        format format-check bench
.DEFAULT_GOAL := all

all: keydrift

# The release binary lives at the top so README commands stay short.
keydrift: $(O)/keydrift
	cp $< $@

$(O)/keydrift: $(O)/agent/main.o $(LIB_OBJS)
	$(CC) $(OPTFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(ALL_LIBS)

$(O)/unit-tests: $(UNIT_OBJS) $(LIB_OBJS)
	$(CC) $(OPTFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(ALL_LIBS)

$(O)/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "CC $<"
	@$(CC) $(ALL_CFLAGS) -c -o $@ $<

-include $(shell find $(O) -name '*.d' 2>/dev/null)

deps:
	@sh tests/deps.sh

# `make test`: everything CI runs. Dependencies first, in a fresh make so the
# pkg-config flags are read after they are installed.
test: deps
	@$(MAKE) --no-print-directory check

check: format-check unit integration asan fuzz-replay

unit: $(O)/unit-tests
	$(O)/unit-tests

# The comparison module's driver for tests/integration/test_compare.py: only
# the modules it needs, so it builds before the rest of the agent links.
CMP_DRIVER_OBJS := $(O)/tests/integration/cmp_driver.o \
                   $(addprefix $(O)/agent/,compare.o replyrd.o rconn.o log.o clock.o)
$(O)/cmp-driver: $(CMP_DRIVER_OBJS)
	$(CC) $(OPTFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(ALL_LIBS)

# What the integration tests run: the agent, the unit binary (it writes the
# history fixture) and the comparison driver, all from one build directory.
INTEG_ENV = KEYDRIFT_BIN=$(CURDIR)/$(1)/keydrift KEYDRIFT_UNIT_BIN=$(CURDIR)/$(1)/unit-tests \
            KEYDRIFT_CMP_DRIVER=$(CURDIR)/$(1)/cmp-driver
PYTEST     = $(PYTHON) -m pytest -q -p no:cacheprovider tests/integration

integration: $(O)/keydrift $(O)/unit-tests $(O)/cmp-driver
	$(call INTEG_ENV,$(O)) $(PYTEST)

# The same unit and integration tests against an AddressSanitizer/UBSan build.
ASAN_FLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
asan:
	@$(MAKE) --no-print-directory O=build-asan OPTFLAGS="$(ASAN_FLAGS)" \
	  build-asan/keydrift build-asan/unit-tests build-asan/cmp-driver
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 build-asan/unit-tests
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 KEYDRIFT_SANITIZED=1 \
	  $(call INTEG_ENV,build-asan) $(PYTEST)

# libFuzzer harnesses (clang). `make fuzz-replay` runs each over its committed
# corpus; `make fuzz FUZZ_SECONDS=60` explores and grows the corpus.
FUZZ_CC     ?= clang
FUZZ_FLAGS  := -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
build-fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(LIB_SRCS) $(wildcard agent/*.h exporters/*.h storage/*.h)
	@mkdir -p build-fuzz
	$(FUZZ_CC) -std=c11 $(FUZZ_FLAGS) $(WARNFLAGS) -Wno-missing-prototypes \
	  -Wno-unknown-warning-option $(PKG_CFLAGS) \
	  $(CPPFLAGS) -o $@ $< $(LIB_SRCS) $(ALL_LIBS)

# A failing input is saved as tests/fuzz/crash-* (or leak-*, timeout-*).
fuzz-replay: $(FUZZERS)
	@set -e; for f in $(FUZZERS); do \
	  n=$$(basename $$f); mkdir -p tests/fuzz/corpus/$$n; \
	  echo "replay $$n ($$(ls tests/fuzz/corpus/$$n | wc -l) inputs)"; \
	  $$f -runs=0 -artifact_prefix=tests/fuzz/ tests/fuzz/corpus/$$n >/dev/null 2>build-fuzz/$$n.log || { cat build-fuzz/$$n.log; exit 1; }; \
	done

# The corpus dir holds the seeds too. The exit status is checked before the
# log is shortened: a crash must fail the target.
FUZZ_SECONDS ?= 60
FUZZ_MAX_LEN ?= 8192
fuzz: $(FUZZERS)
	@set -e; for f in $(FUZZERS); do \
	  n=$$(basename $$f); mkdir -p tests/fuzz/corpus/$$n; \
	  echo "fuzz $$n for $(FUZZ_SECONDS)s"; \
	  $$f -max_total_time=$(FUZZ_SECONDS) -max_len=$(FUZZ_MAX_LEN) -artifact_prefix=tests/fuzz/ \
	    tests/fuzz/corpus/$$n >build-fuzz/$$n.log 2>&1 || { tail -n 60 build-fuzz/$$n.log; exit 1; }; \
	  grep -E "DONE|^Done" build-fuzz/$$n.log; \
	done

# The README's first command: only what the demo needs, then the build, then the demo.
demo:
	@sh tests/deps.sh demo
	@$(MAKE) --no-print-directory keydrift
	./keydrift demo

# The binary, the man page, the systemd unit, an example config with every
# option, and the dashboards and alert rules.
install: keydrift
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1 \
	  $(DESTDIR)$(PREFIX)/lib/systemd/system $(DESTDIR)$(PREFIX)/share/keydrift \
	  $(DESTDIR)$(PREFIX)/share/keydrift/grafana $(DESTDIR)$(PREFIX)/share/keydrift/prometheus
	install -m 0755 keydrift $(DESTDIR)$(PREFIX)/bin/keydrift
	install -m 0644 contrib/keydrift.1 $(DESTDIR)$(PREFIX)/share/man/man1/keydrift.1
	sed 's|/usr/bin/keydrift|$(PREFIX)/bin/keydrift|' contrib/keydrift.service \
	  > $(DESTDIR)$(PREFIX)/lib/systemd/system/keydrift.service
	chmod 0644 $(DESTDIR)$(PREFIX)/lib/systemd/system/keydrift.service
	install -m 0644 contrib/keydrift.conf $(DESTDIR)$(PREFIX)/share/keydrift/keydrift.conf.example
	install -m 0644 dashboards/grafana/keydrift-overview.json $(DESTDIR)$(PREFIX)/share/keydrift/grafana/
	install -m 0644 dashboards/prometheus/alerts.yml dashboards/prometheus/prometheus.yml \
	  $(DESTDIR)$(PREFIX)/share/keydrift/prometheus/

CLANG_FORMAT ?= clang-format
FORMAT_SRCS = $(shell git ls-files '*.c' '*.h' 2>/dev/null || find agent exporters storage tests -name '*.[ch]')
format:
	$(CLANG_FORMAT) -i $(FORMAT_SRCS)

format-check:
	@$(CLANG_FORMAT) --dry-run -Werror $(FORMAT_SRCS)

bench: keydrift
	sh bench/run.sh

clean:
	rm -rf build build-asan build-fuzz keydrift
