# Phantom: keep real API keys out of AI agents.

GO      ?= go
BIN     := bin
PLUGIN  := $(BIN)/vault-plugin-secrets-phantom
PROXY   := $(BIN)/phantom-proxy
# The one version both binaries report: internal/version's default (what
# bootstrap.sh registers unless PHANTOM_PLUGIN_VERSION says otherwise), or
# `make release VERSION=v1.2.3`. COMMIT is the checkout's, -dirty when it has
# uncommitted changes.
VERSION ?= $(shell sed -n 's/^var Version = "\(.*\)"$$/\1/p' internal/version/version.go)
COMMIT  ?= $(shell c=$$(git rev-parse --short HEAD 2>/dev/null) || c=unknown; \
	[ "$$c" = unknown ] || git diff --quiet HEAD -- 2>/dev/null || c=$$c-dirty; echo $$c)
# LDFLAGS is shared by build and release: the version and commit, and no
# symbol table or build id, for byte-identical builds of one commit.
LDFLAGS := -s -w -buildid= \
	-X github.com/phantomvault/phantom/internal/version.Version=$(VERSION) \
	-X github.com/phantomvault/phantom/internal/version.Commit=$(COMMIT)
GOBUILD := CGO_ENABLED=0 $(GO) build -trimpath -buildvcs=false -ldflags "$(LDFLAGS)"

.PHONY: build vault test fuzz demo dev bench bench-go fmt lint docs clean release

## build: compile the Vault plugin and phantom-proxy into bin/
build:
	$(GOBUILD) -o $(PLUGIN) ./cmd/vault-plugin-secrets-phantom
	$(GOBUILD) -o $(PROXY) ./cmd/phantom-proxy

## release: reproducible archives of both binaries for linux and darwin on
## amd64 and arm64 in dist/<VERSION>/, their SHA256SUMS, and the plugin's
## SHA-256 for `vault plugin register` (PLATFORMS="linux/amd64" for fewer)
release:
	GO="$(GO)" VERSION="$(VERSION)" LDFLAGS="$(LDFLAGS)" scripts/release.sh

## vault: find or build (once, into .cache/) the pinned Vault binary
vault:
	@scripts/vault.sh >/dev/null

## test: unit tests and end-to-end tests against a real Vault (with a SOAK-long
## load test, default 3m), the official SDKs through Phantom (a module of
## their own: e2e/sdk), and a short fuzz run
SOAK ?= 3m
test: build vault
	VAULT_BIN=$$(scripts/vault.sh) PHANTOM_SOAK=$(SOAK) $(GO) test -race -count=1 -timeout 30m ./...
	cd e2e/sdk && VAULT_BIN=$$(../../scripts/vault.sh) $(GO) test -race -count=1 ./...
	$(MAKE) --no-print-directory fuzz

## fuzz: each fuzz target for FUZZTIME (default 10s). A failing target is run
## once more: a real finding is saved under testdata/fuzz and fails again at
## once, while the fuzzer's rare worker hiccup on short runs does not.
FUZZTIME ?= 10s
FUZZ_TARGETS := FuzzValidate:./internal/reqpath FuzzCheck:./internal/token FuzzMatchPath:./internal/scope FuzzScrubber:./proxy/scrub FuzzAuditJSON:./proxy \
	FuzzUsageScanners:./proxy/metering FuzzCheckLimitedBody:./proxy/metering FuzzPrompts:./proxy/metering
fuzz:
	@for t in $(FUZZ_TARGETS); do \
		name=$${t%%:*}; pkg=$${t#*:}; \
		echo "$(GO) test -run '^$$' -fuzz '^$$name$$' -fuzztime $(FUZZTIME) $$pkg"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $$pkg || \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	done

## demo: the whole story from nothing: Vault, plugin, proxy, an API call
demo:
	scripts/demo.sh

## dev: a local Vault + plugin + proxy + demo API in the foreground
dev:
	scripts/dev.sh

## bench: Phantom against direct calls and a bare reverse proxy, on a local
## stack (ARGS="-duration=10s -conns=1,16,64" to change the runs)
bench:
	scripts/bench.sh $(ARGS)

## bench-go: Go benchmarks of the hot path (resolve, matching, tokens, scrubbing)
bench-go:
	$(GO) test -run '^$$' -bench . -benchmem ./plugin/ ./proxy/... ./internal/...

## docs: rewrite the generated parts of the docs: the error table of
## docs/agents.md (from internal/resolve/reason.go) and docs/api.md (from the
## engine's paths in plugin/). make test fails while they differ.
docs:
	PHANTOM_UPDATE_DOCS=1 $(GO) test -count=1 -run '^Test.*Doc$$' ./internal/resolve ./plugin

## fmt: format the Go code
fmt:
	gofmt -w $$(git ls-files -co --exclude-standard '*.go')

## lint: gofmt and go vet must be clean
lint:
	@out=$$(gofmt -l $$(git ls-files -co --exclude-standard '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	cd e2e/sdk && $(GO) vet ./...

clean:
	rm -rf $(BIN) dist
