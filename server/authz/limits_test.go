package authz

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/signet-dev/signet/server/jose"
)

// A rotation that created nothing gives its token back even though the
// clock moved on while it ran (a backend round trip), and a refund never
// fills the bucket past its burst nor takes back a concurrent caller's.
func TestRotateRefundAfterTimePassed(t *testing.T) {
	p, err := parsePolicy([]byte(`grants: [{identity: "spiffe://corp.test/team/security", rotate: [default]}]
limits: {rotate: {every: 10m, burst: 2}}
`), map[string]time.Duration{"default": time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	now := time.Unix(1_800_000_000, 0)
	a := &Authorizer{now: func() time.Time { mu.Lock(); defer mu.Unlock(); return now }}
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	a.policy.Store(p)
	const caller = "spiffe://corp.test/team/security"
	for i := range 5 {
		refund, err := a.AllowRotate(caller, "default")
		if err != nil {
			t.Fatalf("rotation %d, each refunded: %v", i+1, err)
		}
		advance(2 * time.Second) // the backend call
		refund()
		refund() // a second call gives nothing more
	}
	for i := range 2 {
		if _, err := a.AllowRotate(caller, "default"); err != nil {
			t.Fatalf("rotation %d of the burst after refunds: %v", i+1, err)
		}
	}
	if _, err := a.AllowRotate(caller, "default"); err == nil {
		t.Fatal("a third rotation within the burst: allowed (refunds overfilled the bucket)")
	}
	if _, err := a.AllowRotate(caller, "nope"); err == nil {
		t.Fatal("a rotation of a ring no grant names: allowed")
	}
	a.limitersMu.Lock()
	n := len(a.buckets)
	a.limitersMu.Unlock()
	if n != 1 {
		t.Errorf("%d buckets, want 1: a refused ring must not get one", n)
	}
}

// Buckets of callers that have not rotated for a while (full again) are
// dropped once there are many: the map does not grow with every identity
// the client CA ever vouched for.
func TestRotateBucketsBounded(t *testing.T) {
	p, err := parsePolicy([]byte(`grants: [{identity: "spiffe://corp.test/w/**", rotate: [default]}]`),
		map[string]time.Duration{"default": time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	a := &Authorizer{now: func() time.Time { return now }}
	a.policy.Store(p)
	for i := range maxBuckets + 100 {
		if _, err := a.AllowRotate(fmt.Sprintf("spiffe://corp.test/w/%d", i), "default"); err != nil {
			t.Fatal(err)
		}
		if i == maxBuckets/2 {
			now = now.Add(time.Hour) // the first half's buckets are full again
		}
	}
	if n := len(a.buckets); n > maxBuckets {
		t.Errorf("%d buckets after %d callers, want at most %d", n, maxBuckets+100, maxBuckets)
	}
}

// Sign rate limiters are dropped the same way once there are many.
func TestSignLimitersBounded(t *testing.T) {
	p, err := parsePolicy([]byte(`grants: [{identity: "spiffe://corp.test/w/**", sign: [{key_rings: [default], audiences: [a], subjects: ["*"], rate: {per_second: 1, burst: 2}}]}]`),
		map[string]time.Duration{"default": time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	a := &Authorizer{now: func() time.Time { return now }, limiters: map[limiterKey]*rate.Limiter{}}
	a.policy.Store(p)
	for i := range maxBuckets + 100 {
		if _, err := a.AuthorizeSign(fmt.Sprintf("spiffe://corp.test/w/%d", i), SignRequest{Ring: "default", Audience: []string{"a"}, Subject: "s", Typ: jose.DefaultTyp}); err != nil {
			t.Fatal(err)
		}
		if i == maxBuckets/2 {
			now = now.Add(time.Minute)
		}
	}
	if n := len(a.limiters); n > maxBuckets {
		t.Errorf("%d sign limiters after %d callers, want at most %d", n, maxBuckets+100, maxBuckets)
	}
}
