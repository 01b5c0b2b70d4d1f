package main

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/signet-dev/signet/internal/kmstest"
)

// TestEndToEndAWSKMS runs `signet serve` against the KMS test server through
// the real AWS SDK: sign, verify through the live JWKS, rotate, revoke, and
// KMS going away under it.
func TestEndToEndAWSKMS(t *testing.T) {
	t.Parallel()
	kms := kmstest.Start()
	t.Cleanup(kms.Close)
	backend := "awskms:?region=us-east-1&endpoint=" + url.QueryEscape(kms.URL)
	// The test server makes the RSA-4096 key of rs512 in this (race-detector)
	// process, which a busy machine may not finish within a few seconds.
	var env []string
	for k, v := range kmstest.Env {
		env = append(env, k+"="+v)
	}
	p := startSignetWith(t, backendConfig(backend, 30*time.Second, "RS512", "EdDSA"), env...)
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
	p.backendGone(t, "KMS gone", latest)
}
