# impersonator — `make help` lists the targets.
SHELL       := /bin/bash
.SHELLFLAGS := -eo pipefail -c
GO      ?= go
BIN     ?= bin/impersonator
PKGS    ?= ./...
# make build stamps the version (the exact tag, else a Go pseudo-version of
# HEAD) and the commit (with -dirty for uncommitted changes).
BUILDINFO := github.com/impersonator/impersonator/internal/buildinfo
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null)$(shell git diff --quiet HEAD 2>/dev/null || echo -dirty)
VERSION ?= $(shell git describe --tags --exact-match 2>/dev/null || TZ=UTC git log -1 --date=format-local:%Y%m%d%H%M%S --format=v0.0.0-%cd-%h --abbrev=12 2>/dev/null)
LDFLAGS := -X $(BUILDINFO).version=$(VERSION) -X $(BUILDINFO).commit=$(COMMIT)

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-8s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: run
run: ## start the service on its embedded defaults (in-process Redis, generated dev key and dev Forest secret)
	@echo "make run: compiling $(BIN) (the first compile takes a minute or two; later ones are cached)..." >&2
	@$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/impersonator
	@echo "make run: starting $(BIN) serve on the embedded defaults; Ctrl-C stops it" >&2
	@exec $(BIN) serve

.PHONY: demo
demo: ## walk one impersonation end to end (mint, login, session, replay, logout, audit) and print it
	$(GO) run ./tools/demo

.PHONY: build
build: ## build the binary into bin/, stamped with the version and commit (bin/impersonator version)
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/impersonator

.PHONY: test
test: test-deps ## run every test: embedded Redis, real redis-server, Cluster and Sentinel, nginx, Caddy, headless Chromium and Firefox
	$(GO) test -race -count=1 $(PKGS)

.PHONY: test-short
test-short: ## the edit-test loop: unit tests with go test -short (no browsers, nginx, Caddy, npm, Sentinel/Cluster, failover or built binary)
	$(GO) test -short $(PKGS)

.PHONY: test-deps
test-deps: ## install what the tests need and a fresh machine lacks (redis-server, chromium, nginx, caddy, firefox-esr)
	@scripts/test-deps

.PHONY: bench
bench: test-deps ## run the benchmarks; print figures and ratios to floors measured in the same run
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS) | $(GO) run ./tools/benchratio

.PHONY: loadtest
loadtest: ## load the service over HTTP (8s per scenario): req/s, latency, allocs, CPU per process, ratios to floors (LOADTEST_FLAGS=--profile DIR)
	$(GO) run ./tools/loadtest $(LOADTEST_FLAGS)

.PHONY: bench-audit
bench-audit: ## load 1M audit events into a fresh redis-server, time queries and verify (AUDITBENCH_FLAGS)
	$(GO) run ./tools/auditbench $(AUDITBENCH_FLAGS)

.PHONY: fuzz
fuzz: ## fuzz the token verifier, the action decoder (accepted ids are canonical), the never list (no spelling of a listed record mints) and ident, 20s each
	$(GO) test -run '^$$' -fuzz FuzzVerify -fuzztime 20s ./internal/token
	$(GO) test -run '^$$' -fuzz FuzzDecodeRequest -fuzztime 20s ./internal/action
	$(GO) test -run '^$$' -fuzz FuzzNeverList -fuzztime 20s ./internal/action
	$(GO) test -run '^$$' -fuzz FuzzFromJSON -fuzztime 20s ./internal/ident

.PHONY: lint
lint: ## gofmt, go vet and staticcheck (pinned in go.mod's tool block)
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) tool staticcheck $(PKGS)

.PHONY: demo-web
demo-web: ## click through an impersonation in your browser: an admin panel and a customer app on loopback
	$(GO) run ./cmd/impersonator demo

.PHONY: screenshots
screenshots: test-deps ## regenerate the README's screenshots (docs/img/demo-*.png) in headless Chromium
	mkdir -p docs/img
	IMPERSONATOR_SCREENSHOTS=$(CURDIR)/docs/img $(GO) test -count=1 -run '^TestDemoInChromium$$' ./cmd/impersonator
