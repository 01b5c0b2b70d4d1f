//go:build pkcs11

package main

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/signet-dev/signet/backends/pkcs11/softhsmtest"
	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
)

func init() { buildFlags = append(buildFlags, "-tags=pkcs11") }

// TestEndToEndPKCS11 runs `signet serve` on a SoftHSM2 token: sign, verify
// through the live JWKS, rotate, revoke, restart and find the same kids.
func TestEndToEndPKCS11(t *testing.T) {
	tok := softhsmtest.New(t) // sets SOFTHSM2_CONF, which the child inherits
	config := func(grpcAddr, httpAddr string) string {
		var b strings.Builder
		fmt.Fprintf(&b, "issuer: http://%s\ngrpc: {listen: %q}\nhttp: {listen: %q}\nlog: {level: debug}\nkey_rings:\n", httpAddr, grpcAddr, httpAddr)
		fmt.Fprintf(&b, "  - {name: default, backend: '%s', algorithm: ES256, token_max_ttl: 1m, jwks_max_age: 1s, refresh_interval: 1s, publish_ahead: 2s}\n", tok.URI())
		fmt.Fprintf(&b, "  - {name: eddsa, backend: '%s', algorithm: EdDSA}\n", tok.URI())
		fmt.Fprintf(&b, "  - {name: ps384, backend: '%s', algorithm: PS384}\n", tok.URI())
		return b.String()
	}
	p := startSignetWith(t, config)
	jwks := p.jwks(t)
	var tokens []string
	for _, ring := range []string{"default", "eddsa", "ps384"} {
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
	if fresh.GetKid() != rot.GetVersion().GetKid() {
		t.Fatalf("the rotated version never signed")
	}

	rev, err := p.client.Rotate(ctxT(t), &signetv1.RotateRequest{KeyRing: "default", RevokePrevious: true})
	if err != nil {
		t.Fatal(err)
	}
	jwks = p.jwks(t)
	if strings.Contains(string(jwks), old.GetKid()) || strings.Contains(string(jwks), fresh.GetKid()) {
		t.Error("revoked kids are still in the JWKS")
	}
	if latest := p.sign(t, "default"); latest.GetKid() != rev.GetVersion().GetKid() {
		t.Errorf("signed by %s after emergency rotation, want %s", latest.GetKid(), rev.GetVersion().GetKid())
	}

	before := listKids(t, p)
	p.stop(t)
	p2 := startSignetWith(t, config)
	if after := listKids(t, p2); !slices.Equal(before, after) {
		t.Errorf("keys changed across restart:\nbefore %v\nafter  %v", before, after)
	}
	if err := goJOSEVerify(p2.jwks(t), p2.sign(t, "default").GetToken(), p2.issuer); err != nil {
		t.Errorf("after restart: %v", err)
	}
}
