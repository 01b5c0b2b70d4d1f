package main

import (
	"fmt"
	"net/url"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/signet-dev/signet/internal/vaulttest"
)

// TestEndToEndVault runs `signet serve` against a real Vault: signing,
// verification through the live JWKS, rotation and revocation as Transit
// versions, and Vault freezing and dying under it.
func TestEndToEndVault(t *testing.T) {
	t.Parallel()
	v := vaulttest.Start(t)
	vaultURL, _ := url.Parse(v.Addr)
	// A short backend_timeout: with Vault frozen, refreshes must give up
	// soon for the test to see them fail.
	p := startSignetWith(t, backendConfig("vault://"+vaultURL.Host+"/transit?scheme=http&key_prefix=signet-", 3*time.Second, "PS256", "EdDSA"),
		"VAULT_TOKEN="+vaulttest.RootToken)
	p.verifyAll(t, "default", "ps256", "eddsa")

	// Rotate: the new Transit version shows up as pending, then signs.
	old, fresh, rot := p.rotateUntilSigning(t)
	if rot.GetVersion().GetBackendId() != "2" {
		t.Errorf("rotated version has backend id %s, want Transit version 2", rot.GetVersion().GetBackendId())
	}
	if sec, err := v.Root(t).Logical().Read("transit/keys/signet-default"); err != nil || fmt.Sprint(sec.Data["latest_version"]) != "2" {
		t.Errorf("Transit key after Rotate: %v %v", sec, err)
	}

	// Vault freezes: Sign is Unavailable within the caller's deadline and
	// the ring's signing health goes NOT_SERVING at once, while the replica stays
	// ready and serves the JWKS; failed refreshes are counted. Thawing
	// resumes signing and resets the count.
	jwksBefore := p.jwks(t)
	v.Freeze(t)
	p.signUnavailable(t, "Vault frozen")
	if got := p.jwks(t); string(got) != string(jwksBefore) {
		t.Errorf("JWKS changed while Vault was frozen")
	}
	failures := func() float64 {
		return p.metrics(t).Value(t, "signet_key_ring_refresh_failures", "key_ring", "default")
	}
	if !waitFor(30*time.Second, func() bool { return failures() >= 2 }) {
		t.Errorf("refresh failures with Vault frozen: %v, want them to rise", failures())
	}
	v.Thaw(t)
	p.waitSigning(t, "default", healthpb.HealthCheckResponse_SERVING)
	if !waitFor(30*time.Second, func() bool { return failures() == 0 }) {
		t.Errorf("refresh failures after the thaw: %v, want 0", failures())
	}
	p.verifyAll(t, "default")

	// Emergency rotation: old kids leave the JWKS; Vault refuses the old versions.
	_, latest := p.revokePrevious(t, old, fresh)
	if sec, _ := v.Root(t).Logical().Read("transit/keys/signet-default"); fmt.Sprint(sec.Data["min_encryption_version"]) != "3" {
		t.Errorf("min_encryption_version = %v, want 3", sec.Data["min_encryption_version"])
	}

	// Neither the Vault token nor a token Signet issued is in its log or metrics.
	p.noSecrets(t, vaulttest.RootToken, latest.GetToken())

	// Vault dies: Unavailable, and the JWKS is still served.
	v.Kill(t)
	p.backendGone(t, "Vault dead", latest)
}
