package authz

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// DevelopmentCaller is the identity of every caller in plaintext
// development mode.
const DevelopmentCaller = "development (unauthenticated)"

// Config is what New needs.
type Config struct {
	// CertFile, KeyFile and ClientCAFile turn on mTLS; all empty is
	// plaintext development mode, where every caller may do everything.
	CertFile, KeyFile, ClientCAFile string
	// PolicyFile is required with mTLS.
	PolicyFile string
	// AuditPath: a file, "-" for standard output, empty for no audit log.
	AuditPath string
	// Rings gives each configured key ring's token_max_ttl: the policy may
	// only name these rings and never allow more.
	Rings  map[string]time.Duration
	Now    func() time.Time // nil: time.Now
	Logger *slog.Logger
	// OnReload, if set, is told of every reload of "policy" or
	// "certificates" after their files changed, and its error.
	OnReload func(file string, err error)
	// OnAuditHealth, if set, is told when the audit log stops being
	// writable and when it can be written again (AuditProblem says
	// which). It is called with no lock of the Authorizer held.
	OnAuditHealth func()
}

// Authorizer is who may call what: caller authentication (mTLS), the policy
// and its per-caller rate limits, and the audit log. Its errors are *Error
// values; it knows nothing of gRPC.
type Authorizer struct {
	now     func() time.Time
	certs   *certificates // nil: development mode
	policy  atomic.Pointer[policyFile]
	audit   *auditLog
	watcher watcher
	// refusals limits the audit lines of refused unauthenticated callers.
	refusals *refusalLimiter

	limitersMu sync.Mutex
	limiters   map[limiterKey]*rate.Limiter // sign grants' rates
	buckets    map[limiterKey]*bucket       // limits: rotations, leftovers listings
}

// limiterKey is a token bucket's owner: a caller and its sign grant, or a
// caller and an action (with the key ring, for rotate).
type limiterKey struct {
	caller string
	grant  *signGrant
	action string
	ring   string
}

// New loads the certificates, the policy and the audit sink.
func New(cfg Config) (*Authorizer, error) {
	a := &Authorizer{now: cfg.Now, limiters: map[limiterKey]*rate.Limiter{}, refusals: newRefusalLimiter()}
	if a.now == nil {
		a.now = time.Now
	}
	a.watcher.log, a.watcher.onReload = cfg.Logger, cfg.OnReload
	if a.watcher.log == nil {
		a.watcher.log = slog.New(slog.DiscardHandler)
	}
	if cfg.AuditPath != "" {
		var err error
		if a.audit, err = openAudit(cfg.AuditPath, a.watcher.log); err != nil {
			return nil, err
		}
		a.audit.now = a.now
		if cfg.OnAuditHealth != nil {
			a.audit.onHealth = cfg.OnAuditHealth
		}
	}
	if cfg.CertFile == "" && cfg.KeyFile == "" && cfg.ClientCAFile == "" {
		return a, nil
	}
	certs, err := loadCertificates(cfg.CertFile, cfg.KeyFile, cfg.ClientCAFile)
	if err != nil {
		_ = a.Close() // the load error is the one to return
		return nil, err
	}
	a.certs = certs
	a.watcher.add("certificates", "TLS certificates", certs.files(), certs.reload)
	loadPolicy := func() error {
		p, err := readPolicy(cfg.PolicyFile, os.ReadFile, cfg.Rings)
		if err != nil {
			return err
		}
		a.policy.Store(p)
		// An operator who upgraded without check-config still learns which
		// grants the parsed identity rules read differently.
		for _, w := range p.warnings {
			a.watcher.log.Warn("policy_file "+cfg.PolicyFile+": "+w, "see", "docs/runbook.md#upgrading-identities-and-limits")
		}
		a.limitersMu.Lock()
		a.limiters = map[limiterKey]*rate.Limiter{} // grants changed: limits start afresh
		a.buckets = nil
		a.limitersMu.Unlock()
		return nil
	}
	if err := loadPolicy(); err != nil {
		_ = a.Close() // the load error is the one to return
		return nil, err
	}
	a.watcher.add("policy", "policy file", []string{cfg.PolicyFile}, loadPolicy)
	return a, nil
}

// MTLS reports whether callers are authenticated with certificates.
func (a *Authorizer) MTLS() bool { return a.certs != nil }

// ServerTLS is the gRPC server's TLS configuration (nil in development
// mode): TLS 1.3, a client certificate requested, the certificate in force
// at each handshake.
func (a *Authorizer) ServerTLS() *tls.Config {
	if a.certs == nil {
		return nil
	}
	return a.certs.serverTLS()
}

// Run, every interval until ctx ends: reloads the policy and the
// certificates when their files change, reopens the audit file when log
// rotation moved it, tries to end an audit outage (AuditProblem), and
// writes the summary of unaudited refusals every RefusalSummaryInterval. It writes that summary once more when ctx ends.
func (a *Authorizer) Run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	last := a.now()
	for {
		select {
		case <-ctx.Done():
			a.auditSummary()
			return
		case <-t.C:
			a.watcher.poll()
			a.audit.reopenIfMoved()
			a.audit.tryEndOutage()
			if now := a.now(); now.Sub(last) >= RefusalSummaryInterval {
				last = now
				a.auditSummary()
			}
		}
	}
}

// Reload checks the watched files once and reloads what changed, as Run
// does every interval.
func (a *Authorizer) Reload() { a.watcher.poll() }

// Authenticate returns the identity of the caller that presented chain
// (leaf first) on its TLS connection. In development mode every caller is
// DevelopmentCaller.
func (a *Authorizer) Authenticate(chain []*x509.Certificate) (string, error) {
	if a.certs == nil {
		return DevelopmentCaller, nil
	}
	return a.certs.authenticate(chain, a.now())
}

// SignDecision is how an authorized Sign's token is made.
type SignDecision struct {
	// TTL is the token lifetime: a defaulted ttl is capped at the grant's
	// max_ttl.
	TTL time.Duration
	// Bind: the token is bound to the caller's client certificate.
	Bind bool
}

// AuthorizeSign checks a Sign against the policy and the caller's rate,
// and decides the token's lifetime and whether it is certificate-bound.
func (a *Authorizer) AuthorizeSign(caller string, r SignRequest) (SignDecision, error) {
	p := a.policy.Load()
	if p == nil {
		bind, err := binds(false, r) // development mode: only the request decides
		return SignDecision{TTL: r.TTL, Bind: bind}, err
	}
	g, err := p.authorizeSign(caller, r)
	if err != nil {
		return SignDecision{}, err
	}
	bind, err := binds(g.Bind == BindRequired || !r.Bind && p.requiresBinding(caller, r), r)
	if err != nil {
		return SignDecision{}, err
	}
	if err := a.takeToken(caller, g); err != nil {
		return SignDecision{}, err
	}
	d := SignDecision{TTL: r.TTL, Bind: bind}
	if g.MaxTTL > 0 && r.TTL > g.MaxTTL.D() {
		d.TTL = g.MaxTTL.D()
	}
	return d, nil
}

// takeToken takes a token from the caller's bucket for a grant with a rate.
func (a *Authorizer) takeToken(caller string, g *signGrant) error {
	if g.Rate == nil {
		return nil
	}
	now := a.now()
	a.limitersMu.Lock()
	k := limiterKey{caller: caller, grant: g}
	l := a.limiters[k]
	if l == nil {
		if len(a.limiters) >= maxBuckets { // as for buckets: a full one is no different from a new one
			for k, l := range a.limiters {
				if l.TokensAt(now) >= float64(l.Burst()) {
					delete(a.limiters, k)
				}
			}
		}
		l = rate.NewLimiter(rate.Limit(g.Rate.PerSecond), g.Rate.Burst)
		a.limiters[k] = l
	}
	wait := Take(l, now)
	a.limitersMu.Unlock()
	if wait > 0 {
		e := errorf(RateLimited, "rate limit for %q: %v signatures per second (burst %d)", caller, g.Rate.PerSecond, g.Rate.Burst)
		e.RetryAfter, e.Grant = wait, grantOf(a.policy.Load(), g)
		return e
	}
	return nil
}

// Take takes a token from l as of now and returns 0, or, when none is
// there, takes nothing and returns how long until one is (what a
// RetryAfter says).
func Take(l *rate.Limiter, now time.Time) time.Duration {
	res := l.ReserveN(now, 1)
	wait := res.DelayFrom(now)
	if wait > 0 {
		res.CancelAt(now)
	}
	return wait
}

// bucket is a limits.rotate or limits.leftovers token bucket. It is not a
// rate.Limiter because a token must be given back after the action ran:
// a Reservation's CancelAt restores nothing once the clock has passed the
// reservation, which it always has after a backend round trip.
type bucket struct {
	spec   *everySpec
	tokens float64
	at     time.Time // when tokens was last brought up to date
}

// fill adds what the time since at earned, up to the burst.
func (b *bucket) fill(now time.Time) {
	if now.After(b.at) {
		b.tokens = min(float64(b.spec.Burst), b.tokens+float64(now.Sub(b.at))/float64(b.spec.Every.D()))
		b.at = now
	}
}

// maxBuckets is how many buckets there may be before the full ones (which
// are no different from new ones) are dropped: keys are callers the client
// CA vouched for and configured rings, but nothing else bounds them.
const maxBuckets = 4096

// take takes a token from k's bucket (created full) and returns a function
// that gives it back, once, or how long until the bucket has one.
func (a *Authorizer) take(k limiterKey, spec *everySpec) (time.Duration, func()) {
	now := a.now()
	a.limitersMu.Lock()
	defer a.limitersMu.Unlock()
	b := a.buckets[k]
	if b == nil {
		if len(a.buckets) >= maxBuckets {
			for k, b := range a.buckets {
				if b.fill(now); b.tokens >= float64(b.spec.Burst) {
					delete(a.buckets, k)
				}
			}
		}
		if a.buckets == nil {
			a.buckets = map[limiterKey]*bucket{}
		}
		b = &bucket{spec: spec, tokens: float64(spec.Burst), at: now}
		a.buckets[k] = b
	}
	b.fill(now)
	if b.tokens < 1 {
		return time.Duration((1 - b.tokens) * float64(spec.Every.D())), nil
	}
	b.tokens--
	var once sync.Once
	return 0, func() {
		once.Do(func() {
			now := a.now()
			a.limitersMu.Lock()
			defer a.limitersMu.Unlock()
			b.fill(now)
			b.tokens = min(float64(spec.Burst), b.tokens+1)
		})
	}
}

// AllowRotate takes one of caller's rotations of ring (limits.rotate, per
// caller identity and key ring), after AuthorizeRing allowed it on a
// configured ring: a rotate grant in a loop would otherwise grow the JWKS
// every verifier fetches, for retire_after. refund gives the rotation back,
// for a Rotate that turned out to create nothing (a replayed request_id, a
// lost race): a client's retries of one rotation cost one.
func (a *Authorizer) AllowRotate(caller, ring string) (refund func(), err error) {
	p := a.policy.Load()
	if p == nil {
		return func() {}, nil
	}
	grant, err := p.authorizeRing(caller, "rotate", ring)
	if err != nil {
		return nil, err
	}
	return a.allow(limiterKey{caller: caller, action: "rotate", ring: ring}, p.Limits.Rotate, grant,
		fmt.Sprintf("rotations of key ring %q by %q", ring, caller))
}

// AllowLeftovers takes one of caller's leftovers listings (limits.leftovers,
// per caller identity): each one scans the backends.
func (a *Authorizer) AllowLeftovers(caller string) error {
	p := a.policy.Load()
	if p == nil {
		return nil
	}
	grant := ""
	for _, g := range p.Grants {
		if len(g.List) > 0 && g.id.match(caller) {
			grant = g.Identity
			break
		}
	}
	_, err := a.allow(limiterKey{caller: caller, action: "leftovers"}, p.Limits.Leftovers, grant,
		fmt.Sprintf("leftovers listings by %q", caller))
	return err
}

func (a *Authorizer) allow(k limiterKey, spec *everySpec, grant, what string) (func(), error) {
	wait, refund := a.take(k, spec)
	if wait <= 0 {
		return refund, nil
	}
	e := errorf(RateLimited, "rate limit for %s: %d at once, then one every %v", what, spec.Burst, spec.Every.D())
	e.RetryAfter, e.Grant = wait, grant
	return nil, e
}

// CertificateExpiry returns the notAfter of the serving certificate and of
// the first client CA certificate to expire; ok is false without mTLS.
func (a *Authorizer) CertificateExpiry() (serving, clientCA time.Time, ok bool) {
	if a.certs == nil {
		return time.Time{}, time.Time{}, false
	}
	st := a.certs.cur.Load()
	return st.servingNotAfter, st.caNotAfter, true
}

// AuthorizeRing checks "rotate" or "list" on a ring, or "sign": whether a
// sign grant of the caller names the ring at all (AuthorizeSign then checks
// the request against it). It goes by the name alone, configured or not, so
// that the service can refuse a caller before telling it anything of the
// ring.
func (a *Authorizer) AuthorizeRing(caller, action, ring string) error {
	p := a.policy.Load()
	if p == nil {
		return nil
	}
	_, err := p.authorizeRing(caller, action, ring)
	return err
}

// AuthorizeList returns the rings, of those named, that caller may list,
// or a denial if it may list none.
func (a *Authorizer) AuthorizeList(caller string, rings []string) ([]string, error) {
	p := a.policy.Load()
	if p == nil {
		return rings, nil
	}
	var allowed []string
	for _, r := range rings {
		if _, err := p.authorizeRing(caller, "list", r); err == nil {
			allowed = append(allowed, r)
		}
	}
	if len(allowed) == 0 {
		return nil, deny(NoGrant, "no grant lets %q list any key ring", caller)
	}
	return allowed, nil
}

// Auditing reports whether there is an audit log: without one, Audit
// records nothing and callers need not fill a Record in.
func (a *Authorizer) Auditing() bool { return a.audit != nil }

// Audit writes r, stamped with the time. An error (an *Error with reason
// AuditFailed) means the record is not on record and the action must not
// happen.
func (a *Authorizer) Audit(r Record) error {
	r.Time = a.now().UTC()
	return a.audit.write(r)
}

// AuditProblem says why the audit log cannot be written now, while every
// action is refused for it; "" while it can (or there is none). Run ends
// such an outage, within an interval of the log being writable again,
// by writing a record of it.
func (a *Authorizer) AuditProblem() string { return a.audit.problem() }

// IsDenial reports whether err is a refusal of the caller's request by the
// policy or its rate limits (as opposed to a failure).
func IsDenial(err error) bool {
	var e *Error
	return errors.As(err, &e) && (e.Reason == Denied || e.Reason == RateLimited || e.Reason == Unauthenticated || e.Reason == Unbindable)
}

// Close closes the audit log.
func (a *Authorizer) Close() error { return a.audit.close() }
