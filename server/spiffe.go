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
		maxAge   time.Duration
		keys     []jose.PublicKey
		versions []*lifecycle.Version
	)
	for _, r := range ks.Rings() {
		if !s.rings[r.Name] {
			continue
		}
		if maxAge == 0 || r.Schedule.JWKSMaxAge < maxAge {
			maxAge = r.Schedule.JWKSMaxAge
		}
		vs := ks.Versions(r)
		versions = append(versions, vs...)
		for _, v := range vs {
			if v.State.Published() && !v.Withheld {
				keys = append(keys, jose.PublicKey{Kid: v.Kid, Algorithm: string(v.Algorithm), Key: v.PublicKey})
			}
		}
	}
	return jose.NewSPIFFEBundle(keys, bundleSequence(versions, len(keys)), maxAge, maxAge, staleIfError)
}

// bundleSequence is the bundle's spiffe_sequence. Replicas never talk to
// each other, so it is derived from what every replica reads alike, the
// versions the backend lists and the schedule, never counted locally; it
// grows with every change of the published set:
//
//   - a version is published when it is created, and its creation time is
//     after every earlier event;
//   - a version leaves by retiring, at its RetiresAt, or by revocation,
//     which Rotate --revoke-previous does right after creating the version
//     that replaces it, and for which the backend records no time.
//
// So the sequence is the latest such time (creation of any version the
// backend lists, revoked ones too, or retirement already passed), in
// milliseconds, times 1000, plus 999 less the number of published keys: a
// later event raises it by at least 1000 - 999, and a revocation that
// leaves the latest time as it is lowers the count, raising it by one.
// (It can only fall if the backend forgets the newest version or moves
// its clock back, which no rotation of Signet's does.) Stays below 2^53
// until the year 2255, so JSON readers that hold numbers as doubles read
// it exactly. It discloses when the keys last changed, which anyone
// polling the JWKS learns anyway.
func bundleSequence(versions []*lifecycle.Version, published int) uint64 {
	var latest time.Time
	for _, v := range versions {
		if v.Created.After(latest) {
			latest = v.Created
		}
		if v.State == lifecycle.StateRetired && v.RetiresAt.After(latest) {
			latest = v.RetiresAt
		}
	}
	ms := latest.UnixMilli()
	if ms < 0 {
		ms = 0
	}
	return uint64(ms)*1000 + uint64(999-min(published, 999))
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
