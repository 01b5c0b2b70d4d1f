package vault

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/signet-dev/signet/backends"
	"github.com/signet-dev/signet/backends/signertest"
	"github.com/signet-dev/signet/internal/vaulttest"
)

// minEncryptionVersion reads the Transit key's min_encryption_version as
// root.
func minEncryptionVersion(t *testing.T, srv *vaulttest.Server, key string) int {
	t.Helper()
	sec, err := srv.Root(t).Logical().Read("transit/keys/" + key)
	if err != nil || sec == nil {
		t.Fatalf("reading Transit key %s: %v", key, err)
	}
	n, err := sec.Data["min_encryption_version"].(json.Number).Int64()
	if err != nil {
		t.Fatal(err)
	}
	return int(n)
}

// makeVersions creates the Transit key and rotates it until it has n
// versions, as root (not through the backend under test).
func makeVersions(t *testing.T, srv *vaulttest.Server, key string, n int) {
	t.Helper()
	srv.Write(t, "transit/keys/"+key, map[string]any{"type": "ecdsa-p256"})
	for range n - 1 {
		srv.Write(t, "transit/keys/"+key+"/rotate", nil)
	}
}

// TestConcurrentRevocationsNeverLowerTheMinimum: two replicas revoke at
// once. B reads the key (minimum 1) and stalls; A revokes up to version 5
// (minimum 6); then B, which wants minimum 4, carries on. Written from its
// stale read, B's write would lower the minimum to 4 and versions 4 and 5
// would sign again. The minimum must stay 6.
func TestConcurrentRevocationsNeverLowerTheMinimum(t *testing.T) {
	t.Parallel()
	srv := vaulttest.Start(t)
	ring := backends.KeyRing{Name: "concurrent-revoke", Algorithm: backends.ES256}
	makeVersions(t, srv, ring.Name, 7)
	a := mustOpen(t, uriFor(srv, ""), rootEnv)
	b := mustOpen(t, uriFor(srv, ""), rootEnv)

	reached, release, done := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	var once sync.Once
	bctx := backends.WithStepHook(context.Background(), func(step string) {
		if step == "read key" {
			once.Do(func() { close(reached); <-release })
		}
	})
	go func() { done <- b.DisableVersion(bctx, ring, "3") }()
	select {
	case <-reached:
	case err := <-done:
		t.Fatalf("B's DisableVersion ended (%v) before reading the key", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.DisableVersion(ctx, ring, "5"); err != nil {
		t.Fatalf("A's DisableVersion(5): %v", err)
	}
	if n := minEncryptionVersion(t, srv, ring.Name); n != 6 {
		t.Fatalf("after A revoked up to version 5, min_encryption_version is %d, want 6", n)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("B's DisableVersion(3): %v", err)
	}
	if n := minEncryptionVersion(t, srv, ring.Name); n != 6 {
		t.Errorf("after B revoked up to version 3 from a stale read, min_encryption_version is %d, want 6: "+
			"versions %d to 5 sign again", n, n)
	}
	vs, err := a.Versions(ctx, ring)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vs {
		if n, _ := strconv.Atoi(v.ID); v.Disabled != (n < 6) {
			t.Errorf("version %s disabled=%v, want %v", v.ID, v.Disabled, n < 6)
		}
	}
	if ls, err := a.Leftovers(ctx, ring); err != nil || len(ls) != 0 {
		t.Errorf("after both revocations: leftovers %v, %v; want the rotation lock released", ls, err)
	}
}

// countingProxy forwards every request to a real Vault and counts them by
// method and path.
type countingProxy struct {
	URL    string
	mu     sync.Mutex
	counts map[string]int // "METHOD /v1/path"
}

func startCountingProxy(t *testing.T, srv *vaulttest.Server) *countingProxy {
	t.Helper()
	upstream := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(upstream.CloseIdleConnections)
	p := &countingProxy{counts: map[string]int{}}
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.counts[r.Method+" "+r.URL.Path]++
		p.mu.Unlock()
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		// Not bound to the incoming request's context: the answer is
		// always read whole and passed on.
		req, err := http.NewRequestWithContext(context.Background(), r.Method, srv.Addr+r.URL.RequestURI(), bytes.NewReader(body))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		req.Header = r.Header.Clone()
		resp, err := upstream.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		answer, err := io.ReadAll(resp.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		w.Write(answer)
	}))
	t.Cleanup(front.Close)
	p.URL = front.URL
	return p
}

// take returns the counts so far and starts afresh.
func (p *countingProxy) take() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.counts
	p.counts = map[string]int{}
	return c
}

// summary counts requests in total and the writes (anything but GET) of
// the Transit key or a path below it (its config, rotate), not of its
// lock key.
func summary(c map[string]int, key string) (total, keyWrites int) {
	for k, n := range c {
		total += n
		method, path, _ := strings.Cut(k, " ")
		if method != http.MethodGet && (path == "/v1/transit/keys/"+key || strings.HasPrefix(path, "/v1/transit/keys/"+key+"/")) {
			keyWrites += n
		}
	}
	return total, keyWrites
}

// TestRevokeFiftyVersionsInOneWrite: DisableVersionsBefore revokes 50
// versions with one write of the Transit key (min_encryption_version),
// counted by a proxy in front of the real Vault. It logs the time and the
// requests of the same revocation the way main did it (DisableVersion per
// version: a read and a write each, replayed here with the Vault client)
// and with today's DisableVersion per version, for comparison.
func TestRevokeFiftyVersionsInOneWrite(t *testing.T) {
	t.Parallel()
	const n = 50
	srv := vaulttest.Start(t)
	p := startCountingProxy(t, srv)
	u, _ := url.Parse(p.URL)
	b := mustOpen(t, "vault://"+u.Host+"/transit?scheme=http", rootEnv)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// Main's path: for each version, DisableVersion read the key and wrote
	// min_encryption_version, one after the other.
	sequential := backends.KeyRing{Name: "revoke-sequential", Algorithm: backends.ES256}
	makeVersions(t, srv, sequential.Name, n+1)
	root := srv.Root(t)
	if err := root.SetAddress(p.URL); err != nil {
		t.Fatal(err)
	}
	p.take()
	start := time.Now()
	for v := 1; v <= n; v++ {
		if _, err := root.Logical().ReadWithContext(ctx, "transit/keys/"+sequential.Name); err != nil {
			t.Fatal(err)
		}
		if _, err := root.Logical().WriteWithContext(ctx, "transit/keys/"+sequential.Name+"/config",
			map[string]any{"min_encryption_version": v + 1}); err != nil {
			t.Fatal(err)
		}
	}
	mainTook := time.Since(start)
	mainTotal, mainWrites := summary(p.take(), sequential.Name)

	// Today's DisableVersion per version (each takes the rotation lock).
	perVersion := backends.KeyRing{Name: "revoke-per-version", Algorithm: backends.ES256}
	makeVersions(t, srv, perVersion.Name, n+1)
	p.take()
	start = time.Now()
	for v := 1; v <= n; v++ {
		if err := b.DisableVersion(ctx, perVersion, strconv.Itoa(v)); err != nil {
			t.Fatal(err)
		}
	}
	perTook := time.Since(start)
	perTotal, perWrites := summary(p.take(), perVersion.Name)

	// One step.
	ring := backends.KeyRing{Name: "revoke-fifty", Algorithm: backends.ES256}
	makeVersions(t, srv, ring.Name, n+1)
	p.take()
	start = time.Now()
	if err := b.DisableVersionsBefore(ctx, ring, strconv.Itoa(n+1)); err != nil {
		t.Fatalf("DisableVersionsBefore(%d): %v", n+1, err)
	}
	took := time.Since(start)
	counts := p.take()
	total, writes := summary(counts, ring.Name)

	t.Logf("revoking %d versions on Vault: main's sequential DisableVersion %v (%d requests, %d writes of the key); "+
		"DisableVersion per version now %v (%d requests, %d writes of the key); DisableVersionsBefore %v (%d requests, %d write of the key: %v)",
		n, mainTook.Round(time.Millisecond), mainTotal, mainWrites, perTook.Round(time.Millisecond), perTotal, perWrites,
		took.Round(time.Millisecond), total, writes, counts)
	if writes != 1 {
		t.Errorf("DisableVersionsBefore wrote the Transit key %d times, want 1: %v", writes, counts)
	}
	if m := minEncryptionVersion(t, srv, ring.Name); m != n+1 {
		t.Errorf("min_encryption_version is %d, want %d", m, n+1)
	}
	vs, err := b.Versions(ctx, ring)
	if err != nil || len(vs) != n+1 {
		t.Fatalf("Versions: %d, %v", len(vs), err)
	}
	for _, v := range vs[:n] {
		if !v.Disabled {
			t.Errorf("version %s is not disabled", v.ID)
		}
	}
	if err := signertest.SignAndVerify(ctx, b, ring, vs[n], []byte("eyJhbGciOiJFUzI1NiJ9.e30")); err != nil {
		t.Errorf("the newest version does not sign after the others were revoked: %v", err)
	}
}
