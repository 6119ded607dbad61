# Side-by-side benchmarks (bench/, see README "Benchmarks"). Included by the
# top Makefile; GO comes from there.
#
#   make bench                      full run, a few minutes; table on stdout
#   make bench BENCH_JSON=out.json  also keep the JSON there
#   make bench-short                tiny sizes: checks the harness, not speed
#   make bench-tools                install upstream registry v3.1.2 once
#
# Debian's docker-registry and redis-server come from apt
# (apt-get install -y docker-registry redis-server); without them their rows
# read n/a. The S3 rows (berth vs upstream, each on its own bucket of one
# versitygw on loopback) need versitygw: `make s3-tools`; without it they
# read n/a.

BENCH_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/berth-bench
BENCH_JSON  ?=
BENCH_FLAGS ?=
BENCH_UPSTREAM := github.com/distribution/distribution/v3/cmd/registry@v3.1.2

.PHONY: bench bench-short bench-tools

bench-tools:
	mkdir -p $(BENCH_CACHE)
	cd $(BENCH_CACHE) && GOBIN=$(BENCH_CACHE) $(GO) install $(BENCH_UPSTREAM)

bench: bench-tools
	$(GO) run ./bench -cache $(BENCH_CACHE) $(if $(BENCH_JSON),-json $(BENCH_JSON)) $(BENCH_FLAGS)

bench-short: bench-tools
	$(GO) run ./bench -short -cache $(BENCH_CACHE) $(if $(BENCH_JSON),-json $(BENCH_JSON)) $(BENCH_FLAGS)
