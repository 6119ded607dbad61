# OCI conformance and fuzzing. The suite and upstream Distribution are
# tools, not dependencies of berth: they are installed from the Go module
# proxy into a cache outside the repository (one directory per pinned
# version, so bumping a version re-installs) and never enter go.mod.
#
#   make conformance           berth, anonymous and with htpasswd auth on the filesystem,
#                              and anonymous on a fresh bucket of a real S3 server
#                              (versitygw; skipped with a message when it is not installed,
#                              failed when BERTH_REQUIRE_S3=1 — `make s3-tools` installs it);
#                              fails on any failure not in conformance/expected-failures.txt,
#                              on any listed failure that now passes, and on any 5xx
#   make conformance-upstream  the same suite against Distribution, counts only
#   make fuzz                  FuzzRequest for FUZZTIME

OCI_CONFORMANCE_VERSION ?= v0.0.0-20260831232431-97274622c111
DISTRIBUTION_VERSION    ?= v3.1.2
BERTH_TOOLS             ?= $(HOME)/.cache/berth/bin
CONFORMANCE_RESULTS     ?= $(or $(TMPDIR),/tmp)/berth-conformance
FUZZTIME                ?= 60s

OCI_CONFORMANCE := $(BERTH_TOOLS)/oci-conformance@$(OCI_CONFORMANCE_VERSION)/conformance
UPSTREAM_REGISTRY := $(BERTH_TOOLS)/distribution@$(DISTRIBUTION_VERSION)/registry

.PHONY: conformance conformance-upstream conformance-tools fuzz

$(OCI_CONFORMANCE):
	GOBIN=$(dir $@) GOFLAGS=-buildvcs=false CGO_ENABLED=0 \
	  $(GO) install github.com/opencontainers/distribution-spec/conformance@$(OCI_CONFORMANCE_VERSION)

$(UPSTREAM_REGISTRY):
	GOBIN=$(dir $@) GOFLAGS=-buildvcs=false CGO_ENABLED=0 \
	  $(GO) install github.com/distribution/distribution/v3/cmd/registry@$(DISTRIBUTION_VERSION)

conformance-tools: $(OCI_CONFORMANCE) $(UPSTREAM_REGISTRY)

conformance: build $(OCI_CONFORMANCE)
	$(GO) run ./conformance -target berth -bin $(BIN)/berth -suite $(OCI_CONFORMANCE) \
	  -results $(CONFORMANCE_RESULTS)/berth
	$(GO) run ./conformance -target berth -auth -bin $(BIN)/berth -suite $(OCI_CONFORMANCE) \
	  -results $(CONFORMANCE_RESULTS)/berth-auth
	$(GO) run ./conformance -target berth -s3 -bin $(BIN)/berth -suite $(OCI_CONFORMANCE) \
	  -results $(CONFORMANCE_RESULTS)/berth-s3

conformance-upstream: $(OCI_CONFORMANCE) $(UPSTREAM_REGISTRY)
	$(GO) run ./conformance -target upstream -check=false -bin $(UPSTREAM_REGISTRY) -suite $(OCI_CONFORMANCE) \
	  -results $(CONFORMANCE_RESULTS)/upstream

fuzz:
	$(GO) test ./internal/server/ -run '^$$' -fuzz '^FuzzRequest$$' -fuzztime $(FUZZTIME)
