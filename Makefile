# secctx — `make help` lists the targets.

SHELL := /usr/bin/env bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

export PATH := $(PATH):/usr/local/go/bin
GO ?= go

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null)
DATE    ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
LDFLAGS := -s -w \
	-X github.com/secctx/secctx/pkg/version.Version=$(VERSION) \
	-X github.com/secctx/secctx/pkg/version.Commit=$(COMMIT) \
	-X github.com/secctx/secctx/pkg/version.Date=$(DATE)

BIN := bin/secctx
FUZZTIME ?= 30s
BENCHTIME ?= 2s

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make \033[36m<target>\033[0m\n"} \
		/^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2 } \
		/^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Demo

.PHONY: demo
demo: build ## Show what secctx does to SPEC §4's reference pods (examples/).
	@hack/demo.sh $(BIN)

##@ Development

.PHONY: test
test: verify ## Run every test: formatting, vet, unit, golden, fuzz seeds, CLI end to end.
	$(GO) test -race -count=1 ./...

.PHONY: verify
verify: ## Check formatting and go vet.
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './bin/*')); \
		if [ -n "$$out" ]; then echo "gofmt would change: $$out"; exit 1; fi
	$(GO) vet ./...

.PHONY: update-golden
update-golden: ## Regenerate golden files after a deliberate change; review the diff.
	$(GO) test ./pkg/inject/ -run TestGolden -update

.PHONY: fuzz
fuzz: ## Run each fuzz target for FUZZTIME (default 30s).
	$(GO) test ./pkg/securityctx/ -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME)
	$(GO) test ./pkg/inject/ -run '^$$' -fuzz '^FuzzInject$$' -fuzztime $(FUZZTIME)

.PHONY: bench
bench: ## Run the admission-path benchmarks (numbers go in docs/performance.md).
	$(GO) test ./pkg/webhook/ -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) -count 5

##@ Build

.PHONY: build
build: ## Build bin/secctx, static, with version info.
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/webhook

.PHONY: clean
clean: ## Remove bin/ and test artifacts.
	rm -rf bin _artifacts
