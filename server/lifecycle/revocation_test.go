package lifecycle

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/signet-dev/signet/backends"
	"github.com/signet-dev/signet/backends/gcpkms"
	"github.com/signet-dev/signet/internal/clocktest"
	"github.com/signet-dev/signet/internal/gcpkmstest"
)

// openCloudKMS opens the Cloud KMS backend on s, as a replica would.
func openCloudKMS(t *testing.T, s *gcpkmstest.Server, query string) backends.Signer {
	t.Helper()
	u, err := url.Parse("gcpkms:" + gcpkmstest.KeyRing + "?protection_level=software&endpoint=" + s.Addr + query)
	if err != nil {
		t.Fatal(err)
	}
	b, err := gcpkms.Open(context.Background(), u, backends.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// replica is a key set with one ES256 ring "r" on backend b, counting the
// key mismatches it reports.
type replica struct {
	ks         *KeySet
	r          *Ring
	mismatches atomic.Int32
}

func newReplica(t *testing.T, b backends.Signer, c *clocktest.Clock) *replica {
	t.Helper()
	rep := &replica{}
	ks, err := New(context.Background(), []RingSpec{{Name: "r", Algorithm: backends.ES256, Schedule: testSchedule, Backend: b,
		VerifySignatures: true}}, Options{Now: c.Now, OnKeyMismatch: func(string) { rep.mismatches.Add(1) }})
	if err != nil {
		t.Fatalf("starting a replica: %v", err)
	}
	rep.ks, rep.r = ks, ks.Ring("r")
	return rep
}

func (rep *replica) published() map[string]bool {
	out := map[string]bool{}
	for _, v := range rep.ks.Published() {
		out[v.Kid] = true
	}
	return out
}

// sign signs with the version that signs now and checks its kid.
func (rep *replica) sign(t *testing.T, wantKid string) {
	t.Helper()
	v, err := rep.ks.Active(rep.r)
	if err != nil {
		t.Fatalf("Active: %v", err)
	}
	if v.Kid != wantKid {
		t.Fatalf("signing with kid %s, want %s", v.Kid, wantKid)
	}
	if _, err := rep.ks.SignWith(context.Background(), rep.r, v, []byte("eyJhbGciOiJFUzI1NiJ9.e30")); err != nil {
		t.Fatalf("SignWith: %v", err)
	}
}

// A replica that starts after an emergency rotation meets a DISABLED
// version whose public key Cloud KMS refuses (FAILED_PRECONDITION): it
// starts, lists the version as revoked without a kid, and publishes only
// the new one. (Before: "reading the public key of .../cryptoKeyVersions/1:
// FailedPrecondition", and no replica could start.)
func TestReplicaStartsAfterRevocationOnCloudKMS(t *testing.T) {
	s := gcpkmstest.Start()
	t.Cleanup(s.Close)
	c := clocktest.New()
	a := newReplica(t, openCloudKMS(t, s, ""), c)
	old, err := a.ks.Active(a.r)
	if err != nil {
		t.Fatal(err)
	}
	created, revoked, _, err := a.ks.Rotate(context.Background(), a.r, true, "")
	if err != nil || len(revoked) != 1 || revoked[0].ID != old.ID {
		t.Fatalf("Rotate --revoke-previous: revoked %v, %v", revoked, err)
	}
	b := newReplica(t, openCloudKMS(t, s, ""), c)
	vs := b.ks.Versions(b.r)
	if len(vs) != 2 || vs[0].ID != old.ID || vs[0].State != StateRevoked || vs[0].Kid != "" || vs[1].Kid != created.Kid {
		t.Fatalf("the new replica lists %+v; want %s revoked without a kid, then kid %s", vs, old.ID, created.Kid)
	}
	if pub := b.published(); len(pub) != 1 || !pub[created.Kid] {
		t.Errorf("the new replica publishes %v, want only %s", pub, created.Kid)
	}
	// The replica that revoked keeps the kid it knew.
	if v := find(a.ks.Versions(a.r), old.ID); v == nil || v.Kid != old.Kid || v.State != StateRevoked {
		t.Errorf("the revoking replica lists %+v, want kid %s revoked", v, old.Kid)
	}
	c.Advance(2*testSchedule.RefreshInterval + time.Minute) // the emergency version signs once every replica publishes it
	b.sign(t, created.Kid)
	if a.mismatches.Load()+b.mismatches.Load() != 0 {
		t.Errorf("%d key mismatches reported", a.mismatches.Load()+b.mismatches.Load())
	}
}

// destroy_on_revoke: the revoked version is scheduled for destruction and
// leaves Cloud KMS's list. That is the revocation's outcome, not a key
// mismatch, on the replica that revoked, on one that only sees the version
// vanish at its next refresh, and on one that starts afterwards: the kid
// leaves the JWKS at once, nothing is reported, signing goes on with the
// new version.
func TestDestroyOnRevokeIsARevocation(t *testing.T) {
	s := gcpkmstest.Start()
	t.Cleanup(s.Close)
	c := clocktest.New()
	a := newReplica(t, openCloudKMS(t, s, "&destroy_on_revoke=true"), c)
	other := newReplica(t, openCloudKMS(t, s, "&destroy_on_revoke=true"), c)
	old, _ := a.ks.Active(a.r)
	if v, _ := other.ks.Active(other.r); v == nil || v.Kid != old.Kid {
		t.Fatalf("the two replicas disagree on the signing version")
	}
	created, revoked, _, err := a.ks.Rotate(context.Background(), a.r, true, "")
	if err != nil {
		t.Fatalf("Rotate --revoke-previous with destroy_on_revoke: %v", err)
	}
	if len(revoked) != 1 || revoked[0].ID != old.ID || revoked[0].State != StateRevoked {
		t.Errorf("Rotate reports revoked %+v, want %s revoked", revoked, old.ID)
	}
	if pub := a.published(); pub[old.Kid] || !pub[created.Kid] {
		t.Errorf("after the revocation the JWKS holds %v; want %s gone and %s in", pub, old.Kid, created.Kid)
	}
	other.ks.Tick(context.Background(), other.r)
	if st := other.ks.Status()[0]; st.LastError != nil {
		t.Errorf("the other replica's refresh failed: %v", st.LastError)
	}
	if pub := other.published(); pub[old.Kid] || !pub[created.Kid] {
		t.Errorf("the other replica publishes %v after its refresh", pub)
	}
	c.Advance(2*testSchedule.RefreshInterval + time.Minute)
	for _, rep := range []*replica{a, other} {
		rep.ks.Tick(context.Background(), rep.r)
		rep.sign(t, created.Kid)
		if p := rep.ks.SigningProblems(); len(p) != 0 || rep.mismatches.Load() != 0 {
			t.Errorf("signing problems %v, %d mismatches; want none", p, rep.mismatches.Load())
		}
	}
	restarted := newReplica(t, openCloudKMS(t, s, "&destroy_on_revoke=true"), c)
	if pub := restarted.published(); len(pub) != 1 || !pub[created.Kid] {
		t.Errorf("a restarted replica publishes %v, want only %s", pub, created.Kid)
	}
	restarted.sign(t, created.Kid)
}

// notRemoved is a backend that can tell removals apart but says a vanished
// version was not removed: it may still sign somewhere.
type notRemoved struct{ backends.Signer }

func (notRemoved) Removed(context.Context, backends.KeyRing, string) (bool, error) { return false, nil }

// The invariant the mismatch check keeps: a signing version that vanishes
// without the backend confirming it can never sign again is a mismatch,
// even on a backend that has removals.
func TestVanishedWithoutRemovalIsStillAMismatch(t *testing.T) {
	dir := t.TempDir()
	c := clocktest.New()
	store := openLocalDir(t, dir, c)
	rep := newReplica(t, notRemoved{store}, c)
	active, _ := rep.ks.Active(rep.r)
	if err := os.Remove(filepath.Join(dir, "rings", "r", active.ID+".json")); err != nil {
		t.Fatal(err)
	}
	err := rep.ks.Refresh(context.Background(), rep.r)
	if backends.KindOf(err) != backends.KindFailedPrecondition || !strings.Contains(err.Error(), "no longer listed") || rep.mismatches.Load() != 1 {
		t.Fatalf("the active version vanished, not removed: %v, %d mismatches", err, rep.mismatches.Load())
	}
	if pub := rep.published(); !pub[active.Kid] {
		t.Errorf("the last good key set was replaced: %v", pub)
	}
}

// Cloud KMS is asked, not trusted blindly: a signing version missing from
// one listing (a list that lags, a lost page) while Cloud KMS still has it
// ENABLED is a key mismatch that keeps the last good key set, and the next
// complete listing clears it.
func TestMissingFromAListOnCloudKMSIsStillAMismatch(t *testing.T) {
	s := gcpkmstest.Start()
	t.Cleanup(s.Close)
	c := clocktest.New()
	rep := newReplica(t, openCloudKMS(t, s, "&destroy_on_revoke=true"), c)
	active, _ := rep.ks.Active(rep.r)
	s.HideFromNextList(active.ID)
	err := rep.ks.Refresh(context.Background(), rep.r)
	if backends.KindOf(err) != backends.KindFailedPrecondition || !strings.Contains(err.Error(), "no longer listed") || rep.mismatches.Load() != 1 {
		t.Fatalf("the signing version missing from a listing while enabled: %v, %d mismatches; want a mismatch", err, rep.mismatches.Load())
	}
	if pub := rep.published(); !pub[active.Kid] {
		t.Errorf("the last good key set was replaced: %v", pub)
	}
	if err := rep.ks.Refresh(context.Background(), rep.r); err != nil || len(rep.ks.SigningProblems()) != 0 {
		t.Errorf("a complete listing again: %v, problems %v; want the mismatch cleared", err, rep.ks.SigningProblems())
	}
	rep.sign(t, active.Kid)
}

// A replica that cannot ask whether a vanished signing version was
// destroyed (cloudkms.cryptoKeyVersions.get denied) neither takes the
// vanishing for a revocation nor reports a key mismatch: the read fails,
// saying why, and the last good key set stays until it can ask.
func TestRemovalUnknownKeepsTheLastGoodKeySet(t *testing.T) {
	s := gcpkmstest.Start()
	t.Cleanup(s.Close)
	c := clocktest.New()
	a := newReplica(t, openCloudKMS(t, s, "&destroy_on_revoke=true"), c)
	other := newReplica(t, openCloudKMS(t, s, "&destroy_on_revoke=true"), c)
	old, _ := other.ks.Active(other.r)
	created, _, _, err := a.ks.Rotate(context.Background(), a.r, true, "")
	if err != nil {
		t.Fatal(err)
	}
	s.Deny("cloudkms.cryptoKeyVersions.get", true)
	err = other.ks.Refresh(context.Background(), other.r)
	if backends.KindOf(err) != backends.KindPermissionDenied || !strings.Contains(err.Error(), "cloudkms.cryptoKeyVersions.get") || other.mismatches.Load() != 0 {
		t.Fatalf("refresh without the get permission: %v, %d mismatches; want permission denied naming it, no mismatch", err, other.mismatches.Load())
	}
	if st := other.ks.Status()[0]; st.LastError == nil || st.RefreshFailures != 1 {
		t.Errorf("the status does not say why the refresh failed: %+v", st)
	}
	if pub := other.published(); !pub[old.Kid] || pub[created.Kid] {
		t.Errorf("publishes %v; want the last good key set (%s only)", pub, old.Kid)
	}
	s.Deny("cloudkms.cryptoKeyVersions.get", false)
	if err := other.ks.Refresh(context.Background(), other.r); err != nil {
		t.Fatal(err)
	}
	if pub := other.published(); pub[old.Kid] || !pub[created.Kid] {
		t.Errorf("once it can ask, publishes %v; want %s only", pub, created.Kid)
	}
}
