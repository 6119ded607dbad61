# berth — see README.md. Targets other parts add live in mk/*.mk.
GO       ?= go
BIN      ?= bin
export CGO_ENABLED ?= 0

.PHONY: all build test test-short vet fmt-check tidy-check lint clean

all: build

build:
	$(GO) build -trimpath -o $(BIN)/berth ./cmd/berth

# The one test command (README, CI): static checks, then every Go test.
test: fmt-check vet tidy-check
	$(GO) test -count=1 -timeout 20m ./...

test-short:
	$(GO) test -short -count=1 ./...

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

tidy-check:
	@cp go.mod /tmp/berth-go.mod.bak; cp go.sum /tmp/berth-go.sum.bak; \
	  $(GO) mod tidy; \
	  if ! git diff --quiet -- go.mod go.sum; then \
	    echo "go.mod/go.sum are not tidy:"; git --no-pager diff -- go.mod go.sum | head -40; \
	    cp /tmp/berth-go.mod.bak go.mod; cp /tmp/berth-go.sum.bak go.sum; exit 1; fi

clean:
	rm -rf $(BIN)

-include mk/*.mk
