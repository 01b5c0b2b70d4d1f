package vault

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"go.uber.org/goleak"

	"github.com/signet-dev/signet/backends"
	"github.com/signet-dev/signet/backends/signertest"
	"github.com/signet-dev/signet/internal/vaulttest"
)

func open(t testing.TB, uri string, env map[string]string) (*Backend, error) {
	t.Helper()
	u, err := url.Parse(uri)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(context.Background(), u, backends.OpenOptions{Getenv: func(k string) string { return env[k] }})
	if err != nil {
		return nil, err
	}
	return s.(*Backend), nil
}

func mustOpen(t testing.TB, uri string, env map[string]string) *Backend {
	t.Helper()
	b, err := open(t, uri, env)
	if err != nil {
		t.Fatalf("Open(%s): %v", uri, err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func uriFor(s *vaulttest.Server, query string) string {
	u, _ := url.Parse(s.Addr)
	return "vault://" + u.Host + "/transit?scheme=http" + query
}

var rootEnv = map[string]string{"VAULT_TOKEN": vaulttest.RootToken}

// withVersion starts a Vault, opens a backend on it as root, and creates the
// first version of ring.
func withVersion(t *testing.T, ring backends.KeyRing) (*vaulttest.Server, *Backend, backends.Version) {
	t.Helper()
	srv := vaulttest.Start(t)
	b := mustOpen(t, uriFor(srv, ""), rootEnv)
	return srv, b, signertest.CreateVersion(t, b, ring, "")
}

func TestConformance(t *testing.T) {
	t.Parallel()
	srv := vaulttest.Start(t)
	// A token with only the documented policy, not root.
	srv.Policy(t, "signet", vaulttest.SignerPolicy+`path "transit/keys/*/rotate" { capabilities = ["update"] }
path "transit/keys/*/config" { capabilities = ["update"] }`)
	token := srv.Token(t, map[string]any{"policies": []string{"signet"}})
	signertest.Run(t, signertest.Harness{OpenWith: func(t *testing.T, opts backends.OpenOptions) backends.Signer {
		u, _ := url.Parse(uriFor(srv, ""))
		opts.Getenv = func(k string) string { return map[string]string{"VAULT_TOKEN": token}[k] }
		b, err := Open(context.Background(), u, opts)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}, Lossy: lossyHarness(srv, token)})
}

func TestWrongKeyTypeIsAConfigurationError(t *testing.T) {
	t.Parallel()
	srv := vaulttest.Start(t)
	srv.Write(t, "transit/keys/existing", map[string]any{"type": "rsa-2048"})
	b := mustOpen(t, uriFor(srv, "&key.myring=existing"), rootEnv)
	_, err := b.Versions(context.Background(), backends.KeyRing{Name: "myring", Algorithm: backends.ES256})
	if backends.KindOf(err) != backends.KindFailedPrecondition || !strings.Contains(err.Error(), `Transit key "existing" is of type rsa-2048`) {
		t.Fatalf("got %v", err)
	}
	// The same key fits an RS256 ring.
	if vs, err := b.Versions(context.Background(), backends.KeyRing{Name: "myring", Algorithm: backends.RS256}); err != nil || len(vs) != 1 {
		t.Fatalf("RS256 ring over the rsa-2048 key: %d versions, %v", len(vs), err)
	}
}

func TestCreatesNonExportableKeysOfTheRightType(t *testing.T) {
	t.Parallel()
	srv := vaulttest.Start(t)
	b := mustOpen(t, uriFor(srv, "&key_prefix=signet-"), rootEnv)
	for alg, typ := range transitTypes {
		ring := backends.KeyRing{Name: strings.ToLower(string(alg)), Algorithm: alg}
		signertest.CreateVersion(t, b, ring, "")
		sec, err := srv.Root(t).Logical().Read("transit/keys/signet-" + ring.Name)
		if err != nil || sec == nil {
			t.Fatalf("reading the key: %v", err)
		}
		if sec.Data["type"] != typ || sec.Data["exportable"] != false || sec.Data["allow_plaintext_backup"] != false ||
			sec.Data["deletion_allowed"] != false {
			t.Errorf("%s: type %v exportable %v allow_plaintext_backup %v deletion_allowed %v, want %s and false, false, false", alg,
				sec.Data["type"], sec.Data["exportable"], sec.Data["allow_plaintext_backup"], sec.Data["deletion_allowed"], typ)
		}
		if err := b.CheckKeyUsage(context.Background(), ring); err != nil {
			t.Errorf("%s: usage check of the key Signet made: %v", alg, err)
		}
	}
}

// A Transit key made or changed by hand so that its private key may leave
// Vault, or the key be deleted, is refused by the usage check, which names
// the setting (as Vault's key read shows it).
func TestKeysThatMayLeaveVaultAreRefused(t *testing.T) {
	t.Parallel()
	srv := vaulttest.Start(t)
	srv.Write(t, "transit/keys/exportable", map[string]any{"type": "ecdsa-p256", "exportable": true})
	srv.Write(t, "transit/keys/backup", map[string]any{"type": "ecdsa-p256", "allow_plaintext_backup": true})
	srv.Write(t, "transit/keys/deletable", map[string]any{"type": "ecdsa-p256"})
	srv.Write(t, "transit/keys/deletable/config", map[string]any{"deletion_allowed": true})
	b := mustOpen(t, uriFor(srv, "&key.a=exportable&key.b=backup&key.c=deletable"), rootEnv)
	for ringName, setting := range map[string]string{"a": "exportable", "b": "allow_plaintext_backup", "c": "deletion_allowed"} {
		sec, err := srv.Root(t).Logical().Read("transit/keys/" + map[string]string{"a": "exportable", "b": "backup", "c": "deletable"}[ringName])
		if err != nil || sec.Data[setting] != true {
			t.Fatalf("Vault's key read: %s=%v, %v", setting, sec.Data[setting], err)
		}
		err = b.CheckKeyUsage(context.Background(), backends.KeyRing{Name: ringName, Algorithm: backends.ES256})
		if backends.KindOf(err) != backends.KindFailedPrecondition || !strings.Contains(err.Error(), "has "+setting+" set") {
			t.Errorf("ring %s over a key with %s: %v", ringName, setting, err)
		}
	}
}

func TestRevocationIsEnforcedByVault(t *testing.T) {
	t.Parallel()
	ring := backends.KeyRing{Name: "rev", Algorithm: backends.ES256}
	srv, b, v1 := withVersion(t, ring)
	ctx := context.Background()
	v2, _ := b.CreateVersion(ctx, ring, v1.ID)
	v3, err := b.CreateVersion(ctx, ring, v2.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.DisableVersion(ctx, ring, v2.ID); err != nil {
		t.Fatal(err)
	}
	sec, _ := srv.Root(t).Logical().Read("transit/keys/rev")
	if got := sec.Data["min_encryption_version"]; got == nil || got.(interface{ String() string }).String() != "3" {
		t.Errorf("min_encryption_version = %v, want 3", got)
	}
	// Vault itself refuses, whatever Signet believes.
	for _, v := range []string{v1.ID, v2.ID} {
		_, err := srv.Root(t).Logical().Write("transit/sign/rev", map[string]any{"input": "aGk=", "key_version": v})
		if err == nil || !strings.Contains(err.Error(), "minimum encryption key version") {
			t.Errorf("Vault signed with revoked version %s: %v", v, err)
		}
	}
	if err := b.DisableVersion(ctx, ring, v3.ID); backends.KindOf(err) != backends.KindFailedPrecondition {
		t.Errorf("disabling the newest version: %v", err)
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	ring := backends.KeyRing{Name: "errs", Algorithm: backends.ES256}
	srv, _, v := withVersion(t, ring)
	ctx := context.Background()

	// A token that may read keys but not sign: PermissionDenied, clearly.
	srv.Policy(t, "readonly", `path "transit/keys/*" { capabilities = ["read"] }`)
	ro := mustOpen(t, uriFor(srv, ""), map[string]string{"VAULT_TOKEN": srv.Token(t, map[string]any{"policies": []string{"readonly"}})})
	_, err := ro.Sign(ctx, ring, v.ID, []byte("x.y"))
	if backends.KindOf(err) != backends.KindPermissionDenied || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("Sign without transit/sign: %v", err)
	}
	// A bad token fails at Open, not at the first Sign.
	if _, err := open(t, uriFor(srv, ""), map[string]string{"VAULT_TOKEN": "not-a-token"}); backends.KindOf(err) != backends.KindPermissionDenied {
		t.Errorf("Open with a bad token: %v", err)
	} else if strings.Contains(err.Error(), "not-a-token") {
		t.Errorf("the error shows the token: %v", err)
	}
	if _, err := open(t, uriFor(srv, ""), nil); err == nil || !strings.Contains(err.Error(), "VAULT_TOKEN") {
		t.Errorf("Open with no token: %v", err)
	}
	if _, err := open(t, uriFor(srv, "&bogus=1"), rootEnv); err == nil || !strings.Contains(err.Error(), `unknown URI option "bogus"`) {
		t.Errorf("unknown option: %v", err)
	}
	for _, bad := range []string{"soon", "-1ms", "2s"} {
		if _, err := open(t, uriFor(srv, "&batch_wait="+bad), rootEnv); backends.KindOf(err) != backends.KindInvalidArgument || !strings.Contains(err.Error(), "batch_wait") {
			t.Errorf("batch_wait=%s: %v", bad, err)
		}
	}
	if b := mustOpen(t, uriFor(srv, "&batch_wait=250us"), rootEnv); b.batches.maxWait != 250*time.Microsecond {
		t.Errorf("batch_wait=250us: maxWait %v", b.batches.maxWait)
	}
	// Vault unreachable: Unavailable within the deadline.
	dead := mustOpen(t, uriFor(srv, ""), rootEnv)
	srv.Kill(t)
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	_, err = dead.Sign(cctx, ring, v.ID, []byte("x.y"))
	if backends.KindOf(err) != backends.KindUnavailable {
		t.Errorf("Sign with Vault down: %v", err)
	}
}

func TestFrozenVaultAnswersWithinTheDeadline(t *testing.T) {
	t.Parallel()
	ring := backends.KeyRing{Name: "frozen", Algorithm: backends.EdDSA}
	srv, b, v := withVersion(t, ring)
	srv.Freeze(t)
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { _, err := b.Sign(ctx, ring, v.ID, []byte("x.y")); done <- err }()
	select {
	case err := <-done:
		if backends.KindOf(err) != backends.KindUnavailable {
			t.Errorf("Sign against a frozen Vault: %v, want unavailable", err)
		}
	case <-time.After(30 * time.Second): // hang detector
		t.Fatal("Sign against a frozen Vault did not return")
	}
	srv.Thaw(t)
	ctx2, cancel2 := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel2()
	if _, err := b.Sign(ctx2, ring, v.ID, []byte("x.y")); err != nil {
		t.Errorf("after thawing: %v", err)
	}
}

func TestAppRoleLoginAndTokenExpiry(t *testing.T) {
	t.Parallel()
	srv := vaulttest.Start(t)
	root := srv.Root(t)
	if err := root.Sys().EnableAuthWithOptions("approle", &api.EnableAuthOptions{Type: "approle"}); err != nil {
		t.Fatal(err)
	}
	srv.Policy(t, "signet", vaulttest.SignerPolicy)
	// Tokens live 2s and may be renewed up to 4s: signing 6s later needs a new login.
	srv.Write(t, "auth/approle/role/signet", map[string]any{"token_policies": "signet", "token_ttl": "2s", "token_max_ttl": "4s"})
	roleID, err := root.Logical().Read("auth/approle/role/signet/role-id")
	if err != nil {
		t.Fatal(err)
	}
	secretID := srv.Write(t, "auth/approle/role/signet/secret-id", nil).Data["secret_id"].(string)
	file := filepath.Join(t.TempDir(), "secret-id")
	os.WriteFile(file, []byte(secretID+"\n"), 0o600)

	// The key exists already (created by an operator); the role may not create keys.
	srv.Write(t, "transit/keys/approle", map[string]any{"type": "ecdsa-p256"})
	b := mustOpen(t, uriFor(srv, "&auth=approle&role_id="+roleID.Data["role_id"].(string)+"&secret_id_file="+file), nil)
	ring := backends.KeyRing{Name: "approle", Algorithm: backends.ES256}
	vs, err := b.Versions(context.Background(), ring)
	if err != nil || len(vs) != 1 {
		t.Fatalf("Versions after AppRole login: %v, %v", vs, err)
	}
	first := b.client.Token()
	sign := func() error {
		return signertest.SignAndVerify(context.Background(), b, ring, vs[0], []byte("eyJhbGciOiJFUzI1NiJ9.e30"))
	}
	if err := sign(); err != nil {
		t.Fatal(err)
	}
	// Vault's own clock ends the token (renewed up to token_max_ttl, then
	// dead): wait for that, not for a fixed time.
	lookup := srv.Root(t).Auth().Token()
	eventually(t, 30*time.Second, "the first token to expire", func() bool {
		_, err := lookup.Lookup(first)
		return err != nil
	})
	if err := sign(); err != nil {
		t.Fatalf("signing after the token's max TTL: %v", err)
	}
	if b.client.Token() == first {
		t.Error("still using the first token")
	}
}

// eventually polls cond until it holds, failing the test after timeout.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", timeout, what)
		}
	}
}

// TestCloseStopsEverything checks that Close stops the token watcher and the
// batch workers, ends their requests to a frozen Vault at once instead of
// waiting for them, fails the Signs in flight, and returns only when every
// goroutine the backend started is gone.
//
// It does not run in parallel: goleak.VerifyNone compares all the process's
// goroutines with those before the test.
func TestCloseStopsEverything(t *testing.T) {
	ring := backends.KeyRing{Name: "closing", Algorithm: backends.ES256}
	srv, _, v := withVersion(t, ring)
	// A renewable token, so that the backend runs a watcher.
	token := srv.Token(t, map[string]any{"policies": []string{"root"}, "ttl": "1h", "renewable": true})
	before := goleak.IgnoreCurrent()

	b := mustOpen(t, uriFor(srv, "&batch_size=2"), map[string]string{"VAULT_TOKEN": token})
	b.auth.mu.Lock()
	watching := b.auth.watching != nil
	b.auth.mu.Unlock()
	if !watching {
		t.Fatal("no watcher renews the token; the test proves less than it says")
	}
	srv.Freeze(t)
	defer srv.Thaw(t)
	var sent countingBatches
	b.batches.observe = sent.add
	const n = 3 * maxWorkers * 2 // more than maxWorkers batches of 2: some wait in the queue
	errs := make(chan error, n)
	for range n {
		go func() {
			_, err := b.Sign(context.Background(), ring, v.ID, []byte("eyJhbGciOiJFUzI1NiJ9.e30"))
			errs <- err
		}()
	}
	eventually(t, 10*time.Second, "every Sign to be sent or queued", func() bool {
		inFlight := sent.total() // before the queue: a call leaves it before it is sent
		b.batches.mu.Lock()
		defer b.batches.mu.Unlock()
		for _, q := range b.batches.queues {
			inFlight += len(q.pending)
		}
		return inFlight == n
	})
	closed := make(chan struct{})
	go func() { b.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second): // a hang detector, not a speed check
		t.Fatal("Close waited for a frozen Vault")
	}
	for range n {
		if err := <-errs; backends.KindOf(err) != backends.KindFailedPrecondition || !strings.Contains(err.Error(), "closed") {
			t.Errorf("Sign in flight during Close: %v, want the backend is closed", err)
		}
	}
	goleak.VerifyNone(t, before)
}

// TestUnixSocketAddress checks that a unix:// VAULT_ADDR (a Vault Agent's
// listener) still works with the backend's own transport around the
// client's. It sets VAULT_ADDR, so it does not run in parallel.
func TestUnixSocketAddress(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var lookups atomic.Int32
	agent := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/auth/token/lookup-self" {
			lookups.Add(1)
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"data":{"ttl":0,"renewable":false}}`))
	})}
	go agent.Serve(l)
	defer agent.Close()
	t.Setenv("VAULT_ADDR", "unix://"+sock)
	b := mustOpen(t, "vault:///transit", rootEnv)
	b.Close()
	if n := lookups.Load(); n != 1 {
		t.Errorf("Open looked the token up %d times over the socket, want 1", n)
	}
}

// TestCoalescesConcurrentSigns checks that concurrent Signs share requests
// and that every signature is right.
func TestCoalescesConcurrentSigns(t *testing.T) {
	t.Parallel()
	ring := backends.KeyRing{Name: "busy", Algorithm: backends.ES256}
	_, b, v := withVersion(t, ring)
	var requests countingBatches
	b.batches.observe = requests.add
	const n = 256
	load := signertest.SignConcurrently(b, ring, v, n, func(i int) bool { return i < 1 })
	if load.Failed > 0 {
		t.Fatalf("%d of %d signatures failed: %v", load.Failed, n, load.Errors)
	}
	t.Logf("%d signatures in %d Transit requests", n, requests.count())
	if requests.count() >= n {
		t.Errorf("%d signatures took %d requests: nothing was coalesced", n, requests.count())
	}
}

// TestLoneSignWaitsForNoBatch checks that a Sign with nothing else in
// flight is sent at once: with batch_wait an hour, one that waited for its
// batch to fill would never return (the test would time out).
func TestLoneSignWaitsForNoBatch(t *testing.T) {
	t.Parallel()
	ring := backends.KeyRing{Name: "lone", Algorithm: backends.EdDSA}
	_, b, v := withVersion(t, ring)
	b.batches.maxWait = time.Hour
	var sent countingBatches
	b.batches.observe = sent.add
	for i := range 3 {
		if err := signertest.SignAndVerify(context.Background(), b, ring, v, []byte("eyJhbGciOiJFZERTQSJ9.e30")); err != nil {
			t.Fatalf("Sign %d: %v", i, err)
		}
	}
	if got := sent.sizes(); len(got) != 3 || got[0] != 1 || got[1] != 1 || got[2] != 1 {
		t.Errorf("batches %v, want three of one", got)
	}
}

// TestQueueLeavesFullWhileABatchIsInFlight checks the adaptive batching:
// while a batch is in flight (Vault frozen), Signs queue and leave as soon
// as a full batch has queued, without waiting for batch_wait (an hour
// here) or for the batch in flight; what is left leaves when a batch comes
// back. Every signature is right.
func TestQueueLeavesFullWhileABatchIsInFlight(t *testing.T) {
	t.Parallel()
	ring := backends.KeyRing{Name: "filling", Algorithm: backends.ES256}
	srv := vaulttest.Start(t)
	b := mustOpen(t, uriFor(srv, "&batch_size=4"), rootEnv)
	v := signertest.CreateVersion(t, b, ring, "")
	b.batches.maxWait = time.Hour
	var sent countingBatches
	b.batches.observe = sent.add
	srv.Freeze(t)
	thawed := false
	defer func() {
		if !thawed {
			srv.Thaw(t)
		}
	}()
	const n = 1 + 2*4 + 2 // the first, two full batches, and two that wait
	errs := make(chan error, n)
	sign := func() {
		errs <- signertest.SignAndVerify(context.Background(), b, ring, v, []byte("eyJhbGciOiJFUzI1NiJ9.e30"))
	}
	go sign()
	eventually(t, 10*time.Second, "the first Sign to be sent", func() bool { return sent.total() == 1 })
	for range n - 1 {
		go sign()
	}
	eventually(t, 10*time.Second, "two full batches to leave and two Signs to wait", func() bool {
		b.batches.mu.Lock()
		defer b.batches.mu.Unlock()
		waiting := 0
		for _, q := range b.batches.queues {
			waiting += len(q.pending)
		}
		return sent.total() == n-2 && waiting == 2
	})
	srv.Thaw(t)
	thawed = true
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if got := sent.sizes(); len(got) != 4 || got[0] != 1 || got[1] != 4 || got[2] != 4 || got[3] != 2 {
		t.Errorf("batches %v, want [1 4 4 2]", got)
	}
}

type countingBatches struct {
	mu       sync.Mutex
	n, items int
	all      []int
}

func (c *countingBatches) add(size int) {
	c.mu.Lock()
	c.n++
	c.items += size
	c.all = append(c.all, size)
	c.mu.Unlock()
}

// sizes lists the batches' sizes in the order they were sent.
func (c *countingBatches) sizes() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int(nil), c.all...)
}

// total is how many signing inputs the batches held.
func (c *countingBatches) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.items
}

func (c *countingBatches) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

func TestTLSAndSealed(t *testing.T) {
	t.Parallel()
	srv := vaulttest.StartTLS(t)
	u, _ := url.Parse(srv.Addr)
	// Without the CA, Vault's certificate is not trusted.
	if _, err := open(t, "vault://"+u.Host+"/transit", rootEnv); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("Open without the CA: %v", err)
	}
	b := mustOpen(t, "vault://"+u.Host+"/transit?ca_file="+srv.CAFile, rootEnv)
	ring := backends.KeyRing{Name: "tls", Algorithm: backends.ES384}
	v := signertest.CreateVersion(t, b, ring, "")
	input := []byte("eyJhbGciOiJFUzM4NCJ9.e30")
	if err := signertest.SignAndVerify(context.Background(), b, ring, v, input); err != nil {
		t.Fatalf("signing over TLS: %v", err)
	}
	// A sealed Vault is unavailable, and says so.
	if err := srv.Root(t).Sys().Seal(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := b.Sign(ctx, ring, v.ID, input)
	if backends.KindOf(err) != backends.KindUnavailable || !strings.Contains(err.Error(), "sealed") {
		t.Errorf("Sign with Vault sealed: %v", err)
	}
}

// BenchmarkSignParallel measures signing through a real Vault dev server from
// 64 concurrent callers, with batch_input coalescing and without it
// (batch_size=1). Run with: go test -run '^$' -bench SignParallel ./backends/vault/
func BenchmarkSignParallel(b *testing.B) {
	srv := vaulttest.Start(b)
	for _, size := range []int{1, 32} {
		b.Run(fmt.Sprintf("batch_size=%d", size), func(b *testing.B) {
			be := mustOpen(b, uriFor(srv, fmt.Sprintf("&batch_size=%d", size)), rootEnv)
			ring := backends.KeyRing{Name: fmt.Sprintf("bench-%d", size), Algorithm: backends.ES256}
			vs, err := be.Versions(context.Background(), ring) // the benchmark function runs more than once
			if err != nil {
				b.Fatal(err)
			}
			if len(vs) == 0 {
				v := signertest.CreateVersion(b, be, ring, "")
				vs = append(vs, v)
			}
			v := vs[0]
			input := []byte("eyJhbGciOiJFUzI1NiJ9.e30")
			b.SetParallelism(32) // 64 callers on 2 cores
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := be.Sign(context.Background(), ring, v.ID, input); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "signs/s")
		})
	}
}

// A holder whose release comes late (after a refresh removed its lock as
// stale and another replica took a new one) must not delete the new lock.
func TestLateReleaseLeavesAnotherReplicasLock(t *testing.T) {
	t.Parallel()
	srv := vaulttest.Start(t)
	ring := backends.KeyRing{Name: "late", Algorithm: backends.ES256}
	a := mustOpen(t, uriFor(srv, ""), rootEnv)
	b := mustOpen(t, uriFor(srv, ""), rootEnv)
	ctx := context.Background()
	old, err := a.acquireLock(ctx, ring)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.releaseLock(ctx, ring, old); err != nil { // what a refresh does to a stale lock
		t.Fatal(err)
	}
	held, err := b.acquireLock(ctx, ring)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.releaseLock(ctx, ring, old); err != nil {
		t.Fatal(err)
	}
	if _, ticket, err := b.readLock(ctx, ring); err != nil || ticket != held {
		t.Fatalf("after the late release the lock's ticket is %d (%v), want %d: the new holder's lock was deleted", ticket, err, held)
	}
	if err := b.releaseLock(ctx, ring, held); err != nil {
		t.Fatal(err)
	}
	if created, _, err := b.readLock(ctx, ring); err != nil || !created.IsZero() {
		t.Fatalf("the holder's release left the lock (%v, %v)", created, err)
	}
}

// A release whose lock is removed and taken by another replica between the
// release's check of the ticket and its delete (a holder that stalled past
// the grace, or two replicas reaping the same stale lock) must leave the
// new lock: Transit's delete is not conditional, and the release used to
// make whatever lock key it found deletable and delete it.
func TestReleaseRacingATakeoverLeavesTheNewLock(t *testing.T) {
	t.Parallel()
	srv := vaulttest.Start(t)
	for _, at := range []string{"read lock", "allow lock deletion", "read lock again"} {
		t.Run(strings.ReplaceAll(at, " ", "_"), func(t *testing.T) {
			ring := backends.KeyRing{Name: "takeover-" + strings.ReplaceAll(at, " ", "-"), Algorithm: backends.ES256}
			a := mustOpen(t, uriFor(srv, ""), rootEnv)
			b := mustOpen(t, uriFor(srv, ""), rootEnv)
			old, err := a.acquireLock(context.Background(), ring)
			if err != nil {
				t.Fatal(err)
			}
			var held int64
			ctx := backends.WithStepHook(context.Background(), func(step string) {
				if step != at || held != 0 {
					return
				}
				// Meanwhile: another replica reaps the old lock and a third takes it.
				if err := b.releaseLock(context.Background(), ring, old); err != nil {
					t.Errorf("reaping the old lock: %v", err)
				}
				if held, err = b.acquireLock(context.Background(), ring); err != nil {
					t.Errorf("taking the lock: %v", err)
				}
			})
			if err := a.releaseLock(ctx, ring, old); err != nil {
				t.Fatalf("the late release: %v", err)
			}
			if held == 0 {
				t.Fatalf("the release never reached step %q: the test proves nothing", at)
			}
			if _, ticket, err := b.readLock(context.Background(), ring); err != nil || ticket != held {
				t.Fatalf("after the late release the lock's ticket is %d (%v), want %d: the new holder's lock was deleted", ticket, err, held)
			}
			if err := b.releaseLock(context.Background(), ring, held); err != nil {
				t.Fatal(err)
			}
			if created, _, err := b.readLock(context.Background(), ring); err != nil || !created.IsZero() {
				t.Fatalf("the new holder's release left the lock (%v, %v)", created, err)
			}
		})
	}
}
