package server

import (
	"net/http"
	"strconv"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/signet-dev/signet/server/config"
	"github.com/signet-dev/signet/server/jose"
	"github.com/signet-dev/signet/server/lifecycle"
)

// SPIFFEBundlePath is where the HTTP listener serves the SPIFFE bundle of
// the configured trust domain (spiffe.trust_domain): the JWT authorities of
// the rings with profile jwt-svid.
const SPIFFEBundlePath = "/spiffe/bundle.json"

// spiffeSetup is the configured SPIFFE trust domain and the rings that
// issue its JWT-SVIDs; nil without spiffe.trust_domain.
type spiffeSetup struct {
	td    spiffeid.TrustDomain
	rings map[string]bool
}

func newSPIFFESetup(cfg config.Config) *spiffeSetup {
	if cfg.SPIFFE.TrustDomain == "" {
		return nil
	}
	td, _ := spiffeid.TrustDomainFromString(cfg.SPIFFE.TrustDomain) // validated
	s := &spiffeSetup{td: td, rings: map[string]bool{}}
	for _, r := range cfg.KeyRings {
		if r.IsJWTSVID() {
			s.rings[r.Name] = true
		}
	}
	return s
}

// issuesSVIDs reports whether ring issues JWT-SVIDs.
func (s *spiffeSetup) issuesSVIDs(ring string) bool { return s != nil && s.rings[ring] }

// svidSubject checks a Sign on a JWT-SVID ring against the JWT-SVID
// profile and returns the token's sub: the subject asked for, or, when none
// is, the caller's own SPIFFE ID. The sub must be a SPIFFE ID of a workload
// in the configured trust domain (Signet's keys are that trust domain's JWT
// authorities, and no other's); the policy then decides, as for any
// subject, whether the caller may ask for it ($caller: only its own).
// Exactly one audience (the specification lets validators refuse more, and
// an SVID for two services lets either replay it to the other) and a typ
// of JWT or JOSE (what validators accept).
func (s *spiffeSetup) svidSubject(ring, caller, subject string, audience []string, typ string) (string, error) {
	if len(audience) != 1 {
		return "", jose.Invalid("audience", "key ring %q issues JWT-SVIDs, which name exactly one audience; got %d", ring, len(audience))
	}
	if typ != "JWT" && typ != "JOSE" {
		return "", jose.Invalid("typ", "key ring %q issues JWT-SVIDs, whose typ is JWT or JOSE; got %q", ring, typ)
	}
	field, what := "subject", "subject"
	if subject == "" {
		subject, what = caller, "the caller's identity (the subject is empty)"
	}
	id, err := spiffeid.FromString(subject)
	switch {
	case err != nil:
		return "", jose.Invalid(field, "key ring %q issues JWT-SVIDs, whose sub is a SPIFFE ID; %s %q is not one: %v",
			ring, what, jose.Truncate(subject, 128), err)
	case id.Path() == "":
		return "", jose.Invalid(field, "key ring %q issues JWT-SVIDs: %s %q names a trust domain, not a workload", ring, what, id.String())
	case id.TrustDomain() != s.td:
		return "", jose.Invalid(field, "key ring %q issues JWT-SVIDs of trust domain %s only; %s %q is of %s",
			ring, s.td.Name(), what, id.String(), id.TrustDomain().Name())
	}
	return id.String(), nil
}

// buildBundle renders the SPIFFE bundle: the published versions of the
// JWT-SVID rings, leaving it exactly when they leave the JWKS (retired,
// revoked). Its Cache-Control and spiffe_refresh_hint are the smallest
// jwks_max_age of those rings: every ring's publish_ahead is at least
// jwks_max_age + refresh_interval (validated), so a consumer that re-fetches
// at every hint from any replica holds a new key before it signs, as a JWKS
// verifier honouring max-age does.
func buildBundle(ks *lifecycle.KeySet, s *spiffeSetup, staleIfError time.Duration) (*jose.JWKS, error) {
	var (
		maxAge time.Duration
		keys   []jose.PublicKey
		rings  [][]*lifecycle.Version
		seen   = map[string]bool{}
	)
	for _, r := range ks.Rings() {
		if !s.rings[r.Name] {
			continue
		}
		if maxAge == 0 || r.Schedule.JWKSMaxAge < maxAge {
			maxAge = r.Schedule.JWKSMaxAge
		}
		vs := ks.Versions(r)
		rings = append(rings, vs)
		for _, v := range vs {
			// Each kid once, as in the JWKS: two rings on one backend key
			// publish one JWT authority.
			if v.State.Published() && !v.Withheld && !seen[v.Kid] {
				seen[v.Kid] = true
				keys = append(keys, jose.PublicKey{Kid: v.Kid, Algorithm: string(v.Algorithm), Key: v.PublicKey})
			}
		}
	}
	return jose.NewSPIFFEBundle(keys, bundleSequence(rings), maxAge, maxAge, staleIfError)
}

// bundleSequence is the bundle's spiffe_sequence, computed from the
// versions of each JWT-SVID ring as the backend lists them (oldest first)
// with their derived states. Replicas never talk to each other, so it is a
// function of what every replica reads alike, never a local counter: a
// replica that restarts, or another that has read the same versions and
// passed the same schedule boundaries, computes the same number.
//
// Invariant: every change that Signet makes to the published set (a
// version created, retired or revoked, in any ring, however close in time
// to another) raises it by at least one, and a revoked version that the
// backend stops listing (Cloud KMS destroy_on_revoke) leaves it as it is.
// It is the sum over the rings of
//
//	stamp × 1000 + 999 − published
//
// where published is the number of the ring's published versions and stamp
// is the creation time in milliseconds of its newest version, made strictly
// later than its predecessor's stamp (max(created, previous stamp + 1)):
//
//   - a creation appends a version, whose stamp exceeds the previous newest
//     one's by at least 1 even when the backend records the same time (Key
//     Vault keeps whole seconds) or an earlier one (PKCS#11 and local
//     versions are stamped by the creating replica's clock): +1000 − 1;
//   - a retirement or a revocation lowers published by one: +1 each; no
//     time is read, so replicas' clocks and the schedule cannot reorder it;
//   - a revoked version that leaves the listing changes neither term, the
//     newest version (never revoked by a rotation) keeping its stamp;
//   - nothing caps published: a ring with 1000 published versions or more
//     still counts each creation (+1000 − 1) and each removal (+1);
//   - a ring given profile jwt-svid (or added) adds a positive term, and
//     each ring's term moves only with its own versions, so events in two
//     rings at the same millisecond still count one each.
//
// What no stateless number can order: removing a JWT-SVID ring from the
// configuration, or changing jwks_max_age (the refresh hint), is a new
// bundle with a sequence that may be lower or unchanged; and a hand edit of
// the backend (re-enabling a revoked version, deleting the newest one), or
// the destruction of the predecessor of a version stamped in the same
// millisecond or earlier (its stamp falls back to its own time), may lower
// it. docs/spiffe.md says so.
//
// With one JWT-SVID ring it stays below 2^53 until the year 2255 (two:
// 2112), so readers that hold JSON numbers as doubles read it exactly;
// beyond that it is a 64-bit integer, which the SPIFFE bundle specification
// asks its readers to hold.
func bundleSequence(rings [][]*lifecycle.Version) uint64 {
	var seq int64
	for _, vs := range rings {
		var stamp int64 = -1
		published := 0
		for _, v := range vs {
			stamp = max(v.Created.UnixMilli(), stamp+1)
			if v.State.Published() && !v.Withheld {
				published++
			}
		}
		if stamp >= 0 {
			seq += stamp*1000 + 999 - int64(published)
		}
	}
	return uint64(max(seq, 0))
}

// bundleHandler serves the SPIFFE bundle at SPIFFEBundlePath, GET and HEAD,
// from the rendered bytes with the JWKS's caching headers (ETag, 304 on
// If-None-Match, Cache-Control); everything else goes to next. Anyone may
// ask, unauthenticated: nothing is rendered per request.
func bundleHandler(p *publisher, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != SPIFFEBundlePath || p.spiffe == nil {
			next.ServeHTTP(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		doc := p.bundle.Load()
		h := w.Header()
		h[canonicalETag] = []string{doc.ETag}
		h[canonicalCacheCC] = []string{doc.CacheControl}
		h["Access-Control-Allow-Origin"] = anyOrigin
		h["X-Content-Type-Options"] = noSniff
		if inm := r.Header.Get("If-None-Match"); inm != "" && etagMatches(inm, doc.ETag) {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		h["Content-Type"] = applicationJSON
		h.Set("Content-Length", strconv.Itoa(len(doc.Body)))
		if r.Method == http.MethodHead {
			return
		}
		_, _ = w.Write(doc.Body) // fails only if the client has gone
	})
}
