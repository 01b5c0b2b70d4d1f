package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/signet-dev/signet/backends"
	"github.com/signet-dev/signet/backends/local"
	signetclient "github.com/signet-dev/signet/client"
	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
)

// signetClient dials e's server through the client package, as caller id
// (nil ca: no client certificate), with retry.
func (e *mtlsEnv) signetClient(t *testing.T, id string, retry signetclient.Retry, opts ...grpc.DialOption) *signetclient.Client {
	t.Helper()
	dir := t.TempDir()
	cf, kf := e.ca.issue(t, dir, "client", id)
	c, err := signetclient.New(signetclient.Config{Target: e.ts.grpcAddr, CertFile: cf, KeyFile: kf, CAFile: e.caFile,
		Retry: retry, DialOptions: opts})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestErrorDetails checks, for each class of refusal, the google.rpc
// details the server sends (the documented ErrorInfo reason and domain,
// the BadRequest field, RetryInfo) and the client package's typed error
// built from them.
func TestErrorDetails(t *testing.T) {
	t.Parallel()
	e := startMTLS(t, "")
	once := signetclient.Retry{MaxAttempts: 1}
	svc := e.signetClient(t, serviceID, once)
	sec := e.signetClient(t, securityID, once)
	ctx := ctxT(t)
	base := []signetclient.SignOption{signetclient.Audience("ledger"), signetclient.Subject(serviceID), signetclient.TTL(5 * time.Minute)}
	with := func(more ...signetclient.SignOption) []signetclient.SignOption {
		return append(append([]signetclient.SignOption(nil), base...), more...)
	}
	tests := []struct {
		name   string
		call   func() error
		code   codes.Code
		reason signetv1.ErrorReason
		field  string
	}{
		{"no audience", func() error {
			_, err := svc.Sign(ctx, "default", signetclient.Subject(serviceID))
			return err
		}, codes.InvalidArgument, signetv1.ErrorReason_FIELD_INVALID, "audience"},
		{"reserved claim", func() error {
			_, err := svc.Sign(ctx, "default", with(signetclient.ClaimsJSON(`{"iss": "me"}`))...)
			return err
		}, codes.InvalidArgument, signetv1.ErrorReason_RESERVED_CLAIM, "claims_json.iss"},
		{"duplicate key", func() error {
			_, err := svc.Sign(ctx, "default", with(signetclient.ClaimsJSON(`{"scope": "a", "scope": "b"}`))...)
			return err
		}, codes.InvalidArgument, signetv1.ErrorReason_CLAIMS_INVALID, "claims_json.scope"},
		{"claims and claims_json", func() error {
			_, err := svc.Sign(ctx, "default", with(signetclient.ClaimsJSON(`{"scope": "a"}`), func(r *signetv1.SignRequest) error {
				r.Claims, _ = structpb.NewStruct(map[string]any{"scope": "b"})
				return nil
			})...)
			return err
		}, codes.InvalidArgument, signetv1.ErrorReason_CLAIMS_INVALID, "claims_json"},
		{"claims too deep", func() error {
			_, err := svc.Sign(ctx, "default", with(signetclient.ClaimsJSON(`{"scope": `+strings.Repeat("[", 17)+strings.Repeat("]", 17)+`}`))...)
			return err
		}, codes.InvalidArgument, signetv1.ErrorReason_CLAIMS_TOO_LARGE, "claims_json.scope" + strings.Repeat("[0]", 16)},
		{"ttl above the ring's", func() error {
			_, err := svc.Sign(ctx, "default", with(signetclient.TTL(1000*time.Hour))...)
			return err
		}, codes.InvalidArgument, signetv1.ErrorReason_TTL_OUT_OF_RANGE, "ttl"},
		{"bad request id", func() error {
			_, err := sec.Rotate(ctx, "default", signetclient.RequestID("retry-1"))
			return err
		}, codes.InvalidArgument, signetv1.ErrorReason_FIELD_INVALID, "request_id"},
		{"bad page size", func() error {
			_, err := sec.ListKeysPage(ctx, &signetv1.ListKeysRequest{PageSize: -1})
			return err
		}, codes.InvalidArgument, signetv1.ErrorReason_FIELD_INVALID, "page_size"},
		{"bad page token", func() error {
			_, err := sec.ListKeysPage(ctx, &signetv1.ListKeysRequest{PageToken: "bm90IG91cnM"})
			return err
		}, codes.InvalidArgument, signetv1.ErrorReason_FIELD_INVALID, "page_token"},
		{"unknown ring", func() error {
			_, err := svc.Sign(ctx, "nope", base...)
			return err
		}, codes.PermissionDenied, signetv1.ErrorReason_NO_GRANT, ""},
		{"unknown ring granted by a pattern", func() error {
			_, err := sec.Rotate(ctx, "nope")
			return err
		}, codes.NotFound, signetv1.ErrorReason_KEY_RING_NOT_FOUND, ""},
		{"ttl above the limit of a ring not granted", func() error {
			_, err := svc.Sign(ctx, "ring-eddsa", with(signetclient.TTL(1000*time.Hour))...)
			return err
		}, codes.PermissionDenied, signetv1.ErrorReason_NO_GRANT, ""},
		{"key ring name too long", func() error {
			_, err := svc.Sign(ctx, strings.Repeat("a", 65), base...)
			return err
		}, codes.InvalidArgument, signetv1.ErrorReason_FIELD_INVALID, "key_ring"},
		{"other ring", func() error {
			_, err := svc.Sign(ctx, "ring-eddsa", base...)
			return err
		}, codes.PermissionDenied, signetv1.ErrorReason_NO_GRANT, ""},
		{"rotate without grant", func() error {
			_, err := svc.Rotate(ctx, "default")
			return err
		}, codes.PermissionDenied, signetv1.ErrorReason_NO_GRANT, ""},
		{"other audience", func() error {
			_, err := svc.Sign(ctx, "default", signetclient.Audience("hr"), signetclient.Subject(serviceID))
			return err
		}, codes.PermissionDenied, signetv1.ErrorReason_AUDIENCE_NOT_ALLOWED, ""},
		{"other subject", func() error {
			_, err := svc.Sign(ctx, "default", signetclient.Audience("ledger"), signetclient.Subject("root"))
			return err
		}, codes.PermissionDenied, signetv1.ErrorReason_SUBJECT_NOT_ALLOWED, ""},
		{"claim not granted", func() error {
			_, err := svc.Sign(ctx, "default", with(signetclient.Claims(map[string]any{"admin": true}))...)
			return err
		}, codes.PermissionDenied, signetv1.ErrorReason_CLAIM_NOT_ALLOWED, ""},
		{"typ not granted", func() error {
			_, err := svc.Sign(ctx, "default", with(signetclient.Typ("logout+jwt"))...)
			return err
		}, codes.PermissionDenied, signetv1.ErrorReason_TYP_NOT_ALLOWED, ""},
		{"ttl above the grant's", func() error {
			_, err := svc.Sign(ctx, "default", with(signetclient.TTL(30*time.Minute))...)
			return err
		}, codes.PermissionDenied, signetv1.ErrorReason_TTL_NOT_ALLOWED, ""},
	}
	for _, tt := range tests {
		err := tt.call()
		var se *signetclient.Error
		if !errors.As(err, &se) {
			t.Errorf("%s: %v (%T), want a *signetclient.Error", tt.name, err, err)
			continue
		}
		if se.Code != tt.code || se.Reason != tt.reason || se.ReasonName != tt.reason.String() || se.Field != tt.field {
			t.Errorf("%s: code %v reason %v (%q) field %q; want %v %v field %q (%v)", tt.name, se.Code, se.Reason, se.ReasonName,
				se.Field, tt.code, tt.reason, tt.field, err)
		}
		if signetclient.ReasonOf(err) != tt.reason || se.Message == "" {
			t.Errorf("%s: ReasonOf %v, message %q", tt.name, signetclient.ReasonOf(err), se.Message)
		}
		if se.RetryDelay != 0 {
			t.Errorf("%s: RetryInfo %v on a refusal that retrying cannot fix", tt.name, se.RetryDelay)
		}
	}
	// NotFound names no ring the caller was not told of.
	if _, err := sec.Rotate(ctx, "nope"); strings.Contains(err.Error(), "ring-eddsa") {
		t.Errorf("NotFound reveals the configured rings: %v", err)
	}
	// A caller with no grant for a name cannot tell whether that ring is
	// configured: the answers differ only in the name.
	for _, probe := range []func(ring string) error{
		func(ring string) error {
			_, err := svc.Sign(ctx, ring, with(signetclient.TTL(1000*time.Hour))...)
			return err
		},
		func(ring string) error { _, err := svc.Rotate(ctx, ring); return err },
		func(ring string) error {
			_, err := svc.ListKeysPage(ctx, &signetv1.ListKeysRequest{KeyRing: ring})
			return err
		},
	} {
		configured, unknown := probe("ring-eddsa"), probe("ring-nope")
		ce, _ := signetclient.ErrorOf(configured)
		ue, _ := signetclient.ErrorOf(unknown)
		if ce == nil || ue == nil || ce.Code != ue.Code || ce.Reason != ue.Reason ||
			strings.ReplaceAll(ce.Message, "ring-eddsa", "ring-nope") != ue.Message {
			t.Errorf("a configured ring not granted and an unknown one answer differently:\n%v\n%v", configured, unknown)
		}
	}
	// No client certificate at all.
	pinned, err := signetclient.New(signetclient.Config{Target: e.ts.grpcAddr, Retry: once,
		TransportCredentials: credentialsWithoutCert(t, e)})
	if err != nil {
		t.Fatal(err)
	}
	defer pinned.Close()
	if _, err := pinned.Sign(ctx, "default", base...); signetclient.ReasonOf(err) != signetv1.ErrorReason_UNAUTHENTICATED {
		t.Errorf("no client certificate: %v, want UNAUTHENTICATED", err)
	}
}

// TestRateLimitRetryInfo: the RetryInfo of RATE_LIMITED is the limiter's
// own refill time, and the client waits exactly that before retrying.
func TestRateLimitRetryInfo(t *testing.T) {
	t.Parallel()
	e := startMTLS(t, "")
	ctx := ctxT(t)
	sign := func(c *signetclient.Client) error {
		_, err := c.Sign(ctx, "default", signetclient.Audience("ledger"), signetclient.Subject(serviceID))
		return err
	}
	// The grant allows 0.5/s with a burst of 3; the test clock stands
	// still, so the fourth Sign needs exactly one token: 2s.
	svc := e.signetClient(t, serviceID, signetclient.Retry{MaxAttempts: 1})
	for i := range 3 {
		if err := sign(svc); err != nil {
			t.Fatalf("sign %d within the burst: %v", i, err)
		}
	}
	err := sign(svc)
	var se *signetclient.Error
	if !errors.As(err, &se) || se.Code != codes.ResourceExhausted || se.Reason != signetv1.ErrorReason_RATE_LIMITED || se.RetryDelay != 2*time.Second {
		t.Fatalf("over the rate: %v, want RATE_LIMITED with RetryInfo 2s", err)
	}
	// A RetryInfo longer than the client's MaxBackoff is not waited for.
	var capped atomic.Int32
	countCapped := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		capped.Add(1)
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	impatient := e.signetClient(t, serviceID, signetclient.Retry{MaxAttempts: 3, MaxBackoff: time.Second}, grpc.WithChainUnaryInterceptor(countCapped))
	if err := sign(impatient); signetclient.ReasonOf(err) != signetv1.ErrorReason_RATE_LIMITED || capped.Load() != 1 {
		t.Fatalf("RetryInfo 2s with MaxBackoff 1s: %v after %d attempts, want RATE_LIMITED after 1", err, capped.Load())
	}
	// A deadline shorter than the delay: the client does not wait for a
	// retry that cannot finish in time; it returns the reason at once.
	var (
		attempts sync.Map
		advance  atomic.Bool
	)
	count := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		n, _ := attempts.LoadOrStore(method, new(int))
		*n.(*int)++
		err := invoker(ctx, method, req, reply, cc, opts...)
		if advance.Load() && *n.(*int) == 1 && signetclient.ReasonOf(err) == signetv1.ErrorReason_RATE_LIMITED {
			e.clock.Advance(se.RetryDelay) // the limiter's time passes while the client waits
		}
		return err
	}
	retrying := e.signetClient(t, serviceID, signetclient.Retry{MaxAttempts: 3}, grpc.WithChainUnaryInterceptor(count))
	short, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if _, err := retrying.Sign(short, "default", signetclient.Audience("ledger"), signetclient.Subject(serviceID)); signetclient.ReasonOf(err) != signetv1.ErrorReason_RATE_LIMITED {
		t.Fatalf("with a deadline shorter than RetryInfo: %v, want RATE_LIMITED", err)
	}
	n, _ := attempts.Load("/signet.v1.SignerService/Sign")
	if *n.(*int) != 1 {
		t.Fatalf("%d attempts within a deadline shorter than RetryInfo, want 1", *n.(*int))
	}
	// With time to wait, the client waits RetryInfo (the counting
	// interceptor moves the limiter's clock by as much) and succeeds.
	attempts.Clear()
	advance.Store(true)
	if err := sign(retrying); err != nil {
		t.Fatalf("retry after RetryInfo: %v", err)
	}
	if n, _ := attempts.Load("/signet.v1.SignerService/Sign"); *n.(*int) != 2 {
		t.Errorf("%d attempts, want 2", *n.(*int))
	}
}

// TestRotateRequestID: a Rotate retried with its request_id creates one
// version, on the same replica and on another one sharing the backend; a
// different id creates another.
func TestRotateRequestID(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	a := startServer(t, cfg, Options{})
	b := startServer(t, cfg, Options{}) // a second replica on the same key directory
	ctx := ctxT(t)
	ring := a.KeySet().Ring("default")
	count := func() int { return len(a.KeySet().Versions(ring)) }
	before := count()
	id := signetclient.NewRequestID()
	first, err := a.client.Rotate(ctx, &signetv1.RotateRequest{KeyRing: "default", RequestId: id})
	if err != nil {
		t.Fatal(err)
	}
	again, err := a.client.Rotate(ctx, &signetv1.RotateRequest{KeyRing: "default", RequestId: id})
	if err != nil {
		t.Fatal(err)
	}
	other, err := b.client.Rotate(ctx, &signetv1.RotateRequest{KeyRing: "default", RequestId: strings.ToUpper(id)})
	if err != nil {
		t.Fatal(err)
	}
	if first.GetVersion().GetKid() != again.GetVersion().GetKid() || first.GetVersion().GetKid() != other.GetVersion().GetKid() {
		t.Errorf("one request id, three versions: %s, %s (same replica), %s (other replica)",
			first.GetVersion().GetBackendId(), again.GetVersion().GetBackendId(), other.GetVersion().GetBackendId())
	}
	if err := a.KeySet().Refresh(ctx, ring); err != nil {
		t.Fatal(err)
	}
	if got := count(); got != before+1 {
		t.Errorf("%d versions after three Rotates with one request id, want %d", got, before+1)
	}
	// With revoke_previous, the retry finishes and reports the revocation.
	id2 := signetclient.NewRequestID()
	rev, err := b.client.Rotate(ctx, &signetv1.RotateRequest{KeyRing: "default", RequestId: id2, RevokePrevious: true})
	if err != nil {
		t.Fatal(err)
	}
	rev2, err := a.client.Rotate(ctx, &signetv1.RotateRequest{KeyRing: "default", RequestId: id2, RevokePrevious: true})
	if err != nil {
		t.Fatal(err)
	}
	if rev.GetVersion().GetKid() == first.GetVersion().GetKid() || rev2.GetVersion().GetKid() != rev.GetVersion().GetKid() ||
		len(rev.GetRevoked()) != before+1 || len(rev2.GetRevoked()) != before+1 {
		t.Errorf("revoke_previous with a new id: created %s revoked %d; retried: created %s revoked %d (want %d)",
			rev.GetVersion().GetBackendId(), len(rev.GetRevoked()), rev2.GetVersion().GetBackendId(), len(rev2.GetRevoked()), before+1)
	}
	if rev2.GetVersion().GetState() != signetv1.KeyState_KEY_STATE_PENDING {
		t.Errorf("the retried emergency rotation's version is %v, want pending (until every replica publishes it)",
			rev2.GetVersion().GetState())
	}
	if err := a.KeySet().Refresh(ctx, ring); err != nil {
		t.Fatal(err)
	}
	if got := count(); got != before+2 {
		t.Errorf("%d versions, want %d", got, before+2)
	}
	// The first id again, now with revoke_previous, on the replica that
	// served it: refused, nothing created or revoked.
	_, err = a.client.Rotate(ctx, &signetv1.RotateRequest{KeyRing: "default", RequestId: id, RevokePrevious: true})
	if se, _ := signetclient.ErrorOf(err); se == nil || se.Code != codes.InvalidArgument ||
		se.Reason != signetv1.ErrorReason_FIELD_INVALID || se.Field != "request_id" {
		t.Errorf("a request id again with another revoke_previous: %v, want InvalidArgument FIELD_INVALID on request_id", err)
	}
	if got := count(); got != before+2 {
		t.Errorf("%d versions after the refused retry, want %d", got, before+2)
	}
	// Without a request id, or with another, each Rotate creates a version.
	if _, err := a.client.Rotate(ctx, &signetv1.RotateRequest{KeyRing: "default"}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.client.Rotate(ctx, &signetv1.RotateRequest{KeyRing: "default", RequestId: signetclient.NewRequestID()}); err != nil {
		t.Fatal(err)
	}
	if got := count(); got != before+4 {
		t.Errorf("%d versions, want %d", got, before+4)
	}
}

// TestListKeysPaging pages through 250 versions while another caller
// rotates: every version comes exactly once, in order, and a token issued
// before a rotation still continues where it was.
func TestListKeysPaging(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	dir := strings.TrimPrefix(cfg.KeyRings[0].Backend, "local://")
	ts := startServer(t, cfg, Options{})
	ctx := ctxT(t)
	ring := ts.KeySet().Ring("default")
	// 250 versions, made straight in the backend (as other replicas would).
	store, err := local.Open(dir, backends.OpenOptions{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	key := backends.KeyRing{Name: "default", Algorithm: backends.ES256}
	vs, err := store.Versions(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	latest := vs[len(vs)-1].ID
	for i := len(vs); i < 250; i++ {
		v, err := store.CreateVersion(ctx, key, latest)
		if err != nil {
			t.Fatal(err)
		}
		latest = v.ID
	}
	if err := ts.KeySet().Refresh(ctx, ring); err != nil {
		t.Fatal(err)
	}

	var (
		rotated []string
		mu      sync.Mutex
		wg      sync.WaitGroup
	)
	var got []*signetv1.KeyVersion
	req := &signetv1.ListKeysRequest{KeyRing: "default", PageSize: 16}
	tokens := map[string]bool{}
	for page := 0; ; page++ {
		resp, err := ts.client.ListKeys(ctx, req)
		if err != nil {
			t.Fatalf("page %d: %v", page, err)
		}
		if len(resp.GetVersions()) > 16 {
			t.Fatalf("page %d has %d versions, page_size 16", page, len(resp.GetVersions()))
		}
		got = append(got, resp.GetVersions()...)
		switch page {
		case 3: // a rotation while the caller pages on
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, err := ts.client.Rotate(ctx, &signetv1.RotateRequest{KeyRing: "default"})
				if err != nil {
					t.Errorf("concurrent Rotate: %v", err)
					return
				}
				mu.Lock()
				rotated = append(rotated, r.GetVersion().GetBackendId())
				mu.Unlock()
			}()
		case 9: // and one between two pages
			r, err := ts.client.Rotate(ctx, &signetv1.RotateRequest{KeyRing: "default"})
			if err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			rotated = append(rotated, r.GetVersion().GetBackendId())
			mu.Unlock()
		case 12: // both are in the ring before the paging reaches its end
			wg.Wait()
		}
		next := resp.GetNextPageToken()
		if next == "" {
			break
		}
		if tokens[next] {
			t.Fatalf("page %d repeats a page token", page)
		}
		tokens[next] = true
		// The same token again gives the same page (stable, not a cursor
		// the server moves).
		if page == 5 {
			again, err := ts.client.ListKeys(ctx, &signetv1.ListKeysRequest{KeyRing: "default", PageSize: 16, PageToken: next})
			if err != nil {
				t.Fatal(err)
			}
			req2 := &signetv1.ListKeysRequest{KeyRing: "default", PageSize: 16, PageToken: next}
			third, err := ts.client.ListKeys(ctx, req2)
			if err != nil || len(again.GetVersions()) == 0 || again.GetVersions()[0].GetBackendId() != third.GetVersions()[0].GetBackendId() {
				t.Fatalf("a token read twice gives different pages: %v", err)
			}
		}
		req.PageToken = next
	}
	if len(rotated) != 2 {
		t.Fatalf("rotated %v", rotated)
	}
	want := ts.KeySet().Versions(ring)
	if len(got) != len(want) || len(want) != 252 {
		t.Fatalf("paged through %d versions; the ring has %d (want 252)", len(got), len(want))
	}
	seen := map[string]bool{}
	for i, v := range got {
		if seen[v.GetBackendId()] {
			t.Fatalf("version %s listed twice", v.GetBackendId())
		}
		seen[v.GetBackendId()] = true
		if v.GetBackendId() != want[i].ID {
			t.Fatalf("position %d: %s, want %s (oldest first)", i, v.GetBackendId(), want[i].ID)
		}
	}
	// A filter by state, and a token used with another filter.
	active, err := ts.client.ListKeys(ctx, &signetv1.ListKeysRequest{KeyRing: "default",
		States: []signetv1.KeyState{signetv1.KeyState_KEY_STATE_ACTIVE}})
	if err != nil || len(active.GetVersions()) != 1 || active.GetVersions()[0].GetState() != signetv1.KeyState_KEY_STATE_ACTIVE ||
		active.GetNextPageToken() != "" {
		t.Errorf("states [ACTIVE]: %v %v", active, err)
	}
	pending, err := ts.client.ListKeys(ctx, &signetv1.ListKeysRequest{KeyRing: "default", PageSize: 1,
		States: []signetv1.KeyState{signetv1.KeyState_KEY_STATE_PENDING}})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range pending.GetVersions() {
		if v.GetState() != signetv1.KeyState_KEY_STATE_PENDING {
			t.Errorf("states [PENDING] lists a %v version", v.GetState())
		}
	}
	if pending.GetNextPageToken() != "" {
		_, err = ts.client.ListKeys(ctx, &signetv1.ListKeysRequest{KeyRing: "default", PageToken: pending.GetNextPageToken()})
		if signetclient.ReasonOf(err) != signetv1.ErrorReason_FIELD_INVALID {
			t.Errorf("a token with another filter: %v, want FIELD_INVALID", err)
		}
	}
	// Defaults: page_size 0 is 100, above 1000 is 1000.
	if r, err := ts.client.ListKeys(ctx, &signetv1.ListKeysRequest{KeyRing: "default"}); err != nil || len(r.GetVersions()) != 100 {
		t.Errorf("default page: %d versions, %v", len(r.GetVersions()), err)
	}
	if r, err := ts.client.ListKeys(ctx, &signetv1.ListKeysRequest{KeyRing: "default", PageSize: 5000}); err != nil ||
		len(r.GetVersions()) != 252 || r.GetNextPageToken() != "" {
		t.Errorf("page_size 5000: %d versions, %v", len(r.GetVersions()), err)
	}
	// Leftovers come with the first page, also when more pages follow.
	if err := os.WriteFile(filepath.Join(dir, "rings", "default", ".tmp-interrupted"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	first, err := ts.client.ListKeys(ctx, &signetv1.ListKeysRequest{KeyRing: "default", PageSize: 10, Leftovers: true})
	if err != nil || len(first.GetLeftovers()) != 1 || first.GetNextPageToken() == "" {
		t.Fatalf("first page with leftovers: %d leftovers, next %q, %v", len(first.GetLeftovers()), first.GetNextPageToken(), err)
	}
	second, err := ts.client.ListKeys(ctx, &signetv1.ListKeysRequest{KeyRing: "default", PageSize: 10, Leftovers: true,
		PageToken: first.GetNextPageToken()})
	if err != nil || len(second.GetLeftovers()) != 0 || len(second.GetVersions()) != 10 {
		t.Fatalf("second page with leftovers: %d leftovers, %d versions, %v", len(second.GetLeftovers()), len(second.GetVersions()), err)
	}
	// The client package's iterator pages through the same list.
	c, err := signetclient.New(signetclient.Config{Target: ts.grpcAddr, Plaintext: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	n := 0
	for v, err := range c.Keys(ctx, "default") {
		if err != nil {
			t.Fatal(err)
		}
		if v.GetBackendId() != want[n].ID {
			t.Fatalf("iterator position %d: %s, want %s", n, v.GetBackendId(), want[n].ID)
		}
		n++
	}
	if n != len(want) {
		t.Errorf("iterator listed %d, want %d", n, len(want))
	}
}

// credentialsWithoutCert is TLS that trusts e's server and presents no
// client certificate.
func credentialsWithoutCert(t *testing.T, e *mtlsEnv) credentials.TransportCredentials {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(e.ca.cert)
	return credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool})
}

// TestNoSigningKeyWithoutRetryInfo: a ring whose every version is revoked
// answers NO_SIGNING_KEY without RetryInfo, since no retry succeeds until
// someone rotates; after a Rotate it signs again.
func TestNoSigningKeyWithoutRetryInfo(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	dir := strings.TrimPrefix(cfg.KeyRings[0].Backend, "local://")
	ts := startServer(t, cfg, Options{})
	ctx := ctxT(t)
	store, err := local.Open(dir, backends.OpenOptions{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	key := backends.KeyRing{Name: "default", Algorithm: backends.ES256}
	vs, err := store.Versions(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vs { // revoked in the backend, as an operator would
		if err := store.DisableVersion(ctx, key, v.ID); err != nil {
			t.Fatal(err)
		}
	}
	if err := ts.KeySet().Refresh(ctx, ts.KeySet().Ring("default")); err != nil {
		t.Fatal(err)
	}
	sign := &signetv1.SignRequest{KeyRing: "default", Audience: []string{"x"}}
	_, err = ts.client.Sign(ctx, sign)
	se, _ := signetclient.ErrorOf(err)
	if se == nil || se.Code != codes.Unavailable || se.Reason != signetv1.ErrorReason_NO_SIGNING_KEY {
		t.Fatalf("Sign with every version revoked: %v, want Unavailable NO_SIGNING_KEY", err)
	}
	if se.RetryDelay != 0 {
		t.Errorf("NO_SIGNING_KEY with every version revoked carries RetryInfo %v: a retry cannot succeed before a Rotate", se.RetryDelay)
	}
	if _, err := ts.client.Rotate(ctx, &signetv1.RotateRequest{KeyRing: "default"}); err != nil {
		t.Fatal(err)
	}
	// The new version signs at once, or, where an emergency rotation's
	// version first waits for every replica to publish it, soon: then
	// waiting helps, and RetryInfo says so.
	if _, err := ts.client.Sign(ctx, sign); err != nil {
		if se, _ := signetclient.ErrorOf(err); se == nil || se.Reason != signetv1.ErrorReason_NO_SIGNING_KEY || se.RetryDelay <= 0 {
			t.Errorf("Sign after the Rotate: %v, want a token or NO_SIGNING_KEY with RetryInfo", err)
		}
	}
}
