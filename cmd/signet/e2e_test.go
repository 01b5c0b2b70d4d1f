package main

// End-to-end tests: they build the real signet binary, start it on loopback
// ports the system picks (reported through --ready-file), and talk to it the
// way users do, over gRPC and HTTP and through the CLI. Tokens are verified
// by go-jose and by PyJWT through the live JWKS.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/signet-dev/signet/backends"
	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
	"github.com/signet-dev/signet/internal/output"
	"github.com/signet-dev/signet/server/telemetry/telemetrytest"
)

var signetBin string

// buildFlags are the flags the binary under test is built with; the PKCS#11
// tests add their build tag. -trimpath as `make build` has it, so that this
// build reuses every package bin/signet's build compiled (the flag is part
// of each package's build cache key): only the link runs again.
var buildFlags = []string{"-trimpath"}

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() { // no binary: every test that runs it skips (binary)
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "signet-e2e-")
	if err != nil {
		panic(err)
	}
	signetBin = filepath.Join(dir, "signet")
	build := exec.Command("go", append(append([]string{"build"}, buildFlags...), "-o", signetBin, ".")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if bin := os.Getenv("SIGNET_E2E_BINARY"); bin != "" {
		// Test a binary built elsewhere: an older commit's, to measure it
		// (the tests of what it lacks fail).
		signetBin = bin
	} else if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building signet:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// binary is the signet binary under test, for the end-to-end tests that run
// it. With go test -short (`make check`, the inner loop) none is built and
// those tests skip: they start the real server, its backends' test servers
// and the independent verifiers, which is `make test`'s job (it never passes
// -short, and in CI a skipped test fails the run).
func binary(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("runs the signet binary: `make test` runs the end-to-end tests (go test -short leaves them out)")
	}
	return signetBin
}

// testIssuer is the issuer of every test config. The servers listen on
// ports the system picks, so the issuer cannot name the HTTP address.
const testIssuer = "http://signet.test"

// configHead starts every test config: both listeners on loopback ports the
// system picks, which `serve --ready-file` reports.
const configHead = "issuer: " + testIssuer + "\ngrpc: {listen: 127.0.0.1:0}\nhttp: {listen: 127.0.0.1:0}\nadmin: {listen: 127.0.0.1:0}\nlog: {level: debug}\n"

// process is a running `signet serve`.
type process struct {
	config    string   // what it was started with, for restart
	env       []string // likewise
	readyFile string
	cmd       *exec.Cmd
	grpcAddr  string
	httpURL   string
	adminURL  string
	conn      *grpc.ClientConn
	stdout    *output.Buffer
	stderr    *output.Buffer
	exited    chan struct{} // closed when the process has exited
	waitErr   error
	client    signetv1.SignerServiceClient
}

// e2eConfig has one ring per algorithm; "default" (ES256) has a short
// publish_ahead so that a rotated version starts signing within seconds.
// backend_timeout is a minute: generating an RSA-4096 key at startup took
// more than the default 5s on a loaded 2-core machine.
func e2eConfig(dataDir string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%sbackend_timeout: 1m\nkey_rings:\n", configHead)
	fmt.Fprintf(&b, "  - {name: default, backend: 'local://%s', algorithm: ES256, token_max_ttl: 1m, jwks_max_age: 1s, refresh_interval: 1s, publish_ahead: 2s, retire_after: 63s}\n", dataDir)
	for _, alg := range backends.AllAlgorithms {
		fmt.Fprintf(&b, "  - {name: %s, backend: 'local://%s', algorithm: %s}\n", strings.ToLower(string(alg)), dataDir, alg)
	}
	return b.String()
}

func startSignet(t *testing.T, dataDir string) *process {
	t.Helper()
	return startSignetWith(t, e2eConfig(dataDir))
}

// startSignetWith starts `signet serve` with config, plus extra environment
// variables, and waits until its ready file reports the addresses it bound.
func startSignetWith(t *testing.T, config string, env ...string) *process {
	t.Helper()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "signet.yaml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	p := &process{config: config, env: env, readyFile: filepath.Join(dir, "ready.json"),
		stdout: &output.Buffer{}, stderr: &output.Buffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(binary(t), "serve", "--config", cfgPath, "--ready-file", p.readyFile)
	p.cmd.Env = append(append(os.Environ(), "SIGNET_LOCAL_KEK=MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.waitErr = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("signet stderr:\n%s", p.stderr.String())
		}
	})
	var addrs readyAddrs
	ready := waitFor(2*time.Minute, func() bool { // startup generates RSA-4096 keys; this only catches a hang
		select {
		case <-p.exited:
			t.Fatalf("signet serve exited: %v\n%s", p.waitErr, p.stderr.String())
		default:
		}
		b, err := os.ReadFile(p.readyFile)
		return err == nil && json.Unmarshal(b, &addrs) == nil
	})
	if !ready || addrs.GRPC == "" || addrs.HTTP == "" {
		t.Fatalf("signet serve reported no addresses (ready file: %+v)\n%s", addrs, p.stderr.String())
	}
	if addrs.Admin == "" {
		t.Fatalf("the ready file names no admin listener: %+v", addrs)
	}
	p.grpcAddr, p.httpURL, p.adminURL = addrs.GRPC, "http://"+addrs.HTTP, "http://"+addrs.Admin
	conn, err := grpc.NewClient(p.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	p.conn, p.client = conn, signetv1.NewSignerServiceClient(conn)
	return p
}

// waitFor polls cond until it holds or timeout passes, and says whether it held.
func waitFor(timeout time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(timeout); ; time.Sleep(50 * time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

func (p *process) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		if p.waitErr != nil {
			t.Fatalf("signet exited with %v after SIGTERM\n%s", p.waitErr, p.stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("signet did not stop after SIGTERM")
	}
	if !strings.Contains(p.stderr.String(), "msg=stopped") {
		t.Errorf("no graceful shutdown in the log:\n%s", p.stderr.String())
	}
	if _, err := os.Stat(p.readyFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the ready file outlived the server: %v", err)
	}
}

// restart stops p gracefully, starts signet again with the same config and
// environment (on new ports), and checks that it serves the same key versions.
func (p *process) restart(t *testing.T) *process {
	t.Helper()
	before := listKids(t, p)
	p.stop(t)
	p2 := startSignetWith(t, p.config, p.env...)
	if after := listKids(t, p2); !slices.Equal(before, after) {
		t.Errorf("keys changed across restart:\nbefore %v\nafter  %v", before, after)
	}
	return p2
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func (p *process) jwks(t *testing.T) []byte {
	t.Helper()
	resp, err := http.Get(p.httpURL + "/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("JWKS: %s %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	return body
}

func (p *process) sign(t *testing.T, ring string) *signetv1.SignResponse {
	t.Helper()
	resp, err := p.client.Sign(ctxT(t), &signetv1.SignRequest{KeyRing: ring, Subject: "svc-" + ring, Audience: []string{"e2e"}})
	if err != nil {
		t.Fatalf("Sign(%s): %v", ring, err)
	}
	return resp
}

// verifyAlgorithms are the algorithms go-jose accepts here: every one Signet signs with.
var verifyAlgorithms = []jose.SignatureAlgorithm{jose.ES256, jose.ES384, jose.ES512,
	jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512, jose.EdDSA}

// goJOSEVerify verifies with go-jose against a JWKS and checks the claims.
func goJOSEVerify(jwksBody []byte, token string) error {
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(jwksBody, &set); err != nil {
		return err
	}
	tok, err := jwt.ParseSigned(token, verifyAlgorithms)
	if err != nil {
		return err
	}
	keys := set.Key(tok.Headers[0].KeyID)
	if len(keys) == 0 {
		return errors.New("kid not in JWKS")
	}
	var c jwt.Claims
	if err := tok.Claims(keys[0].Key, &c); err != nil {
		return err
	}
	return c.Validate(jwt.Expected{Issuer: testIssuer, AnyAudience: jwt.Audience{"e2e"}, Time: time.Now()})
}

// verifierResult is what an external verifier script prints per token.
type verifierResult struct {
	OK     bool           `json:"ok"`
	Kid    string         `json:"kid"`
	Alg    string         `json:"alg"`
	Error  string         `json:"error"`
	Claims map[string]any `json:"claims"`
}

// externalVerifiers are the verifiers Signet did not write, each run as a
// process fed tokens on stdin and fetching the live JWKS itself:
// PyJWT's PyJWKClient (Debian's python3-jwt) and node's jose
// (createRemoteJWKSet), both installed by make test-deps.
var externalVerifiers = []struct {
	name    string
	command func(root, jwksURL string) *exec.Cmd
}{
	{"PyJWT", func(root, jwksURL string) *exec.Cmd {
		return exec.Command("/usr/bin/python3", filepath.Join(root, "scripts", "verify_pyjwt.py"), jwksURL, testIssuer, "e2e")
	}},
	{"node jose", func(root, jwksURL string) *exec.Cmd {
		cmd := exec.Command("node", filepath.Join(root, "scripts", "verify_jose.mjs"), jwksURL, testIssuer, "e2e")
		cmd.Env = append(os.Environ(), "JOSE_PREFIX="+filepath.Join(root, "bin", "npm"))
		return cmd
	}},
}

// externalVerify has every external verifier check tokens against p's live
// JWKS, for audience "e2e", and returns their results by verifier name.
func externalVerify(t *testing.T, p *process, tokens ...string) map[string][]verifierResult {
	t.Helper()
	all := map[string][]verifierResult{}
	for _, v := range externalVerifiers {
		cmd := v.command(repoRoot(t), p.httpURL+"/.well-known/jwks.json")
		cmd.Stdin = strings.NewReader(strings.Join(tokens, "\n") + "\n")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s verifier failed (make test-deps installs it): %v\n%s", v.name, err, stderr.String())
		}
		var results []verifierResult
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			var r verifierResult
			if err := json.Unmarshal([]byte(line), &r); err != nil {
				t.Fatalf("%s verifier printed %q", v.name, line)
			}
			results = append(results, r)
		}
		if len(results) != len(tokens) {
			t.Fatalf("%s verified %d tokens, sent %d", v.name, len(results), len(tokens))
		}
		all[v.name] = results
	}
	return all
}

func repoRoot(t *testing.T) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

func TestEndToEnd(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	p := startSignet(t, dataDir)
	// The banner reaches stdout before the ready file is written, but the
	// test reads it through a pipe.
	wants := []string{p.httpURL + "/.well-known/jwks.json", "signet sign --server " + p.grpcAddr}
	if !waitFor(10*time.Second, func() bool {
		return !slices.ContainsFunc(wants, func(w string) bool { return !strings.Contains(p.stdout.String(), w) })
	}) {
		t.Errorf("banner does not show %q:\n%s", wants, p.stdout.String())
	}

	// Every algorithm: sign over gRPC, verify through the live JWKS with
	// go-jose and with PyJWT.
	var rings []string
	for _, alg := range backends.AllAlgorithms {
		rings = append(rings, strings.ToLower(string(alg)))
	}
	p.verifyAll(t, rings...)

	// Rotate: the new kid is published at once; once it signs, tokens of the
	// old and the new version both verify.
	old, fresh, rot := p.rotateUntilSigning(t)
	newKid := rot.GetVersion().GetKid()

	// The CLI for the people in the loop.
	keys := runCLI(t, "keys", "--server", p.grpcAddr, "--key-ring", "default")
	if !strings.Contains(keys, "retiring") || !strings.Contains(keys, "active") || !strings.Contains(keys, newKid) {
		t.Errorf("signet keys:\n%s", keys)
	}
	const claimValue = "case-7f3a9c2e" // distinctive, to look for in the log
	tok := strings.TrimSpace(runCLI(t, "sign", "--server", p.grpcAddr, "--audience", "e2e", "--subject", "cli",
		"--claims", `{"scope":"read","case":"`+claimValue+`"}`))
	verified := runCLI(t, "verify", "--jwks", p.httpURL+"/.well-known/jwks.json", "--audience", "e2e", "--issuer", testIssuer, tok)
	if !strings.Contains(verified, "valid: signed by kid "+newKid) || !strings.Contains(verified, `"scope": "read"`) {
		t.Errorf("signet verify:\n%s", verified)
	}
	// signet status shows the operator the same key set.
	status := runCLI(t, "status", "--admin", strings.TrimPrefix(p.adminURL, "http://"))
	if !strings.Contains(status, "signing:  yes") || !strings.Contains(status, "key ring default (ES256): active "+newKid) {
		t.Errorf("signet status:\n%s", status)
	}

	// The debug log of all this holds no token and no claim value.
	p.noSecrets(t, tok, strings.Split(tok, ".")[1], claimValue)

	// Emergency rotation: the old kids leave the JWKS and their tokens stop
	// verifying; tokens of the new version verify.
	_, latest := p.revokePrevious(t, old, fresh)

	// Graceful shutdown, then a restart on the same data shows the same keys.
	p2 := p.restart(t)
	if err := goJOSEVerify(p2.jwks(t), latest.GetToken()); err != nil {
		t.Errorf("a token issued before the restart does not verify after it: %v", err)
	}
}

func listKids(t *testing.T, p *process) []string {
	resp, err := p.client.ListKeys(ctxT(t), &signetv1.ListKeysRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, v := range resp.GetVersions() {
		out = append(out, v.GetKeyRing()+"/"+v.GetBackendId()+"/"+v.GetKid()+"/"+stateName(v.GetState()))
	}
	return out
}

// runCLI runs the signet binary, which must succeed, and returns its standard output.
func runCLI(t *testing.T, args ...string) string {
	t.Helper()
	stdout, stderr, err := execCLI(binary(t), args...)
	if err != nil {
		t.Fatalf("signet %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return stdout
}

// runCLIFail runs the signet binary, which must fail, and returns its standard error.
func runCLIFail(t *testing.T, args ...string) string {
	t.Helper()
	stdout, stderr, err := execCLI(binary(t), args...)
	if err == nil {
		t.Errorf("signet %s succeeded:\n%s", strings.Join(args, " "), stdout)
	}
	return stderr
}

// execCLI runs the signet binary bin for at most a minute.
func execCLI(bin string, args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

func TestCLIHelpAndErrors(t *testing.T) {
	t.Parallel()
	for _, c := range []string{"serve", "sign", "rotate", "keys", "x5c", "verify", "dev-certs", "check-config", "health", "version"} {
		out := runCLIFail(t, c, "--help")
		if !strings.Contains(out, "Usage: signet "+c) {
			t.Errorf("signet %s --help:\n%s", c, out)
		}
		if c == "serve" && !strings.Contains(out, "-ready-file") {
			t.Errorf("signet serve --help does not document --ready-file:\n%s", out)
		}
	}
	out, err := exec.Command(binary(t)).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "Commands:") {
		t.Errorf("signet with no command: %v\n%s", err, out)
	}
	// A bad config fails at startup naming the field.
	cfg := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(cfg, []byte("key_rings: [{name: a, backend: 'local://x', publish_ahead: 1s}]\n"), 0o600)
	if out := runCLIFail(t, "serve", "--config", cfg); !strings.Contains(out, "publish_ahead") {
		t.Errorf("serve with a bad config:\n%s", out)
	}
	// A ready file that cannot be written fails at startup, before the
	// backends are opened.
	cfg = filepath.Join(t.TempDir(), "good.yaml")
	os.WriteFile(cfg, []byte(configHead+"key_rings: [{name: a, backend: 'local://"+t.TempDir()+"'}]\n"), 0o600)
	if out := runCLIFail(t, "serve", "--config", cfg, "--ready-file", filepath.Join(t.TempDir(), "missing", "ready.json")); !strings.Contains(out, "--ready-file") {
		t.Errorf("serve with a ready file in a missing directory:\n%s", out)
	}
}

// backendConfig renders a config whose rings all live on one backend, with
// backend_timeout bounding every backend call (key creation at startup too).
// The first ring is "default" (ES256) with a short publish_ahead, so that a
// rotated version starts signing within seconds; the others are named after
// their algorithm.
func backendConfig(backend string, backendTimeout time.Duration, algs ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%sbackend_timeout: %s\nkey_rings:\n", configHead, backendTimeout)
	fmt.Fprintf(&b, "  - {name: default, backend: '%s', algorithm: ES256, token_max_ttl: 1m, jwks_max_age: 1s, refresh_interval: 1s, publish_ahead: 2s}\n", backend)
	for _, alg := range algs {
		fmt.Fprintf(&b, "  - {name: %s, backend: '%s', algorithm: %s}\n", strings.ToLower(alg), backend, alg)
	}
	return b.String()
}

// ringAlgorithm is the algorithm of a ring in the test configs: "default" is
// ES256, the others are named after theirs.
func ringAlgorithm(ring string) string {
	if ring == "default" {
		return "ES256"
	}
	return ring
}

// verifyAll signs with each ring and verifies every token with go-jose and
// with PyJWT through the live JWKS.
func (p *process) verifyAll(t *testing.T, rings ...string) {
	t.Helper()
	jwks := p.jwks(t)
	var tokens []string
	for _, ring := range rings {
		resp := p.sign(t, ring)
		if err := goJOSEVerify(jwks, resp.GetToken()); err != nil {
			t.Errorf("%s: go-jose: %v", ring, err)
		}
		tokens = append(tokens, resp.GetToken())
	}
	for verifier, results := range externalVerify(t, p, tokens...) {
		for i, r := range results {
			if !r.OK || !strings.EqualFold(r.Alg, ringAlgorithm(rings[i])) || r.Claims["sub"] != "svc-"+rings[i] {
				t.Errorf("%s: %s: %+v", rings[i], verifier, r)
			}
		}
	}
}

// rotateUntilSigning rotates the default ring, checks the new kid is
// published at once, waits until it signs, and checks that tokens from
// before and after verify with both libraries.
func (p *process) rotateUntilSigning(t *testing.T) (old, fresh *signetv1.SignResponse, rot *signetv1.RotateResponse) {
	t.Helper()
	old = p.sign(t, "default")
	rot, err := p.client.Rotate(ctxT(t), &signetv1.RotateRequest{KeyRing: "default"})
	if err != nil {
		t.Fatal(err)
	}
	if rot.GetVersion().GetState() != signetv1.KeyState_KEY_STATE_PENDING {
		t.Errorf("a rotated version is %v, want pending", rot.GetVersion().GetState())
	}
	newKid := rot.GetVersion().GetKid()
	if !strings.Contains(string(p.jwks(t)), newKid) {
		t.Fatalf("JWKS right after Rotate lacks %s", newKid)
	}
	if !waitFor(30*time.Second, func() bool { fresh = p.sign(t, "default"); return fresh.GetKid() == newKid }) {
		t.Fatalf("the rotated version %s never started signing (publish_ahead 2s)", newKid)
	}
	jwks := p.jwks(t)
	for _, tok := range []*signetv1.SignResponse{old, fresh} {
		if err := goJOSEVerify(jwks, tok.GetToken()); err != nil {
			t.Errorf("after rotation, token of %s: go-jose: %v", tok.GetKid(), err)
		}
	}
	for verifier, results := range externalVerify(t, p, old.GetToken(), fresh.GetToken()) {
		for _, r := range results {
			if !r.OK {
				t.Errorf("after rotation: %s: %+v", verifier, r)
			}
		}
	}
	return old, fresh, rot
}

// revokePrevious rotates the default ring in an emergency and checks that
// the given tokens' kids left the JWKS, that they no longer verify with
// any verifier, and that the new version signs.
func (p *process) revokePrevious(t *testing.T, revoked ...*signetv1.SignResponse) (*signetv1.RotateResponse, *signetv1.SignResponse) {
	t.Helper()
	rev, err := p.client.Rotate(ctxT(t), &signetv1.RotateRequest{KeyRing: "default", RevokePrevious: true})
	if err != nil {
		t.Fatal(err)
	}
	jwks := p.jwks(t)
	var tokens []string
	for _, tok := range revoked {
		if strings.Contains(string(jwks), tok.GetKid()) {
			t.Errorf("revoked kid %s is still in the JWKS", tok.GetKid())
		}
		if err := goJOSEVerify(jwks, tok.GetToken()); err == nil {
			t.Errorf("token of revoked %s still verifies with go-jose", tok.GetKid())
		}
		tokens = append(tokens, tok.GetToken())
	}
	// The new version signs once every replica can have published it
	// (2 × refresh_interval after its creation); until then Sign answers
	// Unavailable.
	var latest *signetv1.SignResponse
	if !waitFor(30*time.Second, func() bool {
		resp, err := p.client.Sign(ctxT(t), &signetv1.SignRequest{KeyRing: "default", Subject: "svc-default", Audience: []string{"e2e"}})
		if err != nil && status.Code(err) != codes.Unavailable {
			t.Fatalf("Sign after the emergency rotation: %v", err)
		}
		latest = resp
		return err == nil
	}) {
		t.Fatal("no Sign succeeded within 30s of the emergency rotation")
	}
	if latest.GetKid() != rev.GetVersion().GetKid() {
		t.Errorf("after emergency rotation signed by %s, want %s", latest.GetKid(), rev.GetVersion().GetKid())
	}
	if err := goJOSEVerify(jwks, latest.GetToken()); err != nil {
		t.Errorf("token of the new version: %v", err)
	}
	for verifier, results := range externalVerify(t, p, append(tokens, latest.GetToken())...) {
		for i, r := range results {
			if want := i == len(results)-1; r.OK != want {
				t.Errorf("%s after revocation, token %d: %+v (want ok=%v)", verifier, i, r, want)
			}
		}
	}
	return rev, latest
}

// signUnavailable checks that, with the backend down (why), Sign answers
// Unavailable within the caller's 2s deadline; that this one failed Sign is
// enough for the gRPC health of the ring (signet.v1.SignerService/default)
// to say NOT_SERVING; and that the replica stays ready, since it still
// serves the JWKS.
func (p *process) signUnavailable(t *testing.T, why string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := p.client.Sign(ctx, &signetv1.SignRequest{KeyRing: "default", Audience: []string{"e2e"}})
	if deadlinePassed := ctx.Err() != nil; status.Code(err) != codes.Unavailable || deadlinePassed {
		t.Errorf("Sign with %s: %v (deadline passed: %v); want Unavailable in time", why, err, deadlinePassed)
	}
	if got := p.signerHealth(t, "default"); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("health of ring default with %s, after a failed Sign: %v, want NOT_SERVING", why, got)
	}
	resp, err := http.Get(p.httpURL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// Whether the replica signs at all ("signing") depends on its other
	// rings, which have not called the backend yet.
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"ready":true`) {
		t.Errorf("/readyz with %s: %d %s; want 200 (the JWKS is served)", why, resp.StatusCode, body)
	}
}

// noSecrets checks that nothing the process wrote (its log, its stdout)
// and nothing its /metrics shows (while it runs) holds any of secrets: a token, a claim
// value, a PIN, a backend credential.
func (p *process) noSecrets(t *testing.T, secrets ...string) {
	t.Helper()
	outputs := map[string]string{"log": p.stderr.String(), "stdout": p.stdout.String()}
	select {
	case <-p.exited: // its log is all there is
	default:
		resp, err := http.Get(p.adminURL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		metrics, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		outputs["/metrics"] = string(metrics)
	}
	for where, text := range outputs {
		for _, s := range secrets {
			if s != "" && strings.Contains(text, s) {
				t.Errorf("the %s holds a secret (%.12s...)", where, s)
			}
		}
	}
}

// signerHealth is the gRPC health status of ring's signing
// (signet.v1.SignerService/RING).
func (p *process) signerHealth(t *testing.T, ring string) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	h, err := healthpb.NewHealthClient(p.conn).Check(context.Background(), &healthpb.HealthCheckRequest{Service: "signet.v1.SignerService/" + ring})
	if err != nil {
		t.Fatalf("health check: %v", err)
	}
	return h.GetStatus()
}

// metrics scrapes the admin listener's /metrics.
func (p *process) metrics(t *testing.T) telemetrytest.Metrics {
	t.Helper()
	return telemetrytest.Scrape(t, p.adminURL+"/metrics")
}

// backendGone checks that, with the backend gone (why), Sign is Unavailable
// and the JWKS is still served and still verifies latest.
func (p *process) backendGone(t *testing.T, why string, latest *signetv1.SignResponse) {
	t.Helper()
	p.signUnavailable(t, why)
	if err := goJOSEVerify(p.jwks(t), latest.GetToken()); err != nil {
		t.Errorf("JWKS with %s: %v", why, err)
	}
}

// waitSigning waits until the gRPC health of ring's signing is want.
func (p *process) waitSigning(t *testing.T, ring string, want healthpb.HealthCheckResponse_ServingStatus) {
	t.Helper()
	if !waitFor(30*time.Second, func() bool { return p.signerHealth(t, ring) == want }) {
		t.Errorf("health of ring %s never became %v", ring, want)
	}
}
