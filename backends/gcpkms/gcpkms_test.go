package gcpkms

import (
	"context"
	"encoding/base64"
	"net/url"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/kms/apiv1/kmspb"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"

	"github.com/signet-dev/signet/backends"
	"github.com/signet-dev/signet/backends/signertest"
	"github.com/signet-dev/signet/internal/gcpkmstest"
)

// TestMain points Application Default Credentials at a made-up service
// account and the system trust store at the test CA, once, before any
// test (Go reads SSL_CERT_FILE once).
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "signet-gcpkms-")
	if err != nil {
		panic(err)
	}
	gcpkmstest.SetEnv(dir)
	code := func() int {
		defer os.RemoveAll(dir)
		return m.Run()
	}()
	if code == 0 {
		// Every goroutine must be gone: the servers and the clients' connections.
		if err := goleak.Find(); err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			code = 1
		}
	}
	os.Exit(code)
}

func start(t testing.TB) *gcpkmstest.Server {
	s := gcpkmstest.Start()
	t.Cleanup(s.Close)
	return s
}

func open(t testing.TB, s *gcpkmstest.Server, query string) *Backend {
	t.Helper()
	return openWith(t, s, query, backends.OpenOptions{})
}

func openWith(t testing.TB, s *gcpkmstest.Server, query string, opts backends.OpenOptions) *Backend {
	t.Helper()
	u, err := url.Parse("gcpkms:" + gcpkmstest.KeyRing + "?endpoint=" + s.Addr + query)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Open(context.Background(), u, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b.(*Backend)
}

func withVersion(t *testing.T, ring backends.KeyRing) (*gcpkmstest.Server, *Backend, backends.Version) {
	t.Helper()
	s := start(t)
	b := open(t, s, "")
	return s, b, signertest.CreateVersion(t, b, ring, "")
}

// jws is a JWS signing input for alg.
func jws(alg backends.Algorithm) []byte {
	return []byte(base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"`+string(alg)+`"}`)) + ".e30")
}

func TestConformance(t *testing.T) {
	t.Parallel()
	s := start(t)
	// Versions are ENABLED as soon as they are made, as Cloud KMS does for
	// most SOFTWARE keys: the crash cases look at the ring on a clock they
	// move by hand, while an HSM key's generation takes real seconds.
	// TestPendingVersionIsNeitherListedNorUsed covers generation.
	s.SetPendingFor(0)
	signertest.Run(t, signertest.Harness{
		OpenWith: func(t *testing.T, opts backends.OpenOptions) backends.Signer {
			return openWith(t, s, "&protection_level=software", opts)
		},
		MaxSigningInput: map[backends.Algorithm]int{backends.EdDSA: MaxData},
		OpenRemoving: func(t *testing.T) backends.Signer {
			return openWith(t, s, "&protection_level=software&destroy_on_revoke=true", backends.OpenOptions{})
		},
		Lossy: func(t *testing.T) signertest.LossyTransport {
			s := start(t)
			s.SetPendingFor(0)
			return signertest.LossyTransport{
				OpenWith: func(t *testing.T, opts backends.OpenOptions) backends.Signer {
					return openWith(t, s, "&protection_level=software", opts)
				},
				LoseNextCreate: func() { s.LoseNext("CreateCryptoKey", "CreateCryptoKeyVersion") },
				Lost:           s.Lost,
			}
		},
	})
}

// The declared deviation (Deviations), and no more: two replicas that saw
// v1 as the newest rotate at once; the loser sees it lost and dies before
// scheduling its version's destruction. Its version stays enabled and is
// listed as the newest, an ordinary later version; the winner's version,
// reported to its caller, stays listed too; nothing else is left, and the
// ring rotates on from the loser's version.
func TestLoserThatDiesLeavesItsVersion(t *testing.T) {
	t.Parallel()
	ring := backends.KeyRing{Name: "deviation", Algorithm: backends.ES256}
	s, b, v1 := withVersion(t, ring)
	winner, loser := open(t, s, ""), open(t, s, "")
	checked, resume, dead, release, done := make(chan struct{}), make(chan struct{}), make(chan struct{}), make(chan struct{}), make(chan struct{})
	ctx := backends.WithStepHook(context.Background(), func(step string) {
		switch step {
		case "GetCryptoKey": // it has checked that v1 is the newest
			close(checked)
			<-resume
		case "ListCryptoKeyVersions after": // it has seen that it lost
			close(dead)
			<-release
			runtime.Goexit()
		}
	})
	go func() {
		defer close(done)
		_, _ = loser.CreateVersion(ctx, ring, v1.ID)
	}()
	t.Cleanup(func() { close(release); <-done })
	<-checked
	won := signertest.CreateVersion(t, winner, ring, v1.ID)
	close(resume)
	<-dead
	listed, err := b.Versions(context.Background(), ring)
	if err != nil || len(listed) != 3 || listed[0].ID != v1.ID || listed[1].ID != won.ID || listed[2].Disabled {
		t.Fatalf("Versions after a loser died: %+v, %v; want v1, the winner %s, and the loser's version enabled", listed, err, won.ID)
	}
	if left, err := b.Leftovers(context.Background(), ring); err != nil || len(left) != 0 {
		t.Errorf("Leftovers: %+v, %v; the loser's version is a version, not a leftover", left, err)
	}
	signertest.CreateVersion(t, b, ring, listed[2].ID)
	if len(Deviations) != 1 {
		t.Errorf("Deviations declares %d deviations; this test checks the one", len(Deviations))
	}
}

// A signature whose signature_crc32c does not match is asked for again;
// persistent corruption is unavailable, never a signature.
func TestCorruptChecksumIsRetriedThenUnavailable(t *testing.T) {
	t.Parallel()
	ring := backends.KeyRing{Name: "crc", Algorithm: backends.PS256}
	s, b, v := withVersion(t, ring)
	s.CorruptSignCRC.Store(2)
	before := s.Calls("AsymmetricSign")
	input := jws(ring.Algorithm)
	if err := signertest.SignAndVerify(context.Background(), b, ring, v, input); err != nil {
		t.Fatalf("two corrupted answers, then a good one: %v", err)
	}
	if n := s.Calls("AsymmetricSign") - before; n != 3 {
		t.Errorf("AsymmetricSign called %d times, want 3", n)
	}
	s.CorruptSignCRC.Store(100)
	_, err := b.Sign(context.Background(), ring, v.ID, input)
	if backends.KindOf(err) != backends.KindUnavailable || !strings.Contains(err.Error(), "signature_crc32c") {
		t.Errorf("persistent corruption: %v", err)
	}
	s.CorruptSignCRC.Store(0)
}

// A version Cloud KMS is still generating is neither listed nor used; a
// rotation meanwhile conflicts; once enabled it is an ordinary version.
func TestPendingVersionIsNeitherListedNorUsed(t *testing.T) {
	t.Parallel()
	ring := backends.KeyRing{Name: "pending", Algorithm: backends.EdDSA}
	s, b, v1 := withVersion(t, ring)
	s.SetPendingFor(time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err := b.CreateVersion(ctx, ring, v1.ID)
	if backends.KindOf(err) != backends.KindUnavailable || !strings.Contains(err.Error(), "PENDING_GENERATION") {
		t.Fatalf("CreateVersion while Cloud KMS generates: %v", err)
	}
	vs, err := b.Versions(context.Background(), ring)
	if err != nil || len(vs) != 1 {
		t.Fatalf("Versions with a pending version: %+v, %v; want v1 only", vs, err)
	}
	pending := strings.Replace(v1.ID, "/cryptoKeyVersions/1", "/cryptoKeyVersions/2", 1)
	if _, err := b.Sign(context.Background(), ring, pending, []byte("a.b")); backends.KindOf(err) != backends.KindFailedPrecondition {
		t.Errorf("Sign with the pending version: %v, want failed precondition", err)
	}
	if _, err := b.CreateVersion(context.Background(), ring, v1.ID); backends.KindOf(err) != backends.KindConflict {
		t.Errorf("a rotation while another version is pending: %v, want a conflict", err)
	}
	s.SetState(pending, kmspb.CryptoKeyVersion_ENABLED)
	vs, err = b.Versions(context.Background(), ring)
	if err != nil || len(vs) != 2 || vs[1].ID != pending {
		t.Fatalf("Versions once enabled: %+v, %v", vs, err)
	}
	if err := signertest.SignAndVerify(context.Background(), b, ring, vs[1], jws(ring.Algorithm)); err != nil {
		t.Error(err)
	}
}

func TestPermissionDeniedNamesThePermission(t *testing.T) {
	t.Parallel()
	ring := backends.KeyRing{Name: "denied", Algorithm: backends.ES384}
	s, b, v := withVersion(t, ring)
	s.Deny("cloudkms.cryptoKeyVersions.useToSign", true)
	_, err := b.Sign(context.Background(), ring, v.ID, []byte("a.b"))
	if backends.KindOf(err) != backends.KindPermissionDenied || !strings.Contains(err.Error(), "needs cloudkms.cryptoKeyVersions.useToSign") {
		t.Errorf("Sign without useToSign: %v", err)
	}
	s.Deny("cloudkms.cryptoKeyVersions.useToSign", false)
	s.Deny("cloudkms.cryptoKeyVersions.create", true)
	_, err = b.CreateVersion(context.Background(), ring, v.ID)
	if backends.KindOf(err) != backends.KindPermissionDenied || !strings.Contains(err.Error(), "cloudkms.cryptoKeyVersions.create") {
		t.Errorf("CreateVersion without create: %v", err)
	}
}

func TestThrottlingIsRetriedThenUnavailable(t *testing.T) {
	t.Parallel()
	ring := backends.KeyRing{Name: "throttled", Algorithm: backends.ES256}
	s, b, v := withVersion(t, ring)
	s.FailNext("AsymmetricSign", codes.ResourceExhausted, 2)
	s.FailNext("GetPublicKey", codes.Unavailable, 1)
	before := s.Calls("AsymmetricSign")
	if _, err := b.Sign(context.Background(), ring, v.ID, []byte("a.b")); err != nil {
		t.Fatalf("two throttled attempts should be retried: %v", err)
	}
	if n := s.Calls("AsymmetricSign") - before; n != 3 {
		t.Errorf("AsymmetricSign reached Cloud KMS %d times, want 3", n)
	}
	if _, err := open(t, s, "").Versions(context.Background(), ring); err != nil {
		t.Errorf("an unavailable GetPublicKey should be retried: %v", err)
	}
	s.FailNext("AsymmetricSign", codes.ResourceExhausted, 1000)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := b.Sign(ctx, ring, v.ID, []byte("a.b")); backends.KindOf(err) != backends.KindUnavailable {
		t.Errorf("persistent throttling: %v", err)
	}
}

func TestServerGoneIsUnavailableWithinTheDeadline(t *testing.T) {
	t.Parallel()
	ring := backends.KeyRing{Name: "gone", Algorithm: backends.RS256}
	s, b, v := withVersion(t, ring)
	s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := b.Sign(ctx, ring, v.ID, []byte("a.b")); backends.KindOf(err) != backends.KindUnavailable {
		t.Errorf("Sign with Cloud KMS gone: %v", err)
	}
}

// A CryptoKey whose versions have another algorithm than the ring's (made
// or changed by hand) stops the ring at every read and is never rotated.
func TestForeignAlgorithmIsRefused(t *testing.T) {
	t.Parallel()
	s := start(t)
	b := open(t, s, "")
	p384 := backends.KeyRing{Name: "shared", Algorithm: backends.ES384}
	signertest.CreateVersion(t, b, p384, "")
	p256 := backends.KeyRing{Name: "shared", Algorithm: backends.ES256}
	_, err := b.Versions(context.Background(), p256)
	if backends.KindOf(err) != backends.KindFailedPrecondition || !strings.Contains(err.Error(), "EC_SIGN_P384_SHA384") {
		t.Errorf("Versions of a P-384 key for an ES256 ring: %v", err)
	}
}

// The first version of a ring is made by CreateCryptoKey, which only one
// replica can win.
func TestRacingFirstVersions(t *testing.T) {
	t.Parallel()
	s := start(t)
	ring := backends.KeyRing{Name: "first", Algorithm: backends.ES256}
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for range 3 {
		r := open(t, s, "")
		wg.Go(func() {
			_, err := r.CreateVersion(context.Background(), ring, "")
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	won := 0
	for err := range errs {
		if err == nil {
			won++
		} else if backends.KindOf(err) != backends.KindConflict {
			t.Error(err)
		}
	}
	vs, err := open(t, s, "").Versions(context.Background(), ring)
	if won != 1 || err != nil || len(vs) != 1 {
		t.Errorf("%d replicas won, versions %+v, %v; want one", won, vs, err)
	}
}

func TestNoCredentialsInTheURI(t *testing.T) {
	t.Parallel()
	for _, raw := range []string{"gcpkms:" + gcpkmstest.KeyRing + "?credentials=x", "gcpkms://user:pw@" + gcpkmstest.KeyRing} {
		u, _ := url.Parse(raw)
		if _, err := Open(context.Background(), u, backends.OpenOptions{}); backends.KindOf(err) != backends.KindInvalidArgument {
			t.Errorf("%s: %v", u.Redacted(), err)
		}
	}
}

// With destroy_on_revoke, a revoked version is disabled and then scheduled
// for destruction: it leaves the list, and Leftovers shows it.
func TestDestroyOnRevoke(t *testing.T) {
	t.Parallel()
	s := start(t)
	b := open(t, s, "&destroy_on_revoke=true")
	ring := backends.KeyRing{Name: "destroyed", Algorithm: backends.ES256}
	v1 := signertest.CreateVersion(t, b, ring, "")
	v2 := signertest.CreateVersion(t, b, ring, v1.ID)
	for range 2 { // the second is a retry of a finished revocation
		if err := b.DisableVersion(context.Background(), ring, v1.ID); err != nil {
			t.Fatal(err)
		}
	}
	key, _ := b.keyName(ring)
	if st := s.Versions(key)[0].State; st != kmspb.CryptoKeyVersion_DESTROY_SCHEDULED {
		t.Errorf("the revoked version is %s", st)
	}
	vs, err := b.Versions(context.Background(), ring)
	if err != nil || len(vs) != 1 || vs[0].ID != v2.ID {
		t.Errorf("Versions: %+v, %v; want v2 only", vs, err)
	}
	left, err := b.Leftovers(context.Background(), ring)
	if err != nil || len(left) != 1 || left[0].ID != v1.ID || left[0].State != "scheduled for deletion" {
		t.Errorf("Leftovers: %+v, %v", left, err)
	}
	if _, err := b.Sign(context.Background(), ring, v1.ID, jws(ring.Algorithm)); backends.KindOf(err) != backends.KindFailedPrecondition {
		t.Errorf("Sign with the destroyed version: %v", err)
	}
}

// A version revoked by another replica between this one's listing and its
// GetPublicKey (a replica starting, or meeting the version first, while a
// rotate --revoke-previous runs) is listed as revoked: Cloud KMS refuses
// its key then, and a revoked version never needs it. One destroyed in that
// window (destroy_on_revoke) has left the ring.
func TestVersionRevokedBetweenListAndPublicKey(t *testing.T) {
	t.Parallel()
	for _, state := range []kmspb.CryptoKeyVersion_CryptoKeyVersionState{kmspb.CryptoKeyVersion_DISABLED, kmspb.CryptoKeyVersion_DESTROY_SCHEDULED} {
		t.Run(state.String(), func(t *testing.T) {
			s := start(t)
			ring := backends.KeyRing{Name: "race", Algorithm: backends.ES256}
			v1 := signertest.CreateVersion(t, open(t, s, ""), ring, "")
			fresh := open(t, s, "") // nothing cached: it must ask GetPublicKey
			s.BeforeNext("GetPublicKey", func() { s.SetState(v1.ID, state) })
			vs, err := fresh.Versions(context.Background(), ring)
			if err != nil {
				t.Fatalf("Versions: %v", err)
			}
			switch {
			case state == kmspb.CryptoKeyVersion_DISABLED && (len(vs) != 1 || !vs[0].Disabled || vs[0].PublicKey != nil):
				t.Errorf("Versions: %+v; want v1 listed revoked without a key", vs)
			case state != kmspb.CryptoKeyVersion_DISABLED && len(vs) != 0:
				t.Errorf("Versions: %+v; want none (v1 is scheduled for destruction)", vs)
			}
		})
	}
	// A version that is still ENABLED and whose key is refused is not
	// taken for a revoked one.
	s, _, v := withVersion(t, backends.KeyRing{Name: "refused", Algorithm: backends.ES256})
	s.FailNext("GetPublicKey", codes.FailedPrecondition, 1)
	if _, err := open(t, s, "").Versions(context.Background(), backends.KeyRing{Name: "refused", Algorithm: backends.ES256}); backends.KindOf(err) != backends.KindFailedPrecondition {
		t.Errorf("Versions with %s's key refused while it is enabled: %v; want failed precondition", v.ID, err)
	}
}
