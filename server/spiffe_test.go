package server

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/signet-dev/signet/backends"
	"github.com/signet-dev/signet/server/config"
	"github.com/signet-dev/signet/server/jose"
	"github.com/signet-dev/signet/server/lifecycle"
)

// The bundle's sequence grows with every change of the published set, the
// ones Signet's rotations make, whichever replica sees which step, and
// stays put while the set does.
func TestBundleSequence(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 123_000_000)
	v := func(created time.Duration, state lifecycle.State, retires time.Duration) *lifecycle.Version {
		ver := &lifecycle.Version{Version: backends.Version{Created: t0.Add(created), Disabled: state == lifecycle.StateRevoked}}
		ver.State = state
		if retires != 0 {
			ver.RetiresAt = t0.Add(retires)
		}
		return ver
	}
	const (
		active   = lifecycle.StateActive
		pending  = lifecycle.StatePending
		retiring = lifecycle.StateRetiring
		retired  = lifecycle.StateRetired
		revoked  = lifecycle.StateRevoked
	)
	steps := []struct {
		name      string
		versions  []*lifecycle.Version
		published int
	}{
		{"first version", []*lifecycle.Version{v(0, active, 0)}, 1},
		{"rotated", []*lifecycle.Version{v(0, active, 0), v(time.Hour, pending, 0)}, 2},
		{"rotated again within the millisecond's neighbour", []*lifecycle.Version{v(0, active, 0), v(time.Hour, pending, 0), v(time.Hour+time.Millisecond, pending, 0)}, 3},
		{"the first retires", []*lifecycle.Version{v(0, retired, 3*time.Hour), v(time.Hour, retiring, 0), v(time.Hour+time.Millisecond, active, 0)}, 2},
		{"emergency: created, older not yet revoked", []*lifecycle.Version{v(0, retired, 3*time.Hour), v(time.Hour, retiring, 0), v(time.Hour+time.Millisecond, active, 0), v(4*time.Hour, pending, 0)}, 3},
		{"emergency: older revoked", []*lifecycle.Version{v(0, revoked, 0), v(time.Hour, revoked, 0), v(time.Hour+time.Millisecond, revoked, 0), v(4*time.Hour, active, 0)}, 1},
	}
	var last uint64
	for i, s := range steps {
		seq := bundleSequence(s.versions, s.published)
		if i > 0 && seq <= last {
			t.Errorf("%s: sequence %d, was %d", s.name, seq, last)
		}
		last = seq
	}
	// The revoked versions destroyed (gone from the listing): the same
	// set, the same sequence.
	if seq := bundleSequence([]*lifecycle.Version{v(4*time.Hour, active, 0)}, 1); seq != last {
		t.Errorf("revoked versions removed: sequence %d, want %d as before", seq, last)
	}
	if last >= 1<<53 {
		t.Errorf("sequence %d is not exact as a double", last)
	}
}

// The JWT-SVID profile: sub a workload's SPIFFE ID of the trust domain
// (the caller's by default), one audience, typ JWT or JOSE.
func TestSVIDSubject(t *testing.T) {
	sp := &spiffeSetup{td: spiffeid.RequireTrustDomainFromString("corp.example"), rings: map[string]bool{"svid": true}}
	const caller = "spiffe://corp.example/svc/a"
	for _, c := range []struct {
		caller, subject string
		aud             []string
		typ             string
		want, field     string
	}{
		{caller: caller, aud: []string{"x"}, typ: "JWT", want: caller},
		{caller: caller, subject: "spiffe://corp.example/svc/b", aud: []string{"x"}, typ: "JOSE", want: "spiffe://corp.example/svc/b"},
		{caller: "dns:a.corp.example", aud: []string{"x"}, typ: "JWT", field: "subject"},
		{caller: caller, subject: "svc-a", aud: []string{"x"}, typ: "JWT", field: "subject"},
		{caller: caller, subject: "spiffe://corp.example", aud: []string{"x"}, typ: "JWT", field: "subject"},
		{caller: caller, subject: "spiffe://other.example/svc/a", aud: []string{"x"}, typ: "JWT", field: "subject"},
		{caller: caller, subject: "SPIFFE://corp.example/svc/a", aud: []string{"x"}, typ: "JWT", field: "subject"},
		{caller: caller, aud: []string{"x", "y"}, typ: "JWT", field: "audience"},
		{caller: caller, aud: []string{"x"}, typ: "at+jwt", field: "typ"},
	} {
		got, err := sp.svidSubject("svid", c.caller, c.subject, c.aud, c.typ)
		var inv *jose.InvalidError
		switch {
		case c.field == "" && (err != nil || got != c.want):
			t.Errorf("%+v: %q %v, want %q", c, got, err, c.want)
		case c.field != "" && (!asInvalid(err, &inv) || inv.Field != c.field || !strings.Contains(inv.Msg, "JWT-SVID")):
			t.Errorf("%+v: %q %v, want InvalidArgument on %s", c, got, err, c.field)
		}
	}
	if sp.issuesSVIDs("default") || (*spiffeSetup)(nil).issuesSVIDs("svid") {
		t.Error("issuesSVIDs")
	}
}

func asInvalid(err error, into **jose.InvalidError) bool {
	e, ok := err.(*jose.InvalidError)
	*into = e
	return ok
}

// The bundle endpoint as an unauthenticated client meets it: GET and HEAD
// with the JWKS's caching headers, 304 on a matching ETag, other methods
// refused, and nothing at that path without spiffe.trust_domain.
func TestBundleEndpoint(t *testing.T) {
	cfg := testConfig(t, backends.ES256, backends.ES384)
	cfg.SPIFFE.TrustDomain = "corp.example"
	cfg.KeyRings[1].Profile = config.ProfileJWTSVID
	ts := startServer(t, cfg, Options{})
	resp, body := ts.get(t, SPIFFEBundlePath)
	jwksResp, _ := ts.get(t, JWKSPath)
	var doc struct {
		Keys []struct {
			Use, Kid, Alg string
		} `json:"keys"`
		Sequence    uint64 `json:"spiffe_sequence"`
		RefreshHint int64  `json:"spiffe_refresh_hint"`
	}
	if err := json.Unmarshal(body, &doc); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %v\n%s", SPIFFEBundlePath, resp.Status, err, body)
	}
	if len(doc.Keys) != 1 || doc.Keys[0].Use != "jwt-svid" || doc.Keys[0].Alg != "ES384" || doc.Keys[0].Kid == "" ||
		doc.Sequence == 0 || doc.RefreshHint != int64(cfg.KeyRings[1].JWKSMaxAge.D()/time.Second) {
		t.Errorf("bundle %s: want the ES384 ring's one key, a sequence, the ring's jwks_max_age as hint", body)
	}
	if resp.Header.Get("Cache-Control") != jwksResp.Header.Get("Cache-Control") || resp.Header.Get("ETag") == "" ||
		resp.Header.Get("Content-Type") != "application/json" || resp.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Errorf("bundle headers %v; JWKS Cache-Control %q", resp.Header, jwksResp.Header.Get("Cache-Control"))
	}
	if r, b := ts.get(t, SPIFFEBundlePath, "If-None-Match", resp.Header.Get("ETag")); r.StatusCode != http.StatusNotModified || len(b) != 0 {
		t.Errorf("conditional GET: %s %q", r.Status, b)
	}
	head, err := http.Head(ts.httpURL + SPIFFEBundlePath)
	if err != nil {
		t.Fatal(err)
	}
	head.Body.Close()
	if head.StatusCode != http.StatusOK || head.ContentLength != int64(len(body)) || head.Header.Get("ETag") != resp.Header.Get("ETag") {
		t.Errorf("HEAD: %s, length %d (GET: %d)", head.Status, head.ContentLength, len(body))
	}
	post, err := http.Post(ts.httpURL+SPIFFEBundlePath, "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	post.Body.Close()
	if post.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %s", post.Status)
	}

	plain := startServer(t, testConfig(t), Options{})
	if r, _ := plain.get(t, SPIFFEBundlePath); r.StatusCode != http.StatusNotFound {
		t.Errorf("without spiffe.trust_domain, GET %s: %s", SPIFFEBundlePath, r.Status)
	}
}
