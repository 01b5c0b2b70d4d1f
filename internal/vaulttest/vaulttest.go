// Package vaulttest starts a real Vault server in dev mode for tests: the
// binary `make bin/vault` builds from Vault's own Go module, found through
// SIGNET_VAULT_BIN (BinaryEnv). Not for production use.
package vaulttest

import (
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/signet-dev/signet/internal/output"
)

// RootToken is the dev server's root token.
const RootToken = "signet-test-root"

// Server is a running `vault server -dev` on a loopback port with Transit
// enabled at "transit".
type Server struct {
	Addr   string // http://127.0.0.1:PORT, or https:// with StartTLS
	CAFile string // with StartTLS: the CA that signed the server's certificate
	cmd    *exec.Cmd
	out    *output.Buffer
	done   chan struct{}
}

// BinaryEnv names the environment variable that holds the path of the Vault
// server binary. The Makefile sets it to the bin/vault that `make bin/vault`
// builds from Vault's Go module; nothing else finds the binary.
const BinaryEnv = "SIGNET_VAULT_BIN"

// Binary returns the Vault server binary that BinaryEnv names, and fails the
// test when it is unset or missing.
//
// With go test -short (`make check`, the inner loop that runs no external
// server) it skips the test instead: that is the one place the Vault tests
// are left out, and `make test` never passes -short, so there they run (and
// in CI, where scripts/tools/testreport fails on any skip, a skip here
// would fail the run).
func Binary(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skipf("needs a Vault server: `make test` runs this test (go test -short leaves out the tests that start one)")
	}
	p := os.Getenv(BinaryEnv)
	if p == "" {
		t.Fatalf("%s is not set: run `make test`, or set %s to a Vault binary built by `make bin/vault` (%s=$PWD/bin/vault)",
			BinaryEnv, BinaryEnv, BinaryEnv)
	}
	if _, err := os.Stat(p); err != nil { // #nosec G703 -- the test run names the Vault binary
		t.Fatalf("%s=%s: %v: build it with `make bin/vault` (`make test` does)", BinaryEnv, p, err)
	}
	return p
}

// Start starts a dev server over plain HTTP and stops it when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	return start(t, false)
}

// StartTLS starts a dev server over HTTPS with a certificate from a CA the
// server generates (CAFile).
func StartTLS(t testing.TB) *Server {
	t.Helper()
	return start(t, true)
}

// maxStarts bounds the tries at a free port.
const maxStarts = 5

// start runs Vault on a port that was free a moment before. Vault cannot be
// given a listening socket, and with -dev-listen-address=127.0.0.1:0 it
// binds a random port but reports the configured one: its log says "Api
// Address: http://127.0.0.1:0" (only the cluster listener, which dev mode
// binds at the API port + 1, gives a real port, and reading the API port
// off that would rely on an accident of Vault's code). So the port is picked
// by listening on :0 and closing, and another process may take it (or the
// port after it) before Vault binds it: then Vault exits with "address
// already in use" and start tries again with a new port.
func start(t testing.TB, tls bool) *Server {
	t.Helper()
	bin := Binary(t)
	for try := 1; ; try++ {
		s, err := launch(t, bin, tls)
		if err == nil {
			return s
		}
		if !errors.Is(err, errPortTaken) || try == maxStarts {
			t.Fatalf("starting vault (try %d): %v", try, err)
		}
		t.Logf("vault could not bind its port, trying another (try %d): %v", try, err)
	}
}

var errPortTaken = errors.New("address already in use")

// freeAddr returns a loopback address that nothing listened on a moment ago
// (a variable for this package's test, which hands out a taken one).
var freeAddr = func() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// launch starts one Vault process and waits until it serves. The process is
// stopped when the test ends, or at once if it does not come up.
func launch(t testing.TB, bin string, tls bool) (*Server, error) {
	t.Helper()
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	s := &Server{Addr: "http://" + addr, out: &output.Buffer{}, done: make(chan struct{})}
	args := []string{"server", "-dev", "-dev-root-token-id=" + RootToken, "-dev-listen-address=" + addr, "-dev-no-store-token"}
	if tls {
		dir := t.TempDir()
		s.Addr, s.CAFile = "https://"+addr, filepath.Join(dir, "vault-ca.pem")
		args = append(args, "-dev-tls", "-dev-tls-cert-dir="+dir)
	}
	s.cmd = exec.Command(bin, args...) // #nosec G204 -- the Vault binary the test run names, with the test's arguments
	home := t.TempDir()
	s.cmd.Env = append(os.Environ(), "HOME="+home, "VAULT_ADDR="+s.Addr, "VAULT_DISABLE_MLOCK=true")
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { _ = s.cmd.Wait(); close(s.done) }() // it exits when killed: the error says only that
	if err := s.waitReady(t, tls); err != nil {
		s.stop()
		return nil, err
	}
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			t.Logf("vault server output:\n%s", s.out.String())
		}
	})
	if err := s.Root(t).Sys().Mount("transit", &api.MountInput{Type: "transit"}); err != nil {
		t.Fatalf("enabling transit: %v", err)
	}
	return s, nil
}

// stop kills the process (thawing it first, were it frozen) and waits for it.
func (s *Server) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGCONT) // fails only if it has exited, which is the aim
	_ = s.cmd.Process.Kill()
	<-s.done
}

// started is what Vault prints once its listeners are bound and serving.
// Waiting for it in this process's own output, not only for a healthy
// answer at the address, keeps a Vault that lost the port from taking
// another server's answers for its own.
const started = "==> Vault server started!"

func (s *Server) waitReady(t testing.TB, tls bool) error {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var err error
		switch {
		case !strings.Contains(s.out.String(), started):
			err = fmt.Errorf("vault has not said it started")
		case tls && !pemReady(s.CAFile):
			err = fmt.Errorf("the CA file is not written yet")
		default:
			var resp *http.Response
			if resp, err = s.Root(t).CloneConfig().HttpClient.Get(s.Addr + "/v1/sys/health"); err == nil {
				_ = resp.Body.Close() // nothing was read from it
				if resp.StatusCode == http.StatusOK {
					return nil
				}
				err = fmt.Errorf("health: %s", resp.Status)
			}
		}
		select {
		case <-s.done:
			out := s.out.String()
			if strings.Contains(out, "address already in use") {
				return fmt.Errorf("%w: %s", errPortTaken, s.Addr)
			}
			return fmt.Errorf("vault server exited:\n%s", out)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("vault server did not become healthy (%v):\n%s", err, s.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// pemReady reports whether the dev server has finished writing its CA.
func pemReady(path string) bool {
	b, err := os.ReadFile(path) // #nosec G304 -- the CA file the dev server writes in the test's directory
	if err != nil {
		return false
	}
	block, _ := pem.Decode(b)
	return block != nil
}

// Root returns a client with the root token.
func (s *Server) Root(t testing.TB) *api.Client {
	t.Helper()
	cfg := api.DefaultConfig()
	cfg.Address = s.Addr
	// A test wants Vault's answer, not retries: the client's default
	// retries a 500 (Transit refusing to sign) twice, with seconds of backoff.
	cfg.MaxRetries = 0
	if s.CAFile != "" {
		if err := cfg.ConfigureTLS(&api.TLSConfig{CACert: s.CAFile}); err != nil {
			t.Fatal(err)
		}
	}
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(RootToken)
	return c
}

// Write writes to a Vault path as root.
func (s *Server) Write(t testing.TB, path string, data map[string]any) *api.Secret {
	t.Helper()
	sec, err := s.Root(t).Logical().WriteWithContext(context.Background(), path, data)
	if err != nil {
		t.Fatalf("vault write %s: %v", path, err)
	}
	return sec
}

// Freeze stops the process (SIGSTOP): connections are accepted by the
// kernel but nothing answers, the way a hung server behaves. It returns once
// the kernel reports the process stopped (the signal is asynchronous).
func (s *Server) Freeze(t testing.TB) {
	t.Helper()
	s.signal(t, syscall.SIGSTOP)
	stat := fmt.Sprintf("/proc/%d/stat", s.cmd.Process.Pid)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		b, err := os.ReadFile(stat) // #nosec G304 -- /proc/PID/stat of the test's own Vault process
		if err != nil {
			t.Fatalf("reading %s: %v", stat, err)
		}
		// The state follows the parenthesised command name: "pid (comm) T ...".
		if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) && b[i+2] == 'T' {
			return
		}
	}
	t.Fatal("vault did not stop after SIGSTOP")
}

// Thaw resumes a frozen server.
func (s *Server) Thaw(t testing.TB) { s.signal(t, syscall.SIGCONT) }

// Kill ends the server: connections are refused from then on.
func (s *Server) Kill(t testing.TB) {
	s.signal(t, syscall.SIGKILL)
	<-s.done
}

func (s *Server) signal(t testing.TB, sig os.Signal) {
	t.Helper()
	if err := s.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v to vault: %v", sig, err)
	}
}

// Policy creates a policy from HCL.
func (s *Server) Policy(t testing.TB, name, hcl string) {
	t.Helper()
	if err := s.Root(t).Sys().PutPolicy(name, hcl); err != nil {
		t.Fatalf("vault policy %s: %v", name, err)
	}
}

// Token creates a token with the given policies and options.
func (s *Server) Token(t testing.TB, data map[string]any) string {
	t.Helper()
	sec := s.Write(t, "auth/token/create", data)
	if sec == nil || sec.Auth == nil {
		t.Fatal("token create returned no token")
	}
	return sec.Auth.ClientToken
}

// SignerPolicy is the least a Signet backend needs on the "transit" mount.
const SignerPolicy = `
path "transit/keys/*" { capabilities = ["create", "read", "update"] }
path "transit/sign/*" { capabilities = ["update"] }
path "transit/keys/signet-lock.*" { capabilities = ["create", "read", "update", "delete"] }
`
