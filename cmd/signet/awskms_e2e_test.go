package main

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signet-dev/signet/backends/awskms/kmstest"
	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
)

// TestEndToEndAWSKMS runs `signet serve` against the KMS test server through
// the real AWS SDK: sign, verify through the live JWKS, rotate, revoke, and
// KMS going away under it.
func TestEndToEndAWSKMS(t *testing.T) {
	kms := kmstest.Start()
	t.Cleanup(kms.Close)
	backend := "awskms:?region=us-east-1&endpoint=" + url.QueryEscape(kms.URL)
	p := startSignetWith(t, func(grpcAddr, httpAddr string) string {
		var b strings.Builder
		fmt.Fprintf(&b, "issuer: http://%s\ngrpc: {listen: %q}\nhttp: {listen: %q}\nlog: {level: debug}\nbackend_timeout: 3s\nkey_rings:\n", httpAddr, grpcAddr, httpAddr)
		fmt.Fprintf(&b, "  - {name: default, backend: '%s', algorithm: ES256, token_max_ttl: 1m, jwks_max_age: 1s, refresh_interval: 1s, publish_ahead: 2s}\n", backend)
		fmt.Fprintf(&b, "  - {name: rs512, backend: '%s', algorithm: RS512}\n", backend)
		fmt.Fprintf(&b, "  - {name: eddsa, backend: '%s', algorithm: EdDSA}\n", backend)
		return b.String()
	}, "AWS_ACCESS_KEY_ID=AKIDSIGNETTEST", "AWS_SECRET_ACCESS_KEY=signet-test-secret", "AWS_EC2_METADATA_DISABLED=true",
		"AWS_CONFIG_FILE=/nonexistent", "AWS_SHARED_CREDENTIALS_FILE=/nonexistent")

	jwks := p.jwks(t)
	var tokens []string
	for _, ring := range []string{"default", "rs512", "eddsa"} {
		resp := p.sign(t, ring)
		if err := goJOSEVerify(jwks, resp.GetToken(), p.issuer); err != nil {
			t.Errorf("%s: go-jose: %v", ring, err)
		}
		tokens = append(tokens, resp.GetToken())
	}
	for i, r := range pyJWTVerify(t, p, tokens...) {
		if !r.OK {
			t.Errorf("token %d: PyJWT: %+v", i, r)
		}
	}

	old := p.sign(t, "default")
	rot, err := p.client.Rotate(ctxT(t), &signetv1.RotateRequest{KeyRing: "default"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(rot.GetVersion().GetBackendId(), "arn:aws:kms:") || rot.GetVersion().GetState() != signetv1.KeyState_KEY_STATE_PENDING {
		t.Errorf("rotated version %v", rot.GetVersion())
	}
	var fresh *signetv1.SignResponse
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if fresh = p.sign(t, "default"); fresh.GetKid() == rot.GetVersion().GetKid() {
			break
		}
	}
	jwks = p.jwks(t)
	for _, tk := range []*signetv1.SignResponse{old, fresh} {
		if err := goJOSEVerify(jwks, tk.GetToken(), p.issuer); err != nil {
			t.Errorf("after rotation, token of %s: %v", tk.GetKid(), err)
		}
	}

	rev, err := p.client.Rotate(ctxT(t), &signetv1.RotateRequest{KeyRing: "default", RevokePrevious: true})
	if err != nil {
		t.Fatal(err)
	}
	jwks = p.jwks(t)
	if strings.Contains(string(jwks), old.GetKid()) || strings.Contains(string(jwks), rot.GetVersion().GetKid()) {
		t.Error("revoked kids are still in the JWKS")
	}
	latest := p.sign(t, "default")
	if latest.GetKid() != rev.GetVersion().GetKid() {
		t.Errorf("signed by %s after emergency rotation, want %s", latest.GetKid(), rev.GetVersion().GetKid())
	}
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
