package vault

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/signet-dev/signet/backends"
	"github.com/signet-dev/signet/backends/signertest"
	"github.com/signet-dev/signet/internal/vaulttest"
)

// lossyProxy is a load balancer in front of a real Vault that, once armed,
// loses the answer to the next write (not GET) that match selects: it
// forwards the write, Vault carries it out, and the caller gets a 502 or
// a closed connection instead of Vault's answer. It counts the selected
// writes that reach Vault and the answers it lost.
type lossyProxy struct {
	URL   string
	sent  atomic.Int32
	lost  atomic.Int32
	armed atomic.Bool
	// onLoss, when set, runs after the lost request reached Vault (or, in
	// loseUnsent mode, instead of it) and before the caller hears anything:
	// what other replicas do in that moment.
	onLoss func()
}

// pathEnds selects the requests whose path ends in suffix.
func pathEnds(suffix string) func(*http.Request) bool {
	return func(r *http.Request) bool { return strings.HasSuffix(r.URL.Path, suffix) }
}

// Loss modes: a 502 (the balancer's upstream connection dropped after
// Vault answered) or a connection closed without an answer.
const (
	lose502   = "502"
	loseClose = "closed connection"
	// loseUnsent answers 502 without forwarding: the request never reached
	// Vault, which the caller cannot tell from a lost answer.
	loseUnsent = "502 unsent"
)

func startLossyProxy(t *testing.T, srv *vaulttest.Server, match func(*http.Request) bool, mode string) *lossyProxy {
	t.Helper()
	target, err := url.Parse(srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	forward := httputil.NewSingleHostReverseProxy(target)
	p := &lossyProxy{}
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet || !match(r) {
			forward.ServeHTTP(w, r)
			return
		}
		p.sent.Add(1)
		if !p.armed.CompareAndSwap(true, false) {
			forward.ServeHTTP(w, r)
			return
		}
		if mode != loseUnsent {
			answer := httptest.NewRecorder()
			forward.ServeHTTP(answer, r)
			if answer.Code != http.StatusOK && answer.Code != http.StatusNoContent {
				t.Errorf("Vault answered the request the proxy loses with %d: %s", answer.Code, answer.Body)
			}
		}
		if p.onLoss != nil {
			p.onLoss()
		}
		p.lost.Add(1)
		if mode != loseClose {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijacking the connection: %v", err)
			return
		}
		conn.Close()
	}))
	t.Cleanup(front.Close)
	p.URL = front.URL
	return p
}

func latestVersion(t *testing.T, srv *vaulttest.Server, key string) int {
	t.Helper()
	sec, err := srv.Root(t).Logical().Read("transit/keys/" + key)
	if err != nil || sec == nil {
		t.Fatalf("reading Transit key %s: %v", key, err)
	}
	n, err := sec.Data["latest_version"].(json.Number).Int64()
	if err != nil {
		t.Fatal(err)
	}
	return int(n)
}

// TestLostRotateAnswerMakesOneVersion: a rotate that Vault carries out but
// whose answer is lost on the way back (a 502 from a balancer, a dropped
// connection) is never sent again, by the Vault client or by the backend;
// what it did is read. One CreateVersion makes at most one Transit version,
// and the caller gets that version or an error it may retry.
func TestLostRotateAnswerMakesOneVersion(t *testing.T) {
	t.Parallel()
	srv := vaulttest.Start(t)
	for _, mode := range []string{lose502, loseClose} {
		t.Run(strings.ReplaceAll(mode, " ", "_"), func(t *testing.T) {
			p := startLossyProxy(t, srv, pathEnds("/rotate"), mode)
			u, _ := url.Parse(p.URL)
			b := mustOpen(t, "vault://"+u.Host+"/transit?scheme=http", rootEnv)
			ring := backends.KeyRing{Name: "lost-" + strings.ReplaceAll(mode, " ", "-"), Algorithm: backends.ES256}
			v1 := signertest.CreateVersion(t, b, ring, "")
			p.armed.Store(true)
			v, err := b.CreateVersion(context.Background(), ring, v1.ID)
			if p.armed.Load() {
				t.Fatal("the proxy lost no answer: the test proves nothing")
			}
			if n := latestVersion(t, srv, ring.Name); n != 2 {
				t.Fatalf("one rotation whose answer was lost (%s) took the Transit key from version 1 to %d (rotate sent %d times)",
					mode, n, p.sent.Load())
			}
			switch {
			case err == nil && v.ID != "2":
				t.Errorf("CreateVersion returned version %s, want the one it made, 2", v.ID)
			case err != nil && backends.KindOf(err) != backends.KindUnavailable:
				t.Errorf("CreateVersion: %v (%v), want the version it made or an unavailable error", err, backends.KindOf(err))
			}
			t.Logf("%s: CreateVersion = %q, %v; rotate sent %d time(s)", mode, v.ID, err, p.sent.Load())
			if ls, err := b.Leftovers(context.Background(), ring); err != nil || len(ls) != 0 {
				t.Errorf("leftovers %v, %v: the rotation lock should be released", ls, err)
			}
		})
	}
}

// TestLostLockAnswerIsRead: the rotation lock is a Transit key the rotation
// creates; when the answer to its creation is lost, the creation is not
// sent again: the lock's ticket, read, says the rotation holds it. The
// rotation makes one version and releases the lock.
func TestLostLockAnswerIsRead(t *testing.T) {
	t.Parallel()
	srv := vaulttest.Start(t)
	ring := backends.KeyRing{Name: "lostlock", Algorithm: backends.ES256}
	p := startLossyProxy(t, srv, pathEnds("/keys/"+lockPrefix+ring.Name), lose502)
	u, _ := url.Parse(p.URL)
	b := mustOpen(t, "vault://"+u.Host+"/transit?scheme=http", rootEnv)
	v1 := signertest.CreateVersion(t, b, ring, "")
	p.armed.Store(true)
	sentBefore := p.sent.Load()
	v, err := b.CreateVersion(context.Background(), ring, v1.ID)
	if p.armed.Load() {
		t.Fatal("the proxy lost no answer: the test proves nothing")
	}
	if err != nil || v.ID != "2" {
		t.Errorf("CreateVersion with the lock's answer lost = %q, %v; want version 2", v.ID, err)
	}
	// One write creates the lock, one deletes it.
	if n := p.sent.Load() - sentBefore; n != 2 {
		t.Errorf("%d writes to the lock key, want 2 (create once, delete once)", n)
	}
	if n := latestVersion(t, srv, ring.Name); n != 2 {
		t.Errorf("the rotation made versions up to %d, want 2", n)
	}
	if ls, err := b.Leftovers(context.Background(), ring); err != nil || len(ls) != 0 {
		t.Errorf("leftovers %v, %v: the rotation lock should be released", ls, err)
	}
}

// createsVersion selects the writes that create a version: a Transit
// key's creation (not a rotation lock's) and its rotation.
func createsVersion(r *http.Request) bool {
	rest, ok := strings.CutPrefix(r.URL.Path, "/v1/transit/keys/")
	return ok && !strings.HasPrefix(rest, lockPrefix) && (!strings.Contains(rest, "/") || strings.HasSuffix(rest, "/rotate"))
}

// lossyHarness runs the conformance suite's lost-answer cases through a
// lossy proxy of their own in front of srv, as token.
func lossyHarness(srv *vaulttest.Server, token string) func(t *testing.T) signertest.LossyTransport {
	return func(t *testing.T) signertest.LossyTransport {
		p := startLossyProxy(t, srv, createsVersion, lose502)
		u, _ := url.Parse(p.URL)
		return signertest.LossyTransport{
			OpenWith: func(t *testing.T, opts backends.OpenOptions) backends.Signer {
				u, _ := url.Parse("vault://" + u.Host + "/transit?scheme=http")
				opts.Getenv = func(k string) string { return map[string]string{"VAULT_TOKEN": token}[k] }
				b, err := Open(context.Background(), u, opts)
				if err != nil {
					t.Fatal(err)
				}
				return b
			},
			LoseNextCreate: func() { p.armed.Store(true) },
			Lost:           func() int { return int(p.lost.Load()) },
		}
	}
}

// TestLostConfigWriteIsNotSentAgain: a min_encryption_version write whose
// answer is lost is not sent again by the client, because a copy sent later
// lands on whatever was written meanwhile. Here the minimum is raised to 3
// in that moment, by hand (another Signet replica would wait for the
// rotation lock this one holds); a retried "min 2" would lower the minimum
// back and make the disabled version sign again.
func TestLostConfigWriteIsNotSentAgain(t *testing.T) {
	t.Parallel()
	srv := vaulttest.Start(t)
	ring := backends.KeyRing{Name: "lostconfig", Algorithm: backends.ES256}
	p := startLossyProxy(t, srv, pathEnds("/keys/"+ring.Name+"/config"), lose502)
	u, _ := url.Parse(p.URL)
	b := mustOpen(t, "vault://"+u.Host+"/transit?scheme=http", rootEnv)
	v := signertest.CreateVersion(t, b, ring, "")
	v = signertest.CreateVersion(t, b, ring, v.ID)
	signertest.CreateVersion(t, b, ring, v.ID)
	root := srv.Root(t)
	p.onLoss = func() {
		if _, err := root.Logical().Write("transit/keys/"+ring.Name+"/config", map[string]any{"min_encryption_version": 3}); err != nil {
			t.Errorf("raising min_encryption_version to 3 meanwhile: %v", err)
		}
	}
	p.armed.Store(true)
	err := b.DisableVersion(context.Background(), ring, "1")
	if p.armed.Load() {
		t.Fatal("the proxy lost no answer: the test proves nothing")
	}
	if err != nil && backends.KindOf(err) != backends.KindUnavailable {
		t.Errorf("DisableVersion with its answer lost: %v (%v), want nil or unavailable", err, backends.KindOf(err))
	}
	sec, err := srv.Root(t).Logical().Read("transit/keys/" + ring.Name)
	if err != nil || sec == nil {
		t.Fatalf("reading the key: %v", err)
	}
	if n, _ := sec.Data["min_encryption_version"].(json.Number).Int64(); n != 3 {
		t.Errorf("min_encryption_version is %d after it was raised to 3 (config written %d times): "+
			"a lost write sent again re-enabled a disabled version", n, p.sent.Load())
	}
}

// TestLostRotateAnswerAfterLockLostIsNotClaimed: a replica whose rotate got
// no answer reads the key to learn what it did, but a newest version past
// the one it rotated from is its own only while it still holds the lock.
// Here its rotate never reached Vault, and meanwhile its lock was removed
// as stale and another replica rotated from the same version: that version
// is the other's, and claiming it too would report one slot won twice.
func TestLostRotateAnswerAfterLockLostIsNotClaimed(t *testing.T) {
	t.Parallel()
	srv := vaulttest.Start(t)
	ring := backends.KeyRing{Name: "lostlock-rotate", Algorithm: backends.ES256}
	p := startLossyProxy(t, srv, pathEnds("/keys/"+ring.Name+"/rotate"), loseUnsent)
	u, _ := url.Parse(p.URL)
	b := mustOpen(t, "vault://"+u.Host+"/transit?scheme=http", rootEnv)
	other := mustOpen(t, uriFor(srv, ""), rootEnv)
	v1 := signertest.CreateVersion(t, b, ring, "")
	var won backends.Version
	p.onLoss = func() { won = reapLockAndRotate(t, srv, other, ring, v1.ID) }
	p.armed.Store(true)
	v, err := b.CreateVersion(context.Background(), ring, v1.ID)
	if p.armed.Load() {
		t.Fatal("the proxy lost no answer: the test proves nothing")
	}
	if won.ID == "" {
		t.Fatal("the other replica made no version: the test proves nothing")
	}
	if err == nil {
		t.Errorf("both replicas were told they made version %s (other: %s): a reported success is not final", v.ID, won.ID)
	} else if backends.KindOf(err) != backends.KindUnavailable {
		t.Errorf("CreateVersion: %v (%v), want unavailable", err, backends.KindOf(err))
	}
	if n := latestVersion(t, srv, ring.Name); n != 2 {
		t.Errorf("the key has versions up to %d, want 2", n)
	}
}

// TestRotateAfterLockLostIsNotClaimed: a replica that checked the newest
// version under its lock and stalled until the lock was removed as stale
// must not claim the version after the one it checked: another replica took
// the lock meanwhile, checked the same version and rotated first, so that
// version is the other's (and the stalled replica's rotate made the next).
func TestRotateAfterLockLostIsNotClaimed(t *testing.T) {
	t.Parallel()
	srv := vaulttest.Start(t)
	ring := backends.KeyRing{Name: "stalled", Algorithm: backends.ES256}
	b := mustOpen(t, uriFor(srv, ""), rootEnv)
	other := mustOpen(t, uriFor(srv, ""), rootEnv)
	v1 := signertest.CreateVersion(t, b, ring, "")
	var won backends.Version
	ctx := backends.WithStepHook(context.Background(), func(step string) {
		if step == "read key under lock" {
			won = reapLockAndRotate(t, srv, other, ring, v1.ID)
		}
	})
	v, err := b.CreateVersion(ctx, ring, v1.ID)
	if won.ID == "" {
		t.Fatal("the other replica made no version: the test proves nothing")
	}
	if err == nil {
		t.Errorf("the stalled replica reported version %s, the other %s: one of them was told it made a version it did not", v.ID, won.ID)
	} else if backends.KindOf(err) != backends.KindUnavailable {
		t.Errorf("CreateVersion: %v (%v), want unavailable", err, backends.KindOf(err))
	}
}

// reapLockAndRotate is what happens while a replica holding the ring's
// rotation lock stalls past the grace: its lock is removed as stale, and
// other takes the lock and rotates from latest. It returns other's version
// ("" if it failed, reported through t).
func reapLockAndRotate(t *testing.T, srv *vaulttest.Server, other *Backend, ring backends.KeyRing, latest string) backends.Version {
	root := srv.Root(t).Logical()
	lock := "transit/keys/" + lockPrefix + ring.Name
	if _, err := root.Write(lock+"/config", map[string]any{"deletion_allowed": true}); err != nil {
		t.Errorf("removing the stalled replica's lock: %v", err)
	}
	if _, err := root.Delete(lock); err != nil {
		t.Errorf("removing the stalled replica's lock: %v", err)
	}
	v, err := other.CreateVersion(context.Background(), ring, latest)
	if err != nil {
		t.Errorf("the other replica rotating: %v", err)
	}
	return v
}
