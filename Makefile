# Everyday commands. `make run` and `make test` work on a fresh machine with Go.
SHELL := /bin/bash
GO    ?= go
BIN   := bin/signet
# Debian's python3, where python3-jwt (PyJWT) is installed for the verifier tests.
PYTHON := /usr/bin/python3
# The PKCS#11 backend needs cgo and this build tag (without cgo the tag
# builds the backend's stub, as deploy/Dockerfile's static image does).
TAGS  := -tags pkcs11
# What `signet version` and signet_build_info say; deploy/Dockerfile sets the
# same two variables (its test in deploy/ checks that it does).
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS := -X github.com/signet-dev/signet/server/telemetry.Version=$(VERSION) -X github.com/signet-dev/signet/server/telemetry.Commit=$(COMMIT)

.PHONY: run build test test-deps module-cache lint rules bench load load-deps soak fuzz generate check-generate check-breaking release-api chart-docs clean

run: build ## Start Signet on the embedded local backend (./signet-data).
	./$(BIN) serve $(if $(CONFIG),--config $(CONFIG))

build:
	$(GO) build $(TAGS) -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/signet

# The Vault tests find the server binary only through SIGNET_VAULT_BIN.
GOTEST := SIGNET_VAULT_BIN=$(CURDIR)/bin/vault $(GO) test $(TAGS) -race -count=1

# The API (gen/) and the Go client (client/) are modules of their own, which
# Signet's go.mod replaces with these directories (docs/api.md). `go ... ./...`
# at the root stops at their go.mod, so lint and test go into each.
MODULES := gen client
CLIENTTEST := $(GO) -C client test -race -count=1

# With CI=true (.ci/run) the tests' -json output goes through
# scripts/tools/testreport, which prints what a plain go test prints and then
# fails if any test was skipped, listing them: in CI a skip is a dependency
# that is missing or a check that is switched off, not a pass. pipefail keeps
# go test's own exit status.
# rules comes before the tests so that promtool is built (minutes, once) before
# server/telemetry's TestAlertRules needs it alongside every other package.
# The tests in deploy/ (Dockerfile, Helm chart) are a module of their own (deploy/go.mod),
# so that Helm, the Kubernetes API types and BuildKit's Dockerfile parser stay
# out of Signet's module graph; they render and parse, so they run without the
# race detector (its build of Helm and Kubernetes would cost minutes, for
# nothing that runs concurrently). The first build of that module takes a few
# minutes on 2 cores.
DEPLOYTEST := $(GO) -C deploy test -count=1

# The load harness's own logic (ratios, /proc CPU and memory readings, the
# batch-size histogram); `make load` runs the harness itself.
LOADTEST := $(GO) -C scripts/load test -race -count=1

# The soak (scripts/soak, its own module for its verifier libraries) drives
# the real bin/signet and bin/vault: its TestSoak is the ~2-minute soak of
# three replicas with rotation, faults and caching verifiers, on every
# `make test`; `make soak` runs it for SOAK_DURATION.
SOAKTEST := SIGNET_BIN=$(CURDIR)/$(BIN) SIGNET_VAULT_BIN=$(CURDIR)/bin/vault $(GO) -C scripts/soak test -race -count=1 -timeout 20m

test: test-deps lint rules build bin/vault bin/testreport ## Install what the tests need, then run every test (with the race detector).
ifeq ($(CI),true)
	set -o pipefail; $(GOTEST) -json ./... | bin/testreport
	set -o pipefail; $(CLIENTTEST) -json ./... | bin/testreport
	set -o pipefail; $(DEPLOYTEST) -json ./... | bin/testreport
	set -o pipefail; $(LOADTEST) -json ./... | bin/testreport
	set -o pipefail; $(SOAKTEST) -json ./... | bin/testreport
else
	$(GOTEST) ./...
	$(CLIENTTEST) ./...
	$(DEPLOYTEST) ./...
	$(LOADTEST) ./...
	$(SOAKTEST) ./...
endif

# The load harness's own logic (ratios, /proc CPU and memory readings, the
# batch-size histogram); `make load` runs the harness itself.
LOADTEST := $(GO) -C scripts/load test -race -count=1

# A real Vault server for the Vault backend's tests, built from Vault's Go
# module in its own module (scripts/vault). The first build takes ~10 minutes;
# make skips it while bin/vault is newer than its sources.
bin/vault: scripts/vault/main.go scripts/vault/go.mod scripts/vault/go.sum
	cd scripts/vault && $(GO) build -o ../../bin/vault .

bin/testreport: scripts/tools/testreport/main.go
	$(GO) -C scripts/tools build -o $(CURDIR)/bin/testreport ./testreport

# PyJWT and node's jose verify Signet's tokens in the end-to-end tests;
# SoftHSM2 is the PKCS#11 token the HSM backend's tests run against, and
# OpenSC's pkcs11-tool is how those tests see its objects as the token does.
JOSE_VERSION := 6.2.18
test-deps: bin/npm/node_modules/jose/package.json

bin/npm/node_modules/jose/package.json:
	@command -v npm >/dev/null || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq nodejs npm; }
	npm install --prefix bin/npm --no-audit --no-fund --silent jose@$(JOSE_VERSION)

# internal/consumer's test tidies a module that requires only the client with
# the module proxy off: the client's module graph must be in the module cache.
test-deps: module-cache
module-cache:
	for m in $(MODULES); do $(GO) -C $$m mod download && $(GO) -C $$m list -m all >/dev/null || exit 1; done

test-deps:
	@missing=""; \
	$(PYTHON) -c 'import jwt, cryptography' 2>/dev/null || missing="$$missing python3-jwt python3-cryptography"; \
	command -v softhsm2-util >/dev/null || missing="$$missing softhsm2"; \
	command -v pkcs11-tool >/dev/null || missing="$$missing opensc"; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing for the tests"; \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go') | grep -v '^gen/' || true); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) mod verify
	$(GO) tool $(TOOLS) staticcheck -tags pkcs11 ./...
	@# gosec, with no rule excluded: each finding is fixed or has a
	@# "#nosec Gxxx -- reason" beside it. Test files are not scanned (gosec's
	@# default); the test helpers under internal/ are. About 20s once built.
	@# scripts/load is left out: a load generator a developer runs against
	@# loopback, never shipped; its unchecked errors and files are measurement
	@# tooling, not the service's attack surface.
	$(GO) tool $(TOOLS) gosec -quiet -tags pkcs11 -exclude-generated -exclude-dir=scripts/load ./...
	$(GO) vet $(TAGS) ./...
	$(GO) vet ./...
	$(GO) -C scripts/tools vet ./testreport
	for m in $(MODULES); do \
		$(GO) -C $$m mod verify && $(GO) -C $$m vet ./... && \
		$(GO) -C $$m tool -modfile=../scripts/tools/go.mod staticcheck ./... && \
		$(GO) -C $$m tool -modfile=../scripts/tools/go.mod gosec -quiet -exclude-generated ./... || exit 1; \
	done
	$(GO) -C deploy mod verify
	$(GO) -C deploy vet ./...
	$(GO) -C scripts/load vet ./...
	$(GO) -C scripts/soak vet ./...
	$(GO) -C scripts/soak tool -modfile=../tools/go.mod staticcheck ./...

bench: ## Print what Sign adds over the bare signature, and JWKS serving cost.
	$(GO) test -run '^$$' -bench . -benchmem ./server/

# The load harness lives in its own module, scripts/load (ghz's runner for
# gRPC, vegeta for HTTP), so that neither is in Signet's go.mod. It starts
# bin/signet and bin/vault on loopback; LOAD passes flags to it, for example
# make load LOAD="-duration 1s -skip vault" or LOAD="-profile /tmp/prof".
load: load-deps build bin/vault ## Load the real binary on loopback: Sign, health floor, efficiency, JWKS vs a static server, Vault CPU, RSS.
	$(GO) -C scripts/load run . -signet $(CURDIR)/$(BIN) -vault $(CURDIR)/bin/vault $(LOAD)

# Three replicas of bin/signet on one key ring with a compressed policy,
# signing continuously, verified by jwx, go-oidc and PyJWT caches, through
# scheduled and manual rotations, SIGKILLs mid-rotation, Vault frozen and
# killed, and an emergency revocation; then the same, shorter, on the AWS KMS
# test server and a shared local directory. docs/soak.md says how to read the
# report. SOAK_DURATION is the Vault soak's length (the others a tenth of
# it, 40s to 3m); SOAK passes more flags (-rate, -backends, -dir).
SOAK_DURATION ?= 5m
soak: test-deps build bin/vault ## Soak three replicas with live rotation and faults for SOAK_DURATION (default 5m); see docs/soak.md.
	$(GO) -C scripts/soak run . -signet $(CURDIR)/$(BIN) -vault $(CURDIR)/bin/vault -python $(PYTHON) -duration $(SOAK_DURATION) $(SOAK)

# nginx is the static file server the JWKS is compared with, wrk the HTTP
# client light enough not to set the pace itself; without them the harness
# falls back to Go's file server and vegeta, and says so.
load-deps:
	@missing=""; \
	command -v nginx >/dev/null || missing="$$missing nginx"; \
	command -v wrk >/dev/null || missing="$$missing wrk"; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing for make load"; \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing || \
			echo "could not install$$missing: the harness uses Go's file server and vegeta instead"; \
	fi

fuzz: ## Fuzz the parsers of untrusted and operator input, FUZZTIME each (default 30s).
	@set -e; for target in FuzzEncodeClaims:./server/jose/ FuzzEncodeClaimsJSON:./server/jose/ FuzzAppendQuoted:./server/jose/ FuzzTyp:./server/jose/ FuzzGlobMatch:./server/authz/ FuzzCertIdentity:./server/authz/ FuzzPageToken:./server/ \
		FuzzParsePolicy:./server/authz/ FuzzParse:./server/config/ FuzzECDSASignatureFromDER:./backends/ \
		FuzzParsePublicKey:./backends/vault/ FuzzDecodeSignBatch:./backends/vault/ \
		FuzzPublicKeyDER:./backends/awskms/ FuzzDescription:./backends/awskms/ \
		FuzzParseURI:./backends/ FuzzParseURI:./backends/vault/ FuzzParseURI:./backends/awskms/ \
		FuzzParseURI:./backends/pkcs11/ FuzzDirFromURI:./backends/local/ \
		FuzzParseURI:./backends/gcpkms/ FuzzParsePublicKey:./backends/gcpkms/ FuzzSignResponse:./backends/gcpkms/ \
		FuzzParseURI:./backends/azurekv/ FuzzPublicKeyFromJWK:./backends/azurekv/ \
		FuzzRequests:./internal/gcpkmstest/ FuzzServe:./internal/azurekvtest/; do \
		name=$${target%%:*}; pkg=$${target#*:}; corpus=$${pkg}testdata/fuzz/$$name; \
		echo "fuzz $$name"; \
		before=$$(ls $$corpus 2>/dev/null | wc -l); out=$$(mktemp); \
		if $(GO) test -run '^$$' -fuzz "^$$name$$" -fuzztime $(or $(FUZZTIME),30s) $$pkg >$$out 2>&1; then \
			cat $$out; rm -f $$out; \
		else \
			cat $$out; \
			if [ "$$(ls $$corpus 2>/dev/null | wc -l)" = "$$before" ] && grep -qx '    context deadline exceeded' $$out; then \
				echo "fuzz $$name: stopped by Go 1.26's fuzztime race (go.dev/issue/75804, fixed in Go 1.27), no failing input written: not a finding"; \
				rm -f $$out; \
			else \
				rm -f $$out; exit 1; \
			fi; \
		fi; \
	done

# buf, the protoc plugins, promtool, staticcheck and gosec are tool directives
# in their own module, scripts/tools, so their dependencies (docker, quic,
# Prometheus, ...) stay out of Signet's module graph. buf.gen.yaml runs each
# plugin with the same -modfile.
TOOLS := -modfile=scripts/tools/go.mod

generate: ## Regenerate gen/ and server/gateway/ from proto/ with the buf and plugins pinned in scripts/tools/go.mod.
	$(GO) tool $(TOOLS) buf lint
	$(GO) tool $(TOOLS) buf generate

# promtool, pinned in scripts/tools/go.mod like buf, checks the alert rules and
# runs their unit tests. The first build takes about 5 minutes on 2 cores.
rules: ## Check deploy/prometheus/alerts.yaml and run its unit tests with promtool.
	$(GO) tool $(TOOLS) promtool check rules deploy/prometheus/alerts.yaml
	$(GO) tool $(TOOLS) promtool test rules deploy/prometheus/alerts_test.yaml

# The values table in the chart's README is generated from values.schema.json
# (descriptions) and values.yaml (defaults); deploy's tests fail if it is stale.
chart-docs: ## Regenerate the values table in deploy/helm/signet/README.md.
	$(GO) -C deploy run ./cmd/chartdoc helm/signet

# proto/released.binpb is the API as last released (a buf image, committed):
# check-breaking fails on any change to proto/ that would break a client
# built against it (buf's FILE rules), and proto's Go test runs the same
# check in `make test`. On a release, record the new API with release-api and
# commit the image: that is the one deliberate step that moves the baseline.
API_RELEASED := proto/released.binpb

check-breaking: ## Fail if proto/ breaks the released API (proto/released.binpb).
	$(GO) tool $(TOOLS) buf breaking --against $(API_RELEASED)

release-api: ## Record proto/ as the released API, on a release (commit the image).
	$(GO) tool $(TOOLS) buf build -o $(API_RELEASED)

check-generate: generate check-breaking
	@git diff --exit-code -- gen/ server/gateway/ && test -z "$$(git status --porcelain -- gen/ server/gateway/)" || \
		{ echo "gen/ or server/gateway/ is not what 'make generate' produces: run it and commit"; exit 1; }

clean:
	rm -rf bin
