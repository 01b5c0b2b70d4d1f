package awskms

import (
	"bytes"
	"context"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"go.uber.org/goleak"

	"github.com/signet-dev/signet/backends"
	"github.com/signet-dev/signet/backends/signertest"
	"github.com/signet-dev/signet/internal/clocktest"
	"github.com/signet-dev/signet/internal/kmstest"
)

// TestMain gives the real SDK test credentials, once for every test.
func TestMain(m *testing.M) {
	kmstest.SetEnv()
	// Every goroutine must be gone when the tests end: the fake's server
	// and the SDK's connections to it.
	goleak.VerifyTestMain(m)
}

func start(t testing.TB) *kmstest.Server {
	s := kmstest.Start()
	t.Cleanup(s.Close)
	return s
}

// withVersion starts a fake KMS, opens a backend on it with the URI query
// given, and creates the first version of ring.
func withVersion(t *testing.T, query string, ring backends.KeyRing) (*kmstest.Server, *Backend, backends.Version) {
	t.Helper()
	s := start(t)
	b := open(t, s, query)
	return s, b, signertest.CreateVersion(t, b, ring, "")
}

func open(t testing.TB, s *kmstest.Server, query string) *Backend {
	t.Helper()
	return openWith(t, s, query, backends.OpenOptions{})
}

func openWith(t testing.TB, s *kmstest.Server, query string, opts backends.OpenOptions) *Backend {
	t.Helper()
	u, _ := url.Parse("awskms:?endpoint=" + url.QueryEscape(s.URL) + query)
	b, err := Open(context.Background(), u, opts)
	if err != nil {
		t.Fatal(err)
	}
	return b.(*Backend)
}

func TestConformance(t *testing.T) {
	t.Parallel()
	s := start(t)
	s.PageSize = 3 // every listing pages
	signertest.Run(t, signertest.Harness{
		OpenWith: func(t *testing.T, opts backends.OpenOptions) backends.Signer {
			return openWith(t, s, "&sign_rate=10000&sign_burst=1000&scan_rate=100000", opts)
		},
		MaxSigningInput: map[backends.Algorithm]int{backends.EdDSA: MaxRawMessage},
		Lossy: func(t *testing.T) signertest.LossyTransport {
			s := start(t)
			return signertest.LossyTransport{
				OpenWith: func(t *testing.T, opts backends.OpenOptions) backends.Signer {
					return openWith(t, s, "&sign_rate=10000&sign_burst=1000&scan_rate=100000", opts)
				},
				LoseNextCreate: func() { s.LoseAnswer("CreateKey", 1) },
				Lost:           s.Lost,
			}
		},
	})
}

func TestKeysAreTaggedAndAliased(t *testing.T) {
	t.Parallel()
	ring := backends.KeyRing{Name: "payments", Algorithm: backends.PS384}
	s, b, v := withVersion(t, "&alias_prefix=jwt", ring)
	keys := s.Keys()
	if len(keys) != 1 || keys[0].ARN != v.ID || keys[0].Spec != "RSA_3072" || keys[0].Usage != "SIGN_VERIFY" {
		t.Fatalf("keys %+v", keys)
	}
	if keys[0].Tags["signet:ring"] != "payments" || keys[0].Tags["signet:version"] != "1" {
		t.Errorf("tags %v", keys[0].Tags)
	}
	if d := keys[0].Created.Sub(v.Created); d < -time.Millisecond || d > time.Millisecond { // CreationDate travels as epoch seconds
		t.Errorf("version created %v, KMS says %v", v.Created, keys[0].Created)
	}
	if n := s.Calls("GetPublicKey"); n != 1 {
		t.Errorf("%d GetPublicKey calls for one key", n)
	}
	for range 3 {
		if _, err := b.Sign(context.Background(), ring, v.ID, []byte("a.b")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.Versions(context.Background(), ring); err != nil {
		t.Fatal(err)
	}
	if n := s.Calls("GetPublicKey"); n != 1 {
		t.Errorf("signing and listing called GetPublicKey again (%d calls)", n)
	}
}

func TestThrottlingIsRetriedThenUnavailable(t *testing.T) {
	t.Parallel()
	ring := backends.KeyRing{Name: "t", Algorithm: backends.ES256}
	s, b, v := withVersion(t, "", ring)
	s.Throttle.Store(2)
	before := s.Calls("Sign")
	if _, err := b.Sign(context.Background(), ring, v.ID, []byte("a.b")); err != nil {
		t.Fatalf("two throttled attempts should be retried: %v", err)
	}
	if s.Throttle.Load() != 0 || s.Calls("Sign") != before+1 {
		t.Errorf("throttle left %d, Sign reached KMS %d times", s.Throttle.Load(), s.Calls("Sign")-before)
	}
	s.Throttle.Store(1000)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := b.Sign(ctx, ring, v.ID, []byte("a.b"))
	if backends.KindOf(err) != backends.KindUnavailable || !strings.Contains(err.Error(), "ThrottlingException") {
		t.Errorf("persistent throttling: %v", err)
	}
	s.Throttle.Store(0)
}

func TestServerGoneIsUnavailableWithinTheDeadline(t *testing.T) {
	t.Parallel()
	ring := backends.KeyRing{Name: "gone", Algorithm: backends.EdDSA}
	s, b, v := withVersion(t, "", ring)
	s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := b.Sign(ctx, ring, v.ID, []byte("a.b"))
	if backends.KindOf(err) != backends.KindUnavailable {
		t.Errorf("Sign with KMS gone: %v", err)
	}
}

func TestPartialRotationLeavesNoKey(t *testing.T) {
	t.Parallel()
	ring := backends.KeyRing{Name: "partial", Algorithm: backends.ES384}
	s, b, v1 := withVersion(t, "", ring)
	s.FailIf("CreateAlias", func(in map[string]any) bool { return in["AliasName"] == "alias/signet/partial/2" })
	if _, err := b.CreateVersion(context.Background(), ring, v1.ID); err == nil || !strings.Contains(err.Error(), "scheduled for deletion") {
		t.Fatalf("CreateVersion with CreateAlias failing: %v", err)
	}
	s.FailIf("CreateAlias", nil)
	keys := s.Keys()
	if len(keys) != 2 || keys[0].State != "Enabled" || keys[1].State != "PendingDeletion" {
		t.Fatalf("after a failed alias: %+v", keys)
	}
	if _, ok := s.Aliases()["alias/signet/partial/rotating"]; ok {
		t.Error("the failed rotation left its intent alias")
	}
	vs, err := b.Versions(context.Background(), ring)
	if err != nil || len(vs) != 1 {
		t.Fatalf("versions: %v, %v", vs, err)
	}
	// The next rotation works and takes version 2.
	signertest.CreateVersion(t, b, ring, v1.ID)
}

func TestEdDSAInputLimit(t *testing.T) {
	t.Parallel()
	ring := backends.KeyRing{Name: "ed", Algorithm: backends.EdDSA}
	_, b, v := withVersion(t, "", ring)
	if _, err := b.Sign(context.Background(), ring, v.ID, make([]byte, MaxRawMessage+1)); backends.KindOf(err) != backends.KindInvalidArgument {
		t.Errorf("EdDSA over 4096 bytes: %v", err)
	}
}

func TestClientSideRateLimit(t *testing.T) {
	t.Parallel()
	ring := backends.KeyRing{Name: "limited", Algorithm: backends.ES256}
	s, b, v := withVersion(t, "&sign_rate=0.001&sign_burst=1", ring)
	if _, err := b.Sign(context.Background(), ring, v.ID, []byte("a.b")); err != nil {
		t.Fatal(err)
	}
	before := s.Calls("Sign")
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err := b.Sign(ctx, ring, v.ID, []byte("a.b"))
	if backends.KindOf(err) != backends.KindUnavailable || !strings.Contains(err.Error(), "rate limit") {
		t.Errorf("over the client-side rate: %v", err)
	}
	if s.Calls("Sign") != before {
		t.Error("a Sign over the client-side rate reached KMS")
	}
}

// A CreateKey whose answer is lost leaves a key the rotation never learnt
// of. It is not retried (a retry would make a second key and leave the
// first with no evidence), the intent alias stays, and a live replica finds
// the key by a scan once the intent is stale and schedules its deletion.
// (Regression: the SDK retried CreateKey, and the failed rotation deleted
// its intent alias.)
func TestLostCreateKeyAnswerIsCleanedUp(t *testing.T) {
	t.Parallel()
	ring := backends.KeyRing{Name: "lost", Algorithm: backends.ES256}
	s, b, v1 := withVersion(t, "", ring)
	s.LoseAnswer("CreateKey", 1)
	if _, err := b.CreateVersion(context.Background(), ring, v1.ID); err == nil {
		t.Fatal("CreateVersion succeeded with CreateKey's answer lost")
	}
	if n := s.Calls("CreateKey"); n != 2 {
		t.Errorf("CreateKey called %d times, want 2 (v1, then once: never retried)", n)
	}
	clock := clocktest.New()
	live := openWith(t, s, "", backends.OpenOptions{Now: clock.Now, RecoveryGrace: time.Minute})
	for range 2 {
		if _, err := live.Versions(context.Background(), ring); err != nil {
			t.Fatal(err)
		}
		clock.Advance(2 * time.Minute)
	}
	if _, err := live.Versions(context.Background(), ring); err != nil {
		t.Fatal(err)
	}
	keys := s.Keys()
	for _, k := range keys {
		if k.ARN != v1.ID && k.State != "PendingDeletion" {
			t.Errorf("key %s of the lost CreateKey is %s", k.ID, k.State)
		}
	}
	if len(keys) != 2 {
		t.Errorf("%d keys, want v1 and the lost one", len(keys))
	}
	signertest.CreateVersion(t, live, ring, v1.ID)
}

// The keys Signet creates are SIGN_VERIFY keys, as KMS's own DescribeKey
// says; a version alias pointed by hand at a key of another usage is
// refused at every read, naming KeyUsage.
func TestKeysCanOnlySign(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ring := backends.KeyRing{Name: "usage", Algorithm: backends.RS256}
	_, b, v := withVersion(t, "", ring)
	d, err := b.client.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(v.ID)})
	if err != nil {
		t.Fatal(err)
	}
	if md := d.KeyMetadata; md.KeyUsage != types.KeyUsageTypeSignVerify || md.KeySpec != types.KeySpecRsa2048 {
		t.Errorf("DescribeKey of version 1: KeyUsage=%s KeySpec=%s, want SIGN_VERIFY and RSA_2048", md.KeyUsage, md.KeySpec)
	}

	enc, err := b.client.CreateKey(ctx, &kms.CreateKeyInput{KeySpec: types.KeySpecRsa2048, KeyUsage: types.KeyUsageTypeEncryptDecrypt})
	if err != nil {
		t.Fatal(err)
	}
	byHand := backends.KeyRing{Name: "by-hand", Algorithm: backends.RS256}
	if _, err := b.client.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String(b.aliasPrefix(byHand) + "1"),
		TargetKeyId: enc.KeyMetadata.KeyId}); err != nil {
		t.Fatal(err)
	}
	_, err = b.Versions(ctx, byHand)
	if backends.KindOf(err) != backends.KindFailedPrecondition || !strings.Contains(err.Error(), "KeyUsage=ENCRYPT_DECRYPT") {
		t.Errorf("a version alias on an ENCRYPT_DECRYPT key: %v", err)
	}
}

// A policy without kms:ListResourceTags (the permissions deploy.md listed
// before request ids were tagged) still reads, signs with and rotates the
// ring: the request id is then unknown, the denial is logged once, and the
// tag is read as soon as the permission is granted. A throttled
// ListResourceTags is the same.
func TestDeniedListResourceTagsStillReadsTheRing(t *testing.T) {
	t.Parallel()
	ring := backends.KeyRing{Name: "tags", Algorithm: backends.ES256}
	s := start(t)
	const id = "1d2e3f4a-5b6c-4d7e-8f9a-0b1c2d3e4f5a"
	first, err := open(t, s, "").CreateVersionForRequest(context.Background(), ring, "", id)
	if err != nil {
		t.Fatal(err)
	}
	s.Deny("ListResourceTags", true)
	var logs syncBuffer
	b := openWith(t, s, "", backends.OpenOptions{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	ctx := context.Background()
	for range 2 {
		vs, err := b.Versions(ctx, ring)
		if err != nil {
			t.Fatalf("Versions without kms:ListResourceTags: %v", err)
		}
		if len(vs) != 1 || vs[0].ID != first.ID || vs[0].RequestID != "" {
			t.Fatalf("Versions without kms:ListResourceTags: %+v, want %s with no request id", vs, first.ID)
		}
	}
	if n := strings.Count(logs.String(), "kms:ListResourceTags is denied"); n != 1 {
		t.Errorf("the denial was logged %d times, want once:\n%s", n, logs.String())
	}
	if _, err := b.Sign(ctx, ring, first.ID, []byte("a.b")); err != nil {
		t.Errorf("Sign: %v", err)
	}
	if _, err := b.CreateVersion(ctx, ring, first.ID); err != nil {
		t.Errorf("CreateVersion: %v", err)
	}
	if s.Calls("ListResourceTags") == 0 {
		t.Fatal("ListResourceTags was never called: the test does not test the denial")
	}

	// Throttled (past the SDK's own retries): the same, without a log line.
	s.Deny("ListResourceTags", false)
	s.ThrottleAction("ListResourceTags", 1000)
	if vs, err := b.Versions(ctx, ring); err != nil || len(vs) != 2 || vs[0].RequestID != "" {
		t.Fatalf("Versions with ListResourceTags throttled: %+v, %v; want 2 versions, no request id", vs, err)
	}
	if n := strings.Count(logs.String(), "kms:ListResourceTags is denied"); n != 1 {
		t.Errorf("the denial was logged %d times, want once", n)
	}

	s.ThrottleAction("ListResourceTags", 0)
	vs, err := b.Versions(ctx, ring)
	if err != nil || len(vs) != 2 || vs[0].RequestID != id {
		t.Fatalf("Versions once kms:ListResourceTags answers: %+v, %v; want the first with request id %s", vs, err, id)
	}
}

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// A key disabled outside Signet whose description holds no record of its
// public key (written over by hand): KMS refuses GetPublicKey on a disabled
// key, and the version is listed as revoked without a key by an instance
// that never saw it enabled, instead of failing the read of the ring.
func TestDisabledKeyWithoutARecordIsListedRevoked(t *testing.T) {
	t.Parallel()
	ring := backends.KeyRing{Name: "disabled-by-hand", Algorithm: backends.ES256}
	s, b, v1 := withVersion(t, "", ring)
	v2 := signertest.CreateVersion(t, b, ring, v1.ID)
	ctx := context.Background()
	if _, err := b.client.UpdateKeyDescription(ctx, &kms.UpdateKeyDescriptionInput{KeyId: aws.String(v1.ID), Description: aws.String("disabled by hand")}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.client.DisableKey(ctx, &kms.DisableKeyInput{KeyId: aws.String(v1.ID)}); err != nil {
		t.Fatal(err)
	}
	vs, err := open(t, s, "").Versions(ctx, ring)
	if err != nil {
		t.Fatalf("Versions with a disabled key and no record of its public key: %v", err)
	}
	if len(vs) != 2 || vs[0].ID != v1.ID || !vs[0].Disabled || vs[0].PublicKey != nil || vs[1].ID != v2.ID || vs[1].Disabled {
		t.Errorf("listed %+v; want %s revoked without a key, then %s", vs, v1.ID, v2.ID)
	}
}

// A version's CreateAlias that KMS carries out but whose answer is lost
// leaves the alias on this rotation's key. A copy sent again (by the SDK's
// retryer) answers AlreadyExists, which is not another replica's win: the
// alias is read, and the key it reaches is this rotation's version, not
// rolled back. Taken for a lost race, the key the alias reaches would be
// scheduled for deletion: a version listed that cannot sign.
func TestLostVersionAliasAnswerKeepsTheVersion(t *testing.T) {
	t.Parallel()
	s := start(t)
	b := open(t, s, "")
	ring := backends.KeyRing{Name: "lost-alias", Algorithm: backends.ES256}
	s.LoseAnswer("CreateAlias", 1)
	v, err := b.CreateVersion(context.Background(), ring, "")
	if s.Lost() != 1 {
		t.Fatalf("%d answers were lost, want 1: the test proves nothing", s.Lost())
	}
	if err != nil && backends.KindOf(err) != backends.KindUnavailable {
		t.Fatalf("CreateVersion with the alias's answer lost: %v (%v), want the version or unavailable", err, backends.KindOf(err))
	}
	vs, err := b.Versions(context.Background(), ring)
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != 1 || (v.ID != "" && vs[0].ID != v.ID) {
		t.Fatalf("Versions %+v after CreateVersion returned %q", vs, v.ID)
	}
	if err := signertest.SignAndVerify(context.Background(), b, ring, vs[0], []byte("eyJhbGciOiJFUzI1NiJ9.e30")); err != nil {
		t.Errorf("the version the alias reaches does not sign (its key was rolled back): %v", err)
	}
}
