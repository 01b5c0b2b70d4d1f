package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/signet-dev/signet/backends"
	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
	"github.com/signet-dev/signet/server/authz"
	"github.com/signet-dev/signet/server/config"
)

// healthOf asks the server's gRPC health service, over loopback, for
// service: its status, or the error's code.
func healthOf(t *testing.T, ts *testServer, service string) (healthpb.HealthCheckResponse_ServingStatus, codes.Code) {
	t.Helper()
	h, err := healthpb.NewHealthClient(ts.conn).Check(ctxT(t), &healthpb.HealthCheckRequest{Service: service})
	return h.GetStatus(), status.Code(err)
}

// wantHealth checks the status of each service named.
func wantHealth(t *testing.T, ts *testServer, when string, want map[string]healthpb.HealthCheckResponse_ServingStatus) {
	t.Helper()
	for service, w := range want {
		if got, code := healthOf(t, ts, service); got != w || code != codes.OK {
			t.Errorf("%s: health of %q is %v (%v), want %v", when, service, got, code, w)
		}
	}
}

// statusDoc reads and decodes /statusz.
func statusDoc(t *testing.T, ts *testServer) Status {
	t.Helper()
	var st Status
	if err := json.Unmarshal([]byte(ts.statusz(t)), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

const (
	serving    = healthpb.HealthCheckResponse_SERVING
	notServing = healthpb.HealthCheckResponse_NOT_SERVING
)

// TestRingHealth: one ring in its emergency rotation's wait, another
// signing. Each ring's health says so, the overall SignerService stays
// SERVING (one ring can sign), /statusz says why per ring, and the health
// service names no ring to a caller who does not know its name.
func TestRingHealth(t *testing.T) {
	t.Parallel()
	ts := startServer(t, testConfig(t, backends.ES256, backends.EdDSA), Options{})
	const waiting, signing = "default", "ring-eddsa"
	wantHealth(t, ts, "at start", map[string]healthpb.HealthCheckResponse_ServingStatus{
		signerServiceName: serving, ringHealthName(waiting): serving, ringHealthName(signing): serving})

	if _, err := ts.client.Rotate(ctxT(t), &signetv1.RotateRequest{KeyRing: waiting, RevokePrevious: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.client.Sign(ctxT(t), &signetv1.SignRequest{KeyRing: waiting, Audience: []string{"x"}}); status.Code(err) != codes.Unavailable {
		t.Fatalf("Sign on %s in its emergency wait: %v, want Unavailable", waiting, err)
	}
	sign(t, ts, signing)
	wantHealth(t, ts, "one ring waiting", map[string]healthpb.HealthCheckResponse_ServingStatus{
		signerServiceName: serving, ringHealthName(waiting): notServing, ringHealthName(signing): serving,
		keySetServiceName: serving, "": serving})
	for _, unknown := range []string{ringHealthName("nope"), signerServiceName + "/", ringHealthName(waiting) + "/x", "signet.v1.SignerService/DEFAULT"} {
		if got, code := healthOf(t, ts, unknown); code != codes.NotFound {
			t.Errorf("health of %q: %v (%v), want NotFound", unknown, got, code)
		}
	}
	list, err := healthpb.NewHealthClient(ts.conn).List(ctxT(t), &healthpb.HealthListRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for name := range list.GetStatuses() {
		names = append(names, name)
	}
	slices.Sort(names)
	if want := []string{"", keySetServiceName, signerServiceName}; !slices.Equal(names, want) {
		t.Errorf("health List names %q, want %q (no ring names)", names, want)
	}
	ts.readyz(t, true)

	st := statusDoc(t, ts)
	if !st.Signing || len(st.KeyRings) != 2 {
		t.Fatalf("/statusz: signing %v, %d rings", st.Signing, len(st.KeyRings))
	}
	w, s := st.KeyRings[0], st.KeyRings[1]
	if w.Health != "NOT_SERVING" || len(w.SigningProblems) != 1 || !strings.Contains(w.SigningProblems[0], "emergency rotation") {
		t.Errorf("/statusz of %s: health %q, problems %q; want NOT_SERVING and the emergency rotation's wait", w.Name, w.Health, w.SigningProblems)
	}
	if s.Health != "SERVING" || len(s.SigningProblems) != 0 {
		t.Errorf("/statusz of %s: health %q, problems %q; want SERVING", s.Name, s.Health, s.SigningProblems)
	}
}

// blockingHandler is a log handler that stops the goroutine logging the
// first "signing is not ready" record until release is closed: the moment
// between reading the signing state and publishing it.
type blockingHandler struct {
	slog.Handler
	*blockOnce
}

type blockOnce struct {
	once             sync.Once
	blocked, release chan struct{}
}

func (h blockingHandler) Handle(ctx context.Context, r slog.Record) error {
	if strings.HasPrefix(r.Message, "signing is not ready") {
		h.once.Do(func() { close(h.blocked); <-h.release })
	}
	return h.Handler.Handle(ctx, r)
}

func (h blockingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return blockingHandler{h.Handler.WithAttrs(as), h.blockOnce}
}

func (h blockingHandler) WithGroup(name string) slog.Handler {
	return blockingHandler{h.Handler.WithGroup(name), h.blockOnce}
}

// TestHealthIsTheLatestState: a Sign finds the backend down and, while
// its health update is between reading the state and publishing it,
// another Sign finds the backend up again. The status published last must
// be the one read last (SERVING); an update that read the state earlier
// must not overtake it and leave a stale NOT_SERVING.
func TestHealthIsTheLatestState(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	dir := t.TempDir()
	cfg.KeyRings[0].Backend = "flaky-test:" + dir
	cfg.BackendTimeout = config.Duration(time.Second)
	h := blockingHandler{testLogger(t).Handler(), &blockOnce{blocked: make(chan struct{}), release: make(chan struct{})}}
	ts := startServer(t, cfg, Options{Logger: slog.New(h)})
	fb := flakyAt(dir)
	released := false
	release := func() {
		if !released {
			released = true
			close(h.release)
		}
	}
	defer release()

	signed := func(done chan<- error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := ts.client.Sign(ctx, &signetv1.SignRequest{KeyRing: "default", Audience: []string{"x"}})
		done <- err
	}
	fb.down.Store(true)
	downDone := make(chan error, 1)
	go signed(downDone)
	select {
	case <-h.blocked:
	case err := <-downDone:
		t.Fatalf("the Sign that found the backend down ended (%v) without reporting the ring NOT_SERVING", err)
	case <-time.After(30 * time.Second):
		t.Fatal("no health update reported the ring NOT_SERVING")
	}
	fb.down.Store(false)
	upDone := make(chan error, 1)
	go signed(upDone)
	// Without a lock the second update publishes SERVING at once; with
	// one it waits for the first. Give it the time to get there either way.
	var upErr error
	up := false
	select {
	case upErr = <-upDone:
		up = true
	case <-time.After(2 * time.Second):
	}
	release()
	if err := <-downDone; status.Code(err) != codes.Unavailable && status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("the Sign that found the backend down: %v", err)
	}
	if !up {
		upErr = <-upDone
	}
	if upErr != nil {
		t.Fatalf("the Sign that found the backend up: %v", upErr)
	}
	wantHealth(t, ts, "after the backend answered again", map[string]healthpb.HealthCheckResponse_ServingStatus{
		signerServiceName: serving, ringHealthName("default"): serving})
}

// TestAuditOutageIsAHealthProblem: an audit log that cannot be written
// (its path now a link to /dev/full: the tests run as root, so taking
// away write permission would not stop a write) refuses Sign and makes
// SignerService and every ring NOT_SERVING, and /statusz says why. Made
// writable again, health is restored without a Sign arriving, by the
// record of the outage being written.
func TestAuditOutageIsAHealthProblem(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, backends.ES256, backends.EdDSA)
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	cfg.Audit.Path = path
	ts := startServer(t, cfg, Options{})
	sign(t, ts, "default")
	all := func(st healthpb.HealthCheckResponse_ServingStatus) map[string]healthpb.HealthCheckResponse_ServingStatus {
		return map[string]healthpb.HealthCheckResponse_ServingStatus{signerServiceName: st,
			ringHealthName("default"): st, ringHealthName("ring-eddsa"): st, keySetServiceName: serving}
	}
	wantHealth(t, ts, "before the outage", all(serving))

	replace := func(make func(string) error) {
		t.Helper()
		tmp := filepath.Join(dir, "next")
		if err := make(tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	replace(func(tmp string) error { return os.Symlink("/dev/full", tmp) })
	for _, ring := range []string{"default", "ring-eddsa"} {
		_, err := ts.client.Sign(ctxT(t), &signetv1.SignRequest{KeyRing: ring, Audience: []string{"x"}})
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("Sign(%s) with the audit log unwritable: %v, want Unavailable", ring, err)
		}
	}
	wantHealth(t, ts, "audit log unwritable", all(notServing))
	ts.readyz(t, false)
	st := statusDoc(t, ts)
	if st.Signing || !strings.Contains(st.AuditProblem, "audit log cannot be written") {
		t.Errorf("/statusz during the outage: signing %v, audit problem %q", st.Signing, st.AuditProblem)
	}
	for _, r := range st.KeyRings {
		if r.Health != "NOT_SERVING" || len(r.SigningProblems) == 0 || r.SigningProblems[0] != st.AuditProblem {
			t.Errorf("/statusz of %s during the outage: %q, %q", r.Name, r.Health, r.SigningProblems)
		}
	}

	replace(func(tmp string) error { return os.WriteFile(tmp, nil, 0o600) })
	deadline := time.Now().Add(30 * time.Second)
	for {
		if got, _ := healthOf(t, ts, signerServiceName); got == serving {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("SignerService still not SERVING 30s after the audit log was writable again; /statusz: %s", ts.statusz(t))
		}
		time.Sleep(50 * time.Millisecond)
	}
	wantHealth(t, ts, "audit log writable again", all(serving))
	if st := statusDoc(t, ts); !st.Signing || st.AuditProblem != "" {
		t.Errorf("/statusz after the outage: signing %v, audit problem %q", st.Signing, st.AuditProblem)
	}
	sign(t, ts, "default")

	// The new file begins with the record of the outage, then the Sign.
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var recs []authz.Record
	for sc := bufio.NewScanner(bytes.NewReader(data)); sc.Scan(); {
		var r authz.Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		recs = append(recs, r)
	}
	if len(recs) != 2 || recs[0].RPC != "audit" || recs[0].Outcome != "recovered" || recs[0].RefusedSigns != 2 ||
		recs[0].Unwritten != 2 || recs[0].OutageSince == "" || recs[1].RPC != "Sign" || recs[1].Outcome != "ok" {
		t.Errorf("audit file after the outage:\n%s\nwant the outage's record (2 Signs refused), then the Sign", data)
	}
}
