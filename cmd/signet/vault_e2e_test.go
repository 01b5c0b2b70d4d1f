package main

import (
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/signet-dev/signet/backends/vault/vaulttest"
)

// TestEndToEndVault runs `signet serve` against a real Vault: signing,
// verification through the live JWKS, rotation and revocation as Transit
// versions, and Vault freezing and dying under it.
func TestEndToEndVault(t *testing.T) {
	t.Parallel()
	v := vaulttest.Start(t)
	vaultURL, _ := url.Parse(v.Addr)
	// A short backend_timeout: with Vault frozen, the refresh must give up
	// soon for /readyz to say so.
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

	// Vault freezes: Sign is Unavailable within the caller's deadline, the
	// JWKS is still served, readiness says why; thawing resumes signing.
	jwksBefore := p.jwks(t)
	v.Freeze(t)
	p.signUnavailable(t, "Vault frozen")
	if got := p.jwks(t); string(got) != string(jwksBefore) {
		t.Errorf("JWKS changed while Vault was frozen")
	}
	p.waitReadiness(t, http.StatusServiceUnavailable, "default")
	v.Thaw(t)
	p.waitReadiness(t, http.StatusOK, "")
	p.verifyAll(t, "default")

	// Emergency rotation: old kids leave the JWKS; Vault refuses the old versions.
	_, latest := p.revokePrevious(t, old, fresh)
	if sec, _ := v.Root(t).Logical().Read("transit/keys/signet-default"); fmt.Sprint(sec.Data["min_encryption_version"]) != "3" {
		t.Errorf("min_encryption_version = %v, want 3", sec.Data["min_encryption_version"])
	}

	// Vault dies: Unavailable, and the JWKS is still served.
	v.Kill(t)
	p.backendGone(t, "Vault dead", latest)
}
