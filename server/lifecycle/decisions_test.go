package lifecycle

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/signet-dev/signet/backends"
	"github.com/signet-dev/signet/server/x5c"
)

// The decisions the reconcile loop acts on are pure functions of the
// snapshot and the clock: these tests call them with made-up versions.

// versionAt is an enabled ES256 version created at t0+at, with state st.
func versionAt(id string, at time.Duration, st State) *Version {
	return &Version{Version: backends.Version{ID: id, Algorithm: backends.ES256, Created: t0.Add(at)}, Lifecycle: Lifecycle{State: st}}
}

func TestRotationDue(t *testing.T) {
	const period = 24 * time.Hour
	disabled := versionAt("3", 2*time.Hour, StateRevoked)
	disabled.Disabled = true
	vs := []*Version{versionAt("1", 0, StateRetiring), versionAt("2", time.Hour, StateActive), disabled}
	for _, c := range []struct {
		name     string
		period   time.Duration
		vs       []*Version
		at       time.Duration
		due      bool
		nextFrom time.Duration // -1: no next rotation
	}{
		{"manual rotation only", 0, vs, 100 * period, false, -1},
		{"nothing enabled", period, []*Version{disabled}, 100 * period, false, -1},
		{"newest enabled version younger than the period", period, vs, time.Hour + period - time.Nanosecond, false, time.Hour},
		{"newest enabled version exactly the period old", period, vs, time.Hour + period, true, time.Hour},
		{"a disabled newer version does not count", period, vs, 2*time.Hour + period - time.Minute, true, time.Hour},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := testSchedule
			s.RotationPeriod = c.period
			if got := rotationDue(s, c.vs, t0.Add(c.at)); got != c.due {
				t.Errorf("rotationDue = %v, want %v", got, c.due)
			}
			want := time.Time{}
			if c.nextFrom >= 0 {
				want = t0.Add(c.nextFrom + c.period)
			}
			if got := nextRotation(s, c.vs); !got.Equal(want) {
				t.Errorf("nextRotation = %v, want %v", got, want)
			}
		})
	}
}

// cert is a certificate for pub valid until notAfter, told apart from
// others by raw alone (what x509.Certificate.Equal compares).
func cert(raw string, pub any, notAfter time.Time) *x509.Certificate {
	return &x509.Certificate{Raw: []byte(raw), PublicKey: pub, NotAfter: notAfter}
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestChainsNeeded(t *testing.T) {
	now := t0.Add(100 * time.Hour)
	self := &CertSpec{Source: SourceSelfSigned, Profile: certProfile}
	withChain := func(id string, st State, chain ...*x509.Certificate) *Version {
		v := versionAt(id, 0, st)
		v.Chain = chain
		return v
	}
	disabled := versionAt("d", 0, StateRevoked)
	disabled.Disabled = true
	vs := []*Version{
		disabled,
		withChain("retired", StateRetired, cert("r", nil, now.Add(-time.Hour))),
		withChain("none", StateActive),
		withChain("expiring", StatePending, cert("e", nil, now.Add(certProfile.RenewBefore-time.Second))),
		withChain("fine", StateActive, cert("f", nil, now.Add(certProfile.RenewBefore))),
	}
	wantWhy := map[string]string{"d": "", "retired": "", "none": "it has none", "expiring": "within renew_before", "fine": ""}
	check := func(t *testing.T, got []chainNeed, want map[string]string) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%d decisions, want %d", len(got), len(want))
		}
		for _, n := range got {
			w := want[n.v.ID]
			if w == "" && n.why != "" || w != "" && !strings.Contains(n.why, w) {
				t.Errorf("version %s: needs a chain because %q; want %q", n.v.ID, n.why, w)
			}
		}
	}
	t.Run("self-signed", func(t *testing.T) { check(t, chainsNeeded(self, false, vs, nil, now), wantWhy) })
	t.Run("CA ring", func(t *testing.T) { check(t, chainsNeeded(self, true, vs, nil, now), wantWhy) })

	// A leaf issued by a CA ring follows the CA ring's active certificate.
	caKey, oldCAKey := newKey(t), newKey(t)
	caCert := cert("ca", caKey.Public(), now.Add(4*time.Hour)) // within renew_before: the CA ring renews it
	caActive := withChain("ca2", StateActive, caCert)
	caActive.PublicKey = caKey.Public()
	caRevoked := versionAt("ca1", 0, StateRevoked)
	caRevoked.Disabled, caRevoked.PublicKey = true, oldCAKey.Public()
	caVersions := &snapshot{versions: []*Version{caRevoked, caActive}, active: caActive}
	fromCARing := &CertSpec{Source: SourceCARing, CARing: "ca", Profile: certProfile}
	leaf := func(id string, notAfter time.Time, ca *x509.Certificate) *Version {
		return withChain(id, StateActive, cert("leaf-"+id, nil, notAfter), ca)
	}
	leaves := []*Version{
		// Capped at its CA certificate's notAfter: a new leaf could not
		// outlive it either; the CA ring's renewal re-issues it.
		leaf("capped", caCert.NotAfter, caCert),
		leaf("other-ca", now.Add(20*time.Hour), cert("ca-elsewhere", newKey(t).Public(), now.Add(48*time.Hour))),
		leaf("revoked-ca", now.Add(20*time.Hour), cert("old-ca", oldCAKey.Public(), now.Add(48*time.Hour))),
		leaf("expiring", now.Add(time.Hour), caCert),
	}
	check(t, chainsNeeded(fromCARing, false, leaves, caVersions, now), map[string]string{
		"capped": "", "other-ca": "active certificate changed", "revoked-ca": "revoked version ca1", "expiring": "within renew_before",
	})
	// Without the CA ring's versions, only the leaves' own chains count.
	check(t, chainsNeeded(fromCARing, false, leaves, nil, now), map[string]string{
		"capped": "", "other-ca": "", "revoked-ca": "", "expiring": "within renew_before",
	})
}

// derive decides which versions are withheld and which signs, and is pure:
// the same arguments give the same snapshot, and the versions given are
// not changed.
func TestDeriveWithholding(t *testing.T) {
	now := t0.Add(time.Hour + testSchedule.PublishAhead) // v2 has just matured; v1 retires
	valid := x5c.Chain{cert("c", nil, now.Add(24*time.Hour))}
	v1, v2 := versionAt("1", 0, 0), versionAt("2", time.Hour, 0)
	v1.Chain = valid
	required := &CertSpec{Source: SourceSelfSigned, Profile: certProfile, Required: true}
	optional := &CertSpec{Source: SourceSelfSigned, Profile: certProfile}
	summary := func(s *snapshot) string {
		var parts []string
		for _, v := range s.versions {
			parts = append(parts, fmt.Sprintf("%s:%v:withheld=%v", v.ID, v.State, v.Withheld))
		}
		active := "none"
		if s.active != nil {
			active = s.active.ID
		}
		return strings.Join(parts, " ") + " active=" + active
	}
	for _, c := range []struct {
		name string
		cert *CertSpec
		at   time.Time
		want string
	}{
		{"no x5c", nil, now, "1:retiring:withheld=false 2:active:withheld=false active=2"},
		{"x5c optional: published without a chain", optional, now, "1:retiring:withheld=false 2:active:withheld=false active=2"},
		{"x5c required: the retiring version signs on", required, now, "1:retiring:withheld=false 2:active:withheld=true active=1"},
		{"x5c required: a retired version is never revived", required, now.Add(testSchedule.RetireAfter),
			"1:retired:withheld=false 2:active:withheld=true active=none"},
	} {
		t.Run(c.name, func(t *testing.T) {
			vs := []*Version{v1, v2}
			s := derive(vs, testSchedule, c.cert, 7, c.at)
			if got := summary(s); got != c.want {
				t.Errorf("got  %s\nwant %s", got, c.want)
			}
			if again := derive(vs, testSchedule, c.cert, 7, c.at); !reflect.DeepEqual(again, s) {
				t.Error("derive gave another snapshot for the same arguments")
			}
			if v1.State != 0 || v2.State != 0 || v2.Withheld || s.read != 7 {
				t.Error("derive changed the versions it was given, or lost the read's ticket")
			}
		})
	}

	t.Run("a chain lapsing within jwks_max_age", func(t *testing.T) {
		lapsing := *v1
		lapsing.Chain = x5c.Chain{cert("l", nil, now.Add(testSchedule.JWKSMaxAge-time.Second))}
		s := derive([]*Version{&lapsing}, testSchedule, required, 1, now)
		if v := s.versions[0]; v.Chain != nil || !v.Withheld || !strings.Contains(v.CertProblem, "jwks_max_age") || s.active != nil {
			t.Errorf("chain %v, withheld %v, problem %q, active %v; want the chain dropped and the version withheld",
				v.Chain != nil, v.Withheld, v.CertProblem, s.active)
		}
		lapsing.Chain = x5c.Chain{cert("l", nil, now.Add(testSchedule.JWKSMaxAge+time.Minute))}
		s = derive([]*Version{&lapsing}, testSchedule, required, 1, now)
		if lapse := now.Add(time.Minute); s.active == nil || s.next.IsZero() || s.next.After(lapse) {
			t.Errorf("active %v, next boundary %v; want it signing until at most %v, when its chain lapses", s.active, s.next, lapse)
		}
	})

	t.Run("a chain for another key", func(t *testing.T) {
		wrong := *v1
		wrong.Chain, wrong.certWrongKey = nil, true
		if s := derive([]*Version{&wrong}, testSchedule, optional, 1, now); !s.versions[0].Withheld || s.active != nil {
			t.Error("a version whose stored chain is for another key is published or signs")
		}
	})
}

func TestRequestMemory(t *testing.T) {
	var m requests
	m.remember("a", request{versionID: "1"}, t0)
	if req, ok := m.lookup("a", t0.Add(RequestWindow-time.Nanosecond)); !ok || req.versionID != "1" || !req.at.Equal(t0) {
		t.Errorf("within the window: %+v, %v", req, ok)
	}
	if _, ok := m.lookup("a", t0.Add(RequestWindow)); ok {
		t.Error("remembered past the window")
	}
	m.remember("b", request{versionID: "2"}, t0.Add(RequestWindow))
	if _, ok := m["a"]; ok || len(m) != 1 {
		t.Errorf("an id past the window is kept: %v", m)
	}

	m = requests{}
	for i := range maxRequests {
		m[fmt.Sprint(i)] = request{at: t0.Add(time.Duration(i))}
	}
	m.remember("one more", request{}, t0.Add(time.Hour))
	if _, ok := m["0"]; ok || len(m) != maxRequests {
		t.Errorf("%d ids remembered, the oldest kept %v; want %d, the oldest forgotten", len(m), ok, maxRequests)
	}
}

func TestReplay(t *testing.T) {
	recorded := versionAt("2", time.Hour, StatePending)
	recorded.RequestID = "rec"
	vs := []*Version{versionAt("1", 0, StateActive), recorded}
	var mem requests
	mem.remember("mem", request{versionID: "1"}, t0)
	mem.remember("gone", request{versionID: "9"}, t0)
	mem.remember("emergency", request{versionID: "1", revokePrevious: true}, t0)
	for _, c := range []struct {
		id             string
		revokePrevious bool
		at             time.Time
		want           string // version id; "" none
		fails          bool
		kind           backends.Kind
		mismatch       bool
	}{
		{id: "rec", at: t0, want: "2"},
		{id: "mem", at: t0, want: "1"},
		{id: "unknown", at: t0},
		{id: "mem", at: t0.Add(RequestWindow)},
		{id: "gone", at: t0, fails: true, kind: backends.KindUnavailable},
		{id: "emergency", at: t0, fails: true, kind: backends.KindInvalidArgument, mismatch: true},
		{id: "emergency", revokePrevious: true, at: t0, want: "1"},
	} {
		v, err := replay(vs, mem, c.id, c.revokePrevious, c.at)
		got := ""
		if v != nil {
			got = v.ID
		}
		if got != c.want || (err != nil) != c.fails || err != nil && backends.KindOf(err) != c.kind ||
			errors.Is(err, ErrRequestMismatch) != c.mismatch {
			t.Errorf("replay(%q, revoke_previous=%v) at %v = %q, %v", c.id, c.revokePrevious, c.at.Sub(t0), got, err)
		}
	}
}
