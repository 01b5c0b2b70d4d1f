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

.PHONY: run build test test-kube check test-deps lint lint-module rules bench load load-deps soak fuzz generate check-generate check-breaking release-api chart-docs clean

run: build ## Start Signet on the embedded local backend (./signet-data).
	./$(BIN) serve $(if $(CONFIG),--config $(CONFIG))

build:
	$(GO) build $(TAGS) -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/signet

# Signet's Go modules, each a directory with its own go.mod. `make lint`
# checks every one and `make test` runs the tests of every one; adding a
# module is one more word here (and, if its tests need more than
# `go test -race -count=1 ./...`, its TESTFLAGS/TESTENV/TESTNEEDS lines below).
# scripts/vault, scripts/etcd and scripts/kube-apiserver are not among them:
# they are Vault's, etcd's and Kubernetes' code, only built.
# The API (gen/) and the Go client (client/) are modules of their own, which
# Signet's go.mod replaces with these directories (docs/api.md); `go ... ./...`
# at the root stops at their go.mod, so lint and test go into each.
MODULES := . gen client deploy scripts/load scripts/soak scripts/tools

# ---- make test: every test, and only what the tests need (no lint) ----
#
# Each module's tests are a group of their own (test-module/DIR); make runs
# the groups concurrently (TEST_JOBS at once), each as soon as what it needs
# is built, so that the deploy module's first build of Helm and Kubernetes,
# the load harness and the soak's two minutes overlap with Vault's build and
# the root module's tests. Every output line says which group it is from.
# With -race each group's go test already keeps both cores busy while it
# compiles; running the groups together fills the time they wait (servers
# starting, the soak's timed run) with another group's work. make's job
# slots are shared with what the groups need built: on a cold machine Vault,
# etcd and kube-apiserver each hold one for as long as they build, so the
# default leaves four for the groups beside them.
TEST_JOBS ?= 7

# TESTFLAGS.DIR, TESTPKGS.DIR (default ./...), TESTENV.DIR and TESTNEEDS.DIR
# (what must be built or installed before the group starts) are a module's
# own settings.
# The root module: the race detector on (its packages are concurrent
# servers); the Vault tests find the server only through SIGNET_VAULT_BIN,
# the alert rules' test promtool through SIGNET_PROMTOOL.
# The tests that start a real kube-apiserver are the group test-kube (below),
# so that the root group need not wait for its first build.
KUBE_TESTS  := ^TestKubeAPIServer
# -parallel 4 (go test's default is GOMAXPROCS, 2 here): the longest
# packages' tests mostly wait (the Key Vault and KMS race cases on the test
# server's clock, the end-to-end tests on the processes they start);
# backends/azurekv's took 65 s at 8 at a time where they took 143 s at 2.
TESTFLAGS.. := $(TAGS) -race -count=1 -parallel 4 -skip '$(KUBE_TESTS)'
# cmd/signet first: go test starts packages in the order it is given them,
# two at a time, and cmd/signet's end-to-end tests are the longest (about
# two minutes warm); started last, as ./... orders it, they ran alone at the
# end of the group.
TESTPKGS..  := ./cmd/signet/ ./...
TESTENV..   := SIGNET_VAULT_BIN=$(CURDIR)/bin/vault SIGNET_PROMTOOL=$(CURDIR)/bin/promtool
TESTNEEDS.. := test-deps build bin/vault bin/promtool
# The tests in deploy/ (Dockerfile, Helm chart) are a module of their own so
# that Helm, the Kubernetes API types and BuildKit's Dockerfile parser stay
# out of Signet's module graph; they render and parse, so they run without
# the race detector (its build of Helm and Kubernetes would cost minutes, for
# nothing that runs concurrently).
TESTFLAGS.deploy := -count=1
# Its Dockerfile and probe tests list and build cmd/signet with the module
# proxy off: the root module's build fills the module cache first.
TESTNEEDS.deploy := build
# The load harness's own logic (ratios, /proc readings, the batch-size
# histogram); `make load` runs the harness itself.
# The soak (scripts/soak, its own module for its verifier libraries) drives
# the real bin/signet and bin/vault: its TestSoak is the ~2-minute soak of
# three replicas with rotation, faults and caching verifiers; `make soak`
# runs it for SOAK_DURATION.
TESTFLAGS.scripts/soak := -race -count=1 -timeout 20m
TESTENV.scripts/soak   := SIGNET_BIN=$(CURDIR)/$(BIN) SIGNET_VAULT_BIN=$(CURDIR)/bin/vault
TESTNEEDS.scripts/soak := test-deps build bin/vault
# What a group prints before it starts, for the ones whose first run is long.
TESTSAY.deploy := the first build of Helm and the Kubernetes API types takes ~4 minutes on 2 cores (cached after)
TESTSAY.scripts/soak := TestSoak runs three replicas through rotations and faults for ~2 minutes

# With CI=true (.ci/run) the tests' -json output goes through
# scripts/tools/testreport, which prints what a plain go test prints, counts
# the tests, and fails if any test was skipped, listing them: in CI a skip is
# a dependency that is missing or a check that is switched off, not a pass.
# pipefail keeps go test's own exit status.
test: ## Install what the tests need, then run every test (race detector on), the modules' groups concurrently.
	@echo "make test: the tests of $(words $(MODULES)) modules ($(MODULES)) and the kube-apiserver end-to-end tests, $(TEST_JOBS) jobs at a time; lint is 'make lint'"
	@$(MAKE) --no-print-directory -j$(TEST_JOBS) $(addprefix test-module/,$(MODULES)) test-kube
	@echo "make test: every group passed"

.SECONDEXPANSION:
test-module/%: bin/testreport $$(TESTNEEDS.$$*)
	@echo "[$(or $(filter-out .,$*),root)] go test $(or $(TESTFLAGS.$*),-race -count=1) $(or $(TESTPKGS.$*),./...)$(if $(TESTSAY.$*),: $(TESTSAY.$*))"
	@set -o pipefail; $(TESTENV.$*) $(GO) -C $* test $(or $(TESTFLAGS.$*),-race -count=1) \
		$(if $(filter true,$(CI)),-json $(or $(TESTPKGS.$*),./...) | bin/testreport,$(or $(TESTPKGS.$*),./...) 2>&1) | sed -u 's|^|[$(or $(filter-out .,$*),root)] |'

# The end-to-end tests of Signet as kube-apiserver's service-account token
# signer (cmd/signet/kubernetes_e2e_test.go): a real etcd and kube-apiserver,
# on the local backend and on a real Vault. A group of their own, so that
# their first build (kube-apiserver: the long pole of a cold `make test`)
# overlaps the other groups instead of holding up the root module's tests.
test-kube: bin/testreport test-deps build bin/vault bin/etcd bin/kube-apiserver
	@echo "[kube] go test -run '$(KUBE_TESTS)' ./cmd/signet/: etcd and kube-apiserver with Signet as the ExternalJWTSigner"
	@set -o pipefail; SIGNET_VAULT_BIN=$(CURDIR)/bin/vault SIGNET_ETCD_BIN=$(CURDIR)/bin/etcd SIGNET_KUBE_APISERVER_BIN=$(CURDIR)/bin/kube-apiserver \
		$(GO) test $(TAGS) -race -count=1 -run '$(KUBE_TESTS)' -v ./cmd/signet/ \
		$(if $(filter true,$(CI)),-json | bin/testreport,2>&1) | sed -u 's|^|[kube] |'

# ---- make check: the inner loop ----
#
# The unit tests of Signet's own packages (the root module) after an edit:
# no race detector and go test -short, which leaves out the tests that start
# servers: a Vault server or kube-apiserver (internal/vaulttest and
# internal/kubetest skip them) and the signet binary (cmd/signet's
# end-to-end tests skip in `binary`), the three places that check -short;
# go test's cache reruns only what the edit affects. About a minute warm.
# `make test` runs everything, without -short.
check: test-deps bin/promtool ## The inner loop: unit tests of Signet's packages, no servers started, no race detector (~1 min warm).
	@echo "make check: go test -short (no Vault, kube-apiserver or signet binary started, no race detector); 'make test' runs every test"
	SIGNET_PROMTOOL=$(CURDIR)/bin/promtool $(GO) test $(TAGS) -short ./...

# ---- Servers and tools the tests run, built or fetched once ----

# A real Vault server for the Vault tests: Vault's own core, HTTP API,
# storage, Transit, PKI and the auth methods the tests use, built from
# Vault's Go module in its own module (scripts/vault/main.go says what is in
# it). make skips it while bin/vault is newer than its sources.
bin/vault: scripts/vault/main.go scripts/vault/certs.go scripts/vault/go.mod scripts/vault/go.sum
	@echo "bin/vault: building Vault's core, HTTP API, Transit, PKI and auth packages (scripts/vault) for the Vault tests: several minutes on 2 cores the first time (1,660 packages; all of Vault was 2,575 and ~10 minutes), then cached"
	@start=$$(date +%s); cd scripts/vault && $(GO) build -ldflags '-s -w' -o ../../bin/vault . && \
		echo "bin/vault: built in $$(( $$(date +%s) - start ))s"

# etcd and kube-apiserver for the Kubernetes end-to-end tests, each built
# from its Go module in a module of its own (scripts/etcd: etcd's server;
# scripts/kube-apiserver: k8s.io/kubernetes with the replace directives that
# point its staging modules at their published versions). make skips each
# while it is newer than its sources. Both build at the lowest CPU priority
# (BUILD_NICE): only the kube group waits for them, while the root group,
# the longest, waits for bin/vault, so on a cold machine they take the CPU
# time the other groups leave (a test waiting on a server, the soak's timed
# run) instead of slowing those groups down.
BUILD_NICE := nice -n 19
bin/etcd: scripts/etcd/main.go scripts/etcd/go.mod scripts/etcd/go.sum
	@echo "bin/etcd: building etcd's server (scripts/etcd) for the Kubernetes end-to-end tests at low CPU priority: ~2 minutes on an idle 2-core machine the first time, then cached"
	@start=$$(date +%s); cd scripts/etcd && $(BUILD_NICE) $(GO) build -ldflags '-s -w' -o ../../bin/etcd . && \
		echo "bin/etcd: built in $$(( $$(date +%s) - start ))s"

bin/kube-apiserver: scripts/kube-apiserver/main.go scripts/kube-apiserver/go.mod scripts/kube-apiserver/go.sum
	@echo "bin/kube-apiserver: building kube-apiserver (scripts/kube-apiserver, k8s.io/kubernetes from the module proxy) for the Kubernetes end-to-end tests at low CPU priority: ~12 minutes on an idle 2-core machine the first time (it finishes last in a cold make test), then cached"
	@start=$$(date +%s); cd scripts/kube-apiserver && $(BUILD_NICE) $(GO) build -ldflags '-s -w' -o ../../bin/kube-apiserver . && \
		echo "bin/kube-apiserver: built in $$(( $$(date +%s) - start ))s"

# promtool for the alert rules (make rules, server/telemetry's test): Debian's
# prometheus package's when apt has one at PROMTOOL_MIN or newer (it is only
# unpacked into bin/, nothing is installed or started), else built from the
# version pinned in scripts/tools/go.mod. 2.42 (Debian 12) checks and runs
# every rule and test in deploy/prometheus/.
PROMTOOL_MIN := 2.42
bin/promtool: scripts/tools/go.mod
	@mkdir -p bin; tmp=$$(mktemp -d); \
	ver=$$(apt-cache policy prometheus 2>/dev/null | sed -n 's/^ *Candidate: *//p'); \
	if [ -n "$$ver" ] && [ "$$ver" != "(none)" ] && dpkg --compare-versions "$$ver" ge $(PROMTOOL_MIN) && \
		(cd $$tmp && apt-get download -qq prometheus >/dev/null 2>&1) && dpkg-deb -x $$tmp/prometheus_*.deb $$tmp/x; then \
		echo "bin/promtool: from Debian's prometheus $$ver (unpacked, not installed)"; \
		cp $$tmp/x/usr/bin/promtool $@; rm -rf $$tmp; \
	else \
		rm -rf $$tmp; \
		echo "bin/promtool: no Debian prometheus >= $(PROMTOOL_MIN); building the pinned one from source: ~5 minutes on 2 cores the first time"; \
		$(GO) build -modfile=scripts/tools/go.mod -o $@ github.com/prometheus/prometheus/cmd/promtool; \
	fi
	@touch $@

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

# ---- make lint: what .ci/run checks besides the tests ----
#
# gofmt over the repository, then for each module in MODULES: go mod verify,
# go vet, staticcheck and gosec over that module's own packages (./... in
# its directory: never scripts/vault, which is Vault's code, nor the module
# cache), and promtool's checks of the alert rules; two at a time.
LINTFLAGS.. := -tags pkcs11
# gosec, with no rule excluded: each finding is fixed or has a
# "#nosec Gxxx -- reason" beside it. Test files are not scanned (gosec's
# default); the test helpers under internal/ are. scripts/load is left out:
# a load generator a developer runs against loopback, never shipped; its
# unchecked errors and files are measurement tooling, not the service's
# attack surface.
GOSEC_SKIP := scripts/load

lint: ## gofmt, go mod verify, vet, staticcheck, gosec of every module, and the alert rules (what CI checks besides the tests).
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go') | grep -v '^gen/' || true); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	@echo "make lint: the first run builds staticcheck and gosec and type-checks every module's dependencies: ~5 minutes on 2 cores, then cached"
	@$(MAKE) --no-print-directory -j2 rules lint-modules

.PHONY: lint-modules
lint-modules: $(addprefix lint-module/,$(MODULES))

# go vet and staticcheck load ./... as the go command does, which stops at
# a nested go.mod; gosec walks the directories itself, so every module
# below this one (scripts/vault among them) is named to it as excluded.
lint-module/%:
	@echo "[lint $(or $(filter-out .,$*),root)] go mod verify, vet, staticcheck$(if $(filter $*,$(GOSEC_SKIP)),,, gosec)"
	$(GO) -C $* mod verify
	$(GO) -C $* vet $(LINTFLAGS.$*) ./...
	$(if $(LINTFLAGS.$*),$(GO) -C $* vet ./...)
	$(GO) -C $* tool -modfile=$(CURDIR)/scripts/tools/go.mod staticcheck $(LINTFLAGS.$*) ./...
	$(if $(filter $*,$(GOSEC_SKIP)),,$(GO) -C $* tool -modfile=$(CURDIR)/scripts/tools/go.mod gosec -quiet $(LINTFLAGS.$*) -exclude-generated \
		$$(cd $* && find . -mindepth 2 -name go.mod -not -path './bin/*' -printf '-exclude-dir=%h\n' | sed 's|=\./|=|') ./...)

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
	@set -e; for target in FuzzEncodeClaims:./server/jose/ FuzzEncodeClaimsJSON:./server/jose/ FuzzAppendQuoted:./server/jose/ FuzzTyp:./server/jose/ FuzzCheckKubernetesClaims:./server/jose/ FuzzGlobMatch:./server/authz/ FuzzCertIdentity:./server/authz/ FuzzPageToken:./server/ \
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

# promtool (bin/promtool, above) checks the alert rules and runs their unit
# tests; server/telemetry's test in `make test` runs the same.
rules: bin/promtool ## Check deploy/prometheus/alerts.yaml and run its unit tests with promtool.
	bin/promtool check rules deploy/prometheus/alerts.yaml
	bin/promtool test rules deploy/prometheus/alerts_test.yaml

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
