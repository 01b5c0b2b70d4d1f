package signetclient

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/lestrrat-go/httprc/v3"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/lestrrat-go/jwx/v3/jwt"
	"golang.org/x/sync/singleflight"
)

// VerifierConfig says whose tokens a Verifier accepts.
type VerifierConfig struct {
	// JWKSURL is Signet's JWKS, for example
	// https://signet.internal/.well-known/jwks.json.
	JWKSURL string
	// Issuer is the iss Signet puts in its tokens (its configured issuer).
	Issuer string
	// Audience is this service: a token must name it in aud.
	Audience string
	// AnyIssuer and AnyAudience skip those checks: only for tools that
	// inspect tokens (signet verify), never for a service that trusts them.
	AnyIssuer, AnyAudience bool
	// HTTPClient fetches the JWKS; nil: a client with a 30s timeout.
	HTTPClient *http.Client
	// MinRefresh and MaxRefresh bound how often the JWKS is fetched: as
	// often as its Cache-Control max-age says, but no more often than
	// MinRefresh (also the least time between fetches forced by a token
	// whose kid is unknown) and no less than MaxRefresh. 0 means 30s and 1h.
	MinRefresh, MaxRefresh time.Duration
	// Leeway is the clock skew allowed on exp and nbf; 0 means none.
	Leeway time.Duration
	// Typ is the header typ a token must carry (RFC 8725 section 3.11:
	// a token minted for one use is refused where another is expected),
	// compared as RFC 7515 says: case-insensitively, with or without
	// "application/". Empty means "JWT", what Signet puts when its caller
	// asks for no other. AnyTyp skips the check: only for inspection tools.
	Typ    string
	AnyTyp bool
	// RequireBinding refuses tokens that are not bound to a client
	// certificate (no cnf claim): for a service whose callers all ask for
	// certificate-bound tokens, so that a bearer token copied elsewhere is
	// never accepted. A bound token is always checked against the
	// certificate presented (VerifyPresented), whatever this says.
	RequireBinding bool
	// AnyCertificate skips the check of a bound token's certificate (Verify
	// then accepts it without one): only for inspection tools (signet
	// verify), never for a service that trusts the tokens.
	AnyCertificate bool
	// OnError, if set, is told why the middleware or an interceptor
	// refused a request (callers only learn that it was refused), for the
	// service's logs or metrics.
	OnError func(ctx context.Context, err error)
}

// Verifier verifies tokens Signet issued, against its JWKS. The JWKS is
// kept by jwx's jwk.Cache, which refreshes it in the background as its
// Cache-Control says. A token signed by a kid the cached set lacks forces
// one refresh (at most once per MinRefresh; concurrent tokens of that kid
// wait for the same fetch): Signet publishes a version
// before it signs, so that only happens to a verifier whose cache is older
// than the JWKS's max-age allows, or to a token Signet did not sign.
type Verifier struct {
	cfg    VerifierConfig
	cache  *jwk.Cache
	cancel context.CancelFunc

	refresh    singleflight.Group // one forced fetch at a time, shared by its waiters
	mu         sync.Mutex
	lastForced time.Time
}

// VerifiedToken is a verified token's claims.
type VerifiedToken struct {
	Issuer    string
	Subject   string
	Audience  []string
	ID        string // jti
	IssuedAt  time.Time
	NotBefore time.Time
	Expiry    time.Time
	Kid       string // the header's kid
	// CertificateThumbprint is the cnf claim's x5t#S256 (RFC 8705): the
	// base64url SHA-256 of the client certificate the token is bound to,
	// which VerifyPresented checked. Empty for a token not bound.
	CertificateThumbprint string
	// All is every claim, the registered ones too, as JSON decodes them
	// with numbers as json.Number: exactly the digits Signet signed.
	All map[string]any
}

// NewVerifier fetches the JWKS once (within ctx) and keeps it fresh until
// Close.
func NewVerifier(ctx context.Context, cfg VerifierConfig) (*Verifier, error) {
	switch {
	case cfg.JWKSURL == "":
		return nil, errors.New("signetclient: VerifierConfig.JWKSURL is empty")
	case cfg.Issuer == "" && !cfg.AnyIssuer:
		return nil, errors.New("signetclient: VerifierConfig.Issuer is empty (set AnyIssuer only for inspection tools)")
	case cfg.Audience == "" && !cfg.AnyAudience:
		return nil, errors.New("signetclient: VerifierConfig.Audience is empty (set AnyAudience only for inspection tools)")
	}
	if cfg.Typ == "" {
		cfg.Typ = "JWT"
	}
	if cfg.MinRefresh <= 0 {
		cfg.MinRefresh = 30 * time.Second
	}
	if cfg.MaxRefresh <= 0 {
		cfg.MaxRefresh = time.Hour
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	runCtx, cancel := context.WithCancel(context.Background())
	cache, err := jwk.NewCache(runCtx, httprc.NewClient())
	if err != nil {
		cancel()
		return nil, fmt.Errorf("signetclient: %w", err)
	}
	v := &Verifier{cfg: cfg, cache: cache, cancel: cancel}
	if err := cache.Register(ctx, cfg.JWKSURL, jwk.WithHTTPClient(cfg.HTTPClient),
		jwk.WithMinInterval(cfg.MinRefresh), jwk.WithMaxInterval(cfg.MaxRefresh)); err != nil {
		v.Close()
		return nil, fmt.Errorf("signetclient: fetching the JWKS from %s: %w", cfg.JWKSURL, err)
	}
	return v, nil
}

// Close stops refreshing the JWKS.
func (v *Verifier) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = v.cache.Shutdown(ctx) // nothing to do about a slow shutdown but stop waiting
	v.cancel()
}

// Verify checks token's signature against the JWKS, and its typ, exp, nbf,
// iss and aud, and returns its claims. An error that is not the token's
// fault (the JWKS could not be fetched) wraps ErrJWKSUnavailable. A token
// bound to a client certificate (cnf) is refused, as no certificate was
// presented with it (VerifyPresented checks one), unless AnyCertificate.
func (v *Verifier) Verify(ctx context.Context, token string) (*VerifiedToken, error) {
	return v.VerifyPresented(ctx, token, nil)
}

// VerifyPresented is Verify for a token that arrived with a client
// certificate: the leaf certificate the caller presented on its mutual TLS
// connection (http.Request.TLS.PeerCertificates[0], or gRPC's peer
// credentials.TLSInfo), nil if it presented none. A token bound to a
// certificate (RFC 8705 cnf x5t#S256) verifies only if cert is that very
// certificate (ErrCertificateMismatch otherwise). The caller proved it
// holds cert's private key in the TLS handshake; whether a CA vouches for
// cert is for the TLS configuration to decide, not for the binding.
func (v *Verifier) VerifyPresented(ctx context.Context, token string, cert *x509.Certificate) (*VerifiedToken, error) {
	c, err := v.verify(ctx, token)
	if err != nil {
		return nil, err
	}
	if err := v.checkBinding(c, cert); err != nil {
		return nil, err
	}
	return c, nil
}

// ErrCertificateMismatch is wrapped by the errors of a token bound to a
// client certificate that was presented without it, or with another one.
var ErrCertificateMismatch = errors.New("signetclient: the token is bound to another client certificate")

// checkBinding checks a verified token's cnf against the presented
// certificate. A cnf Signet did not write (any member but x5t#S256, which
// this verifier cannot confirm) is refused rather than ignored.
func (v *Verifier) checkBinding(c *VerifiedToken, cert *x509.Certificate) error {
	raw, bound := c.All["cnf"]
	if !bound {
		if v.cfg.RequireBinding {
			return fmt.Errorf("%w: the token is not bound to a client certificate (no cnf) and RequireBinding is set", ErrCertificateMismatch)
		}
		return nil
	}
	cnf, ok := raw.(map[string]any)
	x5t, _ := cnf["x5t#S256"].(string)
	if !ok || len(cnf) != 1 || x5t == "" {
		return fmt.Errorf("%w: its cnf claim is not {\"x5t#S256\": thumbprint}", ErrCertificateMismatch)
	}
	c.CertificateThumbprint = x5t
	switch {
	case v.cfg.AnyCertificate:
		return nil
	case cert == nil:
		return fmt.Errorf("%w: no client certificate was presented", ErrCertificateMismatch)
	}
	sum := sha256.Sum256(cert.Raw)
	if base64.RawURLEncoding.EncodeToString(sum[:]) != x5t { // both public: no timing to hide
		return fmt.Errorf("%w: the presented certificate's x5t#S256 is not %q", ErrCertificateMismatch, clip(x5t))
	}
	return nil
}

// verify is Verify without the binding check.
func (v *Verifier) verify(ctx context.Context, token string) (*VerifiedToken, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, errors.New("signetclient: not a compact JWS (header.payload.signature)")
	}
	var header struct {
		Kid string `json:"kid"`
		Typ string `json:"typ"`
	}
	if err := decodeSegment(parts[0], &header); err != nil || header.Kid == "" {
		return nil, errors.New("signetclient: the token header names no kid")
	}
	set, err := v.cache.Lookup(ctx, v.cfg.JWKSURL)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrJWKSUnavailable, err)
	}
	if _, ok := set.LookupKeyID(header.Kid); !ok {
		if set, err = v.refreshFor(ctx); err != nil {
			return nil, err
		}
		if _, ok := set.LookupKeyID(header.Kid); !ok {
			return nil, fmt.Errorf("signetclient: kid %q is not in %s (retired, revoked, or not Signet's)", clip(header.Kid), v.cfg.JWKSURL)
		}
	}
	// The claims are read from the payload the signature check returns,
	// never from the token's text: what is validated and returned is
	// exactly what was verified.
	payload, err := jws.Verify([]byte(token), jws.WithKeySet(set))
	if err != nil {
		return nil, fmt.Errorf("signetclient: %w", err)
	}
	// The header decoded above is the protected header the signature
	// covers: its typ is Signet's.
	if !v.cfg.AnyTyp && !typEqual(header.Typ, v.cfg.Typ) {
		return nil, fmt.Errorf("signetclient: token typ %q, want %q", clip(header.Typ), v.cfg.Typ)
	}
	opts := []jwt.ParseOption{jwt.WithVerify(false), jwt.WithValidate(true), jwt.WithAcceptableSkew(v.cfg.Leeway)}
	if !v.cfg.AnyIssuer {
		opts = append(opts, jwt.WithIssuer(v.cfg.Issuer))
	}
	if !v.cfg.AnyAudience {
		opts = append(opts, jwt.WithAudience(v.cfg.Audience))
	}
	if _, err := jwt.Parse(payload, opts...); err != nil {
		return nil, fmt.Errorf("signetclient: %w", err)
	}
	return claimsOf(payload, header.Kid)
}

// refreshFor returns the JWKS for a token whose kid the cached set lacked:
// fetched now, unless a fetch was forced less than MinRefresh ago, in which
// case the cache's set as it is now (which that fetch updated). Concurrent
// callers share one fetch (singleflight), so the tokens of a new kid that
// arrive together all see the fetched set; each waits only as long as its
// own ctx allows.
func (v *Verifier) refreshFor(ctx context.Context) (jwk.Set, error) {
	ch := v.refresh.DoChan("jwks", func() (any, error) {
		// The fetch outlives a caller that gives up, for the others
		// waiting on it; the HTTP client's timeout and this bound it.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		v.mu.Lock()
		recent := time.Since(v.lastForced) < v.cfg.MinRefresh
		if !recent {
			v.lastForced = time.Now()
		}
		v.mu.Unlock()
		if recent {
			return v.cache.Lookup(fctx, v.cfg.JWKSURL)
		}
		return v.cache.Refresh(fctx, v.cfg.JWKSURL)
	})
	select {
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: refreshing it for an unknown kid: %w", ErrJWKSUnavailable, ctx.Err())
	case res := <-ch:
		if res.Err != nil {
			return nil, fmt.Errorf("%w: refreshing it for an unknown kid: %w", ErrJWKSUnavailable, res.Err)
		}
		set, _ := res.Val.(jwk.Set) // the function returns nothing else
		return set, nil
	}
}

// ErrJWKSUnavailable is wrapped by Verify's errors that are not the
// token's fault: the JWKS could not be fetched. The middleware answers those
// 503 and Unavailable rather than 401 and Unauthenticated.
var ErrJWKSUnavailable = errors.New("signetclient: the JWKS is unavailable")

// typEqual compares two typ values as RFC 7515 section 4.1.9 says: media
// types, case-insensitive (RFC 2045), with "application/" prepended to a
// value that has no "/". Only then: "application/x/y" is not "x/y".
func typEqual(a, b string) bool {
	norm := func(t string) string {
		if !strings.Contains(t, "/") {
			t = "application/" + t
		}
		return strings.ToLower(t)
	}
	return a != "" && norm(a) == norm(b)
}

func decodeSegment(seg string, into any) error {
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return err
	}
	return decodeJSON(b, into)
}

// decodeJSON decodes with numbers as json.Number.
func decodeJSON(b []byte, into any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	return dec.Decode(into)
}

// claimsOf decodes a verified payload.
func claimsOf(payload []byte, kid string) (*VerifiedToken, error) {
	c := &VerifiedToken{Kid: kid}
	if err := decodeJSON(payload, &c.All); err != nil {
		return nil, fmt.Errorf("signetclient: payload: %w", err)
	}
	c.Issuer, _ = c.All["iss"].(string)
	c.Subject, _ = c.All["sub"].(string)
	c.ID, _ = c.All["jti"].(string)
	switch aud := c.All["aud"].(type) {
	case string:
		c.Audience = []string{aud}
	case []any:
		for _, a := range aud {
			if s, ok := a.(string); ok {
				c.Audience = append(c.Audience, s)
			}
		}
	}
	c.IssuedAt, c.NotBefore, c.Expiry = unixTime(c.All["iat"]), unixTime(c.All["nbf"]), unixTime(c.All["exp"])
	return c, nil
}

func unixTime(v any) time.Time {
	n, ok := v.(json.Number)
	if !ok {
		return time.Time{}
	}
	s, err := n.Int64()
	if err != nil {
		return time.Time{}
	}
	return time.Unix(s, 0)
}

// clip bounds a value of the token's, which anyone can send, before it goes
// into an error the service logs (OnError): 64 bytes, quoted by the caller.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
