//go:build pkcs11 && cgo

package pkcs11

import (
	"context"
	"crypto/ecdsa"
	"encoding/asn1"
	"encoding/hex"
	"fmt"
	"net/url"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	p11 "github.com/miekg/pkcs11"

	"github.com/signet-dev/signet/backends"
	"github.com/signet-dev/signet/backends/signertest"
	"github.com/signet-dev/signet/internal/clocktest"
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
	signertest.Run(t, signertest.Harness{Serial: true, OpenWith: func(t *testing.T, opts backends.OpenOptions) backends.Signer {
		u, _ := url.Parse(tok.URI())
		s, err := Open(context.Background(), u, opts)
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

func openWith(t testing.TB, uri string, opts backends.OpenOptions) *Backend {
	t.Helper()
	u, _ := url.Parse(uri)
	s, err := Open(context.Background(), u, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s.(*Backend)
}

// objectsWithID counts the token's objects of a class with a CKA_ID.
func objectsWithID(t *testing.T, b *Backend, class uint, id []byte) int {
	t.Helper()
	var n int
	err := b.pool.with(context.Background(), func(sh p11.SessionHandle) error {
		hs, err := findObjects(b.mod.ctx, sh, []*p11.Attribute{p11.NewAttribute(p11.CKA_CLASS, class), p11.NewAttribute(p11.CKA_ID, id)})
		n = len(hs)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// liveReplica opens an instance with a clock the test moves and counts
// what it cleans up.
func liveReplica(t *testing.T, uri string) (*Backend, *clocktest.Clock, *atomic.Int64) {
	clock := clocktest.New()
	var recovered atomic.Int64
	return openWith(t, uri, backends.OpenOptions{Now: clock.Now, RecoveryGrace: time.Minute,
		OnRecover: func(string) { recovered.Add(1) }}), clock, &recovered
}

// A replica paused between C_GenerateKeyPair and the relabelling of its
// public key while another replica rotates: exactly one of the two
// reports success, whichever CKA_ID orders first, and that version is the
// one Versions keeps. (The winner used to be the pair whose label, from
// its replica's clock, was older: the paused one, which then displaced
// the version the other had already reported.) Several rounds, so that
// both orders of the two random CKA_IDs occur.
func TestPausedCandidateNeverDisplacesAWinner(t *testing.T) {
	tok := softhsmtest.New(t)
	ring := backends.KeyRing{Name: "paused", Algorithm: backends.ES256}
	a, b := open(t, tok.URI()), open(t, tok.URI())
	latest := signertest.CreateVersion(t, a, ring, "").ID
	for round := range 6 {
		generated, resume := make(chan struct{}), make(chan struct{})
		ctx := backends.WithStepHook(context.Background(), func(step string) {
			if step == "GenerateKeyPair" {
				close(generated)
				<-resume
			}
		})
		type result struct {
			v   backends.Version
			err error
		}
		paused := make(chan result, 1)
		go func() {
			v, err := a.CreateVersion(ctx, ring, latest)
			paused <- result{v, err}
		}()
		<-generated
		vb, errB := b.CreateVersion(context.Background(), ring, latest)
		close(resume)
		ra := <-paused
		var won []backends.Version
		for _, r := range []result{ra, {vb, errB}} {
			switch {
			case r.err == nil:
				won = append(won, r.v)
			case backends.KindOf(r.err) != backends.KindConflict:
				t.Fatalf("round %d: %v", round, r.err)
			}
		}
		if len(won) != 1 {
			t.Fatalf("round %d: %d rotations reported success (%+v), want exactly 1", round, len(won), won)
		}
		vs, err := open(t, tok.URI()).Versions(context.Background(), ring)
		if err != nil || len(vs) != round+2 || vs[len(vs)-1].ID != won[0].ID {
			t.Fatalf("round %d: Versions = %+v, %v; want %d versions, the newest the one reported, %s", round, vs, err, round+2, won[0].ID)
		}
		if left, err := a.Leftovers(context.Background(), ring); err != nil || len(left) != 0 {
			t.Errorf("round %d: leftovers %+v, %v: the loser removes its own pair", round, left, err)
		}
		latest = won[0].ID
	}
}

// A replica that loses the race for a version number and dies before
// destroying its candidate leaves a pair that is never a version: a live
// replica destroys it once the grace has passed.
func TestLostRaceCandidateIsNeverAVersion(t *testing.T) {
	tok := softhsmtest.New(t)
	ring := backends.KeyRing{Name: "race", Algorithm: backends.ES256}
	winner := open(t, tok.URI())
	v1 := signertest.CreateVersion(t, winner, ring, "")

	loser := open(t, tok.URI())
	listed, resume, crashed, release, done := make(chan struct{}), make(chan struct{}), make(chan struct{}), make(chan struct{}), make(chan struct{})
	ctx := backends.WithStepHook(context.Background(), func(step string) {
		switch step {
		case "list":
			close(listed)
			<-resume
		case "list candidates": // it has seen that it lost; it dies before destroying its pair
			close(crashed)
			<-release
			runtime.Goexit()
		}
	})
	go func() {
		defer close(done)
		loser.CreateVersion(ctx, ring, v1.ID)
	}()
	t.Cleanup(func() { close(release); <-done })
	<-listed
	v2 := signertest.CreateVersion(t, winner, ring, v1.ID) // the winner creates version 2 meanwhile
	close(resume)
	<-crashed

	live, clock, recovered := liveReplica(t, tok.URI())
	vs, err := live.Versions(context.Background(), ring)
	if err != nil || len(vs) != 2 || vs[1].ID != v2.ID {
		t.Fatalf("versions with a second candidate for version 2 on the token: %+v, %v; want v1 and the winner's v2", vs, err)
	}
	left, err := live.Leftovers(context.Background(), ring)
	if err != nil || len(left) != 1 || !strings.Contains(left[0].Kind, "not completed") {
		t.Fatalf("leftovers: %+v, %v", left, err)
	}
	dup, _ := hex.DecodeString(strings.TrimPrefix(strings.Fields(left[0].ID)[0], "CKA_ID="))
	if recovered.Load() != 0 || objectsWithID(t, live, p11.CKO_PRIVATE_KEY, dup) != 1 {
		t.Fatal("the candidate was touched within the grace")
	}
	clock.Advance(2 * time.Minute)
	if _, err := live.Versions(context.Background(), ring); err != nil {
		t.Fatal(err)
	}
	if n := objectsWithID(t, live, p11.CKO_PRIVATE_KEY, dup) + objectsWithID(t, live, p11.CKO_PUBLIC_KEY, dup); n != 0 || recovered.Load() != 1 {
		t.Errorf("after the grace: %d objects of the candidate left, %d clean-ups reported", n, recovered.Load())
	}
	if left, _ := live.Leftovers(context.Background(), ring); len(left) != 0 {
		t.Errorf("leftovers after the clean-up: %+v", left)
	}
	signertest.CreateVersion(t, live, ring, v2.ID)
}

// A key pair missing its public half, or whose halves are not both
// labelled for the ring (an interrupted generation on a token that allows
// it), is never a version and is destroyed once the grace has passed.
func TestIncompleteKeyPairsAreNeverVersions(t *testing.T) {
	tok := softhsmtest.New(t)
	ring := backends.KeyRing{Name: "torn", Algorithm: backends.ES256}
	b := open(t, tok.URI())
	v1 := signertest.CreateVersion(t, b, ring, "")
	v2 := signertest.CreateVersion(t, b, ring, v1.ID)
	noPublic, _ := hex.DecodeString(v2.ID)
	// Only the private half of version 2 is left.
	if err := b.pool.with(context.Background(), func(sh p11.SessionHandle) error {
		hs, err := findObjects(b.mod.ctx, sh, []*p11.Attribute{p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PUBLIC_KEY), p11.NewAttribute(p11.CKA_ID, noPublic)})
		if err != nil || len(hs) != 1 {
			return fmt.Errorf("%d public objects, %v", len(hs), err)
		}
		return b.mod.ctx.DestroyObject(sh, hs[0])
	}); err != nil {
		t.Fatal(err)
	}
	// A pair whose public half has no label.
	unlabelled := []byte{0, 0, 0, 3, 1, 2, 3, 4}
	lbl := label(ring.Name, 3, time.Now())
	if err := b.pool.with(context.Background(), func(sh p11.SessionHandle) error {
		params, _ := asn1.Marshal(curveOIDs[backends.ES256])
		_, _, err := b.mod.ctx.GenerateKeyPair(sh, []*p11.Mechanism{p11.NewMechanism(p11.CKM_EC_KEY_PAIR_GEN, nil)},
			[]*p11.Attribute{p11.NewAttribute(p11.CKA_TOKEN, true), p11.NewAttribute(p11.CKA_VERIFY, true),
				p11.NewAttribute(p11.CKA_ID, unlabelled), p11.NewAttribute(p11.CKA_EC_PARAMS, params)},
			[]*p11.Attribute{p11.NewAttribute(p11.CKA_TOKEN, true), p11.NewAttribute(p11.CKA_PRIVATE, true), p11.NewAttribute(p11.CKA_SIGN, true),
				p11.NewAttribute(p11.CKA_LABEL, lbl), p11.NewAttribute(p11.CKA_ID, unlabelled)})
		return err
	}); err != nil {
		t.Fatal(err)
	}

	// A public half alone, still labelled pending, as SoftHSM2 killed in
	// C_GenerateKeyPair leaves it. (Found by the end-to-end crash test: it
	// was listed as a revoked version.)
	pubOnly := []byte{0, 0, 0, 4, 5, 6, 7, 8}
	if err := b.pool.with(context.Background(), func(sh p11.SessionHandle) error {
		params, _ := asn1.Marshal(curveOIDs[backends.ES256])
		_, priv, err := b.mod.ctx.GenerateKeyPair(sh, []*p11.Mechanism{p11.NewMechanism(p11.CKM_EC_KEY_PAIR_GEN, nil)},
			[]*p11.Attribute{p11.NewAttribute(p11.CKA_TOKEN, true), p11.NewAttribute(p11.CKA_VERIFY, true),
				p11.NewAttribute(p11.CKA_LABEL, pendingPrefix+strings.TrimPrefix(label(ring.Name, 4, time.Now()), "signet")),
				p11.NewAttribute(p11.CKA_ID, pubOnly), p11.NewAttribute(p11.CKA_EC_PARAMS, params)},
			[]*p11.Attribute{p11.NewAttribute(p11.CKA_TOKEN, true), p11.NewAttribute(p11.CKA_PRIVATE, true), p11.NewAttribute(p11.CKA_SIGN, true),
				p11.NewAttribute(p11.CKA_ID, pubOnly)})
		if err != nil {
			return err
		}
		return b.mod.ctx.DestroyObject(sh, priv)
	}); err != nil {
		t.Fatal(err)
	}

	live, clock, recovered := liveReplica(t, tok.URI())
	vs, err := live.Versions(context.Background(), ring)
	if err != nil || len(vs) != 1 || vs[0].ID != v1.ID {
		t.Fatalf("versions with three incomplete pairs on the token: %+v, %v; want only v1", vs, err)
	}
	if left, _ := live.Leftovers(context.Background(), ring); len(left) != 3 {
		t.Fatalf("leftovers: %+v, want the three incomplete pairs", left)
	}
	if _, err := live.Sign(context.Background(), ring, v2.ID, []byte("a.b")); err == nil {
		t.Error("signed with a version whose public half is missing")
	}
	clock.Advance(2 * time.Minute)
	if _, err := live.Versions(context.Background(), ring); err != nil {
		t.Fatal(err)
	}
	for _, id := range [][]byte{noPublic, unlabelled, pubOnly} {
		if n := objectsWithID(t, live, p11.CKO_PRIVATE_KEY, id) + objectsWithID(t, live, p11.CKO_PUBLIC_KEY, id); n != 0 {
			t.Errorf("%d objects with CKA_ID %x left after the grace", n, id)
		}
	}
	if recovered.Load() != 3 {
		t.Errorf("%d clean-ups reported, want 3", recovered.Load())
	}
}

// A public key that cannot be read is a newest version's interrupted
// creation (SoftHSM2 killed while writing the object: found by the
// end-to-end race test, where it stopped a restarting replica) and is set
// aside like any incomplete pair; the same for a published version is an
// error, never a silently dropped key.
func TestUnreadablePublicKey(t *testing.T) {
	tok := softhsmtest.New(t)
	ring := backends.KeyRing{Name: "unreadable", Algorithm: backends.ES256}
	b := open(t, tok.URI())
	v1 := signertest.CreateVersion(t, b, ring, "")
	brokenLabelled := func(lbl string, id []byte) {
		t.Helper()
		params, _ := asn1.Marshal(curveOIDs[backends.ES256])
		if err := b.pool.with(context.Background(), func(sh p11.SessionHandle) error {
			_, err := b.mod.ctx.CreateObject(sh, []*p11.Attribute{p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PUBLIC_KEY),
				p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_EC), p11.NewAttribute(p11.CKA_TOKEN, true),
				p11.NewAttribute(p11.CKA_LABEL, lbl), p11.NewAttribute(p11.CKA_ID, id),
				p11.NewAttribute(p11.CKA_EC_PARAMS, params), p11.NewAttribute(p11.CKA_EC_POINT, []byte{4, 1, 2, 3})})
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	broken := func(n uint32, id []byte) { t.Helper(); brokenLabelled(label(ring.Name, n, time.Now()), id) }
	broken(2, []byte{0, 0, 0, 2, 9, 9, 9, 9})
	vs, err := b.Versions(context.Background(), ring)
	if err != nil || len(vs) != 1 || vs[0].ID != v1.ID {
		t.Fatalf("with an unreadable newer key: %v, %v; want only version %s", vs, err, v1.ID)
	}
	left, err := b.Leftovers(context.Background(), ring)
	if err != nil || len(left) != 1 {
		t.Errorf("leftovers %v, %v; want the unreadable key", left, err)
	}
	// An unreadable duplicate of a readable version is a lost race's loser.
	broken(1, []byte{0, 0, 0, 1, 9, 9, 9, 9})
	if vs, err := b.Versions(context.Background(), ring); err != nil || len(vs) != 1 || vs[0].ID != v1.ID {
		t.Errorf("with an unreadable duplicate of version 1: %v, %v", vs, err)
	}
	// A rotation does not take a version number that an unreadable labelled
	// pair holds: it may be a candidate whose relabelling is being written.
	// Once it is gone (a refresh destroys it after the grace), it does.
	if _, err := b.CreateVersion(context.Background(), ring, v1.ID); backends.KindOf(err) != backends.KindConflict {
		t.Errorf("a rotation onto the number of an unreadable labelled pair: %v, want a conflict", err)
	}
	for _, id := range [][]byte{{0, 0, 0, 2, 9, 9, 9, 9}, {0, 0, 0, 1, 9, 9, 9, 9}} {
		if err := b.destroy(context.Background(), id, true); err != nil {
			t.Fatal(err)
		}
	}
	// A published version whose only key became unreadable is an error.
	v2 := signertest.CreateVersion(t, b, ring, v1.ID)
	v3 := signertest.CreateVersion(t, b, ring, v2.ID)
	id, _ := hex.DecodeString(v2.ID)
	var v2Label string
	if err := b.pool.with(context.Background(), func(sh p11.SessionHandle) error {
		hs, err := findObjects(b.mod.ctx, sh, []*p11.Attribute{p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PUBLIC_KEY), p11.NewAttribute(p11.CKA_ID, id)})
		if err != nil || len(hs) != 1 {
			return fmt.Errorf("%d public objects, %v", len(hs), err)
		}
		attrs, err := attributes(b.mod.ctx, sh, hs[0], p11.CKA_LABEL)
		if err != nil {
			return err
		}
		v2Label = string(attrs[0].Value)
		return b.mod.ctx.DestroyObject(sh, hs[0])
	}); err != nil {
		t.Fatal(err)
	}
	// In its place, with the same CKA_ID and label (its private half is
	// still there: it can sign), a public key that cannot be read.
	brokenLabelled(v2Label, id)
	if _, err := b.Versions(context.Background(), ring); backends.KindOf(err) != backends.KindFailedPrecondition {
		t.Errorf("version %s's only key unreadable (newest %s): %v, want FailedPrecondition", v2.ID, v3.ID, err)
	}
}

// The key pairs Signet generates can do one thing each, as the token
// itself reports them (OpenSC's pkcs11-tool, not this backend's reading of
// the attributes): the private key signs, the public key verifies, and
// neither decrypts, encrypts, wraps, unwraps, derives or recovers.
func TestKeysCanOnlySign(t *testing.T) {
	tok := softhsmtest.New(t)
	b := open(t, tok.URI())
	var made []string
	for _, alg := range []backends.Algorithm{backends.ES256, backends.ES384, backends.ES512, backends.RS256, backends.PS256, backends.EdDSA} {
		if !backends.Supports(b, alg) {
			t.Logf("SoftHSM2 does not offer %s here", alg)
			continue
		}
		v := signertest.CreateVersion(t, b, backends.KeyRing{Name: "usage-" + strings.ToLower(string(alg)), Algorithm: alg}, "")
		made = append(made, v.ID)
	}
	objs, listing := tok.ListObjects(t)
	t.Logf("pkcs11-tool --list-objects:\n%s", listing)
	want := map[string]string{"Private Key Object": "sign", "Public Key Object": "verify"}
	seen := map[string]int{}
	for _, o := range objs {
		if !strings.HasPrefix(o.Label, "signet/") {
			continue
		}
		seen[o.ID]++
		if w := want[o.Class]; strings.Join(o.Usage, ", ") != w {
			t.Errorf("%s %s (%s): usage %q, want only %q", o.Class, o.ID, o.Label, strings.Join(o.Usage, ", "), w)
		}
	}
	for _, id := range made {
		if seen[id] != 2 {
			t.Errorf("version %s: %d of its two objects listed by pkcs11-tool", id, seen[id])
		}
	}
}

// A version whose private key was made by hand with decrypt and unwrap
// enabled (or by a Signet that left them to the token's defaults) is
// refused by the usage check, which names the attributes; once it is
// revoked (its private key destroyed) nothing is left to judge.
func TestHandMadeKeyThatDecryptsIsRefused(t *testing.T) {
	tok := softhsmtest.New(t)
	b := open(t, tok.URI())
	ctx := context.Background()
	good := backends.KeyRing{Name: "narrow", Algorithm: backends.ES256}
	signertest.CreateVersion(t, b, good, "")
	if err := b.CheckKeyUsage(ctx, good); err != nil {
		t.Fatalf("a version Signet made: %v", err)
	}

	ring := backends.KeyRing{Name: "by-hand", Algorithm: backends.ES256}
	id := []byte{0, 0, 0, 1, 9, 9, 9, 9}
	lbl := label(ring.Name, 1, time.Now())
	if err := b.pool.with(ctx, func(sh p11.SessionHandle) error {
		params, _ := asn1.Marshal(curveOIDs[backends.ES256])
		_, _, err := b.mod.ctx.GenerateKeyPair(sh, []*p11.Mechanism{p11.NewMechanism(p11.CKM_EC_KEY_PAIR_GEN, nil)},
			[]*p11.Attribute{p11.NewAttribute(p11.CKA_TOKEN, true), p11.NewAttribute(p11.CKA_VERIFY, true),
				p11.NewAttribute(p11.CKA_LABEL, lbl), p11.NewAttribute(p11.CKA_ID, id), p11.NewAttribute(p11.CKA_EC_PARAMS, params)},
			[]*p11.Attribute{p11.NewAttribute(p11.CKA_TOKEN, true), p11.NewAttribute(p11.CKA_PRIVATE, true), p11.NewAttribute(p11.CKA_SIGN, true),
				p11.NewAttribute(p11.CKA_DECRYPT, true), p11.NewAttribute(p11.CKA_UNWRAP, true),
				p11.NewAttribute(p11.CKA_LABEL, lbl), p11.NewAttribute(p11.CKA_ID, id)})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	vs, err := b.Versions(ctx, ring)
	if err != nil || len(vs) != 1 {
		t.Fatalf("the hand-made pair is not listed as version 1: %+v, %v", vs, err)
	}
	err = b.CheckKeyUsage(ctx, ring)
	if backends.KindOf(err) != backends.KindFailedPrecondition || !strings.Contains(err.Error(), "CKA_DECRYPT, CKA_UNWRAP") ||
		!strings.Contains(err.Error(), hex.EncodeToString(id)) {
		t.Fatalf("usage check of a private key that may decrypt and unwrap: %v", err)
	}
	t.Log(err)
	v2 := signertest.CreateVersion(t, b, ring, vs[0].ID)
	if err := b.DisableVersion(ctx, ring, vs[0].ID); err != nil {
		t.Fatal(err)
	}
	if err := b.CheckKeyUsage(ctx, ring); err != nil {
		t.Errorf("after rotating to %s and revoking the hand-made version: %v", v2.ID, err)
	}
}

// A labelled object without a CKA_ID of Signet's size (SoftHSM2 killed
// while writing it: found by the race end-to-end test) is never a version,
// and the clean-up can destroy it.
func TestObjectWithoutSignetsIDIsALeftover(t *testing.T) {
	tok := softhsmtest.New(t)
	ring := backends.KeyRing{Name: "torn-id", Algorithm: backends.ES256}
	b := open(t, tok.URI())
	v1 := signertest.CreateVersion(t, b, ring, "")
	generateTornPair(t, b, ring, 2)
	vs, err := b.Versions(context.Background(), ring)
	if err != nil || len(vs) != 1 || vs[0].ID != v1.ID {
		t.Fatalf("versions %v, %v; want only %s", vs, err, v1.ID)
	}
	if err := b.destroy(context.Background(), []byte{}, true); err != nil {
		t.Fatal(err)
	}
	left, err := b.Leftovers(context.Background(), ring)
	if err != nil || len(left) != 0 {
		t.Errorf("after destroying it: leftovers %v, %v", left, err)
	}
}

// A revoked version (its private half destroyed) whose public key can no
// longer be read is still listed, as revoked and without a key: listing
// never needs a revoked version's key. An enabled one in that state stops
// the read (TestUnreadablePublicKey).
func TestRevokedVersionWithUnreadablePublicKey(t *testing.T) {
	tok := softhsmtest.New(t)
	ring := backends.KeyRing{Name: "revoked-unreadable", Algorithm: backends.ES256}
	b := open(t, tok.URI())
	v1 := signertest.CreateVersion(t, b, ring, "")
	v2 := signertest.CreateVersion(t, b, ring, v1.ID)
	if err := b.DisableVersion(context.Background(), ring, v1.ID); err != nil {
		t.Fatal(err)
	}
	id, _ := hex.DecodeString(v1.ID)
	params, _ := asn1.Marshal(curveOIDs[backends.ES256])
	if err := b.pool.with(context.Background(), func(sh p11.SessionHandle) error {
		hs, err := findObjects(b.mod.ctx, sh, []*p11.Attribute{p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PUBLIC_KEY), p11.NewAttribute(p11.CKA_ID, id)})
		if err != nil || len(hs) != 1 {
			return fmt.Errorf("%d public objects, %v", len(hs), err)
		}
		attrs, err := attributes(b.mod.ctx, sh, hs[0], p11.CKA_LABEL)
		if err != nil {
			return err
		}
		if err := b.mod.ctx.DestroyObject(sh, hs[0]); err != nil {
			return err
		}
		_, err = b.mod.ctx.CreateObject(sh, []*p11.Attribute{p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PUBLIC_KEY),
			p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_EC), p11.NewAttribute(p11.CKA_TOKEN, true),
			p11.NewAttribute(p11.CKA_LABEL, attrs[0].Value), p11.NewAttribute(p11.CKA_ID, id),
			p11.NewAttribute(p11.CKA_EC_PARAMS, params), p11.NewAttribute(p11.CKA_EC_POINT, []byte{4, 1, 2, 3})})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	vs, err := open(t, tok.URI()).Versions(context.Background(), ring)
	if err != nil {
		t.Fatalf("Versions with a revoked version's public key unreadable: %v", err)
	}
	if len(vs) != 2 || vs[0].ID != v1.ID || !vs[0].Disabled || vs[0].PublicKey != nil || vs[1].ID != v2.ID || vs[1].Disabled {
		t.Errorf("listed %+v; want %s revoked without a key, then %s enabled", vs, v1.ID, v2.ID)
	}
}

// A labelled public key without Signet's CKA_ID is what a list reads while
// SoftHSM2 rewrites another replica's candidate as it commits (and what a
// replica killed in that write leaves). Its place in the order cannot be
// read, so it holds the number its label names: a candidate for that number
// never reports a win past it. Ignored, a replica whose settle read the
// other's commit torn could report a win that the other's smaller CKA_ID
// then displaced.
func TestTornCandidateHoldsItsVersionNumber(t *testing.T) {
	tok := softhsmtest.New(t)
	ring := backends.KeyRing{Name: "torn-slot", Algorithm: backends.ES256}
	b := open(t, tok.URI())
	v1 := signertest.CreateVersion(t, b, ring, "")
	generateTornPair(t, b, ring, 2)
	v, err := b.CreateVersion(context.Background(), ring, v1.ID)
	if err == nil {
		t.Fatalf("CreateVersion reported version %s won past a candidate for its number whose CKA_ID could not be read", v.ID)
	}
	if backends.KindOf(err) != backends.KindConflict {
		t.Fatalf("CreateVersion: %v (%v), want a conflict", err, backends.KindOf(err))
	}
	if vs, err := b.Versions(context.Background(), ring); err != nil || len(vs) != 1 {
		t.Fatalf("versions %v, %v; want only %s", vs, err, v1.ID)
	}
	// Once the torn object is gone (reaped after the grace), the number is free.
	if err := b.destroy(context.Background(), []byte{}, true); err != nil {
		t.Fatal(err)
	}
	signertest.CreateVersion(t, b, ring, v1.ID)
}

// generateTornPair makes an ES256 pair labelled as version n of ring whose
// CKA_ID is empty: what SoftHSM2 shows of a pair whose file a killed
// process left half written, or that another process is rewriting.
func generateTornPair(t *testing.T, b *Backend, ring backends.KeyRing, n uint32) {
	t.Helper()
	params, _ := asn1.Marshal(curveOIDs[backends.ES256])
	if err := b.pool.with(context.Background(), func(sh p11.SessionHandle) error {
		_, _, err := b.mod.ctx.GenerateKeyPair(sh, []*p11.Mechanism{p11.NewMechanism(p11.CKM_EC_KEY_PAIR_GEN, nil)},
			[]*p11.Attribute{p11.NewAttribute(p11.CKA_TOKEN, true), p11.NewAttribute(p11.CKA_VERIFY, true),
				p11.NewAttribute(p11.CKA_LABEL, label(ring.Name, n, time.Now())), p11.NewAttribute(p11.CKA_ID, []byte{}),
				p11.NewAttribute(p11.CKA_EC_PARAMS, params)},
			[]*p11.Attribute{p11.NewAttribute(p11.CKA_TOKEN, true), p11.NewAttribute(p11.CKA_PRIVATE, true), p11.NewAttribute(p11.CKA_SIGN, true),
				p11.NewAttribute(p11.CKA_LABEL, label(ring.Name, n, time.Now())), p11.NewAttribute(p11.CKA_ID, []byte{})})
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

// An object a killed writer left with the ring's final label and an empty
// CKA_ID (SoftHSM2 can leave one so, even without the attribute) is reaped
// by its handle once the grace has passed, each such object on its own,
// and an object of another application that also has an empty CKA_ID is
// left alone. (Listing grouped objects by CKA_ID, so all empty ones were
// one; such an object was never reaped, or the search by class and CKA_ID
// that destroyed it destroyed every key with an empty CKA_ID.)
func TestObjectWithoutCKAIDIsReapedByItsHandle(t *testing.T) {
	tok := softhsmtest.New(t)
	ring := backends.KeyRing{Name: "noid", Algorithm: backends.ES256}
	s := open(t, tok.URI())
	v1 := signertest.CreateVersion(t, s, ring, "")

	key, err := backends.GenerateKey(backends.ES256)
	if err != nil {
		t.Fatal(err)
	}
	pub := key.Public().(*ecdsa.PublicKey)
	point, err := pub.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	ecPoint, _ := asn1.Marshal(point)
	params, _ := asn1.Marshal(curveOIDs[backends.ES256])
	d, err := key.(*ecdsa.PrivateKey).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	lbl := label(ring.Name, 2, time.Now())
	publicObject := func(label string) []*p11.Attribute {
		return []*p11.Attribute{p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PUBLIC_KEY), p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_EC),
			p11.NewAttribute(p11.CKA_TOKEN, true), p11.NewAttribute(p11.CKA_LABEL, label),
			p11.NewAttribute(p11.CKA_EC_PARAMS, params), p11.NewAttribute(p11.CKA_EC_POINT, ecPoint)}
	}
	objects := map[string][]*p11.Attribute{ // none with a CKA_ID
		"ring public": publicObject(lbl),
		"ring private": {p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PRIVATE_KEY), p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_EC),
			p11.NewAttribute(p11.CKA_TOKEN, true), p11.NewAttribute(p11.CKA_PRIVATE, true), p11.NewAttribute(p11.CKA_SENSITIVE, true),
			p11.NewAttribute(p11.CKA_LABEL, lbl), p11.NewAttribute(p11.CKA_EC_PARAMS, params), p11.NewAttribute(p11.CKA_VALUE, d)},
		"foreign public": publicObject("another application's key"),
	}
	handles := map[string]p11.ObjectHandle{}
	err = s.pool.with(context.Background(), func(sh p11.SessionHandle) error {
		for name, tmpl := range objects {
			h, err := s.mod.ctx.CreateObject(sh, tmpl)
			if err != nil {
				return fmt.Errorf("creating the %s object: %w", name, err)
			}
			handles[name] = h
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	exists := func(name string) bool {
		t.Helper()
		var found bool
		err := s.pool.with(context.Background(), func(sh p11.SessionHandle) error {
			_, err := attributes(s.mod.ctx, sh, handles[name], p11.CKA_LABEL)
			if isCode(err, p11.CKR_OBJECT_HANDLE_INVALID) {
				return nil
			}
			found = err == nil
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return found
	}

	live, clock, recovered := liveReplica(t, tok.URI())
	vs, err := live.Versions(context.Background(), ring)
	if err != nil || len(vs) != 1 || vs[0].ID != v1.ID {
		t.Fatalf("Versions with objects without a CKA_ID on the token: %+v, %v; want only %s", vs, err, v1.ID)
	}
	left, err := live.Leftovers(context.Background(), ring)
	if err != nil || len(left) != 2 {
		t.Fatalf("leftovers: %+v, %v; want the ring's two objects without a CKA_ID", left, err)
	}
	clock.Advance(2 * time.Minute)
	if _, err := live.Versions(context.Background(), ring); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"ring public", "ring private"} {
		if exists(name) {
			t.Errorf("after the grace the %s object without a CKA_ID is still on the token", name)
		}
	}
	if !exists("foreign public") {
		t.Error("another application's key without a CKA_ID was destroyed")
	}
	if n := recovered.Load(); n != 2 {
		t.Errorf("%d clean-ups reported, want 2", n)
	}
	if left, _ := live.Leftovers(context.Background(), ring); len(left) != 0 {
		t.Errorf("leftovers after the clean-up: %+v", left)
	}
	v2 := signertest.CreateVersion(t, live, ring, v1.ID)
	if err := signertest.SignAndVerify(context.Background(), live, ring, v2, []byte("eyJhbGciOiJFUzI1NiJ9.e30")); err != nil {
		t.Errorf("the version made after the clean-up does not sign: %v", err)
	}
}
