package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"google.golang.org/grpc/codes"

	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
)

// report is one backend's result: the figures, and the invariants broken.
type report struct {
	backend                           string
	duration                          time.Duration
	issued, verified, failed, revoked int
	periods, extra, late              int
	fetches, fetchOK                  int
	propMax, dropMax                  time.Duration
	unexpectedSignErrors              int
	lines                             []string
	violations                        []string
}

func (r *report) addf(format string, args ...any) {
	r.lines = append(r.lines, fmt.Sprintf(format, args...))
}

func (r *report) violate(format string, args ...any) {
	r.violations = append(r.violations, fmt.Sprintf(format, args...))
}

// summary is the report's last line.
func (r *report) summary(label string) string {
	result := "PASS"
	if len(r.violations) > 0 {
		result = "FAIL"
	}
	return fmt.Sprintf("%s: issued=%d verified=%d failed=%d revoked_failed=%d periods=%d extra_versions=%d jwks_availability=%s%% "+
		"late_periods=%d max_propagation=%s max_revoke_drop=%s unexpected_sign_errors=%d violations=%d backend=%s duration=%s result=%s",
		label, r.issued, r.verified, r.failed, r.revoked, r.periods, r.extra, pct(r.fetchOK, r.fetches),
		r.late, r.propMax.Round(time.Millisecond), r.dropMax.Round(time.Millisecond), r.unexpectedSignErrors,
		len(r.violations), r.backend, r.duration.Round(time.Second), result)
}

func pct(n, of int) string {
	if of == 0 {
		return "0"
	}
	if n == of {
		return "100"
	}
	return fmt.Sprintf("%.3f", 100*float64(n)/float64(of))
}

func (r *report) print(w io.Writer) {
	for _, l := range r.lines {
		fmt.Fprintf(w, "soak[%s] %s\n", r.backend, l)
	}
	for _, v := range r.violations {
		fmt.Fprintf(w, "soak[%s] INVARIANT BROKEN: %s\n", r.backend, v)
	}
	fmt.Fprintln(w, r.summary("soak["+r.backend+"]"))
}

// propagationBound is the most a change may take to reach every replica.
const propagationBound = refreshInterval + propagationMargin

// emergencyDelay is when an emergency rotation's version starts signing
// after its creation: 2 × refresh_interval, when every replica publishes it.
const emergencyDelay = 2 * refreshInterval

func analyze(s *soak, elapsed time.Duration, leftovers []*signetv1.Leftover, disagreement string, gv *goVerifiers) *report {
	rec := s.rec
	rec.mu.Lock()
	defer rec.mu.Unlock()
	r := &report{backend: s.o.backend, duration: elapsed}
	hist := s.c.histories()
	r.addf("policy: jwks_max_age=%s refresh_interval=%s publish_ahead=%s token_ttl=%s retire_after=%s rotation_period=%s backend_timeout=%s; propagation bound refresh_interval+%s=%s",
		jwksMaxAge, refreshInterval, publishAhead, tokenTTL, retireAfter, rotationPeriod, backendTimeout, propagationMargin, propagationBound)
	checkFaultLog(r, rec)
	checkPeriods(r, rec, hist) // marks the first version, which checkTokens excepts
	checkTokens(r, rec, gv)
	checkSigns(r, rec, s, hist)
	checkPropagation(r, rec, hist)
	checkJWKS(r, rec)
	for _, l := range leftovers {
		r.addf("leftover: %s %s (%s)", l.GetBackendId(), l.GetKind(), l.GetState())
		if !strings.Contains(l.GetState(), "scheduled for deletion") {
			r.violate("leftover not cleaned up %s after the last fault: %s %s (%s)", 2*backendTimeout+2*refreshInterval, l.GetBackendId(), l.GetKind(), l.GetState())
		}
	}
	r.addf("leftovers after convergence: %d", len(leftovers))
	if disagreement != "" {
		r.violate("the replicas list different versions or states: %s", disagreement)
	} else {
		r.addf("the three replicas list the same versions in the same states")
	}
	for _, n := range rec.notes {
		r.violate("%s", n)
	}
	checkLogs(r, s)
	return r
}

func checkFaultLog(r *report, rec *recorder) {
	counts := map[string]int{}
	for _, f := range rec.faults {
		name := f.name
		if i := strings.Index(name, "signet-"); i >= 0 {
			name = name[:i] + "signet-N" + name[i+len("signet-0"):]
		}
		counts[name]++
	}
	for _, w := range rec.windows {
		if w.name == "manual Rotate" {
			counts["manual Rotate"]++
		}
	}
	var names []string
	for n := range counts {
		names = append(names, n)
	}
	sort.Strings(names)
	var parts []string
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%s ×%d", n, counts[n]))
	}
	r.addf("faults injected: %s", strings.Join(parts, ", "))
}

// revokedKids maps each revoked kid to when its revocation answered.
func revokedKids(rec *recorder) map[string]time.Time {
	out := map[string]time.Time{}
	for _, rv := range rec.revokes {
		for _, k := range rv.kids {
			out[k] = rv.answered
		}
	}
	return out
}

func checkTokens(r *report, rec *recorder, gv *goVerifiers) {
	revoked := revokedKids(rec)
	var perOK, perFail [numVerifiers]int
	var examples []string
	early, afterRevoke, unknown := 0, 0, 0
	for _, t := range rec.tokens {
		r.issued++
		all := true
		for i, v := range t.verdicts {
			switch {
			case !v.done:
				all = false
				perFail[i]++
				v.why = "no verdict"
			case v.ok:
				perOK[i]++
			default:
				all = false
				perFail[i]++
			}
			if (!v.done || !v.ok) && len(examples) < 8 {
				if _, rv := revoked[t.kid]; !rv {
					examples = append(examples, fmt.Sprintf("%s rejected a token of kid %s from signet-%d signed %s: %s",
						verifierNames[i], short(t.kid), t.slot, t.signed.UTC().Format("15:04:05.000"), v.why))
				}
			}
		}
		_, isRevoked := revoked[t.kid]
		switch {
		case isRevoked && (!all || t.revokedLater):
			r.revoked++
		case all:
			r.verified++
		default:
			r.failed++
		}
		if at, ok := revoked[t.kid]; ok && t.start.After(at) {
			afterRevoke++ // the backend had disabled it when the call was made
		}
		v := rec.versions[t.kid]
		if v == nil {
			unknown++
			continue
		}
		if v.first {
			continue
		}
		wait := publishAhead
		if v.emergency {
			wait = emergencyDelay
		}
		if act := v.created.Add(wait); t.iat < act.Unix() || t.signed.Before(act) {
			early++
			if early <= 3 {
				r.violate("kid %s (created %s) signed a token at %s (iat %d), before its %s had passed",
					short(t.kid), v.created.UTC().Format("15:04:05.000"), t.signed.UTC().Format("15:04:05.000"), t.iat, wait)
			}
		}
	}
	for i := range numVerifiers {
		extra := ""
		if i <= vJWXB {
			extra = fmt.Sprintf(", %d refetches on an unknown kid", gv.jwxRefresh[i].Load())
		}
		r.addf("verifier %-8s accepted %d, rejected %d%s", verifierNames[i], perOK[i], perFail[i], extra)
	}
	r.addf("tokens: issued %d, verified by all four %d, failed %d, of revoked kids and rejected %d", r.issued, r.verified, r.failed, r.revoked)
	if r.failed > 0 {
		r.violate("%d tokens failed verification outside the revoked set, e.g. %s", r.failed, strings.Join(examples, "; "))
	}
	if r.issued == 0 {
		r.violate("no token was issued")
	}
	if early > 0 {
		r.violate("%d tokens signed before their kid's publish_ahead passed", early)
	} else {
		r.addf("publish_ahead: no token signed by a kid before created+%s (the emergency version: created+%s; the first: at once)", publishAhead, emergencyDelay)
	}
	if unknown > 0 {
		r.violate("%d tokens carry a kid that ListKeys never listed", unknown)
	}
	if afterRevoke > 0 {
		r.violate("%d tokens signed by a revoked kid in Sign calls made after the revocation answered", afterRevoke)
	}
}

// liveAt says whether slot's incarnation was up at t, and which.
func liveAt(h []incarnation, t time.Time) (incarnation, bool) {
	for _, in := range h {
		if !in.up.After(t) && (in.down.IsZero() || in.down.After(t)) {
			return in, true
		}
	}
	return incarnation{}, false
}

func checkSigns(r *report, rec *recorder, s *soak, hist [replicas][]incarnation) {
	signs := append([]signRec(nil), rec.signs...)
	sort.Slice(signs, func(i, j int) bool { return signs[i].start.Before(signs[j].start) })
	ok := 0
	var lat []time.Duration
	for _, sg := range signs {
		if sg.code == codes.OK {
			ok++
			lat = append(lat, sg.end.Sub(sg.start))
		}
	}
	r.addf("Sign: %d calls, %d OK (%s%%), %d ticks skipped at the concurrency bound, %d with no live replica; latency of OK calls p50 %s p99 %s max %s (figures, not checks)",
		len(signs), ok, pct(ok, len(signs)), s.skipped, s.noRep, quantile(lat, 0.5), quantile(lat, 0.99), quantile(lat, 1))
	// Each fault's window runs from its start until every live replica has
	// signed again after its end.
	type window struct{ start, end time.Time }
	var windows []window
	for _, f := range rec.faults {
		var n, okN, unavail, deadline, other int
		recovered := f.end
		notRecovered := []string{}
		for slot := range replicas {
			if _, live := liveAt(hist[slot], f.end); !live {
				continue
			}
			first := time.Time{}
			for _, sg := range signs {
				if sg.slot == slot && sg.code == codes.OK && !sg.start.Before(f.end) {
					first = sg.end
					break
				}
			}
			switch {
			case first.IsZero() && rec.stopped.Sub(f.end) < minObserved:
				// The load stopped too soon after the fault to tell.
			case first.IsZero() || first.Sub(f.end) > settle:
				notRecovered = append(notRecovered, fmt.Sprintf("signet-%d", slot))
			case first.After(recovered):
				recovered = first
			}
		}
		for _, sg := range signs {
			if sg.end.Before(f.start) || sg.start.After(recovered) {
				continue // a call in flight when the fault began is in its window
			}
			n++
			switch sg.code {
			case codes.OK:
				okN++
			case codes.Unavailable:
				unavail++
			case codes.DeadlineExceeded:
				deadline++
			default:
				other++
			}
		}
		windows = append(windows, window{f.start, recovered})
		r.addf("fault %q at %s for %s: %d Signs in the window, %d OK, %d Unavailable (%s%%), %d DeadlineExceeded, %d other; signing recovered on every live replica %s after it ended",
			f.name, f.start.UTC().Format("15:04:05.000"), f.end.Sub(f.start).Round(time.Millisecond), n, okN, unavail, pct(unavail, n), deadline, other, recovered.Sub(f.end).Round(time.Millisecond))
		if len(notRecovered) > 0 {
			r.violate("after %q, %s did not sign again within %s", f.name, strings.Join(notRecovered, ", "), settle)
		}
	}
	var examples []string
	for _, sg := range signs {
		if sg.code == codes.OK {
			continue
		}
		in := false
		for _, w := range windows {
			if !sg.end.Before(w.start) && !sg.start.After(w.end) {
				in = true
				break
			}
		}
		if !in {
			r.unexpectedSignErrors++
			if len(examples) < 5 {
				examples = append(examples, fmt.Sprintf("%s signet-%d %s: %s", sg.start.UTC().Format("15:04:05.000"), sg.slot, sg.code, sg.msg))
			}
		}
	}
	if r.unexpectedSignErrors > 0 {
		r.violate("%d Sign errors outside any fault window: %s", r.unexpectedSignErrors, strings.Join(examples, "; "))
	}
}

// minObserved is how long the load must have run after a fault for its
// recovery to be judged; the fault schedule leaves more than that.
const minObserved = 3 * time.Second

func quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(q * float64(len(s)-1))
	return s[i].Round(100 * time.Microsecond)
}

func inWindow(t time.Time, ws []rotationWindow) bool {
	for _, w := range ws {
		if !t.Before(w.start.Add(-50*time.Millisecond)) && !t.After(w.end.Add(50*time.Millisecond)) {
			return true
		}
	}
	return false
}

// faultOverlaps says whether a fault (any, or only backend faults) was in
// force at some point of [from, to].
func faultOverlaps(faults []fault, from, to time.Time, backendOnly bool) bool {
	for _, f := range faults {
		if backendOnly && !f.backend {
			continue
		}
		if !f.start.After(to) && !f.end.Before(from) {
			return true
		}
	}
	return false
}

// recoveryReach is how long after a fault an interrupted rotation may still
// hold up the next one: a live replica acts on a dead one's rotation lock
// after seeing it for 2 × backend_timeout, at a refresh.
const recoveryReach = 2*backendTimeout + 2*refreshInterval

// lateBound is how late a scheduled rotation may come: the rotation is a
// backend call or a few, made when the period is up.
const lateBound = refreshInterval + propagationMargin

// checkPeriods: the versions in creation order. One made while a rotation
// the soak asked for was under way is manual; any other is scheduled and
// must come one rotation_period after the version before it: sooner is an
// extra version (two replicas rotating for one period), much later a
// missed period (unless a fault was in force).
func checkPeriods(r *report, rec *recorder, hist [replicas][]incarnation) {
	vs := make([]*versionRec, 0, len(rec.versions))
	for _, v := range rec.versions {
		vs = append(vs, v)
	}
	sort.Slice(vs, func(i, j int) bool { return vs[i].created.Before(vs[j].created) })
	if len(vs) == 0 {
		r.violate("ListKeys never listed a version")
		return
	}
	vs[0].first = true
	manual := 0
	var gaps []time.Duration
	for i := 1; i < len(vs); i++ {
		v, prev := vs[i], vs[i-1]
		if v.emergency || inWindow(v.created, rec.windows) {
			manual++
			continue
		}
		r.periods++
		gap := v.created.Sub(prev.created)
		gaps = append(gaps, gap)
		due := prev.created.Add(rotationPeriod)
		switch {
		case gap < rotationPeriod-50*time.Millisecond:
			r.extra++
			r.violate("extra version: kid %s created %s, only %s after kid %s: more than one version for the period",
				short(v.kid), v.created.UTC().Format("15:04:05.000"), gap.Round(time.Millisecond), short(prev.kid))
		case gap > rotationPeriod+lateBound && !faultOverlaps(rec.faults, due.Add(-recoveryReach), v.created, false):
			r.late++
			r.violate("late period: kid %s created %s after kid %s, with no fault in force", short(v.kid), gap.Round(time.Millisecond), short(prev.kid))
		}
	}
	r.addf("versions: %d, the first at startup, %d from rotations the soak asked for (manual, killed, emergency), %d scheduled periods; scheduled gaps min %s max %s (rotation_period %s)",
		len(vs), manual, r.periods, quantile(gaps, 0), quantile(gaps, 1), rotationPeriod)
	r.addf("versions per scheduled period: exactly one in %d of %d periods (extra %d, late %d)", r.periods-r.extra, r.periods, r.extra, r.late)
}

// checkPropagation: for each version after the first, how long from its
// creation (the backend's time) until every replica that was up at the time
// served it in its JWKS; for each revoked kid, how long from the revocation's
// answer until none did.
func checkPropagation(r *report, rec *recorder, hist [replicas][]incarnation) {
	type key struct{ slot, inc int }
	polls := map[key][]pollRec{}
	for _, p := range rec.polls {
		k := key{p.slot, p.incarnation}
		polls[k] = append(polls[k], p)
	}
	for _, ps := range polls {
		sort.Slice(ps, func(i, j int) bool { return ps[i].sent.Before(ps[j].sent) })
	}
	has := func(p pollRec, kid string) bool {
		for _, k := range p.kids {
			if k == kid {
				return true
			}
		}
		return false
	}
	var props, exempt []time.Duration
	for _, v := range rec.versions {
		if v.first || v.created.After(rec.stopped.Add(-propagationBound)) {
			continue // the pollers stopped before it had time to spread
		}
		worst, measured, missing := time.Duration(0), false, []string{}
		for slot := range replicas {
			in, live := liveAt(hist[slot], v.created)
			if !live {
				continue
			}
			seen := time.Time{}
			for _, p := range polls[key{slot, in.n}] {
				if !p.got.Before(v.created) && has(p, v.kid) {
					seen = p.got
					break
				}
			}
			if seen.IsZero() {
				if !v.revoked && (in.down.IsZero() || in.down.Sub(v.created) > propagationBound) {
					missing = append(missing, fmt.Sprintf("signet-%d", slot))
				}
				continue
			}
			measured = true
			if d := seen.Sub(v.created); d > worst {
				worst = d
			}
		}
		if len(missing) > 0 {
			r.violate("kid %s (created %s) never appeared in the JWKS of %s", short(v.kid), v.created.UTC().Format("15:04:05.000"), strings.Join(missing, ", "))
		}
		if !measured {
			continue
		}
		if faultOverlaps(rec.faults, v.created, v.created.Add(propagationBound), true) {
			exempt = append(exempt, worst)
			continue
		}
		props = append(props, worst)
		if worst > r.propMax {
			r.propMax = worst
		}
		if worst > propagationBound {
			r.violate("kid %s took %s from creation to every replica's JWKS (bound %s)", short(v.kid), worst.Round(time.Millisecond), propagationBound)
		}
	}
	r.addf("propagation, creation to all replicas' JWKS: %d versions, p50 %s p95 %s max %s (bound %s); %d more while the backend was down or frozen, max %s (not held to the bound)",
		len(props), quantile(props, 0.5), quantile(props, 0.95), quantile(props, 1), propagationBound, len(exempt), quantile(exempt, 1))
	var drops []time.Duration
	for _, rv := range rec.revokes {
		for _, kid := range rv.kids {
			worst := time.Duration(0)
			for slot := range replicas {
				in, live := liveAt(hist[slot], rv.answered)
				if !live {
					continue
				}
				gone := time.Time{}
				for _, p := range polls[key{slot, in.n}] {
					if p.sent.Before(rv.answered) {
						continue
					}
					if !has(p, kid) {
						if gone.IsZero() {
							gone = p.got
						}
						continue
					}
					if !gone.IsZero() || p.sent.After(rv.answered.Add(propagationBound)) {
						r.violate("revoked kid %s still in signet-%d's JWKS at %s (%s after the revocation)", short(kid), slot,
							p.got.UTC().Format("15:04:05.000"), p.got.Sub(rv.answered).Round(time.Millisecond))
						break
					}
				}
				if !gone.IsZero() && gone.Sub(rv.answered) > worst {
					worst = gone.Sub(rv.answered)
				}
			}
			drops = append(drops, worst)
			if worst > r.dropMax {
				r.dropMax = worst
			}
		}
		r.addf("revocation answered at %s after %s: %d kids revoked, new kid %s", rv.answered.UTC().Format("15:04:05.000"),
			rv.answered.Sub(rv.sent).Round(time.Millisecond), len(rv.kids), short(rv.newKid))
	}
	r.addf("revocation, answer to gone from every replica's JWKS: %d kids, max %s (bound %s)", len(drops), quantile(drops, 1), propagationBound)
	if r.dropMax > propagationBound {
		r.violate("a revoked kid took %s to leave every replica's JWKS (bound %s)", r.dropMax.Round(time.Millisecond), propagationBound)
	}
}

func checkJWKS(r *report, rec *recorder) {
	by := map[string][2]int{}
	var examples []string
	for _, f := range rec.fetches {
		c := by[f.via]
		c[1]++
		r.fetches++
		if f.code == 200 || f.code == 304 {
			c[0]++
			r.fetchOK++
		} else if len(examples) < 5 {
			examples = append(examples, fmt.Sprintf("%s %s signet-%d: %d %s", f.at.UTC().Format("15:04:05.000"), f.via, f.slot, f.code, f.err))
		}
		by[f.via] = c
	}
	r.addf("JWKS fetches answered 200/304 by live replicas: %d of %d (%s%%): pollers %d/%d, verifiers through the front %d/%d",
		r.fetchOK, r.fetches, pct(r.fetchOK, r.fetches), by["poll"][0], by["poll"][1], by["front"][0], by["front"][1])
	if r.fetchOK != r.fetches {
		r.violate("%d JWKS fetches not answered 200/304, e.g. %s", r.fetches-r.fetchOK, strings.Join(examples, "; "))
	}
}

// checkLogs counts the replicas' error lines; a panic breaks the run.
func checkLogs(r *report, s *soak) {
	for i := range replicas {
		b, err := os.ReadFile(filepath.Join(s.o.dir, fmt.Sprintf("signet-%d.log", i))) // #nosec G304 -- the run's own directory
		if err != nil {
			continue
		}
		errs, warns := 0, 0
		for _, l := range strings.Split(string(b), "\n") {
			switch {
			case strings.Contains(l, "level=ERROR"):
				errs++
			case strings.Contains(l, "level=WARN"):
				warns++
			}
			if strings.HasPrefix(l, "panic:") || strings.Contains(l, "fatal error:") {
				r.violate("signet-%d: %s", i, l)
			}
		}
		r.addf("signet-%d log: %d ERROR and %d WARN lines (%s)", i, errs, warns, filepath.Join(s.o.dir, fmt.Sprintf("signet-%d.log", i)))
	}
}
