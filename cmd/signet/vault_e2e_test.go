package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
	"github.com/signet-dev/signet/internal/vaulttest"
)

// TestEndToEndVault runs `signet serve` against a real Vault: signing,
// verification through the live JWKS, rotation and revocation as Transit
// versions, and Vault freezing and dying under it.
func TestEndToEndVault(t *testing.T) {
	v := vaulttest.Start(t)
	vaultURL, _ := url.Parse(v.Addr)
	p := startSignetWith(t, backendConfig("vault://"+vaultURL.Host+"/transit?scheme=http&key_prefix=signet-", "PS256", "EdDSA"),
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
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	_, err := p.client.Sign(ctx, &signetv1.SignRequest{KeyRing: "default", Audience: []string{"e2e"}})
	deadlinePassed := ctx.Err() != nil
	cancel()
	if status.Code(err) != codes.Unavailable || deadlinePassed {
		t.Errorf("Sign with Vault frozen: %v (deadline passed: %v); want Unavailable in time", err, deadlinePassed)
	}
	if got := p.jwks(t); string(got) != string(jwksBefore) {
		t.Errorf("JWKS changed while Vault was frozen")
	}
	waitReadiness(t, p, http.StatusServiceUnavailable, "default")
	v.Thaw(t)
	waitReadiness(t, p, http.StatusOK, "")
	p.verifyAll(t, "default")

	// Emergency rotation: old kids leave the JWKS; Vault refuses the old versions.
	_, latest := p.revokePrevious(t, old, fresh)
	if sec, _ := v.Root(t).Logical().Read("transit/keys/signet-default"); fmt.Sprint(sec.Data["min_encryption_version"]) != "3" {
		t.Errorf("min_encryption_version = %v, want 3", sec.Data["min_encryption_version"])
	}

	// Vault dies: Unavailable, and the JWKS is still served.
	v.Kill(t)
	ctx, cancel = context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := p.client.Sign(ctx, &signetv1.SignRequest{KeyRing: "default", Audience: []string{"e2e"}}); status.Code(err) != codes.Unavailable {
		t.Errorf("Sign with Vault dead: %v", err)
	}
	if err := goJOSEVerify(p.jwks(t), latest.GetToken(), p.issuer); err != nil {
		t.Errorf("JWKS with Vault dead: %v", err)
	}
}

func waitReadiness(t *testing.T, p *process, code int, mention string) {
	t.Helper()
	var last string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		resp, err := http.Get(p.httpURL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 2048)
		n, _ := resp.Body.Read(buf)
		resp.Body.Close()
		last = string(buf[:n])
		if resp.StatusCode == code && strings.Contains(last, mention) {
			return
		}
	}
	t.Errorf("/readyz never answered %d mentioning %q; last: %s", code, mention, last)
}
