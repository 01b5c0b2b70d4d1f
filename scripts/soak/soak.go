package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
	"github.com/signet-dev/signet/internal/kmstest"
)

// The ring's policy: compressed, but legal (startup refuses anything
// shorter: publish_ahead >= jwks_max_age + refresh_interval, retire_after >=
// token_max_ttl + jwks_max_age + refresh_interval, rotation_period >=
// publish_ahead).
const (
	jwksMaxAge      = 2 * time.Second
	refreshInterval = time.Second
	publishAhead    = 4 * time.Second
	tokenTTL        = 5 * time.Second
	retireAfter     = 8 * time.Second
	rotationPeriod  = 10 * time.Second
	backendTimeout  = 2 * time.Second
	// propagationMargin is what the propagation bound allows past
	// refresh_interval: a replica re-reads the versions every
	// refresh_interval, the read itself takes a backend round trip (tens of
	// ms, more on a loaded machine), and the poller sees the change up to
	// pollEvery later still. One second covers those with room; the figures
	// the report prints show how much of it a run used.
	propagationMargin = time.Second
	pollEvery         = 100 * time.Millisecond
	signTimeout       = 3 * time.Second
	// settle is how long after a fault every live replica must be signing
	// again before the run counts it as not recovered.
	settle = 20 * time.Second
	// faultGap is the quiet time after each fault: long enough to see
	// signing recover and a scheduled rotation or two go by.
	faultGap = 6 * time.Second

	ringName = "soak"
	issuer   = "http://soak.signet.test"
	// localKEK is the throwaway key-encryption key of the local backend's
	// shared directory.
	localKEK = "c29hay1ydW4ta2VrLTAxMjM0NTY3ODlhYmNkZWYwMTI="
)

// options of one backend's run.
type options struct {
	backend     string // vault, awskms or local
	signet      string
	vault       string
	python      string
	dir         string
	duration    time.Duration
	rate        int // Sign calls per second, all replicas together
	concurrency int // most Sign calls in flight
	out         io.Writer
}

type soak struct {
	o       options
	rec     *recorder
	c       *cluster
	vault   *vaultServer
	kms     *kmstest.Server
	config  string
	env     [replicas][]string
	incs    [replicas]int
	rotRTT  time.Duration // the last manual rotation's round trip
	gv      *goVerifiers
	later   sync.WaitGroup // checks that run after a delay
	skipped int            // Sign ticks skipped: concurrency bound reached
	noRep   int            // Sign ticks with no live replica
}

// run soaks one backend and returns its report.
func run(o options) (*report, error) {
	s := &soak{o: o, rec: newRecorder(), c: newCluster(), rotRTT: 20 * time.Millisecond}
	defer s.teardown()
	if err := s.setup(); err != nil {
		return nil, err
	}
	s.logf("starting three replicas together (the first version is created by one of them)")
	var wg sync.WaitGroup
	errs := make([]error, replicas)
	for i := range replicas {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = s.start(i) }()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	f, err := startFront(s.c, s.rec)
	if err != nil {
		return nil, err
	}
	defer f.close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	gv, err := newGoVerifiers(ctx, f.url, issuer)
	if err != nil {
		return nil, err
	}
	s.gv = gv
	py, err := startPyJWT(o.python, o.dir, f.url, issuer, s.rec)
	if err != nil {
		return nil, err
	}
	pyClosed := false
	defer func() {
		if !pyClosed {
			py.close()
		}
	}()

	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	var bg sync.WaitGroup
	for i := range replicas {
		bg.Add(1)
		go func() { defer bg.Done(); pollJWKS(loadCtx, s.c, s.rec, i, pollEvery) }()
	}
	bg.Add(1)
	go func() { defer bg.Done(); s.listKeysLoop(loadCtx) }()

	type job struct {
		n     int
		token string
	}
	verify := make(chan job, 1<<16)
	var verifiers sync.WaitGroup
	for range 3 {
		verifiers.Add(1)
		go func() {
			defer verifiers.Done()
			for j := range verify {
				for i := range 2 {
					vctx, cancel := context.WithTimeout(ctx, 5*time.Second)
					err := gv.verifyJWX(vctx, i, j.token)
					cancel()
					s.rec.verdict(j.n, vJWXA+i, err == nil, errString(err))
				}
				vctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				err := gv.verifyOIDC(vctx, j.token)
				cancel()
				s.rec.verdict(j.n, vOIDC, err == nil, errString(err))
			}
		}()
	}
	var signers sync.WaitGroup
	signed := func(n int, token string) {
		verify <- job{n, token}
		if err := py.send(n, token); err != nil {
			s.rec.verdict(n, vPyJWT, false, "sidecar: "+err.Error())
		}
	}
	bg.Add(1)
	go func() { defer bg.Done(); s.signLoop(loadCtx, &signers, signed) }()

	start := time.Now()
	s.logf("load: %d Sign/s round robin over the live replicas, at most %d in flight; faults for %s", o.rate, o.concurrency, o.duration)
	s.faults(start.Add(o.duration))
	stopLoad()
	s.rec.mu.Lock()
	s.rec.stopped = time.Now()
	s.rec.mu.Unlock()
	bg.Wait()
	signers.Wait()
	close(verify)
	verifiers.Wait()
	py.close()
	pyClosed = true
	s.later.Wait()
	s.logf("load stopped; waiting for the backend to converge, then checking leftovers and agreement")
	leftovers, agree := s.finalChecks()
	return analyze(s, time.Since(start), leftovers, agree, gv), nil
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func (s *soak) logf(format string, args ...any) {
	fmt.Fprintf(s.o.out, "soak[%s] %s %s\n", s.o.backend, time.Now().UTC().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

// setup starts the backend and writes the replicas' config.
func (s *soak) setup() error {
	var backend string
	common := []string{"SIGNET_LOCAL_KEK=" + localKEK}
	switch s.o.backend {
	case "vault":
		v, err := startVault(s.o.vault, s.o.dir)
		if err != nil {
			return err
		}
		s.vault = v
		tokenFile := filepath.Join(s.o.dir, "vault-token")
		if err := v.signetToken("signet-soak", tokenFile); err != nil {
			return err
		}
		backend = fmt.Sprintf("vault://%s/transit?scheme=http&token_file=%s&key.%s=signet-soak", v.addr, url.QueryEscape(tokenFile), ringName)
		s.logf("vault: file storage in %s, listening on %s, initialised with one unseal key, a token with Signet's documented policy", filepath.Join(s.o.dir, "vault-data"), v.addr)
	case "awskms":
		s.kms = kmstest.Start()
		backend = "awskms:?region=us-east-1&endpoint=" + url.QueryEscape(s.kms.URL)
		for k, v := range kmstest.Env {
			common = append(common, k+"="+v)
		}
		s.logf("awskms: the repo's KMS test server at %s, through the real AWS SDK", s.kms.URL)
	case "local":
		keys := filepath.Join(s.o.dir, "keys")
		if err := os.MkdirAll(keys, 0o700); err != nil {
			return err
		}
		backend = "local://" + keys
		s.logf("local: one key directory shared by the three replicas: %s", keys)
	default:
		return fmt.Errorf("unknown backend %q (vault, awskms or local)", s.o.backend)
	}
	for i := range replicas {
		s.env[i] = append([]string(nil), common...)
		if s.o.backend == "awskms" {
			// Each replica signs its KMS requests with its own access key
			// id, which is how the test server's kill hook picks it.
			s.env[i] = append(s.env[i], "AWS_ACCESS_KEY_ID="+accessKeyID(i))
		}
	}
	cfg := fmt.Sprintf(`issuer: %s
grpc: {listen: 127.0.0.1:0}
http: {listen: 127.0.0.1:0}
admin: {listen: 127.0.0.1:0}
backend_timeout: %s
shutdown_timeout: 2s
log: {level: info}
key_rings:
  - name: %s
    backend: '%s'
    algorithm: ES256
    token_max_ttl: %s
    token_default_ttl: %s
    jwks_max_age: %s
    refresh_interval: %s
    publish_ahead: %s
    retire_after: %s
    rotation_period: %s
`, issuer, backendTimeout, ringName, backend, tokenTTL, tokenTTL, jwksMaxAge, refreshInterval, publishAhead, retireAfter, rotationPeriod)
	s.config = filepath.Join(s.o.dir, "signet.yaml")
	return os.WriteFile(s.config, []byte(cfg), 0o600)
}

func accessKeyID(i int) string { return fmt.Sprintf("AKIDSOAKREPLICA%d", i) }

// start starts (or restarts) slot i's replica and puts it in rotation.
func (s *soak) start(i int) error {
	s.incs[i]++
	r, err := startReplica(s.o.signet, s.o.dir, i, s.incs[i], s.config, s.env[i])
	if err != nil {
		return err
	}
	return s.c.put(r)
}

func (s *soak) teardown() {
	s.c.closeAll()
	if s.vault != nil {
		s.vault.stop()
	}
	if s.kms != nil {
		s.kms.Close()
	}
}

// signLoop calls Sign o.rate times a second on the next live replica, with
// at most o.concurrency calls in flight (a tick that finds them all busy is
// skipped and counted).
func (s *soak) signLoop(ctx context.Context, signers *sync.WaitGroup, signed func(int, string)) {
	t := time.NewTicker(time.Second / time.Duration(s.o.rate))
	defer t.Stop()
	sem := make(chan struct{}, s.o.concurrency)
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		select {
		case sem <- struct{}{}:
		default:
			s.skipped++
			continue
		}
		l, ok := s.c.next()
		if !ok {
			s.noRep++
			<-sem
			continue
		}
		signers.Add(1)
		// #nosec G118 -- each call has its own deadline and outlives the load context on purpose: stopping the load must not cut calls in flight
		go func() {
			defer signers.Done()
			defer func() { <-sem }()
			defer l.done()
			start := time.Now()
			cctx, cancel := context.WithTimeout(context.Background(), signTimeout)
			resp, err := l.client.Sign(cctx, &signetv1.SignRequest{KeyRing: ringName, Subject: fmt.Sprintf("soak-%d", n),
				Audience: []string{audience}, Ttl: durationpb.New(tokenTTL)})
			cancel()
			end := time.Now()
			st := status.Convert(err)
			rec := signRec{start: start, end: end, slot: l.slot, code: st.Code(), msg: st.Message(), token: -1}
			if err == nil {
				iat, exp, perr := tokenTimes(resp.GetToken())
				if perr != nil {
					rec.msg = "unreadable token: " + perr.Error()
				}
				rec.token = s.rec.token(&tokenRec{kid: resp.GetKid(), iat: iat, exp: exp, start: start, signed: end, slot: l.slot})
			}
			s.rec.sign(rec)
			if rec.token >= 0 {
				signed(rec.token, resp.GetToken())
			}
		}()
	}
}

// listKeysLoop reads the versions (kid, the backend's creation time,
// state) from a live replica twice a refresh interval.
func (s *soak) listKeysLoop(ctx context.Context) {
	t := time.NewTicker(refreshInterval / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.listKeys(ctx)
	}
}

func (s *soak) listKeys(ctx context.Context) {
	l, ok := s.c.random()
	if !ok {
		return
	}
	defer l.done()
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	resp, err := l.client.ListKeys(cctx, &signetv1.ListKeysRequest{KeyRing: ringName})
	if err != nil {
		return
	}
	for _, v := range resp.GetVersions() {
		s.rec.version(versionRec{kid: v.GetKid(), backendID: v.GetBackendId(), created: v.GetCreatedAt().AsTime(),
			revoked: v.GetState() == signetv1.KeyState_KEY_STATE_REVOKED})
	}
}

// sleepUntil sleeps until t; it returns false if t is past the deadline.
func sleepUntil(t, deadline time.Time) bool {
	if t.After(deadline) {
		return false
	}
	time.Sleep(time.Until(t))
	return true
}

// faults injects the faults, one after another with faultGap between
// them, until the deadline; the emergency revocation comes once, at 40% of
// the run.
func (s *soak) faults(deadline time.Time) {
	steps := []func(time.Time) bool{s.manualRotate, s.killMidRotation, s.killAtScheduledRotation}
	if s.vault != nil {
		steps = []func(time.Time) bool{s.manualRotate, s.killMidRotation, s.freezeVault, s.killAtScheduledRotation, s.killVault}
	}
	begin := time.Now()
	revokeAt := begin.Add(s.o.duration * 4 / 10)
	revoked := false
	if !sleepUntil(time.Now().Add(faultGap), deadline) {
		return
	}
	for k := 0; ; {
		// Each fault needs its own time and the quiet after it to show
		// recovery while the load still runs: none starts near the end.
		if time.Until(deadline) < faultGap+4*time.Second {
			time.Sleep(time.Until(deadline))
			return
		}
		if !revoked && time.Now().After(revokeAt) {
			revoked = true
			if !s.revoke(deadline) {
				return
			}
		} else {
			if !steps[k%len(steps)](deadline) {
				return
			}
			k++
		}
		if !sleepUntil(time.Now().Add(faultGap), deadline) {
			return
		}
	}
}

// rotate calls Rotate on a held replica.
func rotate(client signetv1.SignerServiceClient, revoke bool) (*signetv1.RotateResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	return client.Rotate(ctx, &signetv1.RotateRequest{KeyRing: ringName, RevokePrevious: revoke})
}

func (s *soak) manualRotate(time.Time) bool {
	l, ok := s.c.random()
	if !ok {
		return true
	}
	sent := time.Now()
	resp, err := rotate(l.client, false)
	l.done()
	got := time.Now()
	s.rec.addWindow(rotationWindow{name: "manual Rotate", start: sent, end: got})
	if err != nil {
		s.rec.note(fmt.Sprintf("manual Rotate through signet-%d failed after %s: %v", l.slot, got.Sub(sent).Round(time.Millisecond), err))
		s.logf("manual Rotate through signet-%d: FAILED: %v", l.slot, err)
		return true
	}
	s.rotRTT = got.Sub(sent)
	v := resp.GetVersion()
	s.rec.version(versionRec{kid: v.GetKid(), backendID: v.GetBackendId(), created: v.GetCreatedAt().AsTime()})
	s.logf("manual Rotate through signet-%d: new kid %s (backend id %s) in %s", l.slot, short(v.GetKid()), v.GetBackendId(), s.rotRTT.Round(time.Millisecond))
	return true
}

var kmsKillActions = []string{"CreateKey", "UpdateAlias", "UpdateKeyDescription", "CreateAlias"}

// killMidRotation drains a replica, asks it to Rotate, and SIGKILLs it in
// the middle: with AWS KMS exactly after a chosen call of the rotation (the
// test server's kill hook), otherwise after a random delay within the last
// manual rotation's round trip. Then it restarts the replica.
func (s *soak) killMidRotation(time.Time) bool {
	i := rand.IntN(replicas) // #nosec G404 -- fault scheduling
	start := time.Now()
	r, client, conn := s.c.drain(i)
	if r == nil {
		return true
	}
	defer conn.Close()
	how := ""
	answered := make(chan error, 1)
	sent := time.Now()
	if s.kms != nil {
		action := kmsKillActions[s.incs[i]%len(kmsKillActions)]
		how = "after KMS " + action
		s.kms.KillAfter(action, accessKeyID(i), r.p.pid())
		go func() { _, err := rotate(client, false); answered <- err }()
		select {
		case <-r.p.done:
		case <-time.After(10 * time.Second):
			how += " (the hook did not fire: killed at 10s)"
		}
	} else {
		delay := time.Duration(rand.Int64N(int64(s.rotRTT) + 1)) // #nosec G404 -- fault scheduling
		how = fmt.Sprintf("%s after sending Rotate", delay.Round(time.Microsecond))
		go func() { _, err := rotate(client, false); answered <- err }()
		time.Sleep(delay)
	}
	_ = r.p.signal(syscall.SIGKILL)
	r.p.kill()
	killed := time.Now()
	s.c.markDown(i, killed)
	select {
	case err := <-answered:
		if err == nil {
			how += "; the Rotate had already answered"
		} else {
			how += "; the Rotate got no answer"
		}
	case <-time.After(2 * time.Second):
		how += "; the Rotate got no answer"
	}
	// A rotation's backend call may still land after the kill (Vault
	// finishes a request whose client died): the window runs a second past.
	s.rec.addWindow(rotationWindow{name: "Rotate killed", start: sent, end: killed.Add(time.Second)})
	time.Sleep(time.Second)
	err := s.start(i)
	s.rec.addFault(fault{name: fmt.Sprintf("SIGKILL signet-%d mid-rotation", i), start: start, end: time.Now()})
	s.logf("SIGKILL signet-%d mid-rotation (%s); restarted in %s", i, how, time.Since(killed).Round(time.Millisecond))
	if err != nil {
		s.rec.note(fmt.Sprintf("restarting signet-%d failed: %v", i, err))
		return false
	}
	return true
}

// killAtScheduledRotation SIGKILLs a replica just as the scheduled rotation
// fires (the newest version's creation + rotation_period), when all three
// replicas wake to rotate and race for the one version of the period.
func (s *soak) killAtScheduledRotation(deadline time.Time) bool {
	newest := s.newestCreated()
	if newest.IsZero() {
		return true
	}
	boundary := newest.Add(rotationPeriod)
	for time.Until(boundary) < 1500*time.Millisecond {
		boundary = boundary.Add(rotationPeriod) // missed this one; the next (if no manual rotation comes between, none does)
	}
	// It ends a second after the boundary plus the restart: leave the load
	// time to see the restarted replica sign.
	if !sleepUntil(boundary.Add(-time.Second), deadline.Add(-faultGap)) {
		return false
	}
	i := rand.IntN(replicas) // #nosec G404 -- fault scheduling
	start := time.Now()
	r, _, conn := s.c.drain(i)
	if r == nil {
		return true
	}
	_ = conn.Close()
	delay := time.Duration(rand.Int64N(int64(30 * time.Millisecond))) // #nosec G404 -- fault scheduling
	time.Sleep(time.Until(boundary.Add(delay)))
	r.p.kill()
	killed := time.Now()
	s.c.markDown(i, killed)
	time.Sleep(time.Second)
	err := s.start(i)
	s.rec.addFault(fault{name: fmt.Sprintf("SIGKILL signet-%d at the scheduled rotation", i), start: start, end: time.Now()})
	s.logf("SIGKILL signet-%d %s after the scheduled rotation was due; restarted in %s", i, killed.Sub(boundary).Round(time.Millisecond), time.Since(killed).Round(time.Millisecond))
	if err != nil {
		s.rec.note(fmt.Sprintf("restarting signet-%d failed: %v", i, err))
		return false
	}
	return true
}

func (s *soak) newestCreated() time.Time {
	s.rec.mu.Lock()
	defer s.rec.mu.Unlock()
	var newest time.Time
	for _, v := range s.rec.versions {
		if !v.revoked && v.created.After(newest) {
			newest = v.created
		}
	}
	return newest
}

func (s *soak) freezeVault(time.Time) bool {
	p := s.vault.proc()
	start := time.Now()
	if err := p.signal(syscall.SIGSTOP); err != nil {
		s.rec.note("SIGSTOP vault: " + err.Error())
		return false
	}
	time.Sleep(3 * time.Second)
	if err := p.signal(syscall.SIGCONT); err != nil {
		s.rec.note("SIGCONT vault: " + err.Error())
		return false
	}
	s.rec.addFault(fault{name: "Vault frozen (SIGSTOP 3s)", start: start, end: time.Now(), backend: true})
	s.logf("Vault frozen with SIGSTOP for 3s, thawed")
	return true
}

func (s *soak) killVault(time.Time) bool {
	start := time.Now()
	s.vault.stop()
	time.Sleep(2 * time.Second)
	err := s.vault.restart()
	s.rec.addFault(fault{name: "Vault SIGKILLed, restarted, unsealed", start: start, end: time.Now(), backend: true})
	if err != nil {
		s.rec.note("restarting vault: " + err.Error())
		s.logf("Vault restart FAILED: %v", err)
		return false
	}
	s.logf("Vault SIGKILLed, restarted and unsealed after %s", time.Since(start).Round(time.Millisecond))
	return true
}

// revoke is the emergency rotation: Rotate --revoke-previous through one
// replica. Tokens of the revoked kids are expected to fail from now on.
func (s *soak) revoke(time.Time) bool {
	l, ok := s.c.random()
	if !ok {
		return true
	}
	sent := time.Now()
	resp, err := rotate(l.client, true)
	l.done()
	got := time.Now()
	s.rec.addWindow(rotationWindow{name: "Rotate --revoke-previous", start: sent, end: got})
	// No version signs until every replica can have published the new one
	// (2 × refresh_interval after its creation): Sign answers Unavailable
	// meanwhile, which the fault window counts.
	s.rec.addFault(fault{name: "Rotate --revoke-previous", start: sent, end: got})
	if err != nil {
		s.rec.note(fmt.Sprintf("Rotate --revoke-previous through signet-%d failed: %v", l.slot, err))
		s.logf("Rotate --revoke-previous: FAILED: %v", err)
		return true
	}
	v := resp.GetVersion()
	s.rec.version(versionRec{kid: v.GetKid(), backendID: v.GetBackendId(), created: v.GetCreatedAt().AsTime(), emergency: true})
	rv := revokeRec{sent: sent, answered: got, newKid: v.GetKid()}
	for _, k := range resp.GetRevoked() {
		rv.kids = append(rv.kids, k.GetKid())
		s.rec.version(versionRec{kid: k.GetKid(), backendID: k.GetBackendId(), created: k.GetCreatedAt().AsTime(), revoked: true})
	}
	s.rec.addRevoke(rv)
	s.later.Add(1)
	go func() { defer s.later.Done(); s.recheckRevoked(rv) }()
	s.logf("Rotate --revoke-previous through signet-%d: new kid %s, %d revoked, in %s", l.slot, short(v.GetKid()), len(rv.kids), got.Sub(sent).Round(time.Millisecond))
	return true
}

// recheckRevoked presents the tokens of the revoked kids again once every
// cache that honours Cache-Control must have dropped them: jwks_max_age
// after every replica's JWKS dropped them (propagationBound), and a second
// for the cache's own timer. Each jwx cache must not hold a revoked kid
// then; the tokens count as revoked and rejected.
// (go-oidc's RemoteKeySet and PyJWKClient keep keys until an unknown kid or
// 300 s: they may still accept them, as they would in production.)
func (s *soak) recheckRevoked(rv revokeRec) {
	time.Sleep(time.Until(rv.answered.Add(jwksMaxAge + propagationBound + time.Second)))
	revoked := map[string]bool{}
	for _, k := range rv.kids {
		revoked[k] = true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range s.gv.jwx {
		set, err := s.gv.jwx[i].Lookup(ctx, s.gv.url)
		if err != nil {
			s.rec.note(fmt.Sprintf("%s: reading its cached JWKS after the revocation: %v", verifierNames[vJWXA+i], err))
			return
		}
		for k := range revoked {
			if _, ok := set.LookupKeyID(k); ok {
				s.rec.note(fmt.Sprintf("%s still trusted revoked kid %s %s after the revocation (jwks_max_age %s)",
					verifierNames[vJWXA+i], short(k), time.Since(rv.answered).Round(time.Millisecond), jwksMaxAge))
			}
		}
	}
	s.rec.mu.Lock()
	defer s.rec.mu.Unlock()
	n := 0
	for _, t := range s.rec.tokens {
		if revoked[t.kid] {
			t.revokedLater = true
			n++
		}
	}
	s.logf("%d tokens of the revoked kids: every jwx cache dropped the kids %s after the revocation", n, time.Since(rv.answered).Round(time.Millisecond))
}

func short(kid string) string {
	if len(kid) > 10 {
		return kid[:10]
	}
	return kid
}

// finalChecks waits for crash recovery to have converged (2 ×
// backend_timeout + 2 × refresh_interval after the last fault, and a
// second more), then asks for leftovers, and checks that the three
// replicas list the same versions in the same states.
func (s *soak) finalChecks() (leftovers []*signetv1.Leftover, agree string) {
	s.rec.mu.Lock()
	last := time.Time{}
	for _, f := range s.rec.faults {
		if f.end.After(last) {
			last = f.end
		}
	}
	s.rec.mu.Unlock()
	time.Sleep(time.Until(last.Add(2*backendTimeout + 2*refreshInterval + time.Second)))
	s.listKeys(context.Background())
	if l, ok := s.c.random(); ok {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		resp, err := l.client.ListKeys(ctx, &signetv1.ListKeysRequest{KeyRing: ringName, Leftovers: true})
		cancel()
		l.done()
		if err != nil {
			s.rec.note("ListKeys with leftovers: " + err.Error())
		}
		leftovers = resp.GetLeftovers()
	}
	// States change at boundaries (a version activating or retiring), so
	// a disagreement is only one if it lasts: three tries a refresh apart.
	for try := 0; try < 3; try++ {
		var lists []string
		for i := range replicas {
			l, ok := s.c.acquire(i)
			if !ok {
				lists = append(lists, "down")
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			resp, err := l.client.ListKeys(ctx, &signetv1.ListKeysRequest{KeyRing: ringName})
			cancel()
			l.done()
			if err != nil {
				lists = append(lists, "error: "+err.Error())
				continue
			}
			var vs []string
			for _, v := range resp.GetVersions() {
				vs = append(vs, short(v.GetKid())+"="+v.GetState().String())
			}
			sort.Strings(vs)
			lists = append(lists, fmt.Sprint(vs))
		}
		if lists[0] == lists[1] && lists[1] == lists[2] {
			return leftovers, ""
		}
		agree = fmt.Sprintf("signet-0 %s; signet-1 %s; signet-2 %s", lists[0], lists[1], lists[2])
		time.Sleep(refreshInterval)
	}
	return leftovers, agree
}
