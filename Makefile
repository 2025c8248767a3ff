# mmproxy: see README. `make` builds, `make test` runs every test,
# `make fuzz` runs the parser fuzzer, `make bench` the benchmark, `make demo`
# shows a spoofed connection in a private network namespace (as root).
#
# `make install` (PREFIX, DESTDIR) puts the binary in SBINDIR, the manual in
# MANDIR, the systemd units in UNITDIR and the xinetd entry in
# SYSCONFDIR/xinetd.d. UNITDIR is $(PREFIX)/lib/systemd/system, which systemd
# reads for both /usr and /usr/local; SYSCONFDIR is /etc whatever PREFIX is,
# since xinetd reads /etc/xinetd.d only. The units and the xinetd entry name
# the installed binary and SYSCONFDIR/mmproxy/allowed-subnets.txt. Nothing is
# enabled or started: the xinetd entry is installed with `disable = yes`.
# The units' settings (SYSCONFDIR/default/mmproxy) and a commented allowed
# subnets file that allows no one are installed only where none exists yet.
# `make uninstall` removes those files and nothing else, the two settings
# files only while they are as installed.
#
# `make deb` builds ../mmproxy_VERSION_ARCH.deb (see debian/rules), after
# installing with apt-get the build dependencies debian/control names.

PREFIX ?= /usr/local
SBINDIR ?= $(PREFIX)/sbin
MANDIR ?= $(PREFIX)/share/man
UNITDIR ?= $(PREFIX)/lib/systemd/system
SYSCONFDIR ?= /etc
CC ?= cc
CLANG ?= clang
FUZZ_SECONDS ?= 60

WARNINGS = -Wall -Wextra -Wshadow -Wformat=2 -Wstrict-prototypes \
	   -Wmissing-prototypes -Wvla
HARDENING = -D_FORTIFY_SOURCE=2 -fstack-protector-strong -fPIE
LDHARDENING = -static-pie -Wl,-z,relro,-z,now
PURE_WARNINGS = -Wconversion
# `make test` and CI add -Werror; a user's plain `make` never fails on a warning.
ifeq ($(WERROR),1)
WARNINGS += -Werror
endif

BASE_CFLAGS = -std=gnu11 -O2 -g $(WARNINGS) $(HARDENING)
ALL_CFLAGS = $(BASE_CFLAGS) $(CFLAGS)
ALL_LDFLAGS = $(LDHARDENING) $(LDFLAGS)
SANITIZE = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all

-include config.mak

HELPERS = tests/helpers/backend tests/helpers/ppclient tests/helpers/udpclient \
	  tests/helpers/transparent tests/helpers/sandboxed
UNIT_TESTS = tests/unit/proxyhdr_test tests/unit/subnets_test \
	     tests/unit/options_test tests/unit/endpoint_test \
	     tests/unit/flowtable_test tests/unit/relay_test tests/unit/metrics_test
BENCH = tests/bench/loadgen tests/bench/echo tests/bench/forkcost

.PHONY: all test test-programs asan fuzz bench demo install uninstall deb clean format

all: mmproxy

# One object per concern (README: "How the code is laid out"). The pure
# ones (no I/O, no globals) are built with -Wconversion as well.
PURE_OBJS = proxyhdr.o subnets.o text.o netaddr.o options.o endpoint.o \
	    flowtable.o
SYSTEM_OBJS = mmproxy.o log.o sockets.o signals.o spoof.o connection.o \
	      relay.o listener.o pool.o udp.o check.o netlink.o sandbox.o \
	      metrics.o metrics_http.o reload.o stack_move.o
OBJS = $(PURE_OBJS) $(SYSTEM_OBJS)
SOURCES = $(OBJS:.o=.c)
HEADERS = proxyhdr.h subnets.h text.h netaddr.h options.h endpoint.h log.h \
	  sockets.h signals.h spoof.h connection.h relay.h listener.h pool.h udp.h \
	  check.h netlink.h stack_layout.h flowtable.h sandbox.h metrics.h \
	  metrics_http.h reload.h stack_move.h

mmproxy: $(OBJS)
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(ALL_LDFLAGS)

# Every object depends on every header: coarse, and never stale.
$(PURE_OBJS): %.o: %.c $(HEADERS)
	$(CC) $(ALL_CFLAGS) $(PURE_WARNINGS) -c -o $@ $<

$(SYSTEM_OBJS): %.o: %.c $(HEADERS)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

# A sanitizer build of mmproxy that the end-to-end tests can run instead
# (MMPROXY=./mmproxy-asan make test).
asan: mmproxy-asan
mmproxy-asan: $(SOURCES) $(HEADERS)
	$(CC) -std=gnu11 -O1 -g $(WARNINGS) $(SANITIZE) -o $@ $(SOURCES) $(CFLAGS) $(LDFLAGS)

# Unit tests always run under ASan and UBSan.
# Every unit test reports through tests/unit/verdict.h.
$(UNIT_TESTS): tests/unit/verdict.h

tests/unit/proxyhdr_test: tests/unit/proxyhdr_test.c proxyhdr.c proxyhdr.h
	$(CC) -std=gnu11 -O1 -g $(WARNINGS) $(SANITIZE) -I. -o $@ $< proxyhdr.c $(CFLAGS) $(LDFLAGS)

tests/unit/subnets_test: tests/unit/subnets_test.c subnets.c subnets.h text.c text.h
	$(CC) -std=gnu11 -O1 -g $(WARNINGS) $(SANITIZE) -I. -o $@ $< subnets.c text.c $(CFLAGS) $(LDFLAGS)

UNIT = $(CC) -std=gnu11 -O1 -g $(WARNINGS) $(SANITIZE) -I.

tests/unit/options_test: tests/unit/options_test.c options.c netaddr.c text.c $(HEADERS)
	$(UNIT) -o $@ $< options.c netaddr.c text.c $(CFLAGS) $(LDFLAGS)

tests/unit/endpoint_test: tests/unit/endpoint_test.c endpoint.c options.c netaddr.c text.c proxyhdr.c $(HEADERS)
	$(UNIT) -o $@ $< endpoint.c options.c netaddr.c text.c proxyhdr.c $(CFLAGS) $(LDFLAGS)

tests/unit/flowtable_test: tests/unit/flowtable_test.c flowtable.c netaddr.c text.c $(HEADERS)
	$(UNIT) -o $@ $< flowtable.c netaddr.c text.c $(CFLAGS) $(LDFLAGS)

tests/unit/relay_test: tests/unit/relay_test.c relay.c sockets.c log.c netaddr.c text.c $(HEADERS)
	$(UNIT) -o $@ $< relay.c sockets.c log.c netaddr.c text.c $(CFLAGS) $(LDFLAGS)

METRICS_SOURCES = metrics.c metrics_http.c reload.c subnets.c text.c log.c sandbox.c
tests/unit/metrics_test: tests/unit/metrics_test.c $(METRICS_SOURCES) $(HEADERS)
	$(UNIT) -o $@ $< $(METRICS_SOURCES) $(CFLAGS) $(LDFLAGS)

# Replays the kept fuzz corpus in `make test` without needing clang.
tests/fuzz/replay_proxyhdr: tests/fuzz/fuzz_proxyhdr.c tests/fuzz/replay_main.c proxyhdr.c proxyhdr.h
	$(CC) -std=gnu11 -O1 -g $(WARNINGS) $(SANITIZE) -I. -o $@ tests/fuzz/fuzz_proxyhdr.c tests/fuzz/replay_main.c proxyhdr.c $(CFLAGS) $(LDFLAGS)

tests/fuzz/replay_subnets: tests/fuzz/fuzz_subnets.c tests/fuzz/replay_main.c subnets.c subnets.h text.c text.h
	$(CC) -std=gnu11 -O1 -g $(WARNINGS) $(SANITIZE) -I. -o $@ tests/fuzz/fuzz_subnets.c tests/fuzz/replay_main.c subnets.c text.c $(CFLAGS) $(LDFLAGS)

tests/fuzz/replay_metrics_http: tests/fuzz/fuzz_metrics_http.c tests/fuzz/replay_main.c $(METRICS_SOURCES) metrics_http.h metrics.h sandbox.h
	$(CC) -std=gnu11 -O1 -g $(WARNINGS) $(SANITIZE) -I. -o $@ tests/fuzz/fuzz_metrics_http.c tests/fuzz/replay_main.c $(METRICS_SOURCES) $(CFLAGS) $(LDFLAGS)

FUZZ = $(CLANG) -std=gnu11 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -I.

tests/fuzz/fuzz_proxyhdr: tests/fuzz/fuzz_proxyhdr.c proxyhdr.c proxyhdr.h
	$(FUZZ) -o $@ $< proxyhdr.c

tests/fuzz/fuzz_subnets: tests/fuzz/fuzz_subnets.c subnets.c subnets.h text.c text.h
	$(FUZZ) -o $@ $< subnets.c text.c

# The endpoint's request judge needs the rest of the metrics to link.
tests/fuzz/fuzz_metrics_http: tests/fuzz/fuzz_metrics_http.c $(METRICS_SOURCES) metrics_http.h metrics.h sandbox.h
	$(FUZZ) -o $@ $< $(METRICS_SOURCES)

# The test and benchmark tools share tests/helpers/toolkit.c.
TOOLKIT = tests/helpers/toolkit.c tests/helpers/toolkit.h

tests/helpers/%: tests/helpers/%.c $(TOOLKIT) proxyhdr.c proxyhdr.h
	$(CC) $(ALL_CFLAGS) -I. -Itests/helpers -o $@ $< tests/helpers/toolkit.c proxyhdr.c $(ALL_LDFLAGS)

# The fork micro-benchmark is as small as a process gets: no toolkit.
tests/bench/forkcost: tests/bench/forkcost.c
	$(CC) $(ALL_CFLAGS) -o $@ $< $(ALL_LDFLAGS)

# sandboxed runs mmproxy's own sandbox.o.
tests/helpers/sandboxed: tests/helpers/sandboxed.c sandbox.o sandbox.h $(TOOLKIT)
	$(CC) $(ALL_CFLAGS) -I. -Itests/helpers -o $@ $< tests/helpers/toolkit.c sandbox.o $(ALL_LDFLAGS)

tests/bench/%: tests/bench/%.c $(TOOLKIT) proxyhdr.c proxyhdr.h
	$(CC) $(ALL_CFLAGS) -I. -Itests/helpers -o $@ $< tests/helpers/toolkit.c proxyhdr.c $(ALL_LDFLAGS)

# The header parse timing, printed below the benchmark's table.
BENCH += tests/bench/parsetime

test-programs: mmproxy $(UNIT_TESTS) tests/fuzz/replay_proxyhdr tests/fuzz/replay_subnets \
	tests/fuzz/replay_metrics_http $(HELPERS) $(BENCH)

test:
	$(MAKE) WERROR=1 test-programs
	tests/run

# FUZZ_SECONDS for each harness; new inputs land in tests/fuzz/work*.
# Headers are fuzzed up to the largest valid one: the v2 fixed part and a
# 16-bit length (PROXYHDR_MAX_LEN in proxyhdr.h).
PROXYHDR_MAX_LEN = 65551
fuzz: tests/fuzz/fuzz_proxyhdr tests/fuzz/fuzz_subnets tests/fuzz/fuzz_metrics_http
	mkdir -p tests/fuzz/work tests/fuzz/work-subnets tests/fuzz/work-metrics-http
	tests/fuzz/fuzz_proxyhdr -max_total_time=$(FUZZ_SECONDS) -max_len=$(PROXYHDR_MAX_LEN) \
		-dict=tests/fuzz/proxyhdr.dict tests/fuzz/work tests/fuzz/corpus
	tests/fuzz/fuzz_subnets -max_total_time=$(FUZZ_SECONDS) -max_len=2048 \
		tests/fuzz/work-subnets tests/fuzz/subnets-corpus
	tests/fuzz/fuzz_metrics_http -max_total_time=$(FUZZ_SECONDS) -max_len=4096 \
		tests/fuzz/work-metrics-http tests/fuzz/metrics-http-corpus

bench: mmproxy $(BENCH)
	tests/bench/run

demo: mmproxy tests/helpers/backend tests/helpers/ppclient
	tests/demo

# The shipped files (and the manual) name /usr/local/sbin/mmproxy,
# /usr/local/lib/systemd/system and /etc/mmproxy/: point them at where this
# install puts things.
UNITS = systemd/mmproxy-routing.service systemd/mmproxy.service \
	systemd/mmproxy.socket systemd/mmproxy@.service
INSTALL_PATHS = -e 's|/usr/local/sbin/mmproxy|$(SBINDIR)/mmproxy|g' \
	-e 's|/usr/local/lib/systemd/system|$(UNITDIR)|g' \
	-e 's|/etc/mmproxy/|$(SYSCONFDIR)/mmproxy/|g' \
	-e 's|/etc/default/mmproxy|$(SYSCONFDIR)/default/mmproxy|g'
# The operator's settings, SOURCE:DESTINATION under SYSCONFDIR: never
# overwritten, and uninstalled only while unchanged.
SETTINGS = systemd/mmproxy.default:default/mmproxy \
	systemd/allowed-subnets.txt:mmproxy/allowed-subnets.txt

install: mmproxy
	install -d '$(DESTDIR)$(SBINDIR)' '$(DESTDIR)$(MANDIR)/man8' \
		'$(DESTDIR)$(UNITDIR)' '$(DESTDIR)$(SYSCONFDIR)/xinetd.d'
	install -m 755 mmproxy '$(DESTDIR)$(SBINDIR)/mmproxy'
	sed $(INSTALL_PATHS) mmproxy.8 >'$(DESTDIR)$(MANDIR)/man8/mmproxy.8'
	chmod 644 '$(DESTDIR)$(MANDIR)/man8/mmproxy.8'
	for unit in $(UNITS); do \
		dest='$(DESTDIR)$(UNITDIR)/'"$${unit#systemd/}"; \
		sed $(INSTALL_PATHS) "$$unit" >"$$dest" && chmod 644 "$$dest" || exit 1; \
	done
	sed $(INSTALL_PATHS) -e 's|^\(\s*disable\s*=\s*\)no\s*$$|\1yes|' \
		systemd/mmproxy.xinetd >'$(DESTDIR)$(SYSCONFDIR)/xinetd.d/mmproxy'
	chmod 644 '$(DESTDIR)$(SYSCONFDIR)/xinetd.d/mmproxy'
	install -d '$(DESTDIR)$(SYSCONFDIR)/default' '$(DESTDIR)$(SYSCONFDIR)/mmproxy'
	for pair in $(SETTINGS); do \
		dest='$(DESTDIR)$(SYSCONFDIR)/'"$${pair#*:}"; \
		[ -e "$$dest" ] && continue; \
		sed $(INSTALL_PATHS) "$${pair%%:*}" >"$$dest" && chmod 644 "$$dest" || exit 1; \
	done

uninstall:
	rm -f '$(DESTDIR)$(SBINDIR)/mmproxy' '$(DESTDIR)$(MANDIR)/man8/mmproxy.8' \
		'$(DESTDIR)$(SYSCONFDIR)/xinetd.d/mmproxy'
	for unit in $(UNITS); do rm -f '$(DESTDIR)$(UNITDIR)/'"$${unit#systemd/}"; done
	for pair in $(SETTINGS); do \
		dest='$(DESTDIR)$(SYSCONFDIR)/'"$${pair#*:}"; \
		if sed $(INSTALL_PATHS) "$${pair%%:*}" | cmp -s - "$$dest"; then rm -f "$$dest"; fi; \
	done
	rmdir '$(DESTDIR)$(SYSCONFDIR)/mmproxy' 2>/dev/null || true

# dpkg-checkbuilddeps first, so that a user who has the dependencies needs
# no root; apt-get build-dep reads debian/control (a stale package list
# gets one update).
deb:
	command -v dpkg-checkbuilddeps >/dev/null && dpkg-checkbuilddeps 2>/dev/null || \
		{ export DEBIAN_FRONTEND=noninteractive; \
		apt-get build-dep -y -q --no-install-recommends ./ </dev/null || \
		{ apt-get update -q </dev/null && \
		apt-get build-dep -y -q --no-install-recommends ./ </dev/null; }; }
	dpkg-buildpackage -us -uc -b

format:
	clang-format -i *.c *.h tests/unit/*.c tests/fuzz/*.c tests/helpers/*.c tests/bench/*.c

clean:
	rm -f mmproxy mmproxy-asan *.o $(UNIT_TESTS) $(HELPERS) $(BENCH) \
		tests/fuzz/fuzz_proxyhdr tests/fuzz/replay_proxyhdr \
		tests/fuzz/fuzz_subnets tests/fuzz/replay_subnets \
		tests/fuzz/fuzz_metrics_http tests/fuzz/replay_metrics_http
	rm -rf tests/fuzz/work tests/fuzz/work-subnets tests/fuzz/work-metrics-http
