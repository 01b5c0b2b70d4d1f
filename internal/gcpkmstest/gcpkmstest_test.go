package gcpkmstest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"testing"
	"time"

	kms "cloud.google.com/go/kms/apiv1"
	"cloud.google.com/go/kms/apiv1/kmspb"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// These tests check the server against Google's official client, as the
// backend uses it: over TLS, with Application Default Credentials.

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "signet-gcpkmstest-")
	if err != nil {
		panic(err)
	}
	SetEnv(dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func client(t *testing.T, s *Server, opts ...option.ClientOption) *kms.KeyManagementClient {
	t.Helper()
	c, err := kms.NewKeyManagementClient(context.Background(), append([]option.ClientOption{option.WithEndpoint(s.Addr)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func start(t *testing.T) (*Server, *kms.KeyManagementClient) {
	s := Start()
	t.Cleanup(s.Close)
	return s, client(t, s)
}

func code(err error) codes.Code { return status.Code(err) }

func createKey(t *testing.T, c *kms.KeyManagementClient, id string, alg kmspb.CryptoKeyVersion_CryptoKeyVersionAlgorithm) string {
	t.Helper()
	k, err := c.CreateCryptoKey(context.Background(), &kmspb.CreateCryptoKeyRequest{Parent: KeyRing, CryptoKeyId: id,
		CryptoKey: &kmspb.CryptoKey{Purpose: kmspb.CryptoKey_ASYMMETRIC_SIGN, VersionTemplate: &kmspb.CryptoKeyVersionTemplate{Algorithm: alg}}})
	if err != nil {
		t.Fatal(err)
	}
	return k.GetName()
}

func waitEnabled(t *testing.T, c *kms.KeyManagementClient, name string) {
	t.Helper()
	for range 200 {
		v, err := c.GetCryptoKeyVersion(context.Background(), &kmspb.GetCryptoKeyVersionRequest{Name: name})
		if err != nil {
			t.Fatal(err)
		}
		if v.GetState() == kmspb.CryptoKeyVersion_ENABLED {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s never became ENABLED", name)
}

func publicKey(t *testing.T, c *kms.KeyManagementClient, name string) crypto.PublicKey {
	t.Helper()
	pk, err := c.GetPublicKey(context.Background(), &kmspb.GetPublicKeyRequest{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	if pk.GetName() != name || pk.GetPemCrc32C().GetValue() != crc([]byte(pk.GetPem())).GetValue() {
		t.Fatalf("GetPublicKey answer: name %q, pem_crc32c %v", pk.GetName(), pk.GetPemCrc32C())
	}
	block, _ := pem.Decode([]byte(pk.GetPem()))
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

func TestUnauthenticatedCallsAreRefused(t *testing.T) {
	s, _ := start(t)
	anon := client(t, s, option.WithoutAuthentication())
	_, err := anon.GetCryptoKey(context.Background(), &kmspb.GetCryptoKeyRequest{Name: KeyRing + "/cryptoKeys/x"})
	if code(err) != codes.Unauthenticated {
		t.Errorf("a call without a token: %v", err)
	}
}

func TestSignChecksCRCsAndVerifies(t *testing.T) {
	_, c := start(t)
	ctx := context.Background()
	key := createKey(t, c, "ec", kmspb.CryptoKeyVersion_EC_SIGN_P256_SHA256)
	name := key + "/cryptoKeyVersions/1"
	waitEnabled(t, c, name)
	d := sha256.Sum256([]byte("message"))
	resp, err := c.AsymmetricSign(ctx, &kmspb.AsymmetricSignRequest{Name: name, Digest: &kmspb.Digest{Digest: &kmspb.Digest_Sha256{Sha256: d[:]}},
		DigestCrc32C: crc(d[:])})
	if err != nil {
		t.Fatal(err)
	}
	if !resp.GetVerifiedDigestCrc32C() || resp.GetName() != name || resp.GetSignatureCrc32C().GetValue() != crc(resp.GetSignature()).GetValue() {
		t.Errorf("answer: verified=%v name=%q signature_crc32c=%v", resp.GetVerifiedDigestCrc32C(), resp.GetName(), resp.GetSignatureCrc32C())
	}
	if !ecdsa.VerifyASN1(publicKey(t, c, name).(*ecdsa.PublicKey), d[:], resp.GetSignature()) {
		t.Error("the signature does not verify")
	}
	_, err = c.AsymmetricSign(ctx, &kmspb.AsymmetricSignRequest{Name: name, Digest: &kmspb.Digest{Digest: &kmspb.Digest_Sha256{Sha256: d[:]}},
		DigestCrc32C: wrapperspb.Int64(crc(d[:]).GetValue() + 1)})
	if code(err) != codes.InvalidArgument {
		t.Errorf("a digest_crc32c that does not match: %v", err)
	}
	_, err = c.AsymmetricSign(ctx, &kmspb.AsymmetricSignRequest{Name: name, Digest: &kmspb.Digest{Digest: &kmspb.Digest_Sha384{Sha384: make([]byte, 48)}}})
	if code(err) != codes.InvalidArgument {
		t.Errorf("a SHA-384 digest for a SHA-256 key: %v", err)
	}
	resp, err = c.AsymmetricSign(ctx, &kmspb.AsymmetricSignRequest{Name: name, Digest: &kmspb.Digest{Digest: &kmspb.Digest_Sha256{Sha256: d[:]}}})
	if err != nil || resp.GetVerifiedDigestCrc32C() {
		t.Errorf("without digest_crc32c: %v, verified=%v", err, resp.GetVerifiedDigestCrc32C())
	}
}

func TestEd25519SignsData(t *testing.T) {
	_, c := start(t)
	name := createKey(t, c, "ed", kmspb.CryptoKeyVersion_EC_SIGN_ED25519) + "/cryptoKeyVersions/1"
	waitEnabled(t, c, name)
	data := []byte("header.payload")
	resp, err := c.AsymmetricSign(context.Background(), &kmspb.AsymmetricSignRequest{Name: name, Data: data, DataCrc32C: crc(data)})
	if err != nil || !resp.GetVerifiedDataCrc32C() {
		t.Fatalf("%v, verified_data_crc32c=%v", err, resp.GetVerifiedDataCrc32C())
	}
	if !ed25519.Verify(publicKey(t, c, name).(ed25519.PublicKey), data, resp.GetSignature()) {
		t.Error("the signature does not verify")
	}
	d := sha256.Sum256(data)
	if _, err := c.AsymmetricSign(context.Background(), &kmspb.AsymmetricSignRequest{Name: name,
		Digest: &kmspb.Digest{Digest: &kmspb.Digest_Sha256{Sha256: d[:]}}}); code(err) != codes.InvalidArgument {
		t.Errorf("a digest for Ed25519: %v", err)
	}
}

// The state machine as Google documents it.
func TestVersionStates(t *testing.T) {
	s, c := start(t)
	ctx := context.Background()
	key := createKey(t, c, "states", kmspb.CryptoKeyVersion_EC_SIGN_P384_SHA384)
	waitEnabled(t, c, key+"/cryptoKeyVersions/1")
	s.SetPendingFor(time.Hour)
	v2, err := c.CreateCryptoKeyVersion(ctx, &kmspb.CreateCryptoKeyVersionRequest{Parent: key, CryptoKeyVersion: &kmspb.CryptoKeyVersion{}})
	if err != nil || v2.GetState() != kmspb.CryptoKeyVersion_PENDING_GENERATION || v2.GetName() != key+"/cryptoKeyVersions/2" {
		t.Fatalf("a new version: %v, %v", v2, err)
	}
	d := make([]byte, 48)
	sign := func(name string) error {
		_, err := c.AsymmetricSign(ctx, &kmspb.AsymmetricSignRequest{Name: name, Digest: &kmspb.Digest{Digest: &kmspb.Digest_Sha384{Sha384: d}}})
		return err
	}
	update := func(name string, st kmspb.CryptoKeyVersion_CryptoKeyVersionState) error {
		_, err := c.UpdateCryptoKeyVersion(ctx, &kmspb.UpdateCryptoKeyVersionRequest{
			CryptoKeyVersion: &kmspb.CryptoKeyVersion{Name: name, State: st}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"state"}}})
		return err
	}
	_, pubErr := c.GetPublicKey(ctx, &kmspb.GetPublicKeyRequest{Name: v2.GetName()})
	_, destroyErr := c.DestroyCryptoKeyVersion(ctx, &kmspb.DestroyCryptoKeyVersionRequest{Name: v2.GetName()})
	for what, err := range map[string]error{"GetPublicKey": pubErr, "AsymmetricSign": sign(v2.GetName()),
		"UpdateCryptoKeyVersion": update(v2.GetName(), kmspb.CryptoKeyVersion_DISABLED), "DestroyCryptoKeyVersion": destroyErr} {
		if code(err) != codes.FailedPrecondition {
			t.Errorf("%s on a PENDING_GENERATION version: %v", what, err)
		}
	}
	v1 := key + "/cryptoKeyVersions/1"
	if err := update(v1, kmspb.CryptoKeyVersion_DISABLED); err != nil {
		t.Fatal(err)
	}
	if err := sign(v1); code(err) != codes.FailedPrecondition {
		t.Errorf("signing with a DISABLED version: %v", err)
	}
	// As the real service (kms-integrations fakekms/contract
	// get_public_key_test.go, TestGetPublicKeyDisabled): no public key for
	// a version that is not enabled.
	if _, err := c.GetPublicKey(ctx, &kmspb.GetPublicKeyRequest{Name: v1}); code(err) != codes.FailedPrecondition {
		t.Errorf("GetPublicKey of a DISABLED version: %v, want FAILED_PRECONDITION", err)
	}
	dv, err := c.DestroyCryptoKeyVersion(ctx, &kmspb.DestroyCryptoKeyVersionRequest{Name: v1})
	if err != nil || dv.GetState() != kmspb.CryptoKeyVersion_DESTROY_SCHEDULED || dv.GetDestroyTime().AsTime().Before(time.Now().Add(29*24*time.Hour)) {
		t.Errorf("DestroyCryptoKeyVersion: %v, %v", dv, err)
	}
	if _, err := c.GetPublicKey(ctx, &kmspb.GetPublicKeyRequest{Name: v1}); code(err) != codes.FailedPrecondition {
		t.Errorf("GetPublicKey of a DESTROY_SCHEDULED version: %v, want FAILED_PRECONDITION", err)
	}
	if _, err := c.DestroyCryptoKeyVersion(ctx, &kmspb.DestroyCryptoKeyVersionRequest{Name: v1}); code(err) != codes.FailedPrecondition {
		t.Errorf("destroying a DESTROY_SCHEDULED version again: %v, want FAILED_PRECONDITION", err)
	}
	if err := update(v1, kmspb.CryptoKeyVersion_ENABLED); code(err) != codes.FailedPrecondition {
		t.Errorf("enabling a DESTROY_SCHEDULED version: %v", err)
	}
	if err := update(v1, kmspb.CryptoKeyVersion_DESTROYED); code(err) != codes.InvalidArgument {
		t.Errorf("updating to DESTROYED: %v", err)
	}
	if _, err := c.GetCryptoKeyVersion(ctx, &kmspb.GetCryptoKeyVersionRequest{Name: key + "/cryptoKeyVersions/9"}); code(err) != codes.NotFound {
		t.Errorf("an unknown version: %v", err)
	}
}

func TestCreateAndListErrors(t *testing.T) {
	s, c := start(t)
	ctx := context.Background()
	s.SetPendingFor(0)
	key := createKey(t, c, "paged", kmspb.CryptoKeyVersion_EC_SIGN_P256_SHA256)
	for range 4 {
		if _, err := c.CreateCryptoKeyVersion(ctx, &kmspb.CreateCryptoKeyVersionRequest{Parent: key, CryptoKeyVersion: &kmspb.CryptoKeyVersion{}}); err != nil {
			t.Fatal(err)
		}
	}
	it := c.ListCryptoKeyVersions(ctx, &kmspb.ListCryptoKeyVersionsRequest{Parent: key, PageSize: 2})
	n := 0
	for {
		_, err := it.Next()
		if errors.Is(err, iterator.Done) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 5 || s.Calls("ListCryptoKeyVersions") != 3 {
		t.Errorf("listed %d versions in %d pages, want 5 in 3", n, s.Calls("ListCryptoKeyVersions"))
	}
	_, err := c.CreateCryptoKey(ctx, &kmspb.CreateCryptoKeyRequest{Parent: KeyRing, CryptoKeyId: "paged",
		CryptoKey: &kmspb.CryptoKey{Purpose: kmspb.CryptoKey_ASYMMETRIC_SIGN, VersionTemplate: &kmspb.CryptoKeyVersionTemplate{Algorithm: kmspb.CryptoKeyVersion_EC_SIGN_P256_SHA256}}})
	if code(err) != codes.AlreadyExists {
		t.Errorf("creating a key twice: %v", err)
	}
	_, err = c.CreateCryptoKey(ctx, &kmspb.CreateCryptoKeyRequest{Parent: "projects/p/locations/l/keyRings/none", CryptoKeyId: "k",
		CryptoKey: &kmspb.CryptoKey{Purpose: kmspb.CryptoKey_ASYMMETRIC_SIGN, VersionTemplate: &kmspb.CryptoKeyVersionTemplate{Algorithm: kmspb.CryptoKeyVersion_EC_SIGN_P256_SHA256}}})
	if code(err) != codes.NotFound {
		t.Errorf("a key in a missing key ring: %v", err)
	}
	s.Deny("cloudkms.cryptoKeys.get", true)
	if _, err := c.GetCryptoKey(ctx, &kmspb.GetCryptoKeyRequest{Name: key}); code(err) != codes.PermissionDenied {
		t.Errorf("a denied permission: %v", err)
	}
}

// FuzzRequests feeds arbitrary bytes, decoded as each request message the
// server takes, to its methods: each answers a message or a status error,
// never panics.
func FuzzRequests(f *testing.F) {
	s := Start()
	defer s.Close()
	s.SetPendingFor(0)
	ctx := context.Background()
	key := KeyRing + "/cryptoKeys/fuzz"
	if _, err := s.CreateCryptoKey(ctx, &kmspb.CreateCryptoKeyRequest{Parent: KeyRing, CryptoKeyId: "fuzz",
		CryptoKey: &kmspb.CryptoKey{Purpose: kmspb.CryptoKey_ASYMMETRIC_SIGN, VersionTemplate: &kmspb.CryptoKeyVersionTemplate{Algorithm: kmspb.CryptoKeyVersion_EC_SIGN_P256_SHA256}}}); err != nil {
		f.Fatal(err)
	}
	for i, m := range []proto.Message{
		&kmspb.AsymmetricSignRequest{Name: key + "/cryptoKeyVersions/1", Digest: &kmspb.Digest{Digest: &kmspb.Digest_Sha256{Sha256: make([]byte, 32)}}},
		&kmspb.ListCryptoKeyVersionsRequest{Parent: key, PageSize: 1, PageToken: "1"},
		&kmspb.UpdateCryptoKeyVersionRequest{CryptoKeyVersion: &kmspb.CryptoKeyVersion{Name: key + "/cryptoKeyVersions/1", State: kmspb.CryptoKeyVersion_DISABLED},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"state"}}},
		&kmspb.GetPublicKeyRequest{Name: key + "/cryptoKeyVersions/1"},
	} {
		b, _ := proto.Marshal(m)
		f.Add(uint8(i), b)
	}
	f.Fuzz(func(t *testing.T, which uint8, raw []byte) {
		var err error
		call := func(m proto.Message, run func() error) {
			if proto.Unmarshal(raw, m) == nil {
				err = run()
			}
		}
		switch which % 8 {
		case 0:
			m := &kmspb.AsymmetricSignRequest{}
			call(m, func() error { _, e := s.AsymmetricSign(ctx, m); return e })
		case 1:
			m := &kmspb.ListCryptoKeyVersionsRequest{}
			call(m, func() error { _, e := s.ListCryptoKeyVersions(ctx, m); return e })
		case 2:
			m := &kmspb.UpdateCryptoKeyVersionRequest{}
			call(m, func() error { _, e := s.UpdateCryptoKeyVersion(ctx, m); return e })
		case 3:
			m := &kmspb.GetPublicKeyRequest{}
			call(m, func() error { _, e := s.GetPublicKey(ctx, m); return e })
		case 4:
			m := &kmspb.CreateCryptoKeyRequest{}
			call(m, func() error { _, e := s.CreateCryptoKey(ctx, m); return e })
		case 5:
			m := &kmspb.GetCryptoKeyVersionRequest{}
			call(m, func() error { _, e := s.GetCryptoKeyVersion(ctx, m); return e })
		case 6:
			m := &kmspb.DestroyCryptoKeyVersionRequest{}
			call(m, func() error { _, e := s.DestroyCryptoKeyVersion(ctx, m); return e })
		case 7:
			m := &kmspb.GetCryptoKeyRequest{}
			call(m, func() error { _, e := s.GetCryptoKey(ctx, m); return e })
		}
		if _, ok := status.FromError(err); err != nil && !ok {
			t.Fatalf("an error that is not a gRPC status: %v", err)
		}
	})
}
