// Package kubetest starts a real etcd and kube-apiserver on loopback for
// tests: the binaries `make bin/etcd bin/kube-apiserver` build from their Go
// modules (scripts/etcd, scripts/kube-apiserver), found through
// SIGNET_ETCD_BIN and SIGNET_KUBE_APISERVER_BIN, with the kube-apiserver's
// service-account tokens signed by an ExternalJWTSigner on a Unix socket.
// It talks to the API server over its REST API (TokenRequest, TokenReview,
// the OIDC discovery documents), authenticated by a static bearer token.
// Not for production use.
package kubetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/signet-dev/signet/internal/output"
)

// The environment variables that name the binaries; the Makefile sets them.
const (
	EtcdEnv      = "SIGNET_ETCD_BIN"
	APIServerEnv = "SIGNET_KUBE_APISERVER_BIN"
)

// binary returns the binary env names, and fails the test when it is unset
// or missing (go test -short skips instead, as vaulttest does: in CI,
// scripts/tools/testreport fails on any skip).
func binary(t testing.TB, env, target string) string {
	t.Helper()
	if testing.Short() {
		t.Skipf("needs etcd and kube-apiserver: `make test` runs this test (go test -short leaves out the tests that start servers)")
	}
	p := os.Getenv(env)
	if p == "" {
		t.Fatalf("%s is not set: run `make test`, or build `make %s` and set %s=$PWD/%s", env, target, env, target)
	}
	if _, err := os.Stat(p); err != nil { // #nosec G703 -- the test run names the binary
		t.Fatalf("%s=%s: %v: build it with `make %s` (`make test` does)", env, p, err, target)
	}
	return p
}

// freePort is a loopback port free a moment ago (etcd and kube-apiserver
// take ports from flags and do not report what they bound).
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// proc is a started server process, killed when the test ends.
type proc struct {
	cmd    *exec.Cmd
	out    *output.Buffer
	exited chan struct{}
	err    error
}

func start(t testing.TB, name, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{out: &output.Buffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(bin, args...) // #nosec G204 -- the test's own server binaries
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(20 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("%s output (last 8 KiB):\n%s", name, tail(p.out.String(), 8<<10))
		}
	})
	return p
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// waitFor polls cond every 100ms until it holds, the process exits, or
// timeout passes.
func (p *proc) waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); ; time.Sleep(100 * time.Millisecond) {
		select {
		case <-p.exited:
			t.Fatalf("%s: the process exited (%v):\n%s", what, p.err, tail(p.out.String(), 8<<10))
		default:
		}
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v:\n%s", what, timeout, tail(p.out.String(), 8<<10))
		}
	}
}

// StartEtcd starts a single-member etcd on loopback with its data under
// t.TempDir() and returns its client URL once it answers /health.
func StartEtcd(t testing.TB) string {
	t.Helper()
	bin := binary(t, EtcdEnv, "bin/etcd")
	client := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	peer := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	p := start(t, "etcd", bin, "--name", "e2e", "--data-dir", filepath.Join(t.TempDir(), "etcd"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", "e2e="+peer,
		"--log-level", "warn")
	p.waitFor(t, "etcd /health", time.Minute, func() bool {
		resp, err := http.Get(client + "/health") // #nosec G107 -- loopback test server
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == 200 && strings.Contains(string(b), `"true"`)
	})
	return client
}

// APIServer is a running kube-apiserver.
type APIServer struct {
	URL    string
	token  string // a system:masters bearer token (--token-auth-file)
	client *http.Client
	p      *proc
}

// StartAPIServer starts kube-apiserver on loopback against etcd, with
// issuer as its --service-account-issuer and the ExternalJWTSigner on
// socket as its --service-account-signing-endpoint (and no key files), and
// returns once /readyz answers ok. args are further flags.
func StartAPIServer(t testing.TB, etcd, issuer, socket string, args ...string) *APIServer {
	t.Helper()
	bin := binary(t, APIServerEnv, "bin/kube-apiserver")
	dir := t.TempDir()
	tok := make([]byte, 16)
	_, _ = rand.Read(tok)
	s := &APIServer{token: hex.EncodeToString(tok)}
	tokens := filepath.Join(dir, "tokens.csv")
	if err := os.WriteFile(tokens, []byte(s.token+",admin,admin-uid,system:masters\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	s.URL = "https://127.0.0.1:" + strconv.Itoa(port)
	certDir := filepath.Join(dir, "certs")
	s.p = start(t, "kube-apiserver", bin, append([]string{
		"--etcd-servers=" + etcd,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--secure-port=" + strconv.Itoa(port),
		"--cert-dir=" + certDir,
		"--service-cluster-ip-range=10.96.0.0/24",
		"--token-auth-file=" + tokens,
		"--authorization-mode=RBAC",
		"--service-account-issuer=" + issuer,
		"--service-account-signing-endpoint=" + socket,
		"--enable-priority-and-fairness=false",
		// The "kubernetes" Service's endpoint would be the advertise address,
		// which may not be loopback: no endpoint reconciler.
		"--endpoint-reconciler-type=none",
		"--v=1",
	}, args...)...)
	// The serving certificate is self-signed at startup, in --cert-dir:
	// trusted as it is, for this loopback connection only.
	var pool *x509.CertPool
	s.p.waitFor(t, "kube-apiserver's serving certificate", 2*time.Minute, func() bool {
		b, err := os.ReadFile(filepath.Join(certDir, "apiserver.crt")) // #nosec G304 -- under the test's own temporary directory
		if err != nil {
			return false
		}
		pool = x509.NewCertPool()
		return pool.AppendCertsFromPEM(b)
	})
	s.client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}}}
	s.p.waitFor(t, "kube-apiserver /readyz", 3*time.Minute, func() bool {
		code, _, err := s.Do(context.Background(), http.MethodGet, "/readyz", nil)
		return err == nil && code == 200
	})
	return s
}

// Output is what the kube-apiserver printed so far.
func (s *APIServer) Output() string { return s.p.out.String() }

// Do sends a request with the admin token; body, if not nil, is sent as JSON.
func (s *APIServer) Do(ctx context.Context, method, path string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.URL+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+s.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return resp.StatusCode, b, err
}

// CreateServiceAccount creates namespace/name, retrying while the
// namespace is not there yet (the API server creates "default" shortly
// after it is ready).
func (s *APIServer) CreateServiceAccount(t testing.TB, namespace, name string) {
	t.Helper()
	sa := map[string]any{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": map[string]any{"name": name}}
	s.p.waitFor(t, "creating service account "+namespace+"/"+name, time.Minute, func() bool {
		code, _, err := s.Do(context.Background(), http.MethodPost, "/api/v1/namespaces/"+namespace+"/serviceaccounts", sa)
		return err == nil && (code == 201 || code == 409)
	})
}

// TokenRequest asks for a token of service account namespace/name for
// audiences; the error carries the API server's answer.
func (s *APIServer) TokenRequest(ctx context.Context, namespace, name string, audiences []string, seconds int64) (string, error) {
	req := map[string]any{"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
		"spec": map[string]any{"audiences": audiences, "expirationSeconds": seconds}}
	// timeout bounds the API server's own wait: it calls the signer with
	// gRPC's wait-for-ready, so a signer that is not there would hold the
	// request for the default 60s.
	code, b, err := s.Do(ctx, http.MethodPost, "/api/v1/namespaces/"+namespace+"/serviceaccounts/"+name+"/token?timeout=15s", req)
	if err != nil {
		return "", err
	}
	if code != 201 {
		return "", fmt.Errorf("TokenRequest: HTTP %d: %s", code, b)
	}
	var out struct {
		Status struct {
			Token string `json:"token"`
		} `json:"status"`
	}
	if err := json.Unmarshal(b, &out); err != nil || out.Status.Token == "" {
		return "", fmt.Errorf("TokenRequest: no token in %s", b)
	}
	return out.Status.Token, nil
}

// Review is a TokenReview's status.
type Review struct {
	Authenticated bool     `json:"authenticated"`
	Audiences     []string `json:"audiences"`
	Error         string   `json:"error"`
	User          struct {
		Username string `json:"username"`
	} `json:"user"`
}

// TokenReview asks the API server whether token authenticates for audiences.
func (s *APIServer) TokenReview(ctx context.Context, token string, audiences []string) (Review, error) {
	req := map[string]any{"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
		"spec": map[string]any{"token": token, "audiences": audiences}}
	code, b, err := s.Do(ctx, http.MethodPost, "/apis/authentication.k8s.io/v1/tokenreviews", req)
	if err != nil {
		return Review{}, err
	}
	if code != 201 {
		return Review{}, fmt.Errorf("TokenReview: HTTP %d: %s", code, b)
	}
	var out struct {
		Status Review `json:"status"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return Review{}, err
	}
	return out.Status, nil
}

// Get returns the body of a GET that must answer 200.
func (s *APIServer) Get(t testing.TB, path string) []byte {
	t.Helper()
	code, b, err := s.Do(context.Background(), http.MethodGet, path, nil)
	if err != nil || code != 200 {
		t.Fatalf("GET %s: %d %s %v", path, code, b, err)
	}
	return b
}
