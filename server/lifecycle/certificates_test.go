package lifecycle

import (
	"context"
	"crypto/x509/pkix"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/signet-dev/signet/backends"
	"github.com/signet-dev/signet/backends/local"
	"github.com/signet-dev/signet/internal/clocktest"
	"github.com/signet-dev/signet/server/x5c"
	"github.com/signet-dev/signet/server/x5c/vaultpki"
)

var certProfile = x5c.Profile{Subject: pkix.Name{CommonName: "test"}, Validity: 24 * time.Hour, RenewBefore: 8 * time.Hour}

// openLocalDir opens a local store in dir on clock c.
func openLocalDir(t *testing.T, dir string, c *clocktest.Clock) *local.Store {
	t.Helper()
	store, err := local.Open(dir, backends.OpenOptions{Now: c.Now,
		Getenv: func(string) string { return testKEK }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return store
}

// failing is a local store whose reads of versions, or writes of
// certificate chains, can be made to fail as an outage would.
type failing struct {
	*local.Store
	down, refusePut atomic.Bool
	afterPut        func() // if set, runs after each chain stored
}

func (f *failing) PutCertificates(ctx context.Context, ring backends.KeyRing, id string, old, chain [][]byte) ([][]byte, error) {
	if f.refusePut.Load() {
		return nil, backends.Errorf(backends.KindUnavailable, "test", "the backend is down")
	}
	stored, err := f.Store.PutCertificates(ctx, ring, id, old, chain)
	if f.afterPut != nil {
		f.afterPut()
	}
	return stored, err
}

func (f *failing) Versions(ctx context.Context, ring backends.KeyRing) ([]backends.Version, error) {
	if f.down.Load() {
		return nil, backends.Errorf(backends.KindUnavailable, "test", "the backend is down")
	}
	return f.Store.Versions(ctx, ring)
}

// deadAddress is a loopback URL where nothing listens.
func deadAddress(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

// A ring listed before the CA ring that issues its certificates starts,
// and gets its chain from the CA once every ring is read.
func TestCARingListedAfterTheRingsItServes(t *testing.T) {
	c := clocktest.New()
	store := openLocalDir(t, t.TempDir(), c)
	ks, err := New(context.Background(), []RingSpec{
		{Name: "leaf", Algorithm: backends.ES256, Schedule: testSchedule, Backend: store,
			Certificates: &CertSpec{Source: SourceCARing, CARing: "ca", Profile: certProfile, Required: true}},
		{Name: "ca", Algorithm: backends.ES256, Schedule: testSchedule, Backend: store, CA: true,
			Certificates: &CertSpec{Profile: certProfile}},
	}, Options{Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	v, err := ks.Active(ks.Ring("leaf"))
	if err != nil {
		t.Fatal(err)
	}
	ca := ks.Versions(ks.Ring("ca"))[0]
	if len(v.Chain) != 2 || !v.Chain[1].Equal(ca.Chain[0]) {
		t.Fatalf("the leaf's chain has %d certificates; want the leaf and the CA ring's certificate", len(v.Chain))
	}
}

// With x5c.required and an issuer that does not answer, restarts and
// replicas starting together create no version beyond the first: a
// withheld version is still a version.
func TestStartsWithTheIssuerDownCreateNoExtraVersion(t *testing.T) {
	c := clocktest.New()
	dir := t.TempDir()
	dead := deadAddress(t)
	start := func() (*KeySet, error) {
		pki, err := vaultpki.New(dead, "pki", "signet", "token", true)
		if err != nil {
			return nil, err
		}
		return New(context.Background(), []RingSpec{{Name: "r", Algorithm: backends.ES256, Schedule: testSchedule,
			Backend: openLocalDir(t, dir, c), Certificates: &CertSpec{Source: SourceVaultPKI, VaultPKI: pki, Profile: certProfile, Required: true}}},
			Options{Now: c.Now, BackendTimeout: 2 * time.Second})
	}
	count := func() int {
		vs, err := openLocalDir(t, dir, c).Versions(context.Background(), backends.KeyRing{Name: "r", Algorithm: backends.ES256})
		if err != nil {
			t.Fatal(err)
		}
		return len(vs)
	}
	for i := range 3 {
		ks, err := start()
		if err != nil {
			t.Fatalf("start %d: %v", i+1, err)
		}
		if _, err := ks.Active(ks.Ring("r")); err == nil {
			t.Fatalf("start %d: a version without the required chain signs", i+1)
		}
	}
	if n := count(); n != 1 {
		t.Fatalf("after three starts with the issuer down the ring has %d versions, want 1", n)
	}
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			if _, err := start(); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := count(); n != 1 {
		t.Fatalf("after three replicas started together the ring has %d versions, want 1", n)
	}
}

// selfSignedRing is a key set with one self-signed ring that requires its
// chain, on a local store that can be made to fail reads.
func selfSignedRing(t *testing.T) (*KeySet, *Ring, *failing, *clocktest.Clock) {
	t.Helper()
	c := clocktest.New()
	store := &failing{Store: openLocalDir(t, t.TempDir(), c)}
	ks, err := New(context.Background(), []RingSpec{{Name: "r", Algorithm: backends.ES256, Schedule: testSchedule, Backend: store,
		Certificates: &CertSpec{Source: SourceSelfSigned, Profile: certProfile, Required: true}}}, Options{Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	return ks, ks.Ring("r"), store, c
}

func publishedKids(ks *KeySet) []string {
	var kids []string
	for _, v := range ks.Published() {
		kids = append(kids, v.Kid)
	}
	return kids
}

// A version withheld for want of a valid chain never brings a retired
// version back to signing or into the JWKS: the others' states are
// derived with it in place.
func TestWithheldVersionNeverRevivesARetiredOne(t *testing.T) {
	ks, r, store, c := selfSignedRing(t)
	ctx := context.Background()
	v1, err := ks.Active(r)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := ks.Rotate(ctx, r, false, ""); err != nil {
		t.Fatal(err)
	}
	c.Advance(testSchedule.PublishAhead + testSchedule.RetireAfter + time.Minute)
	ks.Tick(ctx, r)
	if vs := ks.Versions(r); vs[0].State != StateRetired || vs[1].State != StateActive {
		t.Fatalf("states %v, %v; want retired, active", vs[0].State, vs[1].State)
	}
	v2 := ks.Versions(r)[1]
	// v2 gets a chain for another key (v1's) stored with it.
	if _, err := store.PutCertificates(ctx, r.key, v2.ID, v2.Certificates, v1.Certificates); err != nil {
		t.Fatal(err)
	}
	if err := ks.Refresh(ctx, r); err != nil {
		t.Fatal(err)
	}
	if a, err := ks.Active(r); err == nil {
		t.Fatalf("version %s signs; want none: v1 is retired and v2 withheld", a.ID)
	}
	if kids := publishedKids(ks); len(kids) != 0 {
		t.Fatalf("published %v; want nothing", kids)
	}
	if vs := ks.Versions(r); vs[0].State != StateRetired || !vs[1].Withheld {
		t.Fatalf("v1 %v, v2 withheld %v; want v1 retired, v2 withheld", vs[0].State, vs[1].Withheld)
	}
}

// A retired version gets no new certificate when its chain expires: it
// stays retired, neither withheld nor re-certified.
func TestRetiredVersionIsNotRecertified(t *testing.T) {
	ks, r, store, c := selfSignedRing(t)
	ctx := context.Background()
	v1, _ := ks.Active(r)
	if _, _, _, err := ks.Rotate(ctx, r, false, ""); err != nil {
		t.Fatal(err)
	}
	c.Advance(testSchedule.PublishAhead + testSchedule.RetireAfter + time.Minute)
	ks.Tick(ctx, r)
	c.Advance(certProfile.Validity) // v1's certificate has expired
	ks.Tick(ctx, r)
	vs, err := store.Versions(ctx, r.key)
	if err != nil {
		t.Fatal(err)
	}
	if !backends.SameChain(vs[0].Certificates, v1.Certificates) {
		t.Error("the retired version got a new certificate")
	}
	got := ks.Versions(r)
	if got[0].State != StateRetired || got[0].Withheld {
		t.Errorf("v1 is %v, withheld %v; want retired, not withheld", got[0].State, got[0].Withheld)
	}
	if got[1].State != StateActive || got[1].Withheld || got[1].Chain == nil {
		t.Errorf("v2 is %v, withheld %v, chain %v; want active with a renewed chain", got[1].State, got[1].Withheld, got[1].Chain != nil)
	}
}

// While a withheld version is the one the schedule makes active, the
// version it replaces keeps signing until it retires, never after.
func TestPreviousVersionSignsWhileTheNewOneIsWithheld(t *testing.T) {
	ks, r, store, c := selfSignedRing(t)
	ctx := context.Background()
	v1, _ := ks.Active(r)
	v2, _, _, err := ks.Rotate(ctx, r, false, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.PutCertificates(ctx, r.key, v2.ID, v2.Certificates, v1.Certificates); err != nil {
		t.Fatal(err)
	}
	if err := ks.Refresh(ctx, r); err != nil {
		t.Fatal(err)
	}
	c.Advance(testSchedule.PublishAhead + time.Minute)
	if a, err := ks.Active(r); err != nil || a.ID != v1.ID {
		t.Fatalf("active %v (%v); want v1 while v2 is withheld", a, err)
	}
	if kids := publishedKids(ks); !slices.Equal(kids, []string{v1.Kid}) {
		t.Fatalf("published %v; want only v1", kids)
	}
	c.Advance(testSchedule.RetireAfter)
	if a, err := ks.Active(r); err == nil {
		t.Fatalf("version %s signs after v1's retirement while v2 is withheld; want none", a.ID)
	}
}

// A chain that lapses while reads fail leaves the JWKS (x5c.required)
// jwks_max_age before it expires, and the Run loop wakes for it.
func TestLapsingChainLeavesTheJWKSWhileReadsFail(t *testing.T) {
	ks, r, store, c := selfSignedRing(t)
	v1, _ := ks.Active(r)
	store.down.Store(true)
	lapse := v1.Chain.Expires().Add(-testSchedule.JWKSMaxAge)
	if next := r.snap.load().next; next.IsZero() || next.After(lapse) {
		t.Fatalf("the snapshot's next boundary is %v; want at most %v, when the chain lapses", next, lapse)
	}
	c.Advance(lapse.Sub(c.Now()) - time.Second)
	if kids := publishedKids(ks); !slices.Equal(kids, []string{v1.Kid}) {
		t.Fatalf("published %v before the lapse; want v1", kids)
	}
	c.Advance(time.Second)
	ks.Tick(context.Background(), r) // fails to read
	if kids := publishedKids(ks); len(kids) != 0 {
		t.Fatalf("published %v with a lapsed chain; want nothing", kids)
	}
	if _, err := ks.Active(r); err == nil {
		t.Fatal("a version with a lapsed chain signs")
	}
}

// caAndLeaf is a key set with a CA ring (on a store that can refuse to
// store chains) and a ring whose certificates it issues.
func caAndLeaf(t *testing.T, caProfile, leafProfile x5c.Profile) (*KeySet, *Ring, *Ring, *failing, *clocktest.Clock) {
	t.Helper()
	c := clocktest.New()
	caStore := &failing{Store: openLocalDir(t, t.TempDir(), c)}
	ks, err := New(context.Background(), []RingSpec{
		{Name: "ca", Algorithm: backends.ES256, Schedule: testSchedule, Backend: caStore, CA: true,
			Certificates: &CertSpec{Profile: caProfile}},
		{Name: "leaf", Algorithm: backends.ES256, Schedule: testSchedule, Backend: openLocalDir(t, t.TempDir(), c),
			Certificates: &CertSpec{Source: SourceCARing, CARing: "ca", Profile: leafProfile, Required: true}},
	}, Options{Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	return ks, ks.Ring("ca"), ks.Ring("leaf"), caStore, c
}

// A leaf whose life was capped at its CA certificate's notAfter is not
// re-issued at every refresh once that is within the leaf's renew_before
// (a new one could not outlive the CA certificate either); the CA ring's
// renewal re-issues it.
func TestLeafCappedByItsCAIsRenewedWithTheCA(t *testing.T) {
	caProfile := certProfile
	caProfile.RenewBefore = 2 * time.Hour
	ks, ca, leaf, _, c := caAndLeaf(t, caProfile, certProfile)
	ctx := context.Background()
	first := ks.Versions(leaf)[0].Chain
	if !first[0].NotAfter.Equal(first[1].NotAfter) {
		t.Fatalf("the leaf's notAfter %v is not capped at its CA certificate's %v", first[0].NotAfter, first[1].NotAfter)
	}
	c.Advance(certProfile.Validity - certProfile.RenewBefore + time.Hour) // within the leaf's renew_before, not the CA's
	for range 2 {
		ks.Tick(ctx, ca)
		ks.Tick(ctx, leaf)
	}
	if got := ks.Versions(leaf)[0].Chain; !got[0].Equal(first[0]) {
		t.Fatalf("the capped leaf was re-issued (serial %x, was %x) before its CA certificate was renewed", got[0].SerialNumber, first[0].SerialNumber)
	}
	c.Advance(certProfile.RenewBefore - caProfile.RenewBefore) // within the CA's renew_before
	ks.Tick(ctx, ca)
	caCert := ks.Versions(ca)[0].Chain[0]
	got := ks.Versions(leaf)[0].Chain
	if caCert.Equal(first[1]) || !got[1].Equal(caCert) || !got[0].NotAfter.After(first[0].NotAfter) {
		t.Fatal("the CA ring's renewal did not re-issue the leaf under its new certificate")
	}
}

// A leaf whose CA certificate belongs to a revoked CA version says so while
// the CA ring's new version has no certificate, and is re-issued as soon as
// it has one.
func TestLeafOfARevokedCAVersionIsReissued(t *testing.T) {
	ks, ca, leaf, caStore, _ := caAndLeaf(t, certProfile, certProfile)
	ctx := context.Background()
	old := ks.Versions(leaf)[0].Chain
	caStore.refusePut.Store(true)
	if _, _, _, err := ks.Rotate(ctx, ca, true, ""); err != nil {
		t.Fatal(err)
	}
	ks.Tick(ctx, leaf)
	lv := ks.Versions(leaf)[0]
	if p := ks.CertificateProblem(leaf, lv); !strings.Contains(p, "no_ca_certificate") {
		t.Fatalf("the leaf issued by a revoked CA version has certificate problem %q; want no_ca_certificate", p)
	}
	caStore.refusePut.Store(false)
	ks.Tick(ctx, ca)
	lv = ks.Versions(leaf)[0]
	caCert := ks.Versions(ca)[1].Chain[0]
	if lv.Chain == nil || lv.Chain[1].Equal(old[1]) || !lv.Chain[1].Equal(caCert) {
		t.Fatal("the leaf was not re-issued under the CA ring's new version")
	}
}

// Certificates are issued as of their own instant, though certify decides
// which versions need one at a single instant: a slow issuance of one
// version's chain does not shorten the next one's.
func TestEachChainIsIssuedAsOfItsOwnInstant(t *testing.T) {
	ks, r, store, c := selfSignedRing(t)
	ctx := context.Background()
	c.Advance(certProfile.Validity - certProfile.RenewBefore + time.Minute) // v1's chain is due for renewal
	store.refusePut.Store(true)
	if _, _, _, err := ks.Rotate(ctx, r, false, ""); err != nil { // v2 pending, without a chain
		t.Fatal(err)
	}
	store.refusePut.Store(false)
	store.afterPut = func() { c.Advance(time.Hour) } // each store of a chain takes an hour
	start := c.Now()
	ks.Tick(ctx, r)
	vs := ks.Versions(r)
	if len(vs) != 2 || vs[0].Chain == nil || vs[1].Chain == nil {
		t.Fatalf("%d versions, chains %v; want two versions, both with a chain", len(vs), vs)
	}
	if got, want := vs[1].Chain[0].NotAfter, start.Add(time.Hour+certProfile.Validity).Truncate(time.Second); got.Before(want) {
		t.Errorf("the second chain of the tick expires at %v; want at least %v, a validity after it was issued", got, want)
	}
}
