package main

import (
	"sync"
	"time"

	"google.golang.org/grpc/codes"
)

// recorder holds everything the run observed; the report is computed from
// it afterwards (report.go), so the checks are plain functions of data.
type recorder struct {
	mu       sync.Mutex
	signs    []signRec
	tokens   []*tokenRec
	fetches  []fetchRec
	polls    []pollRec
	versions map[string]*versionRec // by kid
	faults   []fault
	windows  []rotationWindow
	revokes  []revokeRec
	notes    []string
	stopped  time.Time // when the load and the pollers stopped
}

func newRecorder() *recorder { return &recorder{versions: map[string]*versionRec{}} }

// signRec is one Sign call.
type signRec struct {
	start, end time.Time
	slot       int
	code       codes.Code
	msg        string
	token      int // index in tokens, -1 without a token
}

// tokenRec is one issued token and each verifier's verdict on it.
type tokenRec struct {
	kid      string
	iat, exp int64
	start    time.Time // when the Sign call was made
	signed   time.Time // when the Sign answer arrived
	slot     int
	verdicts [numVerifiers]verdict
	// revokedLater: the token's kid was revoked after it verified, and
	// the jwx caches no longer had the kid jwks_max_age + refresh_interval
	// + the margin after the revocation: the token is rejected from then on.
	revokedLater bool
}

type verdict struct {
	done bool
	ok   bool
	why  string
}

// fetchRec is one JWKS request: by a poller straight to a replica, or by a
// verifier through the front.
type fetchRec struct {
	at   time.Time
	via  string // "poll" or "front"
	slot int
	code int // 0: no HTTP answer
	err  string
}

// pollRec is a poller's successful fetch: the kids slot's replica served.
type pollRec struct {
	slot, incarnation int
	sent, got         time.Time
	kids              []string
}

// versionRec is a version as ListKeys reported it (the backend's creation time).
type versionRec struct {
	kid, backendID string
	created        time.Time
	revoked        bool
	first          bool // the ring's first version
	emergency      bool // made by Rotate --revoke-previous: signs at once
}

// fault is an injected failure: from start to end the fault is in force;
// signing is expected back after end.
type fault struct {
	name       string
	start, end time.Time
	backend    bool // the backend itself was down: refreshes could not happen
}

// rotationWindow is when a rotation the soak asked for (not a scheduled one)
// may have created a version.
type rotationWindow struct {
	name       string
	start, end time.Time
}

// revokeRec is an emergency rotation: the kids it revoked and when its
// answer came (every older version disabled by then).
type revokeRec struct {
	sent, answered time.Time
	newKid         string
	kids           []string
}

func (r *recorder) sign(s signRec) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.signs = append(r.signs, s)
}

// token records a new token and returns its index.
func (r *recorder) token(t *tokenRec) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tokens = append(r.tokens, t)
	return len(r.tokens) - 1
}

func (r *recorder) verdict(tok, verifier int, ok bool, why string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tokens[tok].verdicts[verifier] = verdict{done: true, ok: ok, why: why}
}

func (r *recorder) fetch(via string, slot, code int, err string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fetches = append(r.fetches, fetchRec{at: time.Now(), via: via, slot: slot, code: code, err: err})
}

func (r *recorder) poll(p pollRec) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.polls = append(r.polls, p)
}

func (r *recorder) version(v versionRec) {
	if v.kid == "" {
		return // a revoked version whose key the replica never read: nothing to check by its kid
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	old, ok := r.versions[v.kid]
	if !ok {
		r.versions[v.kid] = &v
		return
	}
	old.revoked = old.revoked || v.revoked
	old.emergency = old.emergency || v.emergency
}

func (r *recorder) addFault(f fault) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.faults = append(r.faults, f)
}

func (r *recorder) addWindow(w rotationWindow) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.windows = append(r.windows, w)
}

func (r *recorder) addRevoke(v revokeRec) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.revokes = append(r.revokes, v)
}

func (r *recorder) note(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.notes = append(r.notes, s)
}
