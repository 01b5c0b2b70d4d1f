// Package consumer holds one test: what a service gets when it requires
// Signet's Go client (github.com/signet-dev/signet/client). The client and
// the API are modules of their own so that a service's module graph holds
// gRPC, protobuf, x/oauth2 and the Verifier's JWT library, nothing of the
// server's (cloud SDKs, Vault, OpenTelemetry, grpc-gateway, PKCS#11).
package consumer

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// maxModules is the most modules `go list -m all` may list for a module
// whose only code imports the client (itself included): 68 when this was
// set, most of them gRPC's own requirements (its xDS, observability and
// test modules), of which the consumer compiles none. A consumer of the
// client before the split listed 167 (and raised its go line to 1.26.8).
const maxModules = 75

// compiledOK says whether the client may bring module m's packages into a
// service's build.
func compiledOK(m string) bool {
	for _, ok := range []string{"example.com/consumer", "github.com/signet-dev/signet/client", "github.com/signet-dev/signet/gen",
		"google.golang.org/grpc", "google.golang.org/protobuf", "google.golang.org/genproto/googleapis/",
		"golang.org/x/net", "golang.org/x/oauth2", "golang.org/x/sync", "golang.org/x/sys", "golang.org/x/text",
		"github.com/lestrrat-go/", "github.com/valyala/fastjson", "github.com/segmentio/asm", "github.com/goccy/go-json", "github.com/decred/dcrd/"} {
		if m == ok || (strings.HasSuffix(ok, "/") && strings.HasPrefix(m, ok)) {
			return true
		}
	}
	return false
}

// consumerGo is the go line of the consumer: the client must not raise it.
const consumerGo = "1.25.0"

const consumerMain = `package main

import (
	"context"
	"log"

	signetclient "github.com/signet-dev/signet/client"
)

func main() {
	c, err := signetclient.New(signetclient.Config{Target: "signet.internal:8443",
		CertFile: "svc.pem", KeyFile: "svc-key.pem", CAFile: "ca.pem"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ts := c.TokenSource("default", signetclient.Audience("ledger"))
	if _, err := ts.TokenContext(context.Background()); err != nil {
		log.Fatal(err)
	}
}
`

// TestConsumerModuleGraph builds, in a temporary directory, a module whose
// only code imports the client (through replace directives to this
// repository, as a release would through versions), tidies it, and checks
// its module graph: at most maxModules modules, packages compiled only from
// the client's own dependencies, the consumer's go line untouched, and it
// builds. Tidy fetches what the module cache lacks through the environment's
// module proxy, as a consumer's would: it needs more than a `go mod
// download` in the client puts there (the modules of the tests of the
// client's dependencies, and the checksum database's answers for what the
// consumer's empty go.sum does not list), so a cold cache must not fail it.
func TestConsumerModuleGraph(t *testing.T) {
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	gomod := "module example.com/consumer\n\ngo " + consumerGo + "\n\n" +
		"require github.com/signet-dev/signet/client v0.0.0-00010101000000-000000000000\n\n" +
		"replace (\n\tgithub.com/signet-dev/signet/client => " + filepath.Join(repo, "client") + "\n" +
		"\tgithub.com/signet-dev/signet/gen => " + filepath.Join(repo, "gen") + "\n)\n"
	for name, data := range map[string]string{"go.mod": gomod, "main.go": consumerMain} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	gocmd := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("go", args...) // #nosec G204 -- the go command, test arguments
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off", "GOTOOLCHAIN=local")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("go %s in the consumer module: %v\n%s",
				strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	gocmd("mod", "tidy")
	mods := strings.Fields(gocmd("list", "-m", "-f", "{{.Path}}", "all"))
	sum, err := os.ReadFile(filepath.Join(dir, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the consumer's module graph: %d modules, %d go.sum lines", len(mods), strings.Count(string(sum), "\n"))
	if len(mods) > maxModules {
		t.Errorf("a module importing only the client has %d modules in its graph, more than %d:\n%s", len(mods), maxModules, strings.Join(mods, "\n"))
	}
	// The modules whose packages the consumer compiles: the client, the
	// API, gRPC, protobuf, x/oauth2 and x/sync, and jwx (the Verifier's).
	// The rest of the graph are gRPC's own requirements, which it never
	// compiles.
	for _, m := range strings.Fields(gocmd("list", "-deps", "-f", "{{with .Module}}{{.Path}}{{end}}", "./...")) {
		if !compiledOK(m) {
			t.Errorf("the consumer compiles packages of %s, not a dependency the client should have", m)
		}
	}
	mod, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(mod), "\ngo "+consumerGo+"\n") {
		t.Errorf("tidy changed the consumer's go line from %s (the client or its dependencies need a newer Go):\n%s", consumerGo, mod)
	}
	gocmd("build", "./...")
}
