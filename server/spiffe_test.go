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

// The bundle's sequence grows with every change of the published set that
// Signet makes, in any ring, however close in time; it stays put when a
// revoked version leaves the listing; it is a function of the listing
// alone (a restarted replica computes the same). The history below has the
// cases a "latest time" formula gets wrong: two versions stamped the same
// millisecond (Key Vault keeps whole seconds), a version stamped before its
// predecessor (PKCS#11 and local versions carry the creating replica's
// clock), a ring whose versions are older than the other's, and two rings
// rotating in the same millisecond.
func TestBundleSequence(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 123_000_000)
	type ver struct {
		created time.Duration
		state   lifecycle.State
	}
	const (
		active   = lifecycle.StateActive
		pending  = lifecycle.StatePending
		retiring = lifecycle.StateRetiring
		retired  = lifecycle.StateRetired
		revoked  = lifecycle.StateRevoked
	)
	ring := func(vs ...ver) []*lifecycle.Version {
		out := make([]*lifecycle.Version, len(vs))
		for i, v := range vs {
			out[i] = &lifecycle.Version{Version: backends.Version{Created: t0.Add(v.created), Disabled: v.state == revoked}}
			out[i].State = v.state
		}
		return out
	}
	many := func(n int, last lifecycle.State) []ver { // a ring with n published versions, then one more
		vs := make([]ver, n)
		for i := range vs {
			vs[i] = ver{time.Duration(i) * time.Millisecond, retiring}
		}
		return append(vs, ver{time.Hour, last})
	}
	steps := []struct {
		name  string
		rings [][]*lifecycle.Version
		same  bool // the published set did not change: the sequence must not either
	}{
		{name: "first version", rings: [][]*lifecycle.Version{ring(ver{0, active})}},
		{name: "rotated, stamped the same millisecond", rings: [][]*lifecycle.Version{ring(ver{0, active}, ver{0, pending})}},
		{name: "rotated, stamped before its predecessor", rings: [][]*lifecycle.Version{
			ring(ver{0, active}, ver{0, pending}, ver{-time.Second, pending})}},
		{name: "a ring with older versions given profile jwt-svid", rings: [][]*lifecycle.Version{
			ring(ver{0, active}, ver{0, pending}, ver{-time.Second, pending}), ring(ver{-48 * time.Hour, active})}},
		{name: "the second ring rotates in the same millisecond", rings: [][]*lifecycle.Version{
			ring(ver{0, active}, ver{0, pending}, ver{-time.Second, pending}), ring(ver{-48 * time.Hour, active}, ver{0, pending})}},
		{name: "the first version retires", rings: [][]*lifecycle.Version{
			ring(ver{0, retired}, ver{0, retiring}, ver{-time.Second, active}), ring(ver{-48 * time.Hour, active}, ver{0, pending})}},
		{name: "pending becomes active", same: true, rings: [][]*lifecycle.Version{
			ring(ver{0, retired}, ver{0, retiring}, ver{-time.Second, active}), ring(ver{-48 * time.Hour, retiring}, ver{0, active})}},
		{name: "emergency: created, the older not yet revoked", rings: [][]*lifecycle.Version{
			ring(ver{0, retired}, ver{0, retiring}, ver{-time.Second, active}, ver{time.Hour, pending}),
			ring(ver{-48 * time.Hour, retiring}, ver{0, active})}},
		{name: "emergency: the older revoked", rings: [][]*lifecycle.Version{
			ring(ver{0, revoked}, ver{0, revoked}, ver{-time.Second, revoked}, ver{time.Hour, active}),
			ring(ver{-48 * time.Hour, retiring}, ver{0, active})}},
		{name: "the revoked versions destroyed (gone from the listing)", same: true, rings: [][]*lifecycle.Version{
			ring(ver{time.Hour, active}), ring(ver{-48 * time.Hour, retiring}, ver{0, active})}},
	}
	var last uint64
	for i, s := range steps {
		seq := bundleSequence(s.rings)
		switch {
		case i > 0 && s.same && seq != last:
			t.Errorf("%s: sequence %d, was %d: the published set is the same", s.name, seq, last)
		case i > 0 && !s.same && seq <= last:
			t.Errorf("%s: sequence %d, was %d", s.name, seq, last)
		}
		if again := bundleSequence(s.rings); again != seq {
			t.Errorf("%s: %d, then %d from the same listing", s.name, seq, again)
		}
		last = seq
	}
	if last >= 1<<53 {
		t.Errorf("sequence %d of two rings is not exact as a double", last)
	}
	// A ring publishing more than 999 versions: one more, one fewer, each
	// still counts.
	big := bundleSequence([][]*lifecycle.Version{ring(many(1500, active)...)})
	bigger := bundleSequence([][]*lifecycle.Version{ring(append(many(1500, active), ver{2 * time.Hour, pending})...)})
	fewer := ring(append(many(1500, active), ver{2 * time.Hour, pending})...)
	fewer[0].State = retired
	if fewest := bundleSequence([][]*lifecycle.Version{fewer}); !(big < bigger && bigger < fewest) {
		t.Errorf("1501 published versions: %d; one created: %d; then one retired: %d", big, bigger, fewest)
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
