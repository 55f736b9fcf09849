# Phantom: keep real API keys out of AI agents.

GO      ?= go
BIN     := bin
PLUGIN  := $(BIN)/vault-plugin-secrets-phantom
PROXY   := $(BIN)/phantom-proxy
VERSION ?= v0.1.0
LDFLAGS := -X github.com/phantomvault/phantom/plugin.Version=$(VERSION)

.PHONY: build vault test fuzz demo dev bench bench-go fmt lint clean

## build: compile the Vault plugin and phantom-proxy into bin/
build:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(PLUGIN) ./cmd/vault-plugin-secrets-phantom
	$(GO) build -trimpath -o $(PROXY) ./cmd/phantom-proxy

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
FUZZ_TARGETS := FuzzValidate:./internal/reqpath FuzzCheck:./internal/token FuzzMatchPath:./plugin FuzzScrubber:./proxy FuzzAuditJSON:./proxy
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
	$(GO) test -run '^$$' -bench . -benchmem ./plugin/ ./proxy/ ./internal/...

## fmt: format the Go code
fmt:
	gofmt -w $$(git ls-files -co --exclude-standard '*.go')

## lint: gofmt and go vet must be clean
lint:
	@out=$$(gofmt -l $$(git ls-files -co --exclude-standard '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	cd e2e/sdk && $(GO) vet ./...

clean:
	rm -rf $(BIN)
