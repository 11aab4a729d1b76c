# blobfs — see README.md. GNU make.
#
#   make demo   install what is needed, start Azurite, seed data, show it working
#   make test   run every test (small data sizes; what CI runs)
#
# `make help` lists every target.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:
MAKEFLAGS += --no-builtin-rules

# Go lives in /usr/local/go on these machines; a bare shell may not have it on PATH.
export PATH := $(PATH):/usr/local/go/bin
GO ?= go

MODULE  := github.com/blobfs/blobfs
BIN     := bin/blobfs

# Build stamp (internal/buildinfo). Overridable: make build VERSION=v1.0.0
VERSION  ?= $(shell git describe --tags --match 'v*' --dirty 2>/dev/null || echo v0.0.0-dev)
COMMIT   ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
MODIFIED ?= $(shell if [ -n "$$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then echo true; else echo false; fi)
# SOURCE_DATE_EPOCH (reproducible builds) wins over the clock.
DATE     ?= $(shell date -u -d "@$${SOURCE_DATE_EPOCH:-$$(date +%s)}" +%Y-%m-%dT%H:%M:%SZ)
LDFLAGS  := -X $(MODULE)/internal/buildinfo.Version=$(VERSION) \
            -X $(MODULE)/internal/buildinfo.Commit=$(COMMIT) \
            -X $(MODULE)/internal/buildinfo.Date=$(DATE) \
            -X $(MODULE)/internal/buildinfo.Modified=$(MODIFIED)

# Tests: BLOBFS_TEST_SIZE scales test data (internal/testenv).
# `make test` keeps .ci/run under 30 minutes on a bare 2-core machine.
TEST_TIMEOUT      ?= 25m
TEST_FULL_TIMEOUT ?= 90m
GOTESTFLAGS       ?=
PKGS              ?= ./...

.PHONY: help
help: ## list the targets
	@echo "blobfs make targets:"
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-10s %s\n", $$1, $$2}'
	@echo
	@echo "Set-up on a fresh Debian machine: 'make demo', then 'make test'."

.PHONY: deps
deps: ## install what builds and tests need (fuse3, fio, Azurite, Go modules); quick when done
	@scripts/setup.sh

.PHONY: build
build: ## build bin/blobfs (pure Go, CGO_ENABLED=0, version stamped)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/blobfs

.PHONY: test
test: deps ## run every test: go vet, then go test -race with small data (BLOBFS_TEST_SIZE=small)
	$(GO) vet $(PKGS)
	BLOBFS_TEST_SIZE=small BLOBFS_CSI_SANITY_BACKEND=azurite $(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) $(GOTESTFLAGS) $(PKGS)

.PHONY: test-full
test-full: deps ## run every test at the full data sizes named in the issues (BLOBFS_TEST_SIZE=full)
	$(GO) vet $(PKGS)
	BLOBFS_TEST_SIZE=full BLOBFS_CSI_SANITY_BACKEND=azurite $(GO) test -race -count=1 -timeout $(TEST_FULL_TIMEOUT) $(GOTESTFLAGS) $(PKGS)

.PHONY: kube-tools
kube-tools: ## build kube-apiserver, etcd, kubectl for e2e/kube into .tools/kube (once, ~5+ min on 2 cores; deps runs it)
	@scripts/kube-tools.sh

.PHONY: test-kube
test-kube: deps ## only the real-control-plane and container e2e tests (e2e/kube, e2e/container; part of make test)
	BLOBFS_TEST_SIZE=small $(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) -v $(GOTESTFLAGS) ./e2e/kube/... ./e2e/container/...

.PHONY: demo
demo: deps build ## start Azurite on a free loopback port, seed a sample dataset, show blobfs working
	BLOBFS_BIN="$(CURDIR)/$(BIN)" $(GO) run ./e2e/demo

RCLONE_VERSION ?= v1.71.0
RCLONE         := .tools/bin/rclone

.PHONY: bench-deps
bench-deps: ## install rclone $(RCLONE_VERSION) into .tools/bin for make bench (a few minutes, once)
	@if [ -x $(RCLONE) ] && $(RCLONE) version 2>/dev/null | grep -Eq '^rclone $(RCLONE_VERSION)(-DEV)?$$'; then :; else \
		echo "installing rclone $(RCLONE_VERSION) into .tools/bin (go install; a few minutes on 2 cores)"; \
		GOBIN="$(CURDIR)/.tools/bin" GOFLAGS=-mod=mod $(GO) install github.com/rclone/rclone@$(RCLONE_VERSION); \
	fi

.PHONY: bench
bench: deps build bench-deps ## side-by-side reads: blobfs vs rclone vs raw SDK vs local disk on one Azurite (root; BLOBFS_BENCH_SIZE=small|full); appends to BENCHMARKS.md
	BLOBFS_BENCH_SIZE=$${BLOBFS_BENCH_SIZE:-small} $(GO) run ./bench -blobfs $(BIN) -rclone $(RCLONE) -out BENCHMARKS.md $(BENCH_ARGS)

.PHONY: bench-bundle
bench-bundle: deps ## pack node, Azurite, blobfs, the bench and a trimmed rclone into .devcarry/ (~50 MB) to run the bench on a bare machine: .devcarry/run.sh [flags]
	scripts/bench-bundle.sh .devcarry

HELM_VERSION ?= v3.22.0
HELM         := .tools/bin/helm
CHART        := deploy/helm/blobfs

.PHONY: helm-lint
helm-lint: ## helm lint + helm template the CSI chart (installs helm $(HELM_VERSION) into .tools/bin once)
	@if [ -x $(HELM) ] && $(HELM) version --template '{{.Version}}' 2>/dev/null | grep -Eq '^$(basename $(HELM_VERSION))(\.|$$)'; then :; else \
		echo "installing helm $(HELM_VERSION) into .tools/bin (go install; a few minutes on 2 cores)"; \
		GOBIN="$(CURDIR)/.tools/bin" GOFLAGS=-mod=mod $(GO) install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION); \
	fi
	$(HELM) lint --strict $(CHART)
	$(HELM) lint --strict $(CHART) --set storageClass.workloadIdentity.clientID=00000000-0000-0000-0000-000000000000 --set pvc.create=true
	$(HELM) template blobfs $(CHART) --namespace kube-system > /dev/null
	$(HELM) template blobfs $(CHART) --namespace kube-system --set storageClass.create=false --set workloadIdentity.enabled=false > /dev/null

.PHONY: lint
lint: ## gofmt must list nothing; go vet must pass
	@unformatted="$$(find . \( -path ./.git -o -path ./.tools -o -path ./.cache -o -path ./bin \) -prune -o -name '*.go' -print | xargs gofmt -l)"; \
	if [ -n "$$unformatted" ]; then echo "gofmt needed on:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet $(PKGS)

.PHONY: clean
clean: ## remove build outputs and the Go test cache (keeps .tools/)
	rm -rf bin/ coverage.*
	$(GO) clean -testcache

.PHONY: distclean
distclean: clean ## also remove .tools/ (Azurite), so the next deps reinstalls it
	rm -rf .tools/
