//go:build pkcs11 && cgo

package main

import (
	"context"
	"encoding/hex"
	"strings"
	"sync"
	"testing"
	"time"

	p11 "github.com/miekg/pkcs11"

	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
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

// tokenPairs lists the key pair objects on the token whose label is the
// ring's: for each CKA_ID (hex), how many objects carry it.
func tokenPairs(t *testing.T, tok *softhsmtest.Token, ring string) map[string]int {
	t.Helper()
	ctx := p11.New(tok.Module)
	if err := ctx.Initialize(); err != nil {
		t.Fatal(err)
	}
	defer func() { ctx.Finalize(); ctx.Destroy() }()
	slots, err := ctx.GetSlotList(true)
	if err != nil || len(slots) == 0 {
		t.Fatalf("slots: %v %v", slots, err)
	}
	var slot uint
	for _, s := range slots {
		if info, err := ctx.GetTokenInfo(s); err == nil && strings.TrimRight(info.Label, " \x00") == tok.Label {
			slot = s
		}
	}
	sh, err := ctx.OpenSession(slot, p11.CKF_SERIAL_SESSION)
	if err != nil {
		t.Fatal(err)
	}
	defer ctx.CloseSession(sh)
	if err := ctx.Login(sh, p11.CKU_USER, tok.PIN); err != nil {
		t.Fatal(err)
	}
	if err := ctx.FindObjectsInit(sh, nil); err != nil {
		t.Fatal(err)
	}
	hs, _, err := ctx.FindObjects(sh, 10000)
	ctx.FindObjectsFinal(sh)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, h := range hs {
		attrs, err := ctx.GetAttributeValue(sh, h, []*p11.Attribute{p11.NewAttribute(p11.CKA_LABEL, nil), p11.NewAttribute(p11.CKA_ID, nil)})
		if err != nil {
			continue // destroyed meanwhile
		}
		if strings.HasPrefix(string(attrs[0].Value), "signet/"+ring+"/") {
			out[hex.EncodeToString(attrs[1].Value)]++
		}
	}
	return out
}

// TestCrashDuringRotationRacePKCS11 runs two replicas on one SoftHSM2 token
// and has them rotate at the same moment, five times; each time, once a new
// key pair is on the token, one replica is killed with SIGKILL (so a
// replica that lost the race for the version number may die before
// destroying its pair) and restarted. Then every key pair of the ring on
// the token must be a version: whole (both halves), one per version, and
// `signet keys --leftovers` must report nothing.
// Not parallel: softhsmtest sets SOFTHSM2_CONF (t.Setenv) for the children.
func TestCrashDuringRotationRacePKCS11(t *testing.T) {
	tok := softhsmtest.New(t)
	config := backendConfig(tok.URI(), 2*time.Second)
	a, b := startSignetWith(t, config), startSignetWith(t, config)
	for round := range 5 {
		before := len(tokenPairs(t, tok, "default"))
		var wg sync.WaitGroup
		race := func() {
			for _, p := range []*process{a, b} {
				wg.Go(func() {
					ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
					defer cancel()
					p.client.Rotate(ctx, &signetv1.RotateRequest{KeyRing: "default"})
				})
			}
		}
		// SoftHSM2 sometimes fails both generations of a race between two
		// processes (CKR_FUNCTION_FAILED): race again until one makes a pair.
		// A pair seen is enough, even one that then loses and is destroyed
		// (a candidate a dead replica left for this version number wins
		// nothing until it is reaped, after the grace).
		generated := func() bool { return len(tokenPairs(t, tok, "default")) > before }
		seen := false
		for attempt := 0; !seen && attempt < 10; attempt++ {
			race()
			seen = waitFor(10*time.Second, generated)
		}
		if !seen {
			t.Fatalf("round %d: no key pair was generated in 10 races", round+1)
		}
		a.cmd.Process.Kill()
		wg.Wait()
		a.waitExit(t)
		a = startSignetWith(t, config)
	}
	// Both replicas are live: within 2 x backend_timeout + 2 x
	// refresh_interval the token holds nothing but versions: every object
	// of the ring has the CKA_ID of a listed version, a pair for an enabled
	// one. (A public half alone is what a revoked version looks like on a
	// token; SoftHSM2 killed while writing a private half leaves the same,
	// and it is listed, revoked, never published or used.)
	var pairs map[string]int
	var listed []*signetv1.KeyVersion
	if !waitFor(time.Minute, func() bool {
		pairs = tokenPairs(t, tok, "default")
		resp, err := b.client.ListKeys(ctxT(t), &signetv1.ListKeysRequest{KeyRing: "default"})
		if err != nil {
			return false
		}
		listed = resp.GetVersions()
		if len(pairs) != len(listed) {
			return false
		}
		for _, v := range listed {
			n, enabled := pairs[v.GetBackendId()], v.GetState() != signetv1.KeyState_KEY_STATE_REVOKED
			if n == 0 || enabled && n != 2 {
				return false
			}
		}
		return true
	}) {
		t.Errorf("the token holds %d key pairs of the ring (objects per CKA_ID: %v) for %d versions %v", len(pairs), pairs, len(listed), listed)
	}
	t.Logf("after 5 killed rotation races: %d versions, %d key pairs on the token", len(listed), len(pairs))
	// Leftovers of a generation killed half-way (a pending public half)
	// are removed once seen for the grace, 2 x backend_timeout.
	for _, p := range []*process{a, b} {
		var out string
		if !waitFor(time.Minute, func() bool {
			out = runCLI(t, "keys", "--server", p.grpcAddr, "--leftovers")
			return strings.Contains(out, "no leftovers")
		}) {
			t.Errorf("signet keys --leftovers:\n%s", out)
		}
	}
	// A token from either replica verifies with the other's JWKS once it
	// has refreshed (refresh_interval), as publish_ahead promises.
	token := a.sign(t, "default").GetToken()
	var err error
	if !waitFor(30*time.Second, func() bool { err = goJOSEVerify(b.jwks(t), token); return err == nil }) {
		t.Errorf("after the crashes: %v", err)
	}
}
