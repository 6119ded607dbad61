# A real S3 server for the S3 tests: versitygw, pinned, installed from the Go
# module proxy into the tool cache (never into go.mod). testutil finds it
# there, on PATH, or at $BERTH_VERSITYGW. Without it S3 tests skip loudly;
# BERTH_REQUIRE_S3=1 (CI) makes that a failure.
#
#   make s3-tools   install versitygw once

BERTH_TOOLS       ?= $(HOME)/.cache/berth/bin
VERSITYGW_VERSION ?= v1.8.0
VERSITYGW := $(BERTH_TOOLS)/versitygw@$(VERSITYGW_VERSION)/versitygw

.PHONY: s3-tools

s3-tools: $(VERSITYGW)
	ln -sfn $(VERSITYGW) $(BERTH_TOOLS)/versitygw

$(VERSITYGW):
	GOBIN=$(dir $@) GOFLAGS=-buildvcs=false CGO_ENABLED=0 \
	  $(GO) install github.com/versity/versitygw/cmd/versitygw@$(VERSITYGW_VERSION)
