# Kubernetes deployment, image and end-to-end targets (deploy/, test/e2e/).
# Included by the top Makefile; GO and BIN come from there.

NAMESPACE   ?= berth
IMAGE_TAG   ?= localhost/berth:e2e
IMAGE_TAR   ?= $(BIN)/berth-image.tar
IMAGE_OCI   ?=
K8S         ?= ../shared/k8s
E2E_TIMEOUT ?= 30m
E2E_RUN     ?= .
# kubectl for local-secrets; ../shared/k8s users: `$(K8S)/exec make local-secrets`.
KUBECTL     ?= kubectl

.PHONY: image local-secrets e2e e2e-local deploy-test

# A static linux binary for the host architecture (override GOARCH to cross
# build), packed without Docker by tools/mkimage.
$(BIN)/berth-linux: FORCE
	CGO_ENABLED=0 GOOS=linux $(GO) build -trimpath -ldflags "-s -w" -o $@ ./cmd/berth

image: $(BIN)/berth-linux
	$(GO) run ./tools/mkimage -o $(IMAGE_TAR) -tag $(IMAGE_TAG) \
	  $(if $(IMAGE_OCI),-oci-layout $(IMAGE_OCI)) \
	  -revision "$$(git rev-parse --short HEAD 2>/dev/null)" $(BIN)/berth-linux

# The static deploy checks alone (they also run in `make test`).
deploy-test:
	$(GO) test -count=1 ./deploy/ ./internal/deploytest/ ./internal/imagebuild/

# Creates the Secrets the local overlay needs, with generated passwords kept
# in $(BIN)/local-secrets/ (the admin password is for docker login). Re-running
# keeps existing passwords.
local-secrets:
	NAMESPACE=$(NAMESPACE) KUBECTL="$(KUBECTL)" GO="$(GO)" OUT=$(BIN)/local-secrets deploy/local-secrets.sh

# The e2e suite against the cluster in KUBECONFIG (k3d, kind, ...): build and
# load the image first (`make image`, then k3d image import / kind load
# image-archive $(IMAGE_TAR)).
e2e:
	$(GO) test -tags e2e -count=1 -timeout $(E2E_TIMEOUT) -run '$(E2E_RUN)' -v ./test/e2e/

# The whole e2e run on ../shared/k8s: cluster up, image built and loaded,
# suite compiled outside and run inside the cluster's network namespace, and
# the cluster torn down even when something fails.
e2e-local:
	@set -eu; \
	trap 'echo "== e2e-local: tearing the cluster down"; $(K8S)/down --purge' EXIT; \
	start=$$(date +%s); \
	echo "== e2e-local: cluster up"; $(K8S)/up; \
	echo "== e2e-local: image"; $(MAKE) --no-print-directory image; \
	$(K8S)/load-image $(IMAGE_TAR); \
	echo "== e2e-local: compiling the suite"; \
	$(GO) test -c -tags e2e -o $(BIN)/e2e.test ./test/e2e; \
	echo "== e2e-local: running the suite"; \
	status=0; \
	$(K8S)/exec env BERTH_E2E_DIRECT=1 BERTH_E2E_REPO_ROOT=$(CURDIR) \
	  $(CURDIR)/$(BIN)/e2e.test -test.v -test.count=1 -test.timeout $(E2E_TIMEOUT) -test.run '$(E2E_RUN)' || status=$$?; \
	echo "== e2e-local: suite exit $$status after $$(( $$(date +%s) - start ))s"; \
	exit $$status

.PHONY: FORCE
FORCE:
