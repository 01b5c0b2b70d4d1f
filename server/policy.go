package server

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.yaml.in/yaml/v3"
	"golang.org/x/time/rate"
)

// Policy file: who may do what. Deny by default.
//
//	grants:
//	  - identity: "spiffe://corp.example/ns/payments/*"   # exact, or a glob: * matches any run of characters, ? one
//	    sign:
//	      - key_rings: [default]
//	        audiences: ["ledger", "payments-*"]
//	        subjects: ["$caller", "svc-*"]                # $caller: the subject must equal the caller's identity
//	        claims: [scope, tenant]                       # custom claim names allowed (none if absent)
//	        max_ttl: 10m
//	        typ: [JWT, at+jwt]                            # header typ values allowed (absent: only JWT)
//	        rate: {per_second: 50, burst: 100}            # per caller identity
//	    rotate: [default]
//	    list: ["*"]
type policyFile struct {
	Grants []grant `yaml:"grants"`
}

type grant struct {
	Identity string      `yaml:"identity"`
	Sign     []signGrant `yaml:"sign"`
	Rotate   []string    `yaml:"rotate"`
	List     []string    `yaml:"list"`
}

type signGrant struct {
	KeyRings  []string  `yaml:"key_rings"`
	Audiences []string  `yaml:"audiences"`
	Subjects  []string  `yaml:"subjects"`
	Claims    []string  `yaml:"claims"`
	MaxTTL    Duration  `yaml:"max_ttl"`
	Typ       []string  `yaml:"typ"` // header typ values allowed; absent: only "JWT"
	Rate      *rateSpec `yaml:"rate"`
}

type rateSpec struct {
	PerSecond float64 `yaml:"per_second"`
	Burst     int     `yaml:"burst"`
}

// CallerSubject in a grant's subjects means "the caller's own identity".
const CallerSubject = "$caller"

// parsePolicy reads and checks a policy file. maxTTL says each ring's
// token_max_ttl: a grant may not allow more.
func parsePolicy(data []byte, rings map[string]time.Duration) (*policyFile, error) {
	var p policyFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&p); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	for i, g := range p.Grants {
		where := fmt.Sprintf("grants[%d]", i)
		if g.Identity == "" {
			return nil, fmt.Errorf("%s.identity is empty", where)
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

// denial is a policy refusal; its reason names the rule that failed.
type denial struct{ reason string }

func (d *denial) Error() string { return d.reason }

func deny(format string, args ...any) error { return &denial{fmt.Sprintf(format, args...)} }

// signRequest is what the policy judges of a Sign.
type signRequest struct {
	ring     string
	subject  string
	audience []string
	claims   []string
	ttl      time.Duration
	// ttlDefaulted: the request named no ttl, so a grant's max_ttl caps the
	// ring's default instead of refusing it.
	ttlDefaulted bool
	typ          string
}

// authorizeSign finds a sign grant that allows everything asked. If none
// does, the reason names what the closest grant refused.
func (p *policyFile) authorizeSign(caller string, r signRequest) (*signGrant, error) {
	var reason error = deny("no grant lets %q sign with key ring %q", caller, r.ring)
	for i := range p.Grants {
		g := &p.Grants[i]
		if !globMatch(g.Identity, caller) {
			continue
		}
		for j := range g.Sign {
			s := &g.Sign[j]
			if !anyMatch(s.KeyRings, r.ring) {
				continue
			}
			if err := s.allows(caller, r); err != nil {
				reason = fmt.Errorf("grant for %q: %w", g.Identity, err)
				continue
			}
			return s, nil
		}
	}
	return nil, reason
}

func (s *signGrant) allows(caller string, r signRequest) error {
	for _, a := range r.audience {
		if !anyMatch(s.Audiences, a) {
			return deny("audience %q is not allowed", a)
		}
	}
	subjectOK := false
	for _, pat := range s.Subjects {
		if pat == CallerSubject && r.subject == caller || pat != CallerSubject && globMatch(pat, r.subject) {
			subjectOK = true
			break
		}
	}
	if !subjectOK {
		return deny("subject %q is not allowed", r.subject)
	}
	for _, c := range r.claims {
		if !slices.Contains(s.Claims, c) {
			return deny("custom claim %q is not allowed", c)
		}
	}
	if allowed := s.Typ; !slices.Contains(allowed, r.typ) && !(len(allowed) == 0 && r.typ == DefaultTyp) {
		return deny("typ %q is not allowed", r.typ)
	}
	if s.MaxTTL > 0 && r.ttl > s.MaxTTL.D() && !r.ttlDefaulted {
		return deny("ttl %v exceeds the grant's max_ttl %v", r.ttl, s.MaxTTL.D())
	}
	return nil
}

func (p *policyFile) authorizeRing(caller, action, ring string) error {
	for _, g := range p.Grants {
		if !globMatch(g.Identity, caller) {
			continue
		}
		rings := g.Rotate
		if action == "list" {
			rings = g.List
		}
		if anyMatch(rings, ring) {
			return nil
		}
	}
	return deny("no grant lets %q %s key ring %q", caller, action, ring)
}

// policyStore holds the policy in force and reloads it when its file
// changes; an invalid new version is logged and the old one stays.
type policyStore struct {
	path  string
	rings map[string]time.Duration
	log   *slog.Logger
	cur   atomic.Pointer[policyFile]
	stamp string

	limitersMu sync.Mutex
	limiters   map[limiterKey]*rate.Limiter
}

type limiterKey struct {
	caller string
	grant  *signGrant
}

func newPolicyStore(path string, rings map[string]time.Duration, log *slog.Logger) (*policyStore, error) {
	s := &policyStore{path: path, rings: rings, log: log, limiters: map[limiterKey]*rate.Limiter{}}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("policy_file: %w", err)
	}
	p, err := parsePolicy(data, rings)
	if err != nil {
		return nil, fmt.Errorf("policy_file %s: %w", path, err)
	}
	s.cur.Store(p)
	s.stamp = stampOf(path)
	return s, nil
}

func stampOf(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return ""
	}
	return fmt.Sprintf("%d/%d", fi.Size(), fi.ModTime().UnixNano())
}

// reloadIfChanged re-reads the file if it changed since the last look.
func (s *policyStore) reloadIfChanged() {
	stamp := stampOf(s.path)
	if stamp == s.stamp {
		return
	}
	s.stamp = stamp
	data, err := os.ReadFile(s.path)
	if err == nil {
		var p *policyFile
		if p, err = parsePolicy(data, s.rings); err == nil {
			s.cur.Store(p)
			s.limitersMu.Lock()
			s.limiters = map[limiterKey]*rate.Limiter{} // grants changed: limits start afresh
			s.limitersMu.Unlock()
			s.log.Info("policy reloaded", "file", s.path, "grants", len(p.Grants))
			return
		}
	}
	s.log.Error("policy file changed but is invalid; the previous policy stays in force", "file", s.path, "err", err)
}

// watch polls the file until stop closes.
func (s *policyStore) watch(stop <-chan struct{}, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			s.reloadIfChanged()
		}
	}
}

// allow takes a token from the caller's bucket for a grant with a rate.
func (s *policyStore) allow(caller string, g *signGrant) bool {
	if g.Rate == nil {
		return true
	}
	s.limitersMu.Lock()
	defer s.limitersMu.Unlock()
	k := limiterKey{caller, g}
	l := s.limiters[k]
	if l == nil {
		l = rate.NewLimiter(rate.Limit(g.Rate.PerSecond), g.Rate.Burst)
		s.limiters[k] = l
	}
	return l.Allow()
}
