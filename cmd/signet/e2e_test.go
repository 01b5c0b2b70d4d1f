package main

// End-to-end tests: they build the real signet binary, start it on free
// loopback ports, and talk to it the way users do, over gRPC and HTTP and
// through the CLI. Tokens are verified by go-jose and by PyJWT through the
// live JWKS.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/signet-dev/signet/backends"
	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
)

var signetBin string

// buildFlags are the flags the binary under test is built with; the PKCS#11
// tests add their build tag.
var buildFlags []string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "signet-e2e-")
	if err != nil {
		panic(err)
	}
	signetBin = filepath.Join(dir, "signet")
	build := exec.Command("go", append(append([]string{"build"}, buildFlags...), "-o", signetBin, ".")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building signet:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// process is a running `signet serve`.
type process struct {
	cmd      *exec.Cmd
	grpcAddr string
	httpURL  string
	issuer   string
	stdout   *syncBuffer
	stderr   *syncBuffer
	exited   chan struct{} // closed when the process has exited
	waitErr  error
	client   signetv1.SignerServiceClient
}

// syncBuffer collects a process's output while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// e2eConfig has one ring per algorithm; "default" (ES256) has a short
// publish_ahead so that a rotated version starts signing within seconds.
func e2eConfig(grpcAddr, httpAddr, dataDir string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "issuer: http://%s\ngrpc: {listen: %q}\nhttp: {listen: %q}\nlog: {level: debug}\nkey_rings:\n", httpAddr, grpcAddr, httpAddr)
	fmt.Fprintf(&b, "  - {name: default, backend: 'local://%s', algorithm: ES256, token_max_ttl: 1m, jwks_max_age: 1s, refresh_interval: 1s, publish_ahead: 2s, retire_after: 63s}\n", dataDir)
	for _, alg := range backends.AllAlgorithms {
		fmt.Fprintf(&b, "  - {name: %s, backend: 'local://%s', algorithm: %s}\n", strings.ToLower(string(alg)), dataDir, alg)
	}
	return b.String()
}

func startSignet(t *testing.T, dataDir string) *process {
	t.Helper()
	return startSignetWith(t, func(grpcAddr, httpAddr string) string { return e2eConfig(grpcAddr, httpAddr, dataDir) })
}

// startSignetWith starts `signet serve` with the config that config renders
// for the chosen addresses, plus extra environment variables.
func startSignetWith(t *testing.T, config func(grpcAddr, httpAddr string) string, env ...string) *process {
	t.Helper()
	grpcAddr, httpAddr := freePort(t), freePort(t)
	cfgPath := filepath.Join(t.TempDir(), "signet.yaml")
	if err := os.WriteFile(cfgPath, []byte(config(grpcAddr, httpAddr)), 0o600); err != nil {
		t.Fatal(err)
	}
	p := &process{grpcAddr: grpcAddr, httpURL: "http://" + httpAddr, issuer: "http://" + httpAddr,
		stdout: &syncBuffer{}, stderr: &syncBuffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(signetBin, "serve", "--config", cfgPath)
	p.cmd.Env = append(append(os.Environ(), "SIGNET_LOCAL_KEK=MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="), env...)
	stdout, _ := p.cmd.StdoutPipe()
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	banner := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.stdout.Write([]byte(sc.Text() + "\n"))
			if strings.HasPrefix(sc.Text(), "Verify it:") {
				close(banner)
			}
		}
	}()
	go func() { p.waitErr = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("signet stderr:\n%s", p.stderr.String())
		}
	})
	select {
	case <-banner:
	case <-p.exited:
		t.Fatalf("signet serve exited: %v\n%s", p.waitErr, p.stderr.String())
	case <-time.After(2 * time.Minute): // startup generates RSA-4096 keys; this only catches a hang
		t.Fatalf("signet serve printed no banner\n%s", p.stderr.String())
	}
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	p.client = signetv1.NewSignerServiceClient(conn)
	return p
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

var allJOSE = []jose.SignatureAlgorithm{jose.ES256, jose.ES384, jose.ES512, jose.RS256, jose.RS384, jose.RS512,
	jose.PS256, jose.PS384, jose.PS512, jose.EdDSA}

// goJOSEVerify verifies with go-jose against a JWKS and checks the claims.
func goJOSEVerify(jwksBody []byte, token, issuer string) error {
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(jwksBody, &set); err != nil {
		return err
	}
	tok, err := jwt.ParseSigned(token, allJOSE)
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
	return c.Validate(jwt.Expected{Issuer: issuer, AnyAudience: jwt.Audience{"e2e"}, Time: time.Now()})
}

type pyResult struct {
	OK     bool           `json:"ok"`
	Kid    string         `json:"kid"`
	Alg    string         `json:"alg"`
	Error  string         `json:"error"`
	Claims map[string]any `json:"claims"`
}

// pyJWTVerify verifies tokens with PyJWT's PyJWKClient against the live JWKS URL.
func pyJWTVerify(t *testing.T, p *process, tokens ...string) []pyResult {
	t.Helper()
	python := "/usr/bin/python3" // Debian's, where python3-jwt is installed
	script := filepath.Join(repoRoot(t), "scripts", "verify_pyjwt.py")
	cmd := exec.Command(python, script, p.httpURL+"/.well-known/jwks.json", p.issuer, "e2e")
	cmd.Stdin = strings.NewReader(strings.Join(tokens, "\n") + "\n")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("PyJWT verifier failed (make test installs python3-jwt): %v\n%s", err, stderr.String())
	}
	var results []pyResult
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var r pyResult
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("PyJWT verifier printed %q", line)
		}
		results = append(results, r)
	}
	if len(results) != len(tokens) {
		t.Fatalf("PyJWT verified %d tokens, sent %d", len(results), len(tokens))
	}
	return results
}

func repoRoot(t *testing.T) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

func TestEndToEnd(t *testing.T) {
	dataDir := t.TempDir()
	p := startSignet(t, dataDir)
	for _, want := range []string{p.httpURL + "/.well-known/jwks.json", "signet sign --server " + p.grpcAddr} {
		if !strings.Contains(p.stdout.String(), want) {
			t.Errorf("banner does not show %q:\n%s", want, p.stdout.String())
		}
	}

	// Every algorithm: sign over gRPC, verify through the live JWKS with
	// go-jose and with PyJWT.
	jwksBody := p.jwks(t)
	var tokens []string
	var algs []string
	for _, alg := range backends.AllAlgorithms {
		resp := p.sign(t, strings.ToLower(string(alg)))
		if err := goJOSEVerify(jwksBody, resp.GetToken(), p.issuer); err != nil {
			t.Errorf("%s: go-jose: %v", alg, err)
		}
		tokens, algs = append(tokens, resp.GetToken()), append(algs, string(alg))
	}
	for i, r := range pyJWTVerify(t, p, tokens...) {
		if !r.OK || r.Alg != algs[i] || r.Claims["sub"] != "svc-"+strings.ToLower(algs[i]) {
			t.Errorf("%s: PyJWT: %+v", algs[i], r)
		}
	}

	// Rotate: the new kid is published at once; once it signs, tokens of the
	// old and the new version both verify.
	old, fresh, rot := p.rotateUntilSigning(t)
	newKid := rot.GetVersion().GetKid()

	// The CLI for the people in the loop.
	keys := runCLI(t, "keys", "--server", p.grpcAddr, "--key-ring", "default")
	if !strings.Contains(keys, "retiring") || !strings.Contains(keys, "active") || !strings.Contains(keys, newKid) {
		t.Errorf("signet keys:\n%s", keys)
	}
	tok := strings.TrimSpace(runCLI(t, "sign", "--server", p.grpcAddr, "--audience", "e2e", "--subject", "cli", "--claims", `{"scope":"read"}`))
	verified := runCLI(t, "verify", "--jwks", p.httpURL+"/.well-known/jwks.json", "--audience", "e2e", "--issuer", p.issuer, tok)
	if !strings.Contains(verified, "valid: signed by kid "+newKid) || !strings.Contains(verified, `"scope": "read"`) {
		t.Errorf("signet verify:\n%s", verified)
	}

	// Emergency rotation: the old kids leave the JWKS and their tokens stop
	// verifying; tokens of the new version verify.
	_, latest := p.revokePrevious(t, old, fresh)

	// Graceful shutdown, then a restart on the same data shows the same keys.
	before := listKids(t, p)
	p.stop(t)
	p2 := startSignet(t, dataDir)
	if after := listKids(t, p2); !slices.Equal(before, after) {
		t.Errorf("keys changed across restart:\nbefore %v\nafter  %v", before, after)
	}
	if err := goJOSEVerify(p2.jwks(t), latest.GetToken(), p.issuer); err != nil {
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

func runCLI(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(signetBin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("signet %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

func TestCLIHelpAndErrors(t *testing.T) {
	for _, c := range []string{"serve", "sign", "rotate", "keys", "verify", "dev-certs"} {
		cmd := exec.Command(signetBin, c, "--help")
		out, _ := cmd.CombinedOutput()
		if !strings.Contains(string(out), "Usage: signet "+c) {
			t.Errorf("signet %s --help:\n%s", c, out)
		}
	}
	out, err := exec.Command(signetBin).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "Commands:") {
		t.Errorf("signet with no command: %v\n%s", err, out)
	}
	// A bad config fails at startup naming the field.
	cfg := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(cfg, []byte("key_rings: [{name: a, backend: 'local://x', publish_ahead: 1s}]\n"), 0o600)
	out, err = exec.Command(signetBin, "serve", "--config", cfg).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "publish_ahead") {
		t.Errorf("serve with a bad config: %v\n%s", err, out)
	}
}

// backendConfig renders a config whose rings all live on one backend. The
// first ring is "default" (ES256) with a short publish_ahead, so that a
// rotated version starts signing within seconds; the others are named after
// their algorithm.
func backendConfig(backend string, algs ...string) func(grpcAddr, httpAddr string) string {
	return func(grpcAddr, httpAddr string) string {
		var b strings.Builder
		fmt.Fprintf(&b, "issuer: http://%s\ngrpc: {listen: %q}\nhttp: {listen: %q}\nlog: {level: debug}\nbackend_timeout: 3s\nkey_rings:\n", httpAddr, grpcAddr, httpAddr)
		fmt.Fprintf(&b, "  - {name: default, backend: '%s', algorithm: ES256, token_max_ttl: 1m, jwks_max_age: 1s, refresh_interval: 1s, publish_ahead: 2s}\n", backend)
		for _, alg := range algs {
			fmt.Fprintf(&b, "  - {name: %s, backend: '%s', algorithm: %s}\n", strings.ToLower(alg), backend, alg)
		}
		return b.String()
	}
}

// verifyAll signs with each ring and verifies every token with go-jose and
// with PyJWT through the live JWKS.
func (p *process) verifyAll(t *testing.T, rings ...string) {
	t.Helper()
	jwks := p.jwks(t)
	var tokens []string
	for _, ring := range rings {
		resp := p.sign(t, ring)
		if err := goJOSEVerify(jwks, resp.GetToken(), p.issuer); err != nil {
			t.Errorf("%s: go-jose: %v", ring, err)
		}
		tokens = append(tokens, resp.GetToken())
	}
	for i, r := range pyJWTVerify(t, p, tokens...) {
		if !r.OK {
			t.Errorf("%s: PyJWT: %+v", rings[i], r)
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
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if fresh = p.sign(t, "default"); fresh.GetKid() == newKid {
			break
		}
	}
	if fresh.GetKid() != newKid {
		t.Fatalf("the rotated version %s never started signing (publish_ahead 2s)", newKid)
	}
	jwks := p.jwks(t)
	for _, tok := range []*signetv1.SignResponse{old, fresh} {
		if err := goJOSEVerify(jwks, tok.GetToken(), p.issuer); err != nil {
			t.Errorf("after rotation, token of %s: go-jose: %v", tok.GetKid(), err)
		}
	}
	for _, r := range pyJWTVerify(t, p, old.GetToken(), fresh.GetToken()) {
		if !r.OK {
			t.Errorf("after rotation: PyJWT: %+v", r)
		}
	}
	return old, fresh, rot
}

// revokePrevious rotates the default ring in an emergency and checks that
// the given tokens' kids left the JWKS, that they no longer verify with
// either library, and that the new version signs.
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
		if err := goJOSEVerify(jwks, tok.GetToken(), p.issuer); err == nil {
			t.Errorf("token of revoked %s still verifies with go-jose", tok.GetKid())
		}
		tokens = append(tokens, tok.GetToken())
	}
	latest := p.sign(t, "default")
	if latest.GetKid() != rev.GetVersion().GetKid() {
		t.Errorf("after emergency rotation signed by %s, want %s", latest.GetKid(), rev.GetVersion().GetKid())
	}
	if err := goJOSEVerify(jwks, latest.GetToken(), p.issuer); err != nil {
		t.Errorf("token of the new version: %v", err)
	}
	py := pyJWTVerify(t, p, append(tokens, latest.GetToken())...)
	for i, r := range py {
		if want := i == len(py)-1; r.OK != want {
			t.Errorf("PyJWT after revocation, token %d: %+v (want ok=%v)", i, r, want)
		}
	}
	return rev, latest
}
