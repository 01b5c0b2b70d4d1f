//go:build pkcs11 && cgo

package main

import (
	"testing"
	"time"

	"github.com/signet-dev/signet/internal/softhsmtest"
)

func init() { buildFlags = append(buildFlags, "-tags=pkcs11") }

// TestEndToEndPKCS11 runs `signet serve` on a SoftHSM2 token: sign, verify
// through the live JWKS, rotate, revoke, restart and find the same kids.
// Not parallel: softhsmtest sets SOFTHSM2_CONF (t.Setenv) for the child.
func TestEndToEndPKCS11(t *testing.T) {
	tok := softhsmtest.New(t)
	// SoftHSM2 makes the RSA-3072 key of ps384 at startup; a busy machine
	// may take more than a few seconds.
	p := startSignetWith(t, backendConfig(tok.URI(), 30*time.Second, "EdDSA", "PS384"))
	p.verifyAll(t, "default", "eddsa", "ps384")
	old, fresh, _ := p.rotateUntilSigning(t)
	p.revokePrevious(t, old, fresh)

	p2 := p.restart(t)
	latest := p2.sign(t, "default")
	if err := goJOSEVerify(p2.jwks(t), latest.GetToken()); err != nil {
		t.Errorf("after restart: %v", err)
	}
	// Neither the PIN nor a token is in the log or the metrics.
	p.noSecrets(t, tok.PIN)
	p2.noSecrets(t, tok.PIN, latest.GetToken())
}
