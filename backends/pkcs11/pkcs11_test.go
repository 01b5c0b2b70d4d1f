//go:build pkcs11 && cgo

package pkcs11

import (
	"context"
	"encoding/hex"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	p11 "github.com/miekg/pkcs11"

	"github.com/signet-dev/signet/backends"
	"github.com/signet-dev/signet/backends/signertest"
	"github.com/signet-dev/signet/internal/softhsmtest"
)

// The tests here do not run in parallel with each other: softhsmtest.New
// points SOFTHSM2_CONF, which SoftHSM2 reads when the library is first
// initialized, at the test's own token (t.Setenv). The suite's cases within
// TestConformance do run in parallel, on one token.

func open(t testing.TB, uri string) *Backend {
	t.Helper()
	u, err := url.Parse(uri)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(context.Background(), u, backends.OpenOptions{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s.(*Backend)
}

func TestConformance(t *testing.T) {
	tok := softhsmtest.New(t)
	b := open(t, tok.URI())
	t.Logf("SoftHSM2 supports %v", b.Algorithms())
	for _, want := range []backends.Algorithm{backends.ES256, backends.ES384, backends.ES512, backends.RS256, backends.PS256} {
		if !backends.Supports(b, want) {
			t.Errorf("SoftHSM2 should support %s", want)
		}
	}
	signertest.Run(t, signertest.Harness{Serial: true, Open: func(t *testing.T) backends.Signer {
		u, _ := url.Parse(tok.URI())
		s, err := Open(context.Background(), u, backends.OpenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}})
}

// The private keys Signet generates cannot be read out of the token.
func TestPrivateKeysDoNotLeave(t *testing.T) {
	tok := softhsmtest.New(t)
	b := open(t, tok.URI())
	for _, alg := range []backends.Algorithm{backends.ES256, backends.RS256, backends.EdDSA} {
		if !backends.Supports(b, alg) {
			continue
		}
		t.Run(string(alg), func(t *testing.T) {
			v, err := b.CreateVersion(context.Background(), backends.KeyRing{Name: "leak-" + strings.ToLower(string(alg)), Algorithm: alg}, "")
			if err != nil {
				t.Fatal(err)
			}
			id, _ := hex.DecodeString(v.ID)
			err = b.pool.with(context.Background(), func(sh p11.SessionHandle) error {
				hs, err := findObjects(b.mod.ctx, sh, []*p11.Attribute{p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PRIVATE_KEY), p11.NewAttribute(p11.CKA_ID, id)})
				if err != nil || len(hs) != 1 {
					return fmt.Errorf("finding the private key: %d objects, %v", len(hs), err)
				}
				secret := uint(p11.CKA_VALUE)
				if alg.IsRSAPKCS1() {
					secret = p11.CKA_PRIVATE_EXPONENT
				}
				if _, err := b.mod.ctx.GetAttributeValue(sh, hs[0], []*p11.Attribute{p11.NewAttribute(secret, nil)}); !isCode(err, p11.CKR_ATTRIBUTE_SENSITIVE) {
					return fmt.Errorf("reading the private value: got %v, want CKR_ATTRIBUTE_SENSITIVE", err)
				}
				attrs, err := b.mod.ctx.GetAttributeValue(sh, hs[0], []*p11.Attribute{
					p11.NewAttribute(p11.CKA_SENSITIVE, nil), p11.NewAttribute(p11.CKA_EXTRACTABLE, nil),
					p11.NewAttribute(p11.CKA_NEVER_EXTRACTABLE, nil), p11.NewAttribute(p11.CKA_TOKEN, nil), p11.NewAttribute(p11.CKA_PRIVATE, nil)})
				if err != nil {
					return err
				}
				want := []byte{1, 0, 1, 1, 1}
				for i, a := range attrs {
					if len(a.Value) != 1 || a.Value[0] != want[i] {
						return fmt.Errorf("attribute %#x is %v, want %v", a.Type, a.Value, want[i])
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

// 64 goroutines sign for a bounded time while sessions are closed
// underneath the pool; every signature verifies and none fails. Sessions are
// closed while idle: closing one that another thread is using is undefined
// in PKCS#11 (SoftHSM2 crashes), and is not how tokens invalidate sessions.
func TestConcurrencyAndSessionRecovery(t *testing.T) {
	tok := softhsmtest.New(t)
	b := open(t, tok.URI())
	ring := backends.KeyRing{Name: "busy", Algorithm: backends.ES256}
	v := signertest.CreateVersion(t, b, ring, "")
	run := func(d time.Duration, meanwhile func()) {
		t.Helper()
		stop := time.Now().Add(d)
		done := make(chan signertest.Load)
		go func() {
			done <- signertest.SignConcurrently(b, ring, v, 64, func(int) bool { return time.Now().Before(stop) })
		}()
		meanwhile()
		load := <-done
		t.Logf("%d signatures from 64 goroutines in %v, %d failed", load.Signed, d, load.Failed)
		if load.Failed > 0 || load.Signed == 0 {
			t.Fatalf("%d signed, %d failed; first errors: %v", load.Signed, load.Failed, load.Errors)
		}
	}
	closed := 0
	run(3*time.Second, func() {
		for end := time.Now().Add(2500 * time.Millisecond); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
			// Take a session as a caller would, close it behind the pool's
			// back, and hand it back as if it were healthy.
			sh, err := b.pool.get(context.Background())
			if err != nil {
				t.Error(err)
				return
			}
			if err := b.mod.ctx.CloseSession(sh); err != nil {
				t.Error(err)
			}
			closed++
			b.pool.idle <- sh
		}
	})
	if closed == 0 {
		t.Fatal("no session was closed underneath the pool")
	}
	t.Logf("closed %d sessions underneath the pool", closed)
	// Closing every session also logs the token out.
	if err := b.mod.ctx.CloseAllSessions(b.slot); err != nil {
		t.Fatal(err)
	}
	run(time.Second, func() {})
}

// Revoking destroys the private key object on the token and keeps the
// public one, so the version stays listed (the suite checks that it no
// longer signs, also after reopening).
func TestRevocationDestroysThePrivateKey(t *testing.T) {
	tok := softhsmtest.New(t)
	b := open(t, tok.URI())
	ring := backends.KeyRing{Name: "rev", Algorithm: backends.ES256}
	v1 := signertest.CreateVersion(t, b, ring, "")
	signertest.CreateVersion(t, b, ring, v1.ID)
	if err := b.DisableVersion(context.Background(), ring, v1.ID); err != nil {
		t.Fatal(err)
	}
	id, _ := hex.DecodeString(v1.ID)
	err := b.pool.with(context.Background(), func(sh p11.SessionHandle) error {
		for class, want := range map[uint]int{p11.CKO_PRIVATE_KEY: 0, p11.CKO_PUBLIC_KEY: 1} {
			hs, err := findObjects(b.mod.ctx, sh, []*p11.Attribute{p11.NewAttribute(p11.CKA_CLASS, class), p11.NewAttribute(p11.CKA_ID, id)})
			if err != nil {
				return err
			}
			if len(hs) != want {
				return fmt.Errorf("%d objects of class %d with the revoked version's id, want %d", len(hs), class, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestOpenErrors(t *testing.T) {
	tok := softhsmtest.New(t)
	mod := "module-path=" + tok.Module
	tests := []struct{ uri, want string }{
		{"pkcs11:token=signet?" + mod + "&pin-source=env:NO_SUCH_VAR_SIGNET", "no PIN"},
		{"pkcs11:token=nope?" + mod + "&pin-source=file:" + tok.PINFile, `no token labelled "nope"`},
		{"pkcs11:token=signet?pin-source=file:" + tok.PINFile, "needs module-path"},
		{"pkcs11:token=signet?" + mod + "&pin=1234", `unknown URI option "pin"`},
	}
	for _, tt := range tests {
		u, _ := url.Parse(tt.uri)
		if _, err := Open(context.Background(), u, backends.OpenOptions{}); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.uri, err, tt.want)
		}
	}
	// A wrong PIN is PermissionDenied and the PIN is not in the message.
	u, _ := url.Parse("pkcs11:token=signet?" + mod + "&pin-source=env:SIGNET_TEST_PIN")
	_, err := Open(context.Background(), u, backends.OpenOptions{Getenv: func(string) string { return "987654" }})
	if backends.KindOf(err) != backends.KindPermissionDenied || strings.Contains(err.Error(), "987654") {
		t.Errorf("wrong PIN: %v", err)
	}
}
