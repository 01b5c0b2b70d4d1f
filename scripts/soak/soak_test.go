package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testWriter sends the soak's lines to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestSoak is the bounded soak that `make test` runs on every change: three
// replicas of bin/signet on a file-storage Vault for 70s with every fault,
// then on the AWS KMS test server and on one shared local directory for 30s
// each. `make soak` runs the same for longer. It fails on any broken
// invariant, printing the report.
func TestSoak(t *testing.T) {
	signet := os.Getenv("SIGNET_BIN")
	vault := os.Getenv("SIGNET_VAULT_BIN")
	if signet == "" || vault == "" {
		t.Fatal("SIGNET_BIN and SIGNET_VAULT_BIN must name bin/signet and bin/vault: run `make test` (it builds both)")
	}
	for _, bin := range []string{signet, vault} {
		if _, err := os.Stat(bin); err != nil { // #nosec G703 -- the test run names its binaries
			t.Fatalf("%v: run `make build bin/vault`", err)
		}
	}
	o := options{signet: signet, vault: vault, python: "/usr/bin/python3", rate: 40, concurrency: 8, out: testWriter{t}}
	plan := []plannedRun{{"vault", 70 * time.Second}, {"awskms", 30 * time.Second}, {"local", 30 * time.Second}}
	dir := t.TempDir()
	reports, err := soakAll(o, dir, plan)
	for _, r := range reports {
		r.print(testWriter{t})
	}
	if err != nil {
		t.Fatal(err)
	}
	total := combine(reports)
	t.Log(total.summary("soak"))
	for _, v := range total.violations {
		t.Errorf("invariant broken: %s", v)
	}
	for _, r := range reports {
		if r.issued == 0 || r.periods == 0 {
			t.Errorf("%s: %d tokens, %d scheduled periods: the soak did not run", r.backend, r.issued, r.periods)
		}
	}
	if t.Failed() {
		t.Logf("the processes' logs were in %s", filepath.Join(dir, "BACKEND"))
	}
}

var at0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Two versions for one period (the Vault race the soak found) are an extra
// version; one made by a rotation the soak asked for is not.
func TestPeriodsFindAnExtraVersion(t *testing.T) {
	rec := newRecorder()
	for i, off := range []time.Duration{0, 10 * time.Second, 10*time.Second + 6*time.Millisecond, 15 * time.Second, 25 * time.Second} {
		kid := string(rune('a' + i))
		rec.versions[kid] = &versionRec{kid: kid, created: at0.Add(off)}
	}
	rec.windows = []rotationWindow{{name: "manual Rotate", start: at0.Add(15 * time.Second), end: at0.Add(15*time.Second + 20*time.Millisecond)}}
	r := &report{}
	checkPeriods(r, rec, [replicas][]incarnation{})
	if r.periods != 3 || r.extra != 1 || r.late != 0 || len(r.violations) != 1 {
		t.Errorf("periods %d extra %d late %d violations %v; want 3, 1, 0 and one", r.periods, r.extra, r.late, r.violations)
	}
}

// A late period counts only when no fault was in force.
func TestPeriodsLateUnlessAFault(t *testing.T) {
	rec := newRecorder()
	rec.versions["a"] = &versionRec{kid: "a", created: at0}
	rec.versions["b"] = &versionRec{kid: "b", created: at0.Add(15 * time.Second)}
	r := &report{}
	checkPeriods(r, rec, [replicas][]incarnation{})
	if r.late != 1 {
		t.Errorf("late %d, want 1", r.late)
	}
	rec.faults = []fault{{name: "Vault frozen", start: at0.Add(9 * time.Second), end: at0.Add(12 * time.Second), backend: true}}
	r = &report{}
	checkPeriods(r, rec, [replicas][]incarnation{})
	if r.late != 0 || len(r.violations) != 0 {
		t.Errorf("late %d violations %v with a fault in force, want none", r.late, r.violations)
	}
}

// Propagation is held to refresh_interval + the margin for every replica
// that was up, and a revoked kid seen again after it left is a violation.
func TestPropagationAndRevocation(t *testing.T) {
	rec := newRecorder()
	rec.stopped = at0.Add(time.Minute)
	rec.versions["old"] = &versionRec{kid: "old", created: at0.Add(-time.Hour), first: true}
	rec.versions["new"] = &versionRec{kid: "new", created: at0}
	hist := [replicas][]incarnation{{{n: 1, up: at0.Add(-time.Hour)}}, {{n: 1, up: at0.Add(-time.Hour)}}, {{n: 1, up: at0.Add(-time.Hour)}}}
	poll := func(slot int, at time.Duration, kids ...string) {
		rec.polls = append(rec.polls, pollRec{slot: slot, incarnation: 1, sent: at0.Add(at - 10*time.Millisecond), got: at0.Add(at), kids: kids})
	}
	poll(0, 100*time.Millisecond, "old", "new")
	poll(1, 900*time.Millisecond, "old", "new")
	poll(2, 2500*time.Millisecond, "old", "new") // too slow
	rec.revokes = []revokeRec{{sent: at0.Add(5 * time.Second), answered: at0.Add(5100 * time.Millisecond), kids: []string{"old"}}}
	poll(0, 5200*time.Millisecond, "new")
	poll(0, 5300*time.Millisecond, "old", "new") // back again
	poll(1, 5900*time.Millisecond, "new")
	poll(2, 6000*time.Millisecond, "new")
	r := &report{}
	checkPropagation(r, rec, hist)
	if r.propMax != 2500*time.Millisecond {
		t.Errorf("max propagation %s, want 2.5s", r.propMax)
	}
	joined := strings.Join(r.violations, "\n")
	if !strings.Contains(joined, "took 2.5s") || !strings.Contains(joined, "still in signet-0's JWKS") {
		t.Errorf("violations:\n%s\nwant the slow replica and the revoked kid seen again", joined)
	}
}

// Tokens of revoked kids that a verifier rejects are counted apart; any
// other rejection is a failure.
func TestTokensCountRevokedSeparately(t *testing.T) {
	rec := newRecorder()
	rec.versions["a"] = &versionRec{kid: "a", created: at0.Add(-time.Hour), first: true}
	rec.versions["b"] = &versionRec{kid: "b", created: at0.Add(-time.Minute)}
	rec.revokes = []revokeRec{{answered: at0, kids: []string{"a"}}}
	all := func(ok bool) [numVerifiers]verdict {
		var v [numVerifiers]verdict
		for i := range v {
			v[i] = verdict{done: true, ok: ok}
		}
		return v
	}
	oneFails := all(true)
	oneFails[vPyJWT] = verdict{done: true, why: "kid not found"}
	rec.tokens = []*tokenRec{
		{kid: "a", start: at0.Add(-time.Second), signed: at0.Add(-time.Second), iat: at0.Add(-time.Second).Unix(), verdicts: all(true)},
		{kid: "a", start: at0.Add(-time.Second), signed: at0.Add(-time.Second), iat: at0.Add(-time.Second).Unix(), verdicts: oneFails},
		{kid: "b", signed: at0, iat: at0.Unix(), verdicts: all(true)},
		{kid: "b", signed: at0, iat: at0.Unix(), verdicts: oneFails},
	}
	r := &report{}
	checkTokens(r, rec, &goVerifiers{})
	if r.issued != 4 || r.verified != 2 || r.revoked != 1 || r.failed != 1 {
		t.Errorf("issued %d verified %d revoked %d failed %d, want 4, 2, 1, 1", r.issued, r.verified, r.revoked, r.failed)
	}
	// A token of a revoked kid from a Sign made after the revocation answered.
	rec.tokens = append(rec.tokens, &tokenRec{kid: "a", start: at0.Add(time.Millisecond), signed: at0.Add(2 * time.Millisecond), iat: at0.Unix(), verdicts: all(true)})
	r = &report{}
	checkTokens(r, rec, &goVerifiers{})
	if !strings.Contains(strings.Join(r.violations, "\n"), "after the revocation answered") {
		t.Errorf("violations %v, want the token signed after the revocation", r.violations)
	}
}
