package main

import (
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
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is a child process the soak started. Its output goes to a file in
// the run's directory, which the report names when something goes wrong.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func startProc(name, dir string, env []string, bin string, args ...string) (*proc, error) {
	p := &proc{name: name, log: filepath.Join(dir, name+".log"), done: make(chan struct{})}
	out, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "\n==== soak: started %s at %s\n", name, time.Now().Format(time.RFC3339Nano))
	p.cmd = exec.Command(bin, args...) // #nosec G204 -- the binaries the developer names, with the soak's arguments
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = out, out
	if err := p.cmd.Start(); err != nil {
		_ = out.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	go func() { _ = p.cmd.Wait(); _ = out.Close(); close(p.done) }()
	return p, nil
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

// kill sends SIGKILL (after SIGCONT, were it frozen) and waits for the exit.
func (p *proc) kill() {
	if p == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGCONT)
	_ = p.cmd.Process.Kill()
	<-p.done
}

func (p *proc) signal(s syscall.Signal) error { return p.cmd.Process.Signal(s) }

// tail is the end of the process's log, for error messages.
func (p *proc) tail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// vaultServer is a Vault server in production mode (not -dev): file storage
// in the run's directory, so that its keys survive a SIGKILL and a restart,
// initialised with one unseal key, unsealed after every start.
type vaultServer struct {
	bin, dir, addr string
	unsealKey      string
	rootToken      string
	mu             sync.Mutex
	p              *proc
}

var vaultHTTP = &http.Client{Timeout: 10 * time.Second}

func startVault(bin, dir string) (*vaultServer, error) {
	v := &vaultServer{bin: bin, dir: dir}
	var err error
	for try := 0; try < 5; try++ {
		if v.addr, err = freeAddr(); err != nil {
			return nil, err
		}
		if err = v.launch(); err == nil {
			break
		}
		if !strings.Contains(err.Error(), "address already in use") {
			return nil, err
		}
	}
	if err != nil {
		return nil, err
	}
	init, err := v.call("PUT", "sys/init", "", map[string]any{"secret_shares": 1, "secret_threshold": 1})
	if err != nil {
		v.stop()
		return nil, err
	}
	keys, _ := init["keys_base64"].([]any)
	if len(keys) != 1 {
		v.stop()
		return nil, fmt.Errorf("vault init gave %d unseal keys", len(keys))
	}
	v.unsealKey, _ = keys[0].(string)
	v.rootToken, _ = init["root_token"].(string)
	if err := v.unseal(); err != nil {
		v.stop()
		return nil, err
	}
	if _, err := v.call("POST", "sys/mounts/transit", v.rootToken, map[string]any{"type": "transit"}); err != nil {
		v.stop()
		return nil, err
	}
	return v, nil
}

// launch starts the server process on v.addr and waits until it answers
// (sealed or not).
func (v *vaultServer) launch() error {
	data := filepath.Join(v.dir, "vault-data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		return err
	}
	cfg := fmt.Sprintf(`storage "file" { path = %q }
listener "tcp" {
  address = %q
  tls_disable = true
}
disable_mlock = true
api_addr = "http://%s"
ui = false
`, data, v.addr, v.addr)
	cfgPath := filepath.Join(v.dir, "vault.hcl")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return err
	}
	home := filepath.Join(v.dir, "vault-home")
	if err := os.MkdirAll(home, 0o700); err != nil {
		return err
	}
	p, err := startProc("vault", v.dir, []string{"HOME=" + home, "VAULT_ADDR=http://" + v.addr}, v.bin, "server", "-config="+cfgPath)
	if err != nil {
		return err
	}
	v.mu.Lock()
	v.p = p
	v.mu.Unlock()
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if p.exited() {
			return fmt.Errorf("vault exited:\n%s", p.tail())
		}
		if time.Now().After(deadline) {
			p.kill()
			return fmt.Errorf("vault did not start:\n%s", p.tail())
		}
		if b, _ := os.ReadFile(p.log); !bytes.Contains(b[bytes.LastIndex(b, []byte("==== soak: started"))+1:], []byte("==> Vault server started!")) {
			continue
		}
		resp, err := vaultHTTP.Get("http://" + v.addr + "/v1/sys/seal-status")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
	}
}

func (v *vaultServer) unseal() error {
	out, err := v.call("PUT", "sys/unseal", "", map[string]any{"key": v.unsealKey})
	if err != nil {
		return err
	}
	if sealed, _ := out["sealed"].(bool); sealed {
		return errors.New("vault is still sealed after the unseal key")
	}
	return nil
}

// restart starts the killed server again on the same address and unseals it.
func (v *vaultServer) restart() error {
	var err error
	for try := 0; try < 20; try++ { // the port of the killed process may linger a moment
		if err = v.launch(); err == nil {
			return v.unseal()
		}
		if !strings.Contains(err.Error(), "address already in use") {
			return err
		}
		time.Sleep(250 * time.Millisecond)
	}
	return err
}

func (v *vaultServer) proc() *proc {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.p
}

func (v *vaultServer) stop() { v.proc().kill() }

// signetToken makes a policy with exactly what the docs say Signet's token
// needs for the key, and a token with it that outlives the run, written to
// a file for `token_file=`.
func (v *vaultServer) signetToken(key, file string) error {
	policy := fmt.Sprintf(`path "transit/keys/%[1]s" { capabilities = ["create", "read", "update"] }
path "transit/keys/%[1]s/rotate" { capabilities = ["update"] }
path "transit/keys/%[1]s/config" { capabilities = ["update"] }
path "transit/sign/%[1]s" { capabilities = ["update"] }
path "transit/sign/%[1]s/*" { capabilities = ["update"] }
path "transit/keys/signet-lock.%[1]s" { capabilities = ["create", "read", "update", "delete"] }
path "transit/keys/signet-lock.%[1]s/config" { capabilities = ["update"] }
`, key)
	if _, err := v.call("PUT", "sys/policies/acl/signet", v.rootToken, map[string]any{"policy": policy}); err != nil {
		return err
	}
	out, err := v.call("POST", "auth/token/create", v.rootToken, map[string]any{"policies": []string{"signet"}, "ttl": "24h", "no_default_policy": false})
	if err != nil {
		return err
	}
	auth, _ := out["auth"].(map[string]any)
	tok, _ := auth["client_token"].(string)
	if tok == "" {
		return errors.New("vault gave no token")
	}
	return os.WriteFile(file, []byte(tok), 0o600)
}

func (v *vaultServer) call(method, path, token string, body any) (map[string]any, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		r = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+v.addr+"/v1/"+path, r)
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("X-Vault-Token", token)
	}
	resp, err := vaultHTTP.Do(req)
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

// replica is one `signet serve`; it is replaced (same index, new process and
// ports) when the soak kills and restarts it.
type replica struct {
	idx              int
	p                *proc
	grpc, http       string
	started          time.Time // when this incarnation's ready file appeared
	incarnation      int
	env              []string
	config, readyDir string
}

// startReplica runs `signet serve` and waits for its ready file.
func startReplica(bin, dir string, idx, incarnation int, config string, env []string) (*replica, error) {
	name := fmt.Sprintf("signet-%d", idx)
	ready := filepath.Join(dir, fmt.Sprintf("%s-ready-%d.json", name, incarnation))
	p, err := startProc(name, dir, env, bin, "serve", "--config", config, "--ready-file", ready)
	if err != nil {
		return nil, err
	}
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(20 * time.Millisecond) {
		b, err := os.ReadFile(ready) // #nosec G304 -- the run's own directory
		if err == nil {
			var a struct{ GRPC, HTTP string }
			if err := json.Unmarshal(b, &a); err == nil && a.GRPC != "" {
				return &replica{idx: idx, p: p, grpc: a.GRPC, http: a.HTTP, started: time.Now(), incarnation: incarnation,
					env: env, config: config, readyDir: dir}, nil
			}
		}
		if p.exited() {
			return nil, fmt.Errorf("%s exited before it was ready:\n%s", name, p.tail())
		}
		if time.Now().After(deadline) {
			p.kill()
			return nil, fmt.Errorf("%s: no ready file after 2 minutes:\n%s", name, p.tail())
		}
	}
}
