//go:build pkcs11

package main

import (
	"slices"
	"testing"

	"github.com/signet-dev/signet/internal/softhsmtest"
)

func init() { buildFlags = append(buildFlags, "-tags=pkcs11") }

// TestEndToEndPKCS11 runs `signet serve` on a SoftHSM2 token: sign, verify
// through the live JWKS, rotate, revoke, restart and find the same kids.
func TestEndToEndPKCS11(t *testing.T) {
	tok := softhsmtest.New(t) // sets SOFTHSM2_CONF, which the child inherits
	config := backendConfig(tok.URI(), "EdDSA", "PS384")
	p := startSignetWith(t, config)
	p.verifyAll(t, "default", "eddsa", "ps384")
	old, fresh, _ := p.rotateUntilSigning(t)
	p.revokePrevious(t, old, fresh)

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
