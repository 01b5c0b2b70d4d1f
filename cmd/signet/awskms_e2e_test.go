package main

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
	"github.com/signet-dev/signet/internal/kmstest"
)

// TestEndToEndAWSKMS runs `signet serve` against the KMS test server through
// the real AWS SDK: sign, verify through the live JWKS, rotate, revoke, and
// KMS going away under it.
func TestEndToEndAWSKMS(t *testing.T) {
	kms := kmstest.Start()
	t.Cleanup(kms.Close)
	backend := "awskms:?region=us-east-1&endpoint=" + url.QueryEscape(kms.URL)
	p := startSignetWith(t, backendConfig(backend, "RS512", "EdDSA"),
		"AWS_ACCESS_KEY_ID=AKIDSIGNETTEST", "AWS_SECRET_ACCESS_KEY=signet-test-secret", "AWS_EC2_METADATA_DISABLED=true",
		"AWS_CONFIG_FILE=/nonexistent", "AWS_SHARED_CREDENTIALS_FILE=/nonexistent")
	p.verifyAll(t, "default", "rs512", "eddsa")

	old, fresh, rot := p.rotateUntilSigning(t)
	if !strings.HasPrefix(rot.GetVersion().GetBackendId(), "arn:aws:kms:") {
		t.Errorf("rotated version's backend id %q is not a key ARN", rot.GetVersion().GetBackendId())
	}
	_, latest := p.revokePrevious(t, old, fresh)
	disabled := 0
	for _, k := range kms.Keys() {
		if k.State == "Disabled" {
			disabled++
		}
	}
	if disabled != 2 {
		t.Errorf("%d KMS keys disabled, want 2", disabled)
	}

	// KMS goes away: Unavailable within the deadline; the JWKS is still served.
	kms.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := p.client.Sign(ctx, &signetv1.SignRequest{KeyRing: "default", Audience: []string{"e2e"}}); status.Code(err) != codes.Unavailable {
		t.Errorf("Sign with KMS gone: %v", err)
	}
	if err := goJOSEVerify(p.jwks(t), latest.GetToken(), p.issuer); err != nil {
		t.Errorf("JWKS with KMS gone: %v", err)
	}
}
