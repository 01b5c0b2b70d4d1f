package lifecycle

import (
	"context"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/signet-dev/signet/backends"
	"github.com/signet-dev/signet/backends/vault"
	"github.com/signet-dev/signet/internal/clocktest"
	"github.com/signet-dev/signet/internal/vaulttest"
)

// countingDisables passes every call to a real backend and counts the
// revocation calls: DisableVersion (each taking delay first, to keep
// calls in flight together, and the most in flight at once) and
// DisableVersionsBefore, which it has only if the backend has.
type countingDisables struct {
	backends.Signer
	delay             time.Duration
	inFlight, most    atomic.Int32
	single, inOneStep atomic.Int32
}

func (c *countingDisables) DisableVersion(ctx context.Context, ring backends.KeyRing, id string) error {
	n := c.inFlight.Add(1)
	defer c.inFlight.Add(-1)
	for {
		if m := c.most.Load(); n <= m || c.most.CompareAndSwap(m, n) {
			break
		}
	}
	c.single.Add(1)
	time.Sleep(c.delay)
	return c.Signer.DisableVersion(ctx, ring, id)
}

type countingPrefix struct{ *countingDisables }

func (c countingPrefix) DisableVersionsBefore(ctx context.Context, ring backends.KeyRing, id string) error {
	c.inOneStep.Add(1)
	return c.Signer.(backends.PrefixDisabler).DisableVersionsBefore(ctx, ring, id)
}

// rotateTimes rotates r n times and returns its versions.
func rotateTimes(t *testing.T, ks *KeySet, r *Ring, n int) []*Version {
	t.Helper()
	for range n {
		if _, _, _, err := ks.Rotate(context.Background(), r, false, ""); err != nil {
			t.Fatal(err)
		}
	}
	return ks.Versions(r)
}

// wantRevoked checks that Rotate with revoke_previous reported every
// version of before as revoked, oldest first, and that the key set lists
// them revoked and created enabled.
func wantRevoked(t *testing.T, ks *KeySet, r *Ring, before []*Version, created *Version, revoked []*Version) {
	t.Helper()
	if len(revoked) != len(before) {
		t.Fatalf("Rotate revoked %d versions, want %d", len(revoked), len(before))
	}
	for i, v := range revoked {
		if v.ID != before[i].ID || v.State != StateRevoked {
			t.Errorf("revoked[%d] = %s (%v), want %s revoked", i, v.ID, v.State, before[i].ID)
		}
	}
	for _, v := range ks.Versions(r) {
		if v.Disabled != (v.ID != created.ID) {
			t.Errorf("version %s disabled=%v (created %s)", v.ID, v.Disabled, created.ID)
		}
	}
}

// TestRevocationIsBoundedParallel: on a backend that revokes one version
// per call, an emergency rotation has several DisableVersion calls in
// flight at once, never more than revokeParallel.
func TestRevocationIsBoundedParallel(t *testing.T) {
	t.Parallel()
	c := clocktest.New()
	b := &countingDisables{Signer: openLocal(t, c), delay: 20 * time.Millisecond}
	ks, err := New(context.Background(), []RingSpec{{Name: "r", Algorithm: backends.ES256, Schedule: testSchedule, Backend: b}}, Options{Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	r := ks.Ring("r")
	before := rotateTimes(t, ks, r, 2*revokeParallel+3)
	start := time.Now()
	created, revoked, _, err := ks.Rotate(context.Background(), r, true, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("revoked %d versions, %d calls, at most %d at once, in %v", len(revoked), b.single.Load(), b.most.Load(), time.Since(start))
	wantRevoked(t, ks, r, before, created, revoked)
	if n := b.single.Load(); int(n) != len(before) {
		t.Errorf("%d DisableVersion calls for %d versions", n, len(before))
	}
	if m := b.most.Load(); m < 2 || m > revokeParallel {
		t.Errorf("at most %d DisableVersion calls in flight at once, want 2 to %d", m, revokeParallel)
	}
}

// TestRevocationInOneStepOnVault: on Vault (backends.PrefixDisabler) an
// emergency rotation revokes every older version with one call.
func TestRevocationInOneStepOnVault(t *testing.T) {
	t.Parallel()
	srv := vaulttest.Start(t)
	u, err := url.Parse("vault://" + strings.TrimPrefix(srv.Addr, "http://") + "/transit?scheme=http")
	if err != nil {
		t.Fatal(err)
	}
	store, err := vault.Open(context.Background(), u, backends.OpenOptions{
		Getenv: func(k string) string { return map[string]string{"VAULT_TOKEN": vaulttest.RootToken}[k] }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	b := countingPrefix{&countingDisables{Signer: store}}
	ks, err := New(context.Background(), []RingSpec{{Name: "r", Algorithm: backends.ES256, Schedule: testSchedule, Backend: b}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	r := ks.Ring("r")
	before := rotateTimes(t, ks, r, 10)
	created, revoked, _, err := ks.Rotate(context.Background(), r, true, "")
	if err != nil {
		t.Fatal(err)
	}
	wantRevoked(t, ks, r, before, created, revoked)
	if one, single := b.inOneStep.Load(), b.single.Load(); one != 1 || single != 0 {
		t.Errorf("%d DisableVersionsBefore and %d DisableVersion calls, want 1 and 0", one, single)
	}
}
