package deploy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	sigsyaml "sigs.k8s.io/yaml"
)

func TestMain(m *testing.M) {
	// Helm logs at info level that files/alerts.yaml is a symbolic link.
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	code := m.Run()
	if signetDir != "" {
		os.RemoveAll(signetDir)
	}
	os.Exit(code)
}

var (
	buildOnce sync.Once
	signetDir string // holds the binary and development certificates
	signetBin string
	buildErr  error
)

// signetBinary builds the signet binary from Signet's own module (offline:
// its modules are in the cache once its tests have run) and makes
// development certificates with it.
func signetBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if signetDir, buildErr = os.MkdirTemp("", "signet-deploy-"); buildErr != nil {
			return
		}
		signetBin = filepath.Join(signetDir, "signet")
		// The flags of `make build`, whose packages are then all in the
		// build cache (-trimpath is part of each package's cache key).
		build := exec.Command("go", "build", "-tags", "pkcs11", "-trimpath", "-o", signetBin, "./cmd/signet")
		build.Dir = ".."
		build.Env = append(os.Environ(), "GOFLAGS=-mod=readonly", "GOPROXY=off")
		if out, err := build.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/signet: %v\n%s", err, out)
			return
		}
		if out, err := exec.Command(signetBin, "dev-certs", "--dir", filepath.Join(signetDir, "certs")).CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("signet dev-certs: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return signetBin
}

// probesAgainstTheBinary runs the real signet binary with the rendered
// config, changed only where a test must: listeners on 127.0.0.1 with
// ports the system picks, keys in the local backend, development
// certificates in place of the Secret, the policy from its ConfigMap. Then
// it asks what the Deployment's probes ask, on the listener the probe's
// port is: the startup, readiness and liveness paths must answer 200.
func (c *checker) probesAgainstTheBinary() {
	t := c.t
	bin := signetBinary(t)
	dir := t.TempDir()

	var cfg map[string]any
	if err := sigsyaml.Unmarshal(c.cfgYAML, &cfg); err != nil {
		t.Fatal(err)
	}
	set := func(section, key string, v any) {
		m, _ := cfg[section].(map[string]any)
		if m == nil {
			m = map[string]any{}
			cfg[section] = m
		}
		m[key] = v
	}
	for _, s := range []string{"grpc", "http", "admin"} {
		set(s, "listen", "127.0.0.1:0")
	}
	if c.cfg.MTLS() {
		certs := filepath.Join(signetDir, "certs")
		set("grpc", "tls", map[string]any{"cert_file": certs + "/server.pem", "key_file": certs + "/server-key.pem",
			"client_ca_file": certs + "/ca.pem"})
		policy, err := c.readFile(c.cfg.PolicyFile)
		if err != nil {
			t.Fatal(err)
		}
		cfg["policy_file"] = filepath.Join(dir, "policy.yaml")
		os.WriteFile(cfg["policy_file"].(string), policy, 0o600)
	}
	if c.cfg.StateDir != "" { // the pod's emptyDir
		cfg["state_dir"] = t.TempDir()
	}
	if a := c.cfg.Audit.Path; a != "" && a != "-" {
		set("audit", "path", filepath.Join(dir, "audit.log"))
	}
	for _, r := range cfg["key_rings"].([]any) {
		r.(map[string]any)["backend"] = "local://" + filepath.Join(dir, "keys")
	}
	write := func(name string, cfg map[string]any) string {
		data, err := sigsyaml.Marshal(cfg)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cfgPath := write("signet.yaml", cfg)

	// The container's own arguments, with the config path swapped.
	args := slices.Clone(c.ctr.Args)
	args[2] = cfgPath
	ready := filepath.Join(dir, "ready.json")
	cmd := exec.Command(bin, append(args, "--ready-file", ready)...)
	cmd.Env = append(os.Environ(), "SIGNET_LOCAL_KEK=MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	var addrs struct{ GRPC, HTTP, Admin string }
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(50 * time.Millisecond) {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("signet %v exited: %v\n%s", args, err, stderr.String())
		default:
		}
		if b, err := os.ReadFile(ready); err == nil && json.Unmarshal(b, &addrs) == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("signet did not report its addresses\n%s", stderr.String())
		}
	}
	bound := map[int32]string{ // the rendered config's ports, to where they are bound here
		listenPort(t, c.cfg.GRPC.Listen): addrs.GRPC, listenPort(t, c.cfg.HTTP.Listen): addrs.HTTP,
		listenPort(t, c.cfg.Admin.Listen): addrs.Admin,
	}

	httpProbe := func(name string, p *corev1.Probe, wantPath string) {
		if p == nil || p.HTTPGet == nil {
			t.Errorf("%s probe %+v: want an HTTP GET of %s", name, p, wantPath)
			return
		}
		g := p.HTTPGet
		port := g.Port.IntVal
		if g.Port.StrVal != "" {
			port = c.containerPort(g.Port.StrVal)
		}
		if port != listenPort(t, c.cfg.HTTP.Listen) {
			t.Errorf("%s probe on port %s (%d): want the public HTTP listener (%s)", name, g.Port.String(), port, c.cfg.HTTP.Listen)
		}
		if g.Path != wantPath || g.Scheme != "" && g.Scheme != corev1.URISchemeHTTP {
			t.Errorf("%s probe: %s %s, want HTTP %s", name, g.Scheme, g.Path, wantPath)
		}
		addr, ok := bound[port]
		if !ok {
			t.Errorf("%s probe: port %d is none of the config's listeners", name, port)
			return
		}
		resp, err := http.Get("http://" + addr + g.Path)
		if err != nil {
			t.Errorf("%s probe: %v", name, err)
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s probe: GET %s answered %s: %s", name, g.Path, resp.Status, body)
		}
	}
	httpProbe("readiness", c.ctr.ReadinessProbe, "/readyz")
	httpProbe("liveness", c.ctr.LivenessProbe, "/healthz")

	// The startup probe asks what readiness asks: whether the replica
	// serves the JWKS, which one restarted while a backend does not answer
	// does (from its snapshot or its peers) although it cannot sign.
	httpProbe("startup", c.ctr.StartupProbe, "/readyz")
}
