package server

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	signetclient "github.com/signet-dev/signet/client"
	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
	"github.com/signet-dev/signet/server/config"
)

// TestRotateAndLeftoversLimits: a rotate grant in a loop is refused with
// ResourceExhausted and the limiter's RetryInfo once limits.rotate's burst is
// spent, per caller and key ring; leftovers listings likewise per caller;
// each refusal is audited and counted; the bucket refills.
func TestRotateAndLeftoversLimits(t *testing.T) {
	t.Parallel()
	e := startMTLS(t, "")
	writeAtomic(t, e.policy, []byte(testGrants+"limits:\n  rotate: {every: 10m, burst: 2}\n  leftovers: {every: 1m, burst: 1}\n"))
	e.ts.authz.Reload()
	sec := e.client(t, e.ca, securityID)
	ctx := ctxT(t)
	// A client's retries of one rotation (same request_id) cost one.
	const id = "3f1e9c6e-8b1a-4c1e-9a53-2c4d5e6f7a8b"
	for i := range 4 {
		if _, err := sec.Rotate(ctx, &signetv1.RotateRequest{KeyRing: "default", RequestId: id}); err != nil {
			t.Fatalf("rotation with request_id, attempt %d: %v", i+1, err)
		}
	}
	if _, err := sec.Rotate(ctx, &signetv1.RotateRequest{KeyRing: "default"}); err != nil {
		t.Fatalf("second rotation: %v", err)
	}
	versions := len(e.ts.KeySet().Versions(e.ts.KeySet().Ring("default")))
	_, err := sec.Rotate(ctx, &signetv1.RotateRequest{KeyRing: "default"})
	info, _ := signetclient.ErrorOf(err)
	if codeOf(err) != codes.ResourceExhausted || info == nil || info.Reason != signetv1.ErrorReason_RATE_LIMITED ||
		info.RetryDelay <= 9*time.Minute || info.RetryDelay > 10*time.Minute {
		t.Fatalf("third rotation within 10 minutes: %v (details %+v)", err, info)
	}
	if got := len(e.ts.KeySet().Versions(e.ts.KeySet().Ring("default"))); got != versions {
		t.Errorf("the refused rotation created a version (%d -> %d)", versions, got)
	}
	// Another ring has its own bucket.
	if _, err := sec.Rotate(ctx, &signetv1.RotateRequest{KeyRing: "ring-eddsa"}); err != nil {
		t.Errorf("rotating another ring: %v", err)
	}
	e.clock.Advance(10 * time.Minute)
	if _, err := sec.Rotate(ctx, &signetv1.RotateRequest{KeyRing: "default"}); err != nil {
		t.Errorf("after the bucket refilled: %v", err)
	}

	if _, err := sec.ListKeys(ctx, &signetv1.ListKeysRequest{Leftovers: true}); err != nil {
		t.Fatalf("leftovers: %v", err)
	}
	if _, err := sec.ListKeys(ctx, &signetv1.ListKeysRequest{}); err != nil {
		t.Errorf("a listing without leftovers is not limited: %v", err)
	}
	_, err = sec.ListKeys(ctx, &signetv1.ListKeysRequest{Leftovers: true})
	if info, _ := signetclient.ErrorOf(err); codeOf(err) != codes.ResourceExhausted || info == nil || info.RetryDelay <= 0 {
		t.Errorf("second leftovers listing within the minute: %v", err)
	}

	var limited int
	for _, l := range e.auditLines(t) {
		if l["outcome"] == "denied" && strings.Contains(l["reason"].(string), "rate limit") && l["caller"] == securityID {
			limited++
		}
	}
	if limited != 2 {
		t.Errorf("%d rate-limited refusals audited, want 2 (a Rotate, a ListKeys)", limited)
	}
	if got := scrape(t, e.ts).Value(t, "signet_rate_limited_total", "grant", "spiffe://corp.test/team/security"); got != 2 {
		t.Errorf("rate-limited requests counted for the security grant: %v, want 2", got)
	}
}

// TestListKeysDenialAudited: a ListKeys the policy refuses is audited like
// every other denied RPC, whether it names a ring or not.
func TestListKeysDenialAudited(t *testing.T) {
	t.Parallel()
	e := startMTLS(t, "")
	nobody := e.client(t, e.ca, "spiffe://corp.test/ns/other/sa/x")
	svc := e.client(t, e.ca, serviceID)
	ctx := ctxT(t)
	if _, err := nobody.ListKeys(ctx, &signetv1.ListKeysRequest{}); codeOf(err) != codes.PermissionDenied {
		t.Fatalf("ListKeys of all rings without a list grant: %v", err)
	}
	if _, err := svc.ListKeys(ctx, &signetv1.ListKeysRequest{KeyRing: "ring-eddsa"}); codeOf(err) != codes.PermissionDenied {
		t.Fatalf("ListKeys of a ring the caller may not list: %v", err)
	}
	var denied []string
	for _, l := range e.auditLines(t) {
		if l["rpc"] == "ListKeys" && l["outcome"] == "denied" {
			denied = append(denied, l["caller"].(string)+" "+l["reason"].(string))
		}
	}
	if len(denied) != 2 || !strings.HasPrefix(denied[0], "spiffe://corp.test/ns/other/sa/x no grant lets") ||
		!strings.HasPrefix(denied[1], serviceID+` no grant lets "`+serviceID+`" list key ring "ring-eddsa"`) {
		t.Errorf("audited ListKeys denials: %q", denied)
	}
}

// TestRotateThatCreatedIsNotRefunded: a Rotate with revoke_previous whose
// new version was created but whose revocation then met a conflict
// created a key: its token is not given back, or a loop of such calls
// would grow the JWKS past limits.rotate.
func TestRotateThatCreatedIsNotRefunded(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	e := startMTLS(t, "", func(cfg *config.Config) { cfg.KeyRings[0].Backend = "flaky-test:" + dir })
	writeAtomic(t, e.policy, []byte(testGrants+"limits:\n  rotate: {every: 10m, burst: 1}\n"))
	e.ts.authz.Reload()
	flakyAt(dir).disableConflict.Store(true)
	sec := e.client(t, e.ca, securityID)
	ring := e.ts.KeySet().Ring("default")
	before := len(e.ts.KeySet().Versions(ring))
	if _, err := sec.Rotate(ctxT(t), &signetv1.RotateRequest{KeyRing: "default", RevokePrevious: true}); err == nil {
		t.Fatal("Rotate with revoke_previous whose revocation met a conflict: no error")
	}
	if got := len(e.ts.KeySet().Versions(ring)); got != before+1 {
		t.Fatalf("versions %d -> %d, want one created", before, got)
	}
	_, err := sec.Rotate(ctxT(t), &signetv1.RotateRequest{KeyRing: "default", RevokePrevious: true})
	if codeOf(err) != codes.ResourceExhausted {
		t.Errorf("second rotation within the burst of 1: %v; want ResourceExhausted (the first created a version)", err)
	}
	if got := len(e.ts.KeySet().Versions(ring)); got != before+1 {
		t.Errorf("versions %d -> %d: the limit let a second rotation create one", before, got)
	}
}
