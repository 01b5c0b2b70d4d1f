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

	"github.com/signet-dev/signet/backends/vault/vaulttest"
	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
)

// TestEndToEndVault runs `signet serve` against a real Vault: signing,
// verification through the live JWKS, rotation and revocation as Transit
// versions, and Vault freezing and dying under it.
func TestEndToEndVault(t *testing.T) {
	v := vaulttest.Start(t)
	vaultURL, _ := url.Parse(v.Addr)
	p := startSignetWith(t, func(grpcAddr, httpAddr string) string {
		var b strings.Builder
		fmt.Fprintf(&b, "issuer: http://%s\ngrpc: {listen: %q}\nhttp: {listen: %q}\nlog: {level: debug}\nbackend_timeout: 5s\nkey_rings:\n", httpAddr, grpcAddr, httpAddr)
		backend := "vault://" + vaultURL.Host + "/transit?scheme=http&key_prefix=signet-"
		fmt.Fprintf(&b, "  - {name: default, backend: '%s', algorithm: ES256, token_max_ttl: 1m, jwks_max_age: 1s, refresh_interval: 1s, publish_ahead: 2s}\n", backend)
		fmt.Fprintf(&b, "  - {name: ps256, backend: '%s', algorithm: PS256}\n", backend)
		fmt.Fprintf(&b, "  - {name: eddsa, backend: '%s', algorithm: EdDSA}\n", backend)
		return b.String()
	}, "VAULT_TOKEN="+vaulttest.RootToken)

	jwks := p.jwks(t)
	var tokens []string
	for _, ring := range []string{"default", "ps256", "eddsa"} {
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

	// Rotate: the new Transit version shows up as pending.
	old := p.sign(t, "default")
	rot, err := p.client.Rotate(ctxT(t), &signetv1.RotateRequest{KeyRing: "default"})
	if err != nil {
		t.Fatal(err)
	}
	if rot.GetVersion().GetBackendId() != "2" || rot.GetVersion().GetState() != signetv1.KeyState_KEY_STATE_PENDING {
		t.Errorf("rotated version: backend id %s, %v; want Transit version 2, pending", rot.GetVersion().GetBackendId(), rot.GetVersion().GetState())
	}
	if sec, err := v.Root(t).Logical().Read("transit/keys/signet-default"); err != nil || fmt.Sprint(sec.Data["latest_version"]) != "2" {
		t.Errorf("Transit key after Rotate: %v %v", sec, err)
	}
	if !strings.Contains(string(p.jwks(t)), rot.GetVersion().GetKid()) {
		t.Error("the new kid is not in the JWKS right after Rotate")
	}

	// Vault freezes: Sign is Unavailable within the caller's deadline, the
	// JWKS is still served, readiness says why; thawing resumes signing.
	jwksBefore := p.jwks(t)
	v.Freeze(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	_, err = p.client.Sign(ctx, &signetv1.SignRequest{KeyRing: "default", Audience: []string{"e2e"}})
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
	after := p.sign(t, "default")
	if err := goJOSEVerify(p.jwks(t), after.GetToken(), p.issuer); err != nil {
		t.Errorf("after Vault thawed: %v", err)
	}

	// Emergency rotation: old kids leave the JWKS; Vault refuses the old versions.
	rev, err := p.client.Rotate(ctxT(t), &signetv1.RotateRequest{KeyRing: "default", RevokePrevious: true})
	if err != nil {
		t.Fatal(err)
	}
	jwks = p.jwks(t)
	for _, gone := range []string{old.GetKid(), rot.GetVersion().GetKid()} {
		if strings.Contains(string(jwks), gone) {
			t.Errorf("revoked kid %s still in the JWKS", gone)
		}
	}
	if err := goJOSEVerify(jwks, old.GetToken(), p.issuer); err == nil {
		t.Error("a token of a revoked version still verifies")
	}
	latest := p.sign(t, "default")
	if latest.GetKid() != rev.GetVersion().GetKid() {
		t.Errorf("signed by %s after emergency rotation, want %s", latest.GetKid(), rev.GetVersion().GetKid())
	}
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
