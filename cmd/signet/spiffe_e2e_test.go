package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"google.golang.org/grpc/codes"

	signetclient "github.com/signet-dev/signet/client"
	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
)

const spiffeBundlePath = "/spiffe/bundle.json"

// bundleBytes GETs a replica's SPIFFE bundle and returns its body and headers.
func (p *process) bundleBytes(t *testing.T) ([]byte, http.Header) {
	t.Helper()
	resp, err := http.Get(p.httpURL + spiffeBundlePath)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("SPIFFE bundle: %s %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	return body, resp.Header
}

// fetchBundle is go-spiffe's federation.FetchBundle against a replica.
func (p *process) fetchBundle(t *testing.T, td spiffeid.TrustDomain) (*spiffebundle.Bundle, uint64) {
	t.Helper()
	b, err := federation.FetchBundle(ctxT(t), td, p.httpURL+spiffeBundlePath)
	if err != nil {
		t.Fatalf("federation.FetchBundle: %v", err)
	}
	seq, ok := b.SequenceNumber()
	if !ok {
		t.Fatal("the bundle has no spiffe_sequence")
	}
	return b, seq
}

// sameBundle waits until every replica serves the same bundle bytes, and
// returns them.
func sameBundle(t *testing.T, why string, replicas ...*process) []byte {
	t.Helper()
	var first []byte
	if !waitFor(30*time.Second, func() bool {
		first, _ = replicas[0].bundleBytes(t)
		for _, r := range replicas[1:] {
			if b, _ := r.bundleBytes(t); !bytes.Equal(b, first) {
				return false
			}
		}
		return true
	}) {
		t.Fatalf("%s: the replicas never served the same SPIFFE bundle", why)
	}
	return first
}

// TestJWTSVIDAndSPIFFEBundle: three replicas with mTLS issue JWT-SVIDs of
// trust domain signet.test from one ring, and serve its SPIFFE bundle.
// go-spiffe (federation.FetchBundle against the running binary,
// jwtsvid.ParseAndValidate) accepts a Signet SVID whose sub is the caller's
// SPIFFE ID; after Rotate the sequence increases and the new kid's SVIDs
// validate once it signs; after --revoke-previous an SVID of a revoked kid
// is refused; the replicas serve the same spiffe_sequence and bytes after
// each change. Requests outside the JWT-SVID profile are refused with a
// reason.
func TestJWTSVIDAndSPIFFEBundle(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t)
	const idA, idSec = "spiffe://signet.test/svc/a", "spiffe://signet.test/team/security"
	pki.leaf(t, "a", idA, nil)
	pki.leaf(t, "sec", idSec, nil)
	policy := fmt.Sprintf(`grants:
  - identity: %q
    sign: [{key_rings: [svid, default], audiences: [e2e, other], subjects: [$caller, "spiffe://elsewhere.test/svc/a"], typ: [JWT, JOSE, at+jwt]}]
  - identity: %q
    rotate: [svid]
`, idA, idSec)
	if err := os.WriteFile(filepath.Join(pki.dir, "policy.yaml"), []byte(policy), 0o600); err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	config := pki.mtlsHead(filepath.Join(t.TempDir(), "audit.log")) + fmt.Sprintf(`spiffe: {trust_domain: signet.test}
key_rings:
  - {name: svid, profile: jwt-svid, backend: 'local://%[1]s', algorithm: ES256, token_max_ttl: 1m, jwks_max_age: 1s, refresh_interval: 1s, publish_ahead: 2s, retire_after: 63s}
  - {name: default, backend: 'local://%[1]s'}
`, data)
	replicas := []*process{startSignetWith(t, config), startSignetWith(t, config), startSignetWith(t, config)}
	p := replicas[0]
	td := spiffeid.RequireTrustDomainFromString("signet.test")
	ctx := ctxT(t)
	a, sec := pki.client(t, p, "a"), pki.client(t, p, "sec")

	if want := p.httpURL + spiffeBundlePath + " (bundle of trust domain signet.test)"; !waitFor(10*time.Second, func() bool {
		return strings.Contains(p.stdout.String(), want)
	}) {
		t.Errorf("the banner does not show %q:\n%s", want, p.stdout.String())
	}
	body := sameBundle(t, "at start", replicas...)
	bundle, seq0 := p.fetchBundle(t, td)
	if hint, ok := bundle.RefreshHint(); !ok || hint != time.Second {
		t.Errorf("spiffe_refresh_hint %v %v, want the ring's jwks_max_age, 1s", hint, ok)
	}
	def, err := a.Sign(ctx, "default", signetclient.Audience("e2e"), signetclient.Subject(idA))
	if err != nil {
		t.Fatal(err)
	}
	if len(bundle.JWTAuthorities()) != 1 || bundle.HasJWTAuthority(def.Kid) {
		t.Errorf("bundle %s: want exactly the svid ring's key, not the default ring's %s", body, def.Kid)
	}
	// The same caching headers as the JWKS: ETag, 304, Cache-Control.
	_, h := p.bundleBytes(t)
	jwksResp, err := http.Get(p.httpURL + "/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	jwksResp.Body.Close()
	if cc := h.Get("Cache-Control"); cc == "" || cc != jwksResp.Header.Get("Cache-Control") || h.Get("ETag") == "" {
		t.Errorf("bundle Cache-Control %q ETag %q; the JWKS's Cache-Control is %q", cc, h.Get("ETag"), jwksResp.Header.Get("Cache-Control"))
	}
	req, _ := http.NewRequest(http.MethodGet, p.httpURL+spiffeBundlePath, nil)
	req.Header.Set("If-None-Match", h.Get("ETag"))
	if r, err := http.DefaultClient.Do(req); err != nil || r.StatusCode != http.StatusNotModified {
		t.Errorf("conditional GET of the bundle: %v %v", r, err)
	} else {
		r.Body.Close()
	}

	// sub defaults to the caller's SPIFFE ID; go-spiffe validates.
	svid1, err := a.Sign(ctx, "svid", signetclient.Audience("e2e"))
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := jwtsvid.ParseAndValidate(svid1.Token, bundle, []string{"e2e"})
	if err != nil || parsed.ID.String() != idA {
		t.Fatalf("jwtsvid.ParseAndValidate of a Signet JWT-SVID: %v (%+v)", err, parsed)
	}
	t.Logf("go-spiffe: jwtsvid.ParseAndValidate accepted the SVID of kid %s: sub %s, aud %v, exp %s; bundle spiffe_sequence %d",
		svid1.Kid, parsed.ID, parsed.Audience, parsed.Expiry.Format(time.RFC3339), seq0)

	// Outside the profile: refused with a reason, nothing signed.
	for _, c := range []struct {
		name   string
		opts   []signetclient.SignOption
		code   codes.Code
		reason signetv1.ErrorReason
		field  string
	}{
		{"two audiences", []signetclient.SignOption{signetclient.Audience("e2e", "other")}, codes.InvalidArgument, signetv1.ErrorReason_FIELD_INVALID, "audience"},
		{"typ at+jwt", []signetclient.SignOption{signetclient.Audience("e2e"), signetclient.Typ("at+jwt")}, codes.InvalidArgument, signetv1.ErrorReason_FIELD_INVALID, "typ"},
		{"a subject that is no SPIFFE ID", []signetclient.SignOption{signetclient.Audience("e2e"), signetclient.Subject("payments")}, codes.InvalidArgument, signetv1.ErrorReason_FIELD_INVALID, "subject"},
		{"another trust domain", []signetclient.SignOption{signetclient.Audience("e2e"), signetclient.Subject("spiffe://elsewhere.test/svc/a")}, codes.InvalidArgument, signetv1.ErrorReason_FIELD_INVALID, "subject"},
		{"another workload", []signetclient.SignOption{signetclient.Audience("e2e"), signetclient.Subject("spiffe://signet.test/svc/b")}, codes.PermissionDenied, signetv1.ErrorReason_SUBJECT_NOT_ALLOWED, ""},
	} {
		_, err := a.Sign(ctx, "svid", c.opts...)
		if e, ok := signetclient.ErrorOf(err); !ok || e.Code != c.code || e.Reason != c.reason || e.Field != c.field {
			t.Errorf("SVID with %s: %v, want %v %v on %q", c.name, err, c.code, c.reason, c.field)
		}
	}
	// The default ring is no JWT-SVID ring: JOSE typ, two audiences are fine.
	if _, err := a.Sign(ctx, "default", signetclient.Audience("e2e", "other"), signetclient.Subject(idA)); err != nil {
		t.Errorf("two audiences on a plain ring: %v", err)
	}

	// Rotate: the sequence increases at once on the rotating replica, the
	// new kid's SVIDs validate once it signs, and every replica agrees.
	rot, err := sec.Rotate(ctx, "svid")
	if err != nil {
		t.Fatal(err)
	}
	if _, seq := p.fetchBundle(t, td); seq <= seq0 {
		t.Errorf("after Rotate, spiffe_sequence %d, was %d", seq, seq0)
	}
	var svid2 *signetclient.Token
	if !waitFor(30*time.Second, func() bool {
		svid2, err = a.Sign(ctx, "svid", signetclient.Audience("e2e"))
		return err == nil && svid2.Kid == rot.Version.GetKid()
	}) {
		t.Fatalf("the rotated version %s never signed: %v", rot.Version.GetKid(), err)
	}
	sameBundle(t, "after Rotate", replicas...)
	bundle, seq1 := replicas[2].fetchBundle(t, td)
	if seq1 <= seq0 {
		t.Errorf("after Rotate the replicas serve spiffe_sequence %d, was %d", seq1, seq0)
	}
	for _, tok := range []*signetclient.Token{svid1, svid2} {
		if _, err := jwtsvid.ParseAndValidate(tok.Token, bundle, []string{"e2e"}); err != nil {
			t.Errorf("after Rotate, SVID of kid %s: %v", tok.Kid, err)
		}
	}
	t.Logf("after Rotate: spiffe_sequence %d -> %d; SVIDs of kids %s and %s validate", seq0, seq1, svid1.Kid, svid2.Kid)

	// Emergency rotation: the old kids leave the bundle and their SVIDs are
	// refused; the sequence increases again.
	rev, err := sec.Rotate(ctx, "svid", signetclient.RevokePrevious())
	if err != nil {
		t.Fatal(err)
	}
	sameBundle(t, "after --revoke-previous", replicas...)
	bundle, seq2 := replicas[1].fetchBundle(t, td)
	if seq2 <= seq1 || len(bundle.JWTAuthorities()) != 1 || !bundle.HasJWTAuthority(rev.Version.GetKid()) {
		t.Errorf("after --revoke-previous: spiffe_sequence %d (was %d), authorities %v, want only %s",
			seq2, seq1, bundle.JWTAuthorities(), rev.Version.GetKid())
	}
	for _, tok := range []*signetclient.Token{svid1, svid2} {
		if _, err := jwtsvid.ParseAndValidate(tok.Token, bundle, []string{"e2e"}); err == nil {
			t.Errorf("SVID of revoked kid %s still validates", tok.Kid)
		} else {
			t.Logf("SVID of revoked kid %s refused: %v", tok.Kid, err)
		}
	}
	var svid3 *signetclient.Token
	if !waitFor(30*time.Second, func() bool {
		svid3, err = a.Sign(ctx, "svid", signetclient.Audience("e2e"))
		return err == nil
	}) {
		t.Fatalf("no SVID after the emergency rotation: %v", err)
	}
	if _, err := jwtsvid.ParseAndValidate(svid3.Token, bundle, []string{"e2e"}); err != nil || svid3.Kid != rev.Version.GetKid() {
		t.Errorf("SVID of the emergency version (kid %s, want %s): %v", svid3.Kid, rev.Version.GetKid(), err)
	}
	var seqs []string
	for _, r := range replicas {
		_, seq := r.fetchBundle(t, td)
		seqs = append(seqs, fmt.Sprint(seq))
	}
	t.Logf("after --revoke-previous: spiffe_sequence %d -> %d; the three replicas serve %s", seq1, seq2, strings.Join(seqs, ", "))
}
