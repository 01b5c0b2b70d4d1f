package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
)

// TestCheckConfigBinary: the binary's exit status and output, for
// check-config and serve --check, which must not start anything.
func TestCheckConfigBinary(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("key_rings: [{name: a, backend: 'local://x', token_max_ttl: 24h, retire_after: 2h}]\n"), 0o600)
	good := filepath.Join(dir, "good.yaml")
	// A data directory that does not exist: opening the local backend would
	// create it, a check must not.
	data := filepath.Join(dir, "data")
	os.WriteFile(good, []byte("grpc: {listen: '127.0.0.1:1'}\nkey_rings: [{name: a, backend: 'local://"+data+"'}]\n"), 0o600)

	for _, args := range [][]string{{"check-config", "--config", bad}, {"serve", "--check", "--config", bad}} {
		cmd := exec.Command(binary(t), args...)
		out, err := cmd.CombinedOutput()
		if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 1 {
			t.Errorf("signet %v: %v, want exit status 1\n%s", args, err, out)
		}
		if want := "signet: config: key_rings[0] (a): retire_after 2h0m0s is shorter than"; !strings.HasPrefix(string(out), want) {
			t.Errorf("signet %v printed\n%s\nwant it to start with %q", args, out, want)
		}
	}
	for _, args := range [][]string{{"check-config", "--config", good}, {"serve", "--check", "--config", good}} {
		if out := runCLI(t, args...); !strings.HasPrefix(out, good+": OK\n") {
			t.Errorf("signet %v printed:\n%s", args, out)
		}
	}
	if _, err := os.Stat(data); !os.IsNotExist(err) {
		t.Errorf("checking the config touched the local backend's directory: %v", err)
	}
}

// TestVersion: `make build` sets the version and commit with -ldflags -X on
// the variables in server/telemetry; without them the build info says what
// it can.
func TestVersion(t *testing.T) {
	t.Parallel()
	out := runCLI(t, "version")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "signet ") || !strings.HasPrefix(lines[1], "commit ") ||
		lines[2] != runtime.Version()+" "+runtime.GOOS+"/"+runtime.GOARCH {
		t.Errorf("signet version printed:\n%s", out)
	}

	bin := filepath.Join(t.TempDir(), "signet")
	const pkg = "github.com/signet-dev/signet/server/telemetry"
	// The same flags as TestMain's build but -ldflags, so that only the link
	// step runs again.
	build := exec.Command("go", append(append([]string{"build"}, buildFlags...), "-ldflags",
		fmt.Sprintf("-X %s.Version=v9.8.7 -X %s.Commit=0123456789abcdef", pkg, pkg), "-o", bin, ".")...)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	got, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatal(err)
	}
	if want := "signet v9.8.7\ncommit 0123456789abcdef\n"; !strings.HasPrefix(string(got), want) {
		t.Errorf("built with -ldflags, signet version printed\n%s\nwant it to start with\n%s", got, want)
	}
}

// TestHealthProbe runs `signet health`, the Helm chart's startup probe,
// against a plaintext development server and an mTLS one: with mTLS it
// speaks TLS and trusts exactly the server's own certificate.
func TestHealthProbe(t *testing.T) {
	t.Parallel()
	plain := startSignetWith(t, configHead+"key_rings: [{name: default, backend: 'local://"+t.TempDir()+"'}]\n")
	cfg := filepath.Join(t.TempDir(), "signet.yaml")
	os.WriteFile(cfg, []byte(plain.config), 0o600)
	if out := runCLI(t, "health", "--config", cfg, "--server", plain.grpcAddr); out != "signet.v1.SignerService: SERVING\n" {
		t.Errorf("health of a plaintext server: %q", out)
	}
	if out := runCLI(t, "health", "--server", plain.grpcAddr, "--service", ""); out != "server: SERVING\n" {
		t.Errorf("health of the whole server: %q", out)
	}
	if out := runCLIFail(t, "health", "--server", plain.grpcAddr, "--service", "signet.v1.Nothing"); !strings.Contains(out, "NotFound") {
		t.Errorf("health of an unknown service: %s", out)
	}
	if out := runCLI(t, "health", "--server", plain.grpcAddr, "--ring", "default"); out != "signet.v1.SignerService/default: SERVING\n" {
		t.Errorf("health of ring default: %q", out)
	}
	if out := runCLIFail(t, "health", "--server", plain.grpcAddr, "--ring", "nothing"); !strings.Contains(out, "NotFound") {
		t.Errorf("health of an unknown ring: %s", out)
	}
	if out := runCLIFail(t, "health", "--server", plain.grpcAddr, "--ring", "default", "--service", ""); !strings.Contains(out, "not both") {
		t.Errorf("health with --ring and --service: %s", out)
	}

	certs := filepath.Join(t.TempDir(), "certs")
	runCLI(t, "dev-certs", "--dir", certs)
	mtlsConfig := func(cert string) string {
		return fmt.Sprintf(`issuer: %[1]s
grpc:
  listen: 127.0.0.1:0
  tls: {cert_file: %[2]s/%[3]s.pem, key_file: %[2]s/%[3]s-key.pem, client_ca_file: %[2]s/ca.pem}
http: {listen: 127.0.0.1:0}
admin: {listen: 127.0.0.1:0}
policy_file: %[2]s/policy.yaml
key_rings:
  - {name: default, backend: 'local://%[4]s'}
`, testIssuer, certs, cert, filepath.Join(certs, "data"))
	}
	p := startSignetWith(t, mtlsConfig("server"))
	os.WriteFile(cfg, []byte(p.config), 0o600)
	if out := runCLI(t, "health", "--config", cfg, "--server", p.grpcAddr); out != "signet.v1.SignerService: SERVING\n" {
		t.Errorf("health over mTLS: %q", out)
	}
	// Plaintext against TLS fails, and so does a server that presents
	// another certificate than the config's cert_file.
	if out := runCLIFail(t, "health", "--server", p.grpcAddr); !strings.Contains(out, "health of") {
		t.Errorf("plaintext health against mTLS: %s", out)
	}
	os.WriteFile(cfg, []byte(mtlsConfig("service")), 0o600)
	if out := runCLIFail(t, "health", "--config", cfg, "--server", p.grpcAddr); !strings.Contains(out, "does not present the certificate in grpc.tls.cert_file") {
		t.Errorf("health trusting another certificate: %s", out)
	}
}

func TestDialAddress(t *testing.T) {
	for listen, want := range map[string]string{
		"0.0.0.0:9090":   "127.0.0.1:9090",
		":9090":          "127.0.0.1:9090",
		"[::]:9090":      "[::1]:9090",
		"10.0.0.1:9090":  "10.0.0.1:9090",
		"127.0.0.1:9090": "127.0.0.1:9090",
		"localhost:9090": "localhost:9090",
	} {
		if got := dialAddress(listen); got != want {
			t.Errorf("dialAddress(%q) = %q, want %q", listen, got, want)
		}
	}
}

// TestRingHealthCLI: with one ring in its emergency rotation's wait and
// another signing, `signet health --ring` and `signet status` tell them
// apart, and the overall health stays SERVING.
func TestRingHealthCLI(t *testing.T) {
	t.Parallel()
	data := t.TempDir()
	p := startSignetWith(t, configHead+"key_rings:\n"+
		"  - {name: waiting, backend: 'local://"+data+"'}\n"+
		"  - {name: signing, backend: 'local://"+data+"', algorithm: EdDSA}\n")
	if _, err := p.client.Rotate(ctxT(t), &signetv1.RotateRequest{KeyRing: "waiting", RevokePrevious: true}); err != nil {
		t.Fatal(err)
	}
	// The new version waits 2 × refresh_interval (a minute) before it signs.
	if out := runCLI(t, "health", "--server", p.grpcAddr); out != "signet.v1.SignerService: SERVING\n" {
		t.Errorf("overall health with one ring signing: %q", out)
	}
	if out := runCLI(t, "health", "--server", p.grpcAddr, "--ring", "signing"); out != "signet.v1.SignerService/signing: SERVING\n" {
		t.Errorf("health of the signing ring: %q", out)
	}
	if out := runCLIFail(t, "health", "--server", p.grpcAddr, "--ring", "waiting"); !strings.Contains(out, "NOT_SERVING") {
		t.Errorf("health of the waiting ring: %s", out)
	}
	status := runCLI(t, "status", "--admin", strings.TrimPrefix(p.adminURL, "http://"))
	for _, want := range []string{"signing:  yes, with 1 of 2 key rings", "key ring waiting (ES256)", "  health NOT_SERVING: key ring \"waiting\"",
		"emergency rotation", "key ring signing (EdDSA)", "  health SERVING\n"} {
		if !strings.Contains(status, want) {
			t.Errorf("signet status does not show %q:\n%s", want, status)
		}
	}
}
