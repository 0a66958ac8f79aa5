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
# The main module (the binary and the importable packages) and the modules
# of the test and bench programs, kept apart so that importers of pkg/ do not
# inherit the test tools' requirements.
MODULES := . test hack
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
demo: tools ## Start a real cluster, deploy secctx, run the reference examples 1-6 as pods, tear down (root).
	@cd hack && $(GO) run ./demo

.PHONY: demo-offline
demo-offline: build ## Show secctx's patch for the examples without a cluster (no root).
	@hack/demo.sh $(BIN)

##@ Development

.PHONY: test
test: verify tools ## Run every test: formatting, vet, unit, golden, fuzz seeds, real-cluster end to end (root).
	for m in $(MODULES); do (cd $$m && $(GO) test -race -count=1 -timeout 30m ./...); done

.PHONY: test-unit
test-unit: ## Run the tests that need no cluster (go test -short).
	for m in $(MODULES); do (cd $$m && $(GO) test -race -count=1 -short ./...); done

.PHONY: test-e2e
test-e2e: tools ## Run only the real-cluster suites (test/e2e, test/chart), verbosely.
	cd test && $(GO) test -count=1 -v -timeout 30m ./e2e/ ./chart/

.PHONY: startup
startup: tools ## Measure pod start-up in the real cluster, 20 pods per case (test/e2e TestStartup); the table goes to bin/startup.md.
	cd test && SECCTX_STARTUP_PODS=20 SECCTX_STARTUP_REPORT=$(CURDIR)/bin/startup.md $(GO) test -count=1 -v -timeout 60m ./e2e/ -run 'TestStartup$$'

KIND ?= kind
KIND_CLUSTER ?= secctx-e2e
.PHONY: test-e2e-kind
test-e2e-kind: ## Run the end-to-end suite against a kind cluster (needs Docker; not run on the dev VM).
	@$(KIND) get clusters 2>/dev/null | grep -qx $(KIND_CLUSTER) || $(KIND) create cluster --name $(KIND_CLUSTER) --config hack/kind.yaml --wait 120s
	$(KIND) get kubeconfig --name $(KIND_CLUSTER) > bin/kind-$(KIND_CLUSTER).kubeconfig
	cd hack && $(GO) run ./images ../bin/images
	for t in bin/images/secctx.tar bin/images/task.tar bin/images/oidc.tar; do $(KIND) load image-archive $$t --name $(KIND_CLUSTER); done
	cd test && $(GO) test -count=1 -v -timeout 30m ./e2e/ -args \
		-kubeconfig=$(CURDIR)/bin/kind-$(KIND_CLUSTER).kubeconfig \
		-host-address=$$(docker network inspect kind -f '{{(index .IPAM.Config 0).Gateway}}')

.PHONY: verify
verify: ## Check formatting and go vet.
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './bin/*')); \
		if [ -n "$$out" ]; then echo "gofmt would change: $$out"; exit 1; fi
	for m in $(MODULES); do (cd $$m && $(GO) vet ./...); done

.PHONY: generate
generate: ## Regenerate pkg/apis' deepcopy code and the CRD in config/crd with controller-gen (hack/tools/codegen).
	cd hack/tools/codegen && $(GO) build -o ../../../bin/controller-gen sigs.k8s.io/controller-tools/cmd/controller-gen
	bin/controller-gen object crd:crdVersions=v1 paths=./pkg/apis/... output:crd:artifacts:config=config/crd
	cp config/crd/secctx.dev_securitycontextpolicies.yaml charts/secctx/files/

.PHONY: update-golden
update-golden: ## Regenerate golden files after a deliberate change; review the diff.
	$(GO) test ./pkg/inject/ -run TestGolden -update

.PHONY: fuzz
fuzz: ## Run each fuzz target for FUZZTIME (default 30s).
	$(GO) test ./pkg/securityctx/ -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME)
	$(GO) test ./pkg/securityctx/ -run '^$$' -fuzz '^FuzzDecodeFlyteSecret$$' -fuzztime $(FUZZTIME)
	$(GO) test ./pkg/inject/ -run '^$$' -fuzz '^FuzzInject$$' -fuzztime $(FUZZTIME)
	$(GO) test ./pkg/inject/ -run '^$$' -fuzz '^FuzzPodView$$' -fuzztime $(FUZZTIME)
	$(GO) test ./pkg/webhook/ -run '^$$' -fuzz '^FuzzReview$$' -fuzztime $(FUZZTIME)
	$(GO) test ./pkg/policy/ -run '^$$' -fuzz '^FuzzURLPrefix$$' -fuzztime $(FUZZTIME)
	$(GO) test ./pkg/policy/ -run '^$$' -fuzz '^FuzzCheck$$' -fuzztime $(FUZZTIME)
	$(GO) test ./pkg/agent/ -run '^$$' -fuzz '^FuzzExecArgs$$' -fuzztime $(FUZZTIME)
	$(GO) test ./pkg/agent/ -run '^$$' -fuzz '^FuzzFetchArgs$$' -fuzztime $(FUZZTIME)
	$(GO) test ./pkg/agent/ -run '^$$' -fuzz '^FuzzTokensArgs$$' -fuzztime $(FUZZTIME)
	$(GO) test ./pkg/agent/ -run '^$$' -fuzz '^FuzzJWTExpiry$$' -fuzztime $(FUZZTIME)
	$(GO) test ./pkg/agent/gcp/ -run '^$$' -fuzz '^FuzzJSONField$$' -fuzztime $(FUZZTIME)

.PHONY: bench
bench: tools ## Measure handler, HTTPS load vs peers, API-server throughput, RSS, ready time; writes docs/performance.md (root, 2 cores).
	cd hack && $(GO) build -o ../bin/bench ./bench
	bin/bench -out docs/performance.md $(BENCHFLAGS)

.PHONY: bench-handler
bench-handler: ## Only the Go benchmarks of the admission handler.
	$(GO) test ./pkg/webhook/ -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) -count 5

##@ Build

.PHONY: tools
tools: ## Build the test cluster's Kubernetes v1.37.2 and etcd into bin/ once; apt-install containerd, runc, CNI.
	@hack/tools/build.sh

.PHONY: images
images: ## Build secctx's image and the test images as tarballs in bin/images (no Docker).
	cd hack && $(GO) run ./images ../bin/images

.PHONY: build
build: ## Build bin/secctx, bin/secctx-agent (what `secctx agent` runs) and bin/secctx-fetch (the fetch init container's), static, with version info.
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/webhook
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o $(dir $(BIN))secctx-agent ./cmd/agent
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o $(dir $(BIN))secctx-fetch ./cmd/fetch

.PHONY: clean
clean: ## Remove bin/secctx, bin/secctx-agent, bin/secctx-fetch, image tarballs and test artifacts (keeps the cluster binaries).
	rm -rf $(BIN) $(dir $(BIN))secctx-agent $(dir $(BIN))secctx-fetch bin/images _artifacts

.PHONY: clean-tools
clean-tools: ## Remove the cluster binaries too (the next `make tools` rebuilds them).
	rm -rf bin
