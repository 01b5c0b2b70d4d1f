package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	signetv1 "github.com/signet-dev/signet/gen/signet/v1"

	"github.com/signet-dev/signet/backends"
)

// KeySet holds every key ring's versions as last read from its backend and
// derives their lifecycle states. It never stores a state: any number of
// replicas reading the same backend agree, and a restart loses nothing.
type KeySet struct {
	log            *slog.Logger
	now            func() time.Time
	backendTimeout time.Duration
	staleIfError   time.Duration
	rings          []*Ring // config order
	byName         map[string]*Ring

	jwksMu sync.Mutex // serialises JWKS rebuilds
	jwks   atomic.Pointer[jwksDoc]
}

// Ring is one key ring: its backend, its policy and its current snapshot.
type Ring struct {
	Name    string
	key     backends.KeyRing
	Policy  Policy
	backend backends.Signer

	mu      sync.Mutex // serialises snapshot writes
	rotate  sync.Mutex // one rotation (manual or scheduled) per ring at a time in this process
	snap    atomic.Pointer[snapshot]
	reads   atomic.Uint64 // numbers backend reads, so an older read never replaces a newer one
	lastErr atomic.Pointer[refreshError]
}

type refreshError struct {
	at  time.Time
	err error
}

// snapshot is a ring's versions at one read of the backend, with their
// states derived at one instant. It is immutable once stored.
type snapshot struct {
	versions []*version // oldest first
	active   *version   // nil: nothing can sign
	next     time.Time  // when a state changes by the clock alone; zero: never
	read     uint64     // which read of the backend
}

// version is a backend version with what Signet derives from it.
type version struct {
	backends.Version
	kid    string
	jwk    backends.PublicJWK
	header string // encoded JOSE header of the tokens it signs
	Lifecycle
}

// KeySetOptions configures NewKeySet.
type KeySetOptions struct {
	Logger         *slog.Logger
	Now            func() time.Time // nil: time.Now
	BackendTimeout time.Duration
	StaleIfError   time.Duration
}

// RingSpec is what NewKeySet needs to know of a ring.
type RingSpec struct {
	Name      string
	Algorithm backends.Algorithm
	Policy    Policy
	Backend   backends.Signer
}

// NewKeySet reads every ring's versions and creates the first version of a
// ring that has none enabled. It fails if a backend cannot be read: without a
// key set there is nothing to serve.
func NewKeySet(ctx context.Context, specs []RingSpec, opts KeySetOptions) (*KeySet, error) {
	ks := &KeySet{
		log: opts.Logger, now: opts.Now, backendTimeout: opts.BackendTimeout,
		staleIfError: opts.StaleIfError, byName: map[string]*Ring{},
	}
	if ks.log == nil {
		ks.log = slog.New(slog.DiscardHandler)
	}
	if ks.now == nil {
		ks.now = time.Now
	}
	if ks.backendTimeout <= 0 {
		ks.backendTimeout = 5 * time.Second
	}
	for _, spec := range specs {
		if !backends.Supports(spec.Backend, spec.Algorithm) {
			return nil, fmt.Errorf("key ring %q: its backend does not support %s (it supports %v)",
				spec.Name, spec.Algorithm, spec.Backend.Algorithms())
		}
		r := &Ring{Name: spec.Name, key: backends.KeyRing{Name: spec.Name, Algorithm: spec.Algorithm},
			Policy: spec.Policy, backend: spec.Backend}
		if err := ks.Refresh(ctx, r); err != nil {
			return nil, fmt.Errorf("key ring %q: reading versions: %w", r.Name, err)
		}
		if r.snap.Load().active == nil {
			v, err := ks.create(ctx, r)
			if err != nil {
				return nil, fmt.Errorf("key ring %q: creating its first version: %w", r.Name, err)
			}
			ks.log.Info("created the first version of a key ring", "key_ring", r.Name, "kid", v.kid, "backend_id", v.ID)
		}
		ks.rings = append(ks.rings, r)
		ks.byName[r.Name] = r
	}
	ks.rebuildJWKS()
	return ks, nil
}

// Ring returns the named ring, or nil.
func (ks *KeySet) Ring(name string) *Ring { return ks.byName[name] }

// Rings returns every ring in configuration order.
func (ks *KeySet) Rings() []*Ring { return ks.rings }

// backendContext bounds a backend call by backend_timeout and by the
// caller's deadline less a margin, so that a hung backend is answered with
// Unavailable while the caller is still waiting rather than with the caller's
// own DeadlineExceeded.
func (ks *KeySet) backendContext(ctx context.Context) (context.Context, context.CancelFunc) {
	timeout := ks.backendTimeout
	if dl, ok := ctx.Deadline(); ok {
		remaining := time.Until(dl)
		if r := remaining - min(remaining/10, 250*time.Millisecond); r < timeout {
			timeout = r
		}
	}
	return context.WithTimeout(ctx, timeout)
}

// current returns the ring's snapshot, re-deriving states first if the clock
// has passed a boundary since they were derived.
func (ks *KeySet) current(r *Ring) *snapshot {
	s := r.snap.Load()
	if s.next.IsZero() || ks.now().Before(s.next) {
		return s
	}
	r.mu.Lock()
	if s = r.snap.Load(); !s.next.IsZero() && !ks.now().Before(s.next) {
		s = ks.install(r, s.versions, s.read)
	}
	r.mu.Unlock()
	ks.rebuildJWKS()
	return s
}

// Refresh re-reads the ring's versions from its backend. On failure the
// last good snapshot stays in force (and the JWKS keeps being served).
func (ks *KeySet) Refresh(ctx context.Context, r *Ring) error {
	read := r.reads.Add(1)
	bctx, cancel := ks.backendContext(ctx)
	defer cancel()
	vs, err := r.backend.Versions(bctx, r.key)
	if err != nil {
		r.lastErr.Store(&refreshError{at: ks.now(), err: err})
		return err
	}
	converted := make([]*version, 0, len(vs))
	for _, v := range vs {
		cv, err := newVersion(r, v)
		if err != nil {
			r.lastErr.Store(&refreshError{at: ks.now(), err: err})
			return err
		}
		converted = append(converted, cv)
	}
	r.mu.Lock()
	if cur := r.snap.Load(); cur == nil || cur.read < read {
		ks.install(r, converted, read)
	}
	r.mu.Unlock()
	r.lastErr.Store(nil)
	ks.rebuildJWKS()
	return nil
}

func newVersion(r *Ring, v backends.Version) (*version, error) {
	if v.Algorithm != r.key.Algorithm {
		return nil, backends.Errorf(backends.KindFailedPrecondition, "",
			"version %s of key ring %q is %s but the ring is configured for %s", v.ID, r.Name, v.Algorithm, r.key.Algorithm)
	}
	if err := v.Algorithm.CheckPublicKey(v.PublicKey); err != nil {
		return nil, backends.Errorf(backends.KindFailedPrecondition, "", "version %s of key ring %q: %v", v.ID, r.Name, err)
	}
	jwk, err := backends.JWKFromPublicKey(v.PublicKey)
	if err != nil {
		return nil, err
	}
	kid := jwk.Thumbprint()
	return &version{Version: v, kid: kid, jwk: jwk, header: compactHeader(string(v.Algorithm), kid, DefaultTyp)}, nil
}

// install derives states for versions at the current time and stores the
// snapshot. The caller holds r.mu.
func (ks *KeySet) install(r *Ring, vs []*version, read uint64) *snapshot {
	now := ks.now()
	plain := make([]backends.Version, len(vs))
	for i, v := range vs {
		plain[i] = v.Version
	}
	states, active, next := Derive(plain, r.Policy, now)
	s := &snapshot{versions: make([]*version, len(vs)), next: next, read: read}
	for i, v := range vs {
		c := *v
		c.Lifecycle = states[i]
		s.versions[i] = &c
	}
	if active >= 0 {
		s.active = s.versions[active]
	}
	r.snap.Store(s)
	return s
}

// create makes a new version after the newest one the ring's snapshot
// knows, then re-reads the ring.
func (ks *KeySet) create(ctx context.Context, r *Ring) (*version, error) {
	latest := ""
	if vs := r.snap.Load().versions; len(vs) > 0 {
		latest = vs[len(vs)-1].ID
	}
	bctx, cancel := ks.backendContext(ctx)
	v, err := r.backend.CreateVersion(bctx, r.key, latest)
	cancel()
	if err != nil {
		return nil, err
	}
	if err := ks.Refresh(ctx, r); err != nil {
		return nil, err
	}
	for _, sv := range r.snap.Load().versions {
		if sv.ID == v.ID {
			return sv, nil
		}
	}
	return nil, backends.Errorf(backends.KindUnavailable, "", "version %s was created but the backend does not list it", v.ID)
}

// Rotate creates a new version of the ring. With revokePrevious every older
// enabled version is disabled in the backend, so the new one signs at once
// and the old kids leave the JWKS at once. The JWKS this process serves
// reflects the rotation before Rotate returns.
func (ks *KeySet) Rotate(ctx context.Context, r *Ring, revokePrevious bool) (created *version, revoked []*version, err error) {
	r.rotate.Lock()
	defer r.rotate.Unlock()
	for attempt := 0; ; attempt++ {
		if err := ks.Refresh(ctx, r); err != nil {
			return nil, nil, err
		}
		created, err = ks.create(ctx, r)
		if backends.KindOf(err) == backends.KindConflict && attempt < 3 {
			continue // another replica rotated between our read and our create
		}
		if err != nil {
			return nil, nil, err
		}
		break
	}
	if revokePrevious {
		for _, v := range r.snap.Load().versions {
			if v.ID == created.ID || v.Disabled {
				continue
			}
			bctx, cancel := ks.backendContext(ctx)
			err := r.backend.DisableVersion(bctx, r.key, v.ID)
			cancel()
			if err != nil {
				ks.Refresh(ctx, r)
				return created, revoked, fmt.Errorf("created version %s but revoking version %s failed (call Rotate with revoke_previous again): %w", created.ID, v.ID, err)
			}
			revoked = append(revoked, v)
		}
		if err := ks.Refresh(ctx, r); err != nil {
			return created, revoked, err
		}
	}
	// Report the versions as they stand now.
	byID := map[string]*version{}
	for _, v := range r.snap.Load().versions {
		byID[v.ID] = v
	}
	for i, v := range revoked {
		if nv := byID[v.ID]; nv != nil {
			revoked[i] = nv
		}
	}
	if nv := byID[created.ID]; nv != nil {
		created = nv
	}
	return created, revoked, nil
}

// Signed is one issued token.
type Signed struct {
	Token   string
	Kid     string
	JTI     string
	Expires time.Time
}

// Sign issues a token with the ring's active version. The request has
// been validated; custom holds the encoded custom claims.
func (ks *KeySet) Sign(ctx context.Context, r *Ring, issuer string, req claimsRequest, custom []byte) (Signed, error) {
	s := ks.current(r)
	v := s.active
	if v == nil {
		return Signed{}, backends.Errorf(backends.KindUnavailable, "", "key ring %q has no enabled version to sign with: Rotate it", r.Name)
	}
	body, jti, exp := payload(issuer, req, custom, ks.now())
	header := v.header // precomputed for the usual typ
	if req.Typ != DefaultTyp {
		header = compactHeader(string(v.Algorithm), v.kid, req.Typ)
	}
	enc := base64.RawURLEncoding
	n := len(header) + 1 + enc.EncodedLen(len(body))
	buf := make([]byte, n, n+1+enc.EncodedLen(512+v.Algorithm.SignatureSize()))
	copy(buf, header)
	buf[len(header)] = '.'
	enc.Encode(buf[len(header)+1:], body)

	bctx, cancel := ks.backendContext(ctx)
	sig, err := r.backend.Sign(bctx, r.key, v.ID, buf)
	cancel()
	if err != nil {
		return Signed{}, err
	}
	if want := v.Algorithm.SignatureSize(); want != 0 && len(sig) != want {
		return Signed{}, backends.Errorf(backends.KindUnknown, "", "backend returned a %d-byte %s signature, want %d", len(sig), v.Algorithm, want)
	}
	buf = append(buf, '.')
	buf = enc.AppendEncode(buf, sig)
	return Signed{Token: string(buf), Kid: v.kid, JTI: jti, Expires: exp}, nil
}

// Versions returns the ring's versions with their current states.
func (ks *KeySet) Versions(r *Ring) []*version { return ks.current(r).versions }

// Run keeps every ring fresh until ctx ends: it re-reads versions every
// refresh_interval and performs scheduled rotation.
func (ks *KeySet) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, r := range ks.rings {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(r.Policy.RefreshInterval)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					ks.tick(ctx, r)
				}
			}
		}()
	}
	wg.Wait()
}

// tick is one round of the refresh loop for a ring.
func (ks *KeySet) tick(ctx context.Context, r *Ring) {
	if err := ks.Refresh(ctx, r); err != nil {
		if ctx.Err() == nil {
			ks.log.Warn("cannot refresh key ring; serving the last good key set", "key_ring", r.Name, "err", err)
		}
		return
	}
	if ks.rotationDue(r) {
		r.rotate.Lock()
		defer r.rotate.Unlock()
		if !ks.rotationDue(r) {
			return
		}
		v, err := ks.create(ctx, r)
		switch {
		case backends.KindOf(err) == backends.KindConflict:
			ks.log.Info("scheduled rotation: another replica rotated first", "key_ring", r.Name)
		case err != nil:
			ks.log.Error("scheduled rotation failed", "key_ring", r.Name, "err", err)
		default:
			ks.log.Info("scheduled rotation created a version", "key_ring", r.Name, "kid", v.kid, "backend_id", v.ID,
				"activates_at", v.ActivatesAt)
		}
	}
}

// rotationDue reports whether the ring's newest enabled version is older
// than rotation_period. Because the check reads the backend's versions and
// creation is conditional on the newest one, replicas create at most one
// version per period between them.
func (ks *KeySet) rotationDue(r *Ring) bool {
	if r.Policy.RotationPeriod <= 0 {
		return false
	}
	vs := r.snap.Load().versions
	for i := len(vs) - 1; i >= 0; i-- {
		if !vs[i].Disabled {
			return !ks.now().Before(vs[i].Created.Add(r.Policy.RotationPeriod))
		}
	}
	return false
}

// Readiness lists why the key set cannot serve properly; empty means ready.
func (ks *KeySet) Readiness() []string {
	var why []string
	for _, r := range ks.rings {
		if ks.current(r).active == nil {
			why = append(why, fmt.Sprintf("key ring %q has no version that can sign", r.Name))
		}
		if e := r.lastErr.Load(); e != nil {
			why = append(why, fmt.Sprintf("key ring %q: backend unreachable since %s: %v", r.Name, e.at.UTC().Format(time.RFC3339), e.err))
		}
	}
	return why
}

// jwksDoc is the JWKS as served: rendered once per change, not per request.
type jwksDoc struct {
	msg          *signetv1.GetJWKSResponse
	body         []byte
	etag         string
	cacheControl string
}

// JWKS returns the current key set document.
func (ks *KeySet) JWKS() *jwksDoc {
	for _, r := range ks.rings {
		ks.current(r) // re-derives (and rebuilds the JWKS) if a boundary has passed
	}
	return ks.jwks.Load()
}

// rebuildJWKS renders the published versions of every ring. If nothing
// changed the old document (and its ETag) stays.
func (ks *KeySet) rebuildJWKS() {
	ks.jwksMu.Lock()
	defer ks.jwksMu.Unlock()
	msg := &signetv1.GetJWKSResponse{}
	maxAge := time.Duration(0)
	seen := map[string]bool{}
	for _, r := range ks.rings {
		if maxAge == 0 || r.Policy.JWKSMaxAge < maxAge {
			maxAge = r.Policy.JWKSMaxAge
		}
		for _, v := range r.snap.Load().versions {
			if !v.State.Published() || seen[v.kid] {
				continue
			}
			seen[v.kid] = true
			msg.Keys = append(msg.Keys, &signetv1.JSONWebKey{Kty: v.jwk.Kty, Kid: v.kid, Use: "sig", Alg: string(v.Algorithm),
				Crv: v.jwk.Crv, X: v.jwk.X, Y: v.jwk.Y, N: v.jwk.N, E: v.jwk.E})
		}
	}
	body := renderJWKS(msg)
	if old := ks.jwks.Load(); old != nil && bytes.Equal(old.body, body) {
		return
	}
	sum := sha256.Sum256(body)
	ks.jwks.Store(&jwksDoc{
		msg:  msg,
		body: body,
		etag: `"` + base64.RawURLEncoding.EncodeToString(sum[:18]) + `"`,
		// The smallest jwks_max_age of all rings: each ring's policy was
		// validated against its own, and a shorter cache life is safe for all.
		cacheControl: fmt.Sprintf("public, max-age=%d, stale-if-error=%d",
			int(maxAge.Seconds()), int(ks.staleIfError.Seconds())),
	})
}

// Algorithms lists the distinct algorithms of the configured rings.
func (ks *KeySet) Algorithms() []string {
	var algs []string
	for _, r := range ks.rings {
		if a := string(r.key.Algorithm); !slices.Contains(algs, a) {
			algs = append(algs, a)
		}
	}
	return algs
}
