package authz

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"iter"
	"slices"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/signet-dev/signet/server/config"
	"github.com/signet-dev/signet/server/jose"
)

// Policy file: who may do what. Deny by default.
//
//	grants:
//	  - identity: "spiffe://corp.example/ns/payments/**"  # spiffe://TRUST-DOMAIN/PATH or dns:NAME pattern (identity.go)
//	    sign:
//	      - key_rings: [default]
//	        audiences: ["ledger", "payments-*"]
//	        subjects: ["$caller", "svc-*"]                # $caller: the subject must equal the caller's identity
//	        claims: [scope, tenant]                       # custom claim names allowed (none if absent)
//	        max_ttl: 10m
//	        typ: [JWT, at+jwt]                            # header typ values allowed (absent: only JWT)
//	        rate: {per_second: 50, burst: 100}            # per caller identity
//	        bind: allowed                                 # certificate-bound tokens: required, allowed (default), never
//	    rotate: [default]
//	    list: ["*"]
//	limits:                                # defaults below
//	  rotate: {every: 10m, burst: 3}       # per caller identity and key ring
//	  leftovers: {every: 1m, burst: 3}     # ListKeys with leftovers, per caller identity
type policyFile struct {
	Grants []grant `yaml:"grants"`
	Limits limits  `yaml:"limits"`

	// warnings name the grants that Signet before parsed identities read
	// differently (check-config prints them).
	warnings []string
}

type grant struct {
	Identity string      `yaml:"identity"`
	Sign     []signGrant `yaml:"sign"`
	Rotate   []string    `yaml:"rotate"`
	List     []string    `yaml:"list"`

	id idPattern // Identity, parsed
}

// limits bound what one grant can cost everyone else: every rotation adds a
// key that every verifier fetches for retire_after, every leftovers listing
// scans the backend.
type limits struct {
	Rotate    *everySpec `yaml:"rotate"`
	Leftovers *everySpec `yaml:"leftovers"`
}

// everySpec is a token bucket: burst at once, then one more every Every.
type everySpec struct {
	Every config.Duration `yaml:"every"`
	Burst int             `yaml:"burst"`
}

// Default limits (docs/configuration.md): a rotation and its emergency
// follow-up, with one to spare, then one per publish_ahead's default; an
// operator's few leftovers listings in a row, then one a minute.
var (
	defaultRotateLimit    = everySpec{Every: config.Duration(10 * time.Minute), Burst: 3}
	defaultLeftoversLimit = everySpec{Every: config.Duration(time.Minute), Burst: 3}
)

type signGrant struct {
	KeyRings  []string        `yaml:"key_rings"`
	Audiences []string        `yaml:"audiences"`
	Subjects  []string        `yaml:"subjects"`
	Claims    []string        `yaml:"claims"`
	MaxTTL    config.Duration `yaml:"max_ttl"`
	Typ       []string        `yaml:"typ"` // header typ values allowed; absent: only "JWT"
	Rate      *rateSpec       `yaml:"rate"`
	// Bind is whether tokens are bound to the caller's client certificate
	// (RFC 8705): BindRequired binds every token it allows, even one that
	// another grant listed first allows too (requiresBinding), BindAllowed (the
	// default: a binding only narrows a token) those whose request asks,
	// BindNever refuses a request that asks.
	Bind string `yaml:"bind"`
}

// The values of a sign grant's bind.
const (
	BindRequired = "required"
	BindAllowed  = "allowed"
	BindNever    = "never"
)

type rateSpec struct {
	PerSecond float64 `yaml:"per_second"`
	Burst     int     `yaml:"burst"`
}

// CallerSubject in a grant's subjects means "the caller's own identity".
const CallerSubject = "$caller"

// parsePolicy reads and checks a policy file. rings gives each configured
// ring's token_max_ttl: a grant may not allow more.
func parsePolicy(data []byte, rings map[string]time.Duration) (*policyFile, error) {
	var p policyFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&p); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	for i := range p.Grants {
		g := &p.Grants[i]
		where := fmt.Sprintf("grants[%d]", i)
		if g.Identity == "" {
			return nil, fmt.Errorf("%s.identity is empty", where)
		}
		id, err := parseIDPattern(g.Identity)
		if err != nil {
			return nil, fmt.Errorf("%s.identity %q %v", where, g.Identity, err)
		}
		g.id = id
		if id.wildcards() {
			p.warnings = append(p.warnings, fmt.Sprintf("%s.identity %q: '*' and '?' now match within one path segment "+
				"(before, '*' also matched across '/'); a whole segment ** matches one or more", where, g.Identity))
		}
		for j, s := range g.Sign {
			sw := fmt.Sprintf("%s.sign[%d]", where, j)
			if len(s.KeyRings) == 0 || len(s.Audiences) == 0 {
				return nil, fmt.Errorf("%s: name key_rings and audiences (deny by default)", sw)
			}
			for _, r := range s.KeyRings {
				if r == "*" {
					continue
				}
				max, ok := rings[r]
				if !ok {
					return nil, fmt.Errorf("%s.key_rings: %q is not a configured key ring", sw, r)
				}
				if s.MaxTTL.D() > max {
					return nil, fmt.Errorf("%s.max_ttl %v exceeds key ring %q token_max_ttl %v", sw, s.MaxTTL.D(), r, max)
				}
			}
			if s.MaxTTL < 0 {
				return nil, fmt.Errorf("%s.max_ttl may not be negative", sw)
			}
			if s.Rate != nil && (s.Rate.PerSecond <= 0 || s.Rate.Burst < 1) {
				return nil, fmt.Errorf("%s.rate: per_second must be positive and burst at least 1", sw)
			}
			switch s.Bind {
			case "":
				g.Sign[j].Bind = BindAllowed
			case BindRequired, BindAllowed, BindNever:
			default:
				return nil, fmt.Errorf("%s.bind %q: want required, allowed or never", sw, s.Bind)
			}
		}
	}
	for _, l := range []struct {
		name string
		spec **everySpec
		def  everySpec
	}{{"rotate", &p.Limits.Rotate, defaultRotateLimit}, {"leftovers", &p.Limits.Leftovers, defaultLeftoversLimit}} {
		if *l.spec == nil {
			def := l.def
			*l.spec = &def
		} else if s := *l.spec; s.Every <= 0 || s.Burst < 1 {
			return nil, fmt.Errorf("limits.%s: every must be positive and burst at least 1", l.name)
		}
	}
	return &p, nil
}

// globMatch reports whether s matches pattern: '*' matches any run of
// characters (including '/'), '?' exactly one; everything else is literal.
func globMatch(pattern, s string) bool {
	// Iterative matching with backtracking to the last '*': linear in
	// practice, never exponential, whatever the input.
	p, i := 0, 0
	star, mark := -1, 0
	for i < len(s) {
		switch {
		case p < len(pattern) && pattern[p] == '*': // before the literal case: a '*' in s is no wildcard
			star, mark = p, i
			p++
		case p < len(pattern) && (pattern[p] == '?' || pattern[p] == s[i]):
			p++
			i++
		case star >= 0:
			p = star + 1
			mark++
			i = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

func anyMatch(patterns []string, s string) bool {
	return slices.ContainsFunc(patterns, func(p string) bool { return globMatch(p, s) })
}

// deny is a policy refusal by rule; its message names the rule that failed.
func deny(rule Rule, format string, args ...any) *Error {
	e := errorf(Denied, format, args...)
	e.Rule = rule
	return e
}

// SignRequest is what the policy judges of a Sign.
type SignRequest struct {
	Ring     string
	Subject  string
	Audience []string
	Claims   []string // names of the custom claims
	TTL      time.Duration
	// TTLDefaulted: the request named no ttl, so a grant's max_ttl caps the
	// ring's default instead of refusing it.
	TTLDefaulted bool
	Typ          string
	// Bind: the request asks for a certificate-bound token. Bindable: the
	// call has a verified client certificate to bind it to.
	Bind, Bindable bool
}

// authorizeSign finds a sign grant that allows everything asked. If none
// does, the reason names what the closest grant refused.
func (p *policyFile) authorizeSign(caller string, r SignRequest) (*signGrant, error) {
	var reason error // the last grant's refusal; rendered only when there is one
	for g, s := range p.signGrants(caller, r.Ring) {
		if err := s.allows(caller, r); err != nil {
			reason = deny(err.Rule, "grant for %q: %v", g.Identity, err)
			continue
		}
		return s, nil
	}
	if reason == nil {
		reason = deny(NoGrant, "no grant lets %q sign with key ring %q", caller, r.Ring)
	}
	return nil, reason
}

// signGrants yields, in policy order, the sign grants of caller's grants
// that cover ring, each with the grant it belongs to.
func (p *policyFile) signGrants(caller, ring string) iter.Seq2[*grant, *signGrant] {
	return func(yield func(*grant, *signGrant) bool) {
		for i := range p.Grants {
			g := &p.Grants[i]
			if !g.id.match(caller) {
				continue
			}
			for j := range g.Sign {
				if anyMatch(g.Sign[j].KeyRings, ring) && !yield(g, &g.Sign[j]) {
					return
				}
			}
		}
	}
}

func (s *signGrant) allows(caller string, r SignRequest) *Error {
	for _, a := range r.Audience {
		if !anyMatch(s.Audiences, a) {
			return deny(AudienceRule, "audience %q is not allowed", a)
		}
	}
	subjectOK := false
	for _, pat := range s.Subjects {
		if pat == CallerSubject && r.Subject == caller || pat != CallerSubject && globMatch(pat, r.Subject) {
			subjectOK = true
			break
		}
	}
	if !subjectOK {
		return deny(SubjectRule, "subject %q is not allowed", r.Subject)
	}
	for _, c := range r.Claims {
		if !slices.Contains(s.Claims, c) {
			return deny(ClaimRule, "custom claim %q is not allowed", c)
		}
	}
	if allowed := s.Typ; !slices.Contains(allowed, r.Typ) && !(len(allowed) == 0 && r.Typ == jose.DefaultTyp) {
		return deny(TypRule, "typ %q is not allowed", r.Typ)
	}
	if s.MaxTTL > 0 && r.TTL > s.MaxTTL.D() && !r.TTLDefaulted {
		return deny(TTLRule, "ttl %v exceeds the grant's max_ttl %v", r.TTL, s.MaxTTL.D())
	}
	if r.Bind && s.Bind == BindNever {
		return deny(BindRule, "certificate-bound tokens are not allowed (bind: never)")
	}
	return nil
}

// requiresBinding reports whether any sign grant that allows r says bind:
// required, not only the one authorizeSign picked (the first): grants add
// up, and a binding only narrows a token, so a grant that requires it is
// never undone by another listed before it that covers the same request.
func (p *policyFile) requiresBinding(caller string, r SignRequest) bool {
	for _, s := range p.signGrants(caller, r.Ring) {
		if s.Bind == BindRequired && s.allows(caller, r) == nil {
			return true
		}
	}
	return false
}

// binds reports whether the token is bound to the caller's certificate
// (asked for, or required by a grant), or why it cannot be issued: it must
// be bound and the call has no certificate.
func binds(required bool, r SignRequest) (bool, error) {
	bind := r.Bind || required
	if bind && !r.Bindable {
		why := "the request asks for a certificate-bound token"
		if !r.Bind {
			why = "the grant requires certificate-bound tokens (bind: required)"
		}
		return false, errorf(Unbindable, "%s and this call has no client certificate to bind it to (plaintext development mode)", why)
	}
	return bind, nil
}

// authorizeRing finds a grant that lets caller do action ("sign",
// "rotate", "list") on ring, and returns its identity pattern.
func (p *policyFile) authorizeRing(caller, action, ring string) (string, error) {
	for _, g := range p.Grants {
		if !g.id.match(caller) {
			continue
		}
		rings := g.Rotate
		switch action {
		case "list":
			rings = g.List
		case "sign":
			rings = nil
			for _, s := range g.Sign {
				rings = append(rings, s.KeyRings...)
			}
		}
		if anyMatch(rings, ring) {
			return g.Identity, nil
		}
	}
	verb := action
	if action == "sign" {
		verb = "sign with"
	}
	return "", deny(NoGrant, "no grant lets %q %s key ring %q", caller, verb, ring)
}

// grantOf returns the identity pattern of the grant that holds s.
func grantOf(p *policyFile, s *signGrant) string {
	for i := range p.Grants {
		for j := range p.Grants[i].Sign {
			if &p.Grants[i].Sign[j] == s {
				return p.Grants[i].Identity
			}
		}
	}
	return ""
}
