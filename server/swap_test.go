package server

import (
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
	"github.com/signet-dev/signet/internal/kmstest"
)

// The tests here replace a ring's key behind Signet's back, each in the
// way its backend allows, and show what TestVaultKeyReplacedBehindSignetsBack
// shows for Vault: no token leaves signed by a key the JWKS does not hold,
// the JWKS stays as it was (tokens already issued keep verifying), and
// signing readiness names the ring.

// swapped is a ring's state just before its key is replaced.
type swapped struct {
	good       *signetv1.SignResponse
	jwksBefore []byte
}

// beforeSwap signs once and keeps the JWKS.
func beforeSwap(t *testing.T, ts *testServer) swapped {
	t.Helper()
	good := sign(t, ts, "default")
	_, jwks := ts.get(t, JWKSPath)
	return swapped{good: good, jwksBefore: jwks}
}

// signRefused checks that Sign answers Internal, not a token.
func signRefused(t *testing.T, ts *testServer) {
	t.Helper()
	resp, err := ts.client.Sign(ctxT(t), &signetv1.SignRequest{KeyRing: "default", Audience: []string{"x"}})
	if codeOf(err) != codes.Internal {
		t.Fatalf("Sign with the key replaced: %v %v, want Internal", resp, err)
	}
}

// refusedAfterRefresh has the ring refresh and checks that the JWKS, and the
// tokens issued before, are as they were, that /readyz says the replica
// cannot sign because of a key mismatch, that gRPC health routes signing
// elsewhere, and that the mismatches were counted.
func (s swapped) refusedAfterRefresh(t *testing.T, ts *testServer, wantMismatches float64) {
	t.Helper()
	ks := ts.KeySet()
	ks.Tick(ctxT(t), ks.Ring("default"))
	if _, body := ts.get(t, JWKSPath); string(body) != string(s.jwksBefore) {
		t.Errorf("the JWKS changed to the replaced key:\n%s\nwas\n%s", body, s.jwksBefore)
	}
	if _, err := verify(t, s.jwksBefore, s.good.GetToken()); err != nil {
		t.Errorf("a token issued before the swap: %v", err)
	}
	ts.readyz(t, false)
	if body := ts.statusz(t); !strings.Contains(body, "key mismatch") || !strings.Contains(body, `key ring \"default\"`) {
		t.Errorf("/statusz: %s", body)
	}
	h, err := healthpb.NewHealthClient(ts.conn).Check(ctxT(t), &healthpb.HealthCheckRequest{Service: signerServiceName})
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("SignerService health: %v %v", h.GetStatus(), err)
	}
	if got := scrape(t, ts).Value(t, "signet_key_mismatches_total", "key_ring", "default"); got < wantMismatches {
		t.Errorf("key mismatches counted: %v, want at least %v", got, wantMismatches)
	}
}

// startKMS starts a server whose ring "default" is on the KMS test server,
// and returns a KMS client of the test's own (the real SDK), as an operator
// or an intruder with KMS permissions would use.
func startKMS(t *testing.T) (*testServer, *kmstest.Server, *kms.Client) {
	t.Helper()
	k := kmstest.Start()
	t.Cleanup(k.Close)
	cfg := testConfig(t)
	cfg.KeyRings[0].Backend = "awskms:?endpoint=" + url.QueryEscape(k.URL)
	ts := startServer(t, cfg, Options{})
	awsCfg, err := config.LoadDefaultConfig(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	return ts, k, kms.NewFromConfig(awsCfg, func(o *kms.Options) { o.BaseEndpoint = aws.String(k.URL) })
}

// The KMS key behind the version's ARN signs with other key material (KMS
// never changes a key's material; a faulty or compromised KMS, or a proxy
// in front of it, could): Sign refuses, since the signature does not
// verify with the published key. awskms reads a version's public key once
// per ARN, so the refresh finds nothing changed; the bad signature alone
// turns readiness off.
func TestKMSKeyMaterialReplacedBehindSignetsBack(t *testing.T) {
	t.Parallel()
	ts, k, _ := startKMS(t)
	s := beforeSwap(t, ts)
	v, err := ts.KeySet().Active(ts.KeySet().Ring("default"))
	if err != nil {
		t.Fatal(err)
	}
	if err := k.ReplaceKeyMaterial(v.ID); err != nil {
		t.Fatal(err)
	}
	signRefused(t, ts)
	s.refusedAfterRefresh(t, ts, 1)
}

// The version alias alias/signet/default/1 re-pointed at another key (an
// operator's mistake, or an intruder with kms:CreateKey and kms:UpdateAlias
// who wants a key of theirs in the JWKS): the refresh would list version 1
// as a key with another ARN and public key, and drop the published one. It
// is refused as a key mismatch; Sign goes on with the ARN it published,
// whose key is unchanged, so its tokens still verify.
func TestKMSVersionAliasRepointedBehindSignetsBack(t *testing.T) {
	t.Parallel()
	ts, k, client := startKMS(t)
	s := beforeSwap(t, ts)
	other, err := client.CreateKey(ctxT(t), &kms.CreateKeyInput{KeySpec: types.KeySpecEccNistP256, KeyUsage: types.KeyUsageTypeSignVerify})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.UpdateAlias(ctxT(t), &kms.UpdateAliasInput{AliasName: aws.String("alias/signet/default/1"),
		TargetKeyId: other.KeyMetadata.KeyId}); err != nil {
		t.Fatal(err)
	}
	if got := k.Aliases()["alias/signet/default/1"]; got != aws.ToString(other.KeyMetadata.KeyId) {
		t.Fatalf("the alias targets %s", got)
	}
	s.refusedAfterRefresh(t, ts, 1)
	after := sign(t, ts, "default")
	if _, err := verify(t, s.jwksBefore, after.GetToken()); err != nil {
		t.Errorf("a token signed after the alias moved does not verify with the published JWKS: %v", err)
	}
}

// allow_broad_key_usage reaches the key set from the config: a ring whose
// key file others may read stops startup without it and starts with it.
func TestAllowBroadKeyUsageReachesTheRing(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	dir := strings.TrimPrefix(cfg.KeyRings[0].Backend, "local://")
	startServer(t, cfg, Options{}) // creates version 1
	keyFile := filepath.Join(dir, "rings", "default", "1.json")
	if err := os.Chmod(keyFile, 0o644); err != nil {
		t.Fatal(err)
	}
	srv, err := New(ctxT(t), cfg, Options{Logger: testLogger(t)})
	if err == nil {
		srv.Close()
		t.Fatal("started with a key file others may read")
	}
	if !strings.Contains(err.Error(), keyFile+" has mode 0644") || !strings.Contains(err.Error(), "allow_broad_key_usage") {
		t.Errorf("refusal: %v", err)
	}
	cfg.KeyRings[0].AllowBroadKeyUsage = true
	startServer(t, cfg, Options{})
}
