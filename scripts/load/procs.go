package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
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
	"time"
)

// proc is a child process the harness started: Signet, Vault or a static
// file server. stop ends it and waits.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string // its output
	done chan struct{}
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) stop() {
	if p == nil || p.exited() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *proc) tail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

func startProc(name, dir string, env []string, bin string, args ...string) (*proc, error) {
	p := &proc{name: name, log: filepath.Join(dir, name+".log"), done: make(chan struct{})}
	out, err := os.Create(p.log)
	if err != nil {
		return nil, err
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = out, out
	if err := p.cmd.Start(); err != nil {
		out.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	go func() { p.cmd.Wait(); out.Close(); close(p.done) }()
	return p, nil
}

// signetProc is a running `signet serve` and the addresses of its ready file.
type signetProc struct {
	*proc
	GRPC, HTTP, Admin string
	Startup           time.Duration // exec to ready file: listening, key set read
}

// startSignet runs `signet serve --config config --ready-file` and waits
// for the ready file, timing how long that took.
func startSignet(bin, dir, name, config string, env []string) (*signetProc, error) {
	ready := filepath.Join(dir, name+"-ready.json")
	start := time.Now()
	p, err := startProc(name, dir, env, bin, "serve", "--config", config, "--ready-file", ready)
	if err != nil {
		return nil, err
	}
	for deadline := start.Add(60 * time.Second); ; time.Sleep(time.Millisecond) {
		b, err := os.ReadFile(ready)
		if err == nil {
			var a struct{ GRPC, HTTP, Admin string }
			if err := json.Unmarshal(b, &a); err != nil {
				p.stop()
				return nil, fmt.Errorf("%s: ready file: %v", name, err)
			}
			return &signetProc{proc: p, GRPC: a.GRPC, HTTP: a.HTTP, Admin: a.Admin, Startup: time.Since(start)}, nil
		}
		if p.exited() {
			return nil, fmt.Errorf("%s exited before it was ready:\n%s", name, p.tail())
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, fmt.Errorf("%s: no ready file after a minute:\n%s", name, p.tail())
		}
	}
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// vaultProc is a Vault dev server with Transit mounted.
type vaultProc struct {
	*proc
	Addr string // http://127.0.0.1:PORT
}

const vaultRootToken = "signet-load-root"

// startVault runs `vault server -dev` on a free loopback port (trying again
// if another process took the port first) and mounts Transit.
func startVault(bin, dir string) (*vaultProc, error) {
	for try := 1; ; try++ {
		v, err := launchVault(bin, dir)
		if err == nil {
			return v, nil
		}
		if try == 5 || !strings.Contains(err.Error(), "address already in use") {
			return nil, err
		}
	}
}

func launchVault(bin, dir string) (*vaultProc, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	home := filepath.Join(dir, "vault-home")
	os.MkdirAll(home, 0o700)
	p, err := startProc("vault", dir, []string{"HOME=" + home, "VAULT_ADDR=http://" + addr, "VAULT_DISABLE_MLOCK=true"},
		bin, "server", "-dev", "-dev-root-token-id="+vaultRootToken, "-dev-listen-address="+addr, "-dev-no-store-token")
	if err != nil {
		return nil, err
	}
	v := &vaultProc{proc: p, Addr: "http://" + addr}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if p.exited() {
			return nil, fmt.Errorf("vault exited:\n%s", p.tail())
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, fmt.Errorf("vault did not start:\n%s", p.tail())
		}
		b, _ := os.ReadFile(p.log)
		if !bytes.Contains(b, []byte("==> Vault server started!")) {
			continue
		}
		if _, err := v.call("GET", "sys/health", vaultRootToken, nil); err == nil {
			break
		}
	}
	if _, err := v.call("POST", "sys/mounts/transit", vaultRootToken, map[string]any{"type": "transit"}); err != nil {
		p.stop()
		return nil, err
	}
	return v, nil
}

var vaultClient = &http.Client{Timeout: 30 * time.Second}

// call is one Vault API request; it returns the decoded answer of a 2xx.
func (v *vaultProc) call(method, path, token string, body any) (map[string]any, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, v.Addr+"/v1/"+path, r)
	if err != nil {
		return nil, err
	}
	req.Header.Set("X-Vault-Token", token)
	resp, err := vaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("vault %s %s: %s: %s", method, path, resp.Status, b)
	}
	var out map[string]any
	if len(b) > 0 {
		if err := json.Unmarshal(b, &out); err != nil {
			return nil, fmt.Errorf("vault %s %s: %v", method, path, err)
		}
	}
	return out, nil
}

// oidcToken sets up Vault's own identity-token issuer the way a user of it
// would: an ES256 OIDC key, a role, and a userpass login whose token has an
// entity (identity tokens are issued to entities). It returns that token.
func (v *vaultProc) oidcToken(role string) (string, error) {
	steps := []struct {
		method, path string
		body         map[string]any
	}{
		{"POST", "sys/auth/userpass", map[string]any{"type": "userpass"}},
		{"POST", "sys/policies/acl/load-oidc", map[string]any{"policy": `path "identity/oidc/token/*" { capabilities = ["read"] }`}},
		{"POST", "auth/userpass/users/load", map[string]any{"password": "load-password", "token_policies": "load-oidc"}},
		{"POST", "identity/oidc/key/" + role, map[string]any{"algorithm": "ES256", "allowed_client_ids": "*"}},
		{"POST", "identity/oidc/role/" + role, map[string]any{"key": role, "ttl": "15m"}},
	}
	for _, s := range steps {
		if _, err := v.call(s.method, s.path, vaultRootToken, s.body); err != nil {
			return "", err
		}
	}
	out, err := v.call("POST", "auth/userpass/login/load", "", map[string]any{"password": "load-password"})
	if err != nil {
		return "", err
	}
	auth, _ := out["auth"].(map[string]any)
	token, _ := auth["client_token"].(string)
	if token == "" {
		return "", errors.New("userpass login gave no token")
	}
	return token, nil
}

// startStatic serves dir with a static file server in its own process:
// nginx when it is installed (worker_processes as many as CPUs), else this
// program's -serve-static mode, Go's http.FileServer. It returns the
// server, its address and which it is.
func startStatic(dir, root, kind string) (*proc, string, string, error) {
	if kind == "nginx" {
		nginx, err := exec.LookPath("nginx")
		if err != nil {
			return nil, "", "", err
		}
		addr, err := freeAddr()
		if err != nil {
			return nil, "", "", err
		}
		prefix := filepath.Join(dir, "nginx")
		os.MkdirAll(filepath.Join(prefix, "logs"), 0o755)
		user := ""
		if os.Geteuid() == 0 {
			user = "user root;" // the workers read the harness's temporary directory
		}
		conf := fmt.Sprintf(`%s
worker_processes auto;
daemon off;
pid %[2]s/nginx.pid;
error_log %[2]s/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000000;
  keepalive_timeout 120s;
  types { application/json json; }
  client_body_temp_path %[2]s/body;
  proxy_temp_path %[2]s/proxy;
  fastcgi_temp_path %[2]s/fastcgi;
  uwsgi_temp_path %[2]s/uwsgi;
  scgi_temp_path %[2]s/scgi;
  server { listen %[3]s; root %[4]s; }
}
`, user, prefix, addr, root)
		cf := filepath.Join(prefix, "nginx.conf")
		if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
			return nil, "", "", err
		}
		p, err := startProc("nginx", dir, nil, nginx, "-p", prefix, "-c", cf)
		if err != nil {
			return nil, "", "", err
		}
		if err := waitHTTP("http://" + addr + "/jwks.json"); err != nil {
			p.stop()
			return nil, "", "", fmt.Errorf("nginx: %v\n%s", err, p.tail())
		}
		return p, addr, "nginx", nil
	}
	self, err := os.Executable()
	if err != nil {
		return nil, "", "", err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, "", "", err
	}
	p, err := startProc("static-"+kind, dir, nil, self, "-serve-static", root, "-serve-addr", addr, "-serve-mode", kind)
	if err != nil {
		return nil, "", "", err
	}
	if err := waitHTTP("http://" + addr + "/jwks.json"); err != nil {
		p.stop()
		return nil, "", "", fmt.Errorf("static server: %v\n%s", err, p.tail())
	}
	if kind == "bytes" {
		return p, addr, "Go net/http, bare handler writing the bytes", nil
	}
	return p, addr, "Go http.FileServer", nil
}

func waitHTTP(url string) error {
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		var resp *http.Response
		if resp, err = http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
			err = fmt.Errorf("%s", resp.Status)
		}
	}
	return err
}

// serveStatic is the -serve-static mode, until the harness ends it: Go's
// http.FileServer on addr ("file"), or ("bytes") a bare http.Handler that
// writes jwks.json from memory with the headers Signet sends: the most any
// Go HTTP server can do with these bytes, the figure to hold the gateway to.
func serveStatic(root, addr, mode string) error {
	h := http.FileServer(http.Dir(root))
	if mode == "bytes" {
		body, err := os.ReadFile(filepath.Join(root, "jwks.json"))
		if err != nil {
			return err
		}
		length := []string{strconv.Itoa(len(body))}
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hd := w.Header()
			hd["Content-Type"] = []string{"application/json"}
			hd["Content-Length"] = length
			hd["Cache-Control"] = []string{"public, max-age=300"}
			hd["Etag"] = []string{`"static"`}
			w.Write(body)
		})
	}
	srv := &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 10 * time.Second}
	return srv.ListenAndServe()
}

// scrape GETs the admin listener's /metrics and reads a histogram.
func scrapeHistogram(admin, name string) (histogram, error) {
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		return histogram{}, err
	}
	defer resp.Body.Close()
	return parseHistogram(bufio.NewReader(resp.Body), name)
}
