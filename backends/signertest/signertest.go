// Package signertest is the conformance suite every backend passes. A
// backend's test runs it in a few lines:
//
//	func TestConformance(t *testing.T) {
//		signertest.Run(t, signertest.Harness{Open: func(t *testing.T) backends.Signer { ... }})
//	}
//
// Signatures are checked with go-jose, a JOSE library Signet did not write,
// against the public JWK that Signet exports for the version.
package signertest

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/signet-dev/signet/backends"
)

// Harness describes the backend under test.
type Harness struct {
	// Open returns a backend over the harness's storage. It is called more
	// than once per test to check that what one instance wrote another reads;
	// the suite closes what it opens. Nil: OpenWith with no options.
	Open func(t *testing.T) backends.Signer
	// OpenWith is Open with options: the crash cases set Now, RecoveryGrace
	// and OnRecover. The backend must also be a backends.LeftoverLister.
	OpenWith func(t *testing.T, opts backends.OpenOptions) backends.Signer
	// Algorithms limits the algorithms tested; empty means every algorithm
	// the backend claims.
	Algorithms []backends.Algorithm
	// ClockSkew is how far the backend's clock may be from the test's when
	// checking creation times; zero means one minute.
	ClockSkew time.Duration
	// Concurrency is how many goroutines sign at once; zero means 32.
	Concurrency int
	// MaxSigningInput caps the signing inputs used for an algorithm whose
	// backend has a documented size limit (AWS KMS signs at most 4096 raw
	// bytes for EdDSA); absent means the suite's 8 KiB payload.
	MaxSigningInput map[backends.Algorithm]int
	// OpenRemoving, if set, opens the backend configured so that revoking
	// a version also removes it from Versions' list (Cloud KMS
	// destroy_on_revoke); the backend must then be a
	// backends.RemovalChecker.
	OpenRemoving func(t *testing.T) backends.Signer
	// Serial runs the cases one after another instead of in parallel, for
	// a backend that cannot take several instances creating keys at once
	// (SoftHSM2 fails C_GenerateKeyPair now and then with
	// CKR_GENERAL_ERROR or CKR_FUNCTION_FAILED when other sessions of the
	// process use the token at the same moment).
	Serial bool
	// Lossy, if set, starts a transport that can lose answers (the
	// backend's test server, or a proxy in front of it) for a lost-answer
	// case; each case calls it once. Every backend whose calls can lose
	// their answers on the way back sets it.
	Lossy func(t *testing.T) LossyTransport
}

// LossyTransport is a backend reached through a transport that can lose
// the answer to a call that creates a version.
type LossyTransport struct {
	// OpenWith opens an instance on it, as Harness.OpenWith does.
	OpenWith func(t *testing.T, opts backends.OpenOptions) backends.Signer
	// LoseNextCreate makes the next call that creates a version take
	// effect in the backend and its answer never arrive (a closed
	// connection, or an error a proxy answers in its place).
	LoseNextCreate func()
	// Lost is how many answers it has lost.
	Lost func() int
}

// Run runs the conformance suite. Its cases run in parallel with each other
// unless the harness says Serial (each opens its own instances and uses
// rings of its own), so Open must be safe to call concurrently.
func Run(t *testing.T, h Harness) {
	if h.Open == nil && h.OpenWith != nil {
		h.Open = func(t *testing.T) backends.Signer { return h.OpenWith(t, backends.OpenOptions{}) }
	}
	if h.ClockSkew == 0 {
		h.ClockSkew = time.Minute
	}
	if h.Concurrency == 0 {
		h.Concurrency = 32
	}
	algs := h.Algorithms
	if len(algs) == 0 {
		s := h.open(t)
		algs = s.Algorithms()
	}
	run := func(t *testing.T, name string, test func(t *testing.T)) {
		t.Run(name, func(t *testing.T) {
			if !h.Serial {
				t.Parallel()
			}
			test(t)
		})
	}
	parallel := func(name string, test func(t *testing.T)) { run(t, name, test) }
	parallel("Algorithms", func(t *testing.T) {
		for _, alg := range algs {
			run(t, string(alg), func(t *testing.T) { h.testSignVerify(t, alg) })
		}
	})
	first := algs[0]
	parallel("UnsupportedAlgorithm", h.testUnsupported)
	parallel("VersionPinning", func(t *testing.T) { h.testVersionPinning(t, first) })
	parallel("ListAndDisable", func(t *testing.T) { h.testListAndDisable(t, first) })
	if _, ok := h.open(t).(backends.PrefixDisabler); ok {
		parallel("DisableBefore", func(t *testing.T) { h.testDisableBefore(t, first) })
	}
	parallel("CreateConflict", func(t *testing.T) { h.testCreateConflict(t, first) })
	parallel("Reopen", func(t *testing.T) { h.testReopen(t, first) })
	parallel("RevokedFreshInstance", func(t *testing.T) { h.testRevokedFresh(t, first) })
	if h.OpenRemoving != nil {
		parallel("RevocationRemoves", func(t *testing.T) { h.testRevocationRemoves(t, first) })
	}
	parallel("UnknownRingAndVersion", func(t *testing.T) { h.testUnknown(t, first) })
	parallel("CancelledContext", func(t *testing.T) { h.testCancelled(t, first) })
	parallel("CloseTwice", func(t *testing.T) {
		s := h.Open(t)
		if err := s.Close(); err != nil {
			t.Fatalf("first Close: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
	})
	parallel("ConcurrentSign", func(t *testing.T) { h.testConcurrent(t, first) })
	if _, ok := h.open(t).(backends.CertificateStore); ok {
		parallel("Certificates", func(t *testing.T) { h.testCertificates(t, first) })
	}
	if _, ok := h.open(t).(backends.RequestRecorder); ok {
		parallel("RequestID", func(t *testing.T) { h.testRequestID(t, first) })
	}
	t.Run("Crash", func(t *testing.T) { h.testCrash(t, first, run) })
	t.Run("Race", func(t *testing.T) { h.testRace(t, first, run) })
	if h.Lossy != nil {
		t.Run("LostAnswer", func(t *testing.T) { h.testLostAnswer(t, first, run) })
	}
}

func (h Harness) open(t *testing.T) backends.Signer {
	t.Helper()
	s := h.Open(t)
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// newRing names a ring no earlier run can have used: backends like Vault
// keep state across tests.
func newRing(alg backends.Algorithm) backends.KeyRing {
	b := make([]byte, 6)
	rand.Read(b)
	return backends.KeyRing{Name: "conformance-" + hex.EncodeToString(b), Algorithm: alg}
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// CreateVersion creates a version with s.CreateVersion, checks what it
// returns, and fails the test if anything is wrong. It is exported for
// backend tests that need a version to work on.
func CreateVersion(t testing.TB, s backends.Signer, ring backends.KeyRing, latest string) backends.Version {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	v, err := s.CreateVersion(ctx, ring, latest)
	if err != nil {
		t.Fatalf("CreateVersion(%s, latest=%q): %v", ring.Name, latest, err)
	}
	if v.ID == "" || v.Algorithm != ring.Algorithm || v.Disabled {
		t.Fatalf("CreateVersion returned %+v", v)
	}
	if err := ring.Algorithm.CheckPublicKey(v.PublicKey); err != nil {
		t.Fatalf("CreateVersion returned a public key unfit for %s: %v", ring.Algorithm, err)
	}
	return v
}

func signingInput(alg backends.Algorithm, payload string) []byte {
	hdr, _ := json.Marshal(map[string]string{"alg": string(alg), "typ": "JWT"})
	return []byte(base64.RawURLEncoding.EncodeToString(hdr) + "." + base64.RawURLEncoding.EncodeToString([]byte(payload)))
}

func sign(t *testing.T, s backends.Signer, ring backends.KeyRing, id string, input []byte) []byte {
	t.Helper()
	sig, err := s.Sign(ctxFor(t), ring, id, input)
	if err != nil {
		t.Fatalf("Sign(%s, version %s): %v", ring.Name, id, err)
	}
	return sig
}

// Verify checks a JWS signature with go-jose against the public JWK Signet
// exports for pub. It is exported for backend tests that check more.
func Verify(alg backends.Algorithm, v backends.Version, input, sig []byte) error {
	if n := alg.SignatureSize(); n != 0 && len(sig) != n {
		return fmt.Errorf("%s signature is %d bytes, want exactly %d", alg, len(sig), n)
	}
	kid, err := backends.KeyID(v.PublicKey)
	if err != nil {
		return err
	}
	raw, err := json.Marshal(jose.JSONWebKey{Key: v.PublicKey})
	if err != nil {
		return fmt.Errorf("go-jose cannot export the public key as a JWK: %w", err)
	}
	var jwk jose.JSONWebKey
	if err := jwk.UnmarshalJSON(raw); err != nil {
		return fmt.Errorf("go-jose rejects the exported JWK %s: %w", raw, err)
	}
	if tp, err := jwk.Thumbprint(crypto.SHA256); err != nil || base64.RawURLEncoding.EncodeToString(tp) != kid {
		return fmt.Errorf("the kid %s is not the RFC 7638 thumbprint of the JWK %s (%v)", kid, raw, err)
	}
	compact := string(input) + "." + base64.RawURLEncoding.EncodeToString(sig)
	obj, err := jose.ParseSignedCompact(compact, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(alg)})
	if err != nil {
		return fmt.Errorf("go-jose cannot parse the JWS: %w", err)
	}
	if _, err := obj.Verify(jwk.Key); err != nil {
		return fmt.Errorf("go-jose: %w", err)
	}
	if alg.IsRSAPSS() {
		// RFC 7518 3.5 fixes the salt at the hash length; go-jose accepts any
		// salt, so check that strictly (a verifier may).
		h := alg.Hash().New()
		h.Write(input)
		if err := rsa.VerifyPSS(v.PublicKey.(*rsa.PublicKey), alg.Hash(), h.Sum(nil), sig,
			&rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash}); err != nil {
			return fmt.Errorf("%s signature does not use a salt as long as the hash (RFC 7518 3.5): %w", alg, err)
		}
	}
	return nil
}

// SignAndVerify signs input with version v and checks the signature with
// Verify. It is exported for backend tests that sign outside the suite.
func SignAndVerify(ctx context.Context, s backends.Signer, ring backends.KeyRing, v backends.Version, input []byte) error {
	sig, err := s.Sign(ctx, ring, v.ID, input)
	if err != nil {
		return err
	}
	return Verify(ring.Algorithm, v, input, sig)
}

// Load is what SignConcurrently did.
type Load struct {
	Signed, Failed int
	Errors         []error // the first few failures
}

// SignConcurrently signs with version v from workers goroutines at once,
// each making signatures over distinct inputs for as long as more(i) allows
// its i-th, and verifies every signature. It is exported for backend tests
// that load a backend while something happens underneath it.
func SignConcurrently(s backends.Signer, ring backends.KeyRing, v backends.Version, workers int, more func(i int) bool) Load {
	var (
		mu   sync.Mutex
		load Load
		wg   sync.WaitGroup
	)
	for w := range workers {
		wg.Go(func() {
			for i := 0; more(i); i++ {
				input := signingInput(ring.Algorithm, fmt.Sprintf(`{"worker":%d,"i":%d}`, w, i))
				err := SignAndVerify(context.Background(), s, ring, v, input)
				mu.Lock()
				if err == nil {
					load.Signed++
				} else if load.Failed++; len(load.Errors) < 5 {
					load.Errors = append(load.Errors, fmt.Errorf("worker %d, signature %d: %w", w, i, err))
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return load
}

func (h Harness) testSignVerify(t *testing.T, alg backends.Algorithm) {
	s := h.open(t)
	ring := newRing(alg)
	v := CreateVersion(t, s, ring, "")
	big := 8192
	if limit, ok := h.MaxSigningInput[alg]; ok {
		big = limit * 3 / 4 / 2 // base64 of the payload, well under the limit with the header
	}
	for _, payload := range []string{`{}`, `{"sub":"svc","aud":"x"}`, string(make([]byte, big))} {
		input := signingInput(alg, payload)
		sig := sign(t, s, ring, v.ID, input)
		if err := Verify(alg, v, input, sig); err != nil {
			t.Fatalf("signature of a %d-byte payload does not verify: %v", len(payload), err)
		}
		if err := Verify(alg, v, append([]byte(nil), input[:len(input)-1]...), sig); err == nil {
			t.Fatal("signature verifies over a different input")
		}
	}
}

func (h Harness) testUnsupported(t *testing.T) {
	s := h.open(t)
	for _, alg := range backends.AllAlgorithms {
		if backends.Supports(s, alg) {
			continue
		}
		_, err := s.CreateVersion(ctxFor(t), newRing(alg), "")
		if backends.KindOf(err) != backends.KindUnimplemented {
			t.Errorf("CreateVersion with unsupported %s: got %v, want an unimplemented error", alg, err)
		}
	}
	ring := newRing(backends.Algorithm("HS256"))
	if _, err := s.CreateVersion(ctxFor(t), ring, ""); err == nil {
		t.Error("CreateVersion with HS256 succeeded")
	}
}

func (h Harness) testVersionPinning(t *testing.T, alg backends.Algorithm) {
	s := h.open(t)
	ring := newRing(alg)
	v1 := CreateVersion(t, s, ring, "")
	v2 := CreateVersion(t, s, ring, v1.ID)
	if v1.ID == v2.ID {
		t.Fatalf("two versions share the ID %q", v1.ID)
	}
	input := signingInput(alg, `{"n":1}`)
	sig1 := sign(t, s, ring, v1.ID, input)
	sig2 := sign(t, s, ring, v2.ID, input)
	if err := Verify(alg, v1, input, sig1); err != nil {
		t.Errorf("version %s signature under its own key: %v", v1.ID, err)
	}
	if err := Verify(alg, v2, input, sig1); err == nil {
		t.Errorf("a signature by version %s verifies under version %s", v1.ID, v2.ID)
	}
	if err := Verify(alg, v2, input, sig2); err != nil {
		t.Errorf("version %s signature under its own key: %v", v2.ID, err)
	}
	if err := Verify(alg, v1, input, sig2); err == nil {
		t.Errorf("a signature by version %s verifies under version %s", v2.ID, v1.ID)
	}
}

func (h Harness) testListAndDisable(t *testing.T, alg backends.Algorithm) {
	s := h.open(t)
	ring := newRing(alg)
	ctx := ctxFor(t)
	before := time.Now()
	if vs, err := s.Versions(ctx, ring); err != nil || len(vs) != 0 {
		t.Fatalf("Versions of a new ring = %v, %v; want none", vs, err)
	}
	var created []backends.Version
	latest := ""
	for range 3 {
		v := CreateVersion(t, s, ring, latest)
		created = append(created, v)
		latest = v.ID
	}
	after := time.Now()
	vs, err := s.Versions(ctx, ring)
	if err != nil {
		t.Fatalf("Versions: %v", err)
	}
	if len(vs) != 3 {
		t.Fatalf("Versions lists %d versions, want 3", len(vs))
	}
	for i, v := range vs {
		if v.ID != created[i].ID {
			t.Errorf("Versions[%d] is %q, want %q (oldest first)", i, v.ID, created[i].ID)
		}
		if v.Created.Before(before.Add(-h.ClockSkew)) || v.Created.After(after.Add(h.ClockSkew)) {
			t.Errorf("version %s created at %v, not between %v and %v", v.ID, v.Created, before, after)
		}
		if i > 0 && v.Created.Before(vs[i-1].Created) {
			t.Errorf("version %s is listed after %s but created before it", v.ID, vs[i-1].ID)
		}
		if !publicEqual(v.PublicKey, created[i].PublicKey) {
			t.Errorf("version %s lists another public key than CreateVersion returned", v.ID)
		}
	}
	if err := s.DisableVersion(ctx, ring, vs[0].ID); err != nil {
		t.Fatalf("DisableVersion: %v", err)
	}
	if err := s.DisableVersion(ctx, ring, vs[0].ID); err != nil {
		t.Fatalf("DisableVersion of a disabled version: %v", err)
	}
	vs2, err := s.Versions(ctx, ring)
	if err != nil || len(vs2) != 3 {
		t.Fatalf("Versions after disabling = %d versions, %v", len(vs2), err)
	}
	if !vs2[0].Disabled || vs2[1].Disabled || vs2[2].Disabled {
		t.Fatalf("after disabling %s: disabled flags are %v %v %v", vs[0].ID, vs2[0].Disabled, vs2[1].Disabled, vs2[2].Disabled)
	}
	_, err = s.Sign(ctx, ring, vs[0].ID, signingInput(alg, "{}"))
	if k := backends.KindOf(err); k != backends.KindFailedPrecondition {
		t.Errorf("Sign with a disabled version: got %v (%v), want failed precondition", err, k)
	}
	input := signingInput(alg, "{}")
	if err := Verify(alg, vs2[2], input, sign(t, s, ring, vs2[2].ID, input)); err != nil {
		t.Errorf("the newest version no longer signs after disabling the oldest: %v", err)
	}
}

// testDisableBefore: DisableVersionsBefore (backends.PrefixDisabler)
// revokes every older version and nothing else, again is not an error,
// and an unknown version is not found.
func (h Harness) testDisableBefore(t *testing.T, alg backends.Algorithm) {
	s := h.open(t)
	pd := s.(backends.PrefixDisabler)
	ring := newRing(alg)
	ctx := ctxFor(t)
	v1 := CreateVersion(t, s, ring, "")
	v2 := CreateVersion(t, s, ring, v1.ID)
	v3 := CreateVersion(t, s, ring, v2.ID)
	for range 2 { // the second call finds the work done
		if err := pd.DisableVersionsBefore(ctx, ring, v3.ID); err != nil {
			t.Fatalf("DisableVersionsBefore(%s): %v", v3.ID, err)
		}
	}
	vs, err := s.Versions(ctx, ring)
	if err != nil || len(vs) != 3 {
		t.Fatalf("Versions after DisableVersionsBefore = %d versions, %v", len(vs), err)
	}
	if !vs[0].Disabled || !vs[1].Disabled || vs[2].Disabled {
		t.Errorf("after DisableVersionsBefore(%s): disabled flags are %v %v %v, want true true false", v3.ID, vs[0].Disabled, vs[1].Disabled, vs[2].Disabled)
	}
	input := signingInput(alg, "{}")
	if _, err := s.Sign(ctx, ring, v2.ID, input); backends.KindOf(err) != backends.KindFailedPrecondition {
		t.Errorf("Sign with a version disabled by DisableVersionsBefore: %v (%v), want failed precondition", err, backends.KindOf(err))
	}
	if err := SignAndVerify(ctx, s, ring, vs[2], input); err != nil {
		t.Errorf("the version DisableVersionsBefore was given no longer signs: %v", err)
	}
	if err := pd.DisableVersionsBefore(ctx, ring, "no-such-version"); backends.KindOf(err) != backends.KindNotFound {
		t.Errorf("DisableVersionsBefore of an unknown version: %v (%v), want not found", err, backends.KindOf(err))
	}
}

func (h Harness) testCreateConflict(t *testing.T, alg backends.Algorithm) {
	s := h.open(t)
	ring := newRing(alg)
	v1 := CreateVersion(t, s, ring, "")
	v2 := CreateVersion(t, s, ring, v1.ID)
	for _, stale := range []string{"", v1.ID} {
		if _, err := s.CreateVersion(ctxFor(t), ring, stale); backends.KindOf(err) != backends.KindConflict {
			t.Errorf("CreateVersion(latest=%q) when the newest is %q: got %v, want a conflict", stale, v2.ID, err)
		}
	}
	vs, err := s.Versions(ctxFor(t), ring)
	if err != nil || len(vs) != 2 {
		t.Fatalf("after refused creations: %d versions, %v; want 2", len(vs), err)
	}
}

func (h Harness) testReopen(t *testing.T, alg backends.Algorithm) {
	s := h.Open(t)
	ring := newRing(alg)
	v1 := CreateVersion(t, s, ring, "")
	v2 := CreateVersion(t, s, ring, v1.ID)
	if err := s.DisableVersion(ctxFor(t), ring, v1.ID); err != nil {
		t.Fatal(err)
	}
	want, err := s.Versions(ctxFor(t), ring)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s2 := h.open(t)
	got, err := s2.Versions(ctxFor(t), ring)
	if err != nil {
		t.Fatalf("Versions after reopening: %v", err)
	}
	if len(got) != len(want) {
		t.Fatalf("after reopening: %d versions, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		sameKey := publicEqual(g.PublicKey, w.PublicKey) || g.Disabled && g.PublicKey == nil // a revoked version's key is not required
		if g.ID != w.ID || !g.Created.Equal(w.Created) || g.Disabled != w.Disabled || !sameKey {
			t.Errorf("after reopening, version %d is {%s %v disabled=%v}, was {%s %v disabled=%v}",
				i, g.ID, g.Created, g.Disabled, w.ID, w.Created, w.Disabled)
		}
	}
	input := signingInput(alg, `{"reopened":true}`)
	if err := Verify(alg, v2, input, sign(t, s2, ring, v2.ID, input)); err != nil {
		t.Errorf("signing after reopening: %v", err)
	}
	// Revocation is kept by the backend, not by the instance that revoked.
	if _, err := s2.Sign(ctxFor(t), ring, v1.ID, input); backends.KindOf(err) != backends.KindFailedPrecondition {
		t.Errorf("Sign after reopening with the version disabled before: got %v, want failed precondition", err)
	}
}

// testRevokedFresh: a version revoked after it signed is listed, as
// revoked, by an instance that never saw it enabled, whatever the backend
// answers about its key (Cloud KMS refuses the public key of a disabled
// version): listing never needs a revoked version's key, and a key that is
// listed is the version's own.
func (h Harness) testRevokedFresh(t *testing.T, alg backends.Algorithm) {
	s := h.open(t)
	ring := newRing(alg)
	v1 := CreateVersion(t, s, ring, "")
	v2 := CreateVersion(t, s, ring, v1.ID)
	input := signingInput(alg, `{"before":"revocation"}`)
	if err := Verify(alg, v1, input, sign(t, s, ring, v1.ID, input)); err != nil {
		t.Fatal(err)
	}
	if err := s.DisableVersion(ctxFor(t), ring, v1.ID); err != nil {
		t.Fatalf("DisableVersion: %v", err)
	}
	fresh := h.open(t)
	vs, err := fresh.Versions(ctxFor(t), ring)
	if err != nil {
		t.Fatalf("Versions on a fresh instance after a revocation: %v", err)
	}
	if len(vs) != 2 || vs[0].ID != v1.ID || vs[1].ID != v2.ID {
		t.Fatalf("a fresh instance lists %+v; want %s (revoked) and %s", vs, v1.ID, v2.ID)
	}
	if !vs[0].Disabled || vs[1].Disabled {
		t.Errorf("a fresh instance lists disabled=%v, %v; want true, false", vs[0].Disabled, vs[1].Disabled)
	}
	if vs[0].PublicKey != nil && !publicEqual(vs[0].PublicKey, v1.PublicKey) {
		t.Errorf("the revoked version %s is listed with another public key", v1.ID)
	}
	if !publicEqual(vs[1].PublicKey, v2.PublicKey) {
		t.Errorf("the enabled version %s is listed without its own public key", v2.ID)
	}
	if _, err := fresh.Sign(ctxFor(t), ring, v1.ID, input); backends.KindOf(err) != backends.KindFailedPrecondition {
		t.Errorf("Sign with the revoked version on a fresh instance: got %v, want failed precondition", err)
	}
	if err := Verify(alg, v2, input, sign(t, fresh, ring, v2.ID, input)); err != nil {
		t.Errorf("the remaining version on a fresh instance: %v", err)
	}
}

// testRevocationRemoves: on a backend whose revocation removes the
// version from the list, the removed version is reported as never able to
// sign again (backends.RemovalChecker), the others as not, and the ring
// goes on signing with the newer version, on this instance and a fresh one.
func (h Harness) testRevocationRemoves(t *testing.T, alg backends.Algorithm) {
	s := h.OpenRemoving(t)
	t.Cleanup(func() { _ = s.Close() })
	rc, ok := s.(backends.RemovalChecker)
	if !ok {
		t.Fatalf("%T removes revoked versions from its list but is not a backends.RemovalChecker", s)
	}
	ring := newRing(alg)
	v1 := CreateVersion(t, s, ring, "")
	v2 := CreateVersion(t, s, ring, v1.ID)
	if err := s.DisableVersion(ctxFor(t), ring, v1.ID); err != nil {
		t.Fatalf("DisableVersion: %v", err)
	}
	if err := s.DisableVersion(ctxFor(t), ring, v1.ID); err != nil {
		t.Fatalf("DisableVersion again (an interrupted revocation retried): %v", err)
	}
	for _, inst := range []backends.Signer{s, h.OpenRemoving(t)} {
		vs, err := inst.Versions(ctxFor(t), ring)
		if err != nil {
			t.Fatalf("Versions after a removing revocation: %v", err)
		}
		for _, v := range vs {
			if v.ID == v1.ID && !v.Disabled {
				t.Errorf("the revoked version %s is listed enabled", v1.ID)
			}
		}
		if len(vs) == 0 || vs[len(vs)-1].ID != v2.ID || vs[len(vs)-1].Disabled {
			t.Errorf("after revoking %s: listed %+v, want %s enabled last", v1.ID, vs, v2.ID)
		}
		if inst != s {
			_ = inst.Close()
		}
	}
	if gone, err := rc.Removed(ctxFor(t), ring, v1.ID); err != nil || !gone {
		t.Errorf("Removed(%s) after its revocation = %v, %v; want true", v1.ID, gone, err)
	}
	if gone, err := rc.Removed(ctxFor(t), ring, v2.ID); err != nil || gone {
		t.Errorf("Removed(%s), an enabled version, = %v, %v; want false", v2.ID, gone, err)
	}
	input := signingInput(alg, `{"after":"removal"}`)
	if _, err := s.Sign(ctxFor(t), ring, v1.ID, input); backends.KindOf(err) != backends.KindFailedPrecondition {
		t.Errorf("Sign with the removed version: got %v, want failed precondition", err)
	}
	if err := Verify(alg, v2, input, sign(t, s, ring, v2.ID, input)); err != nil {
		t.Errorf("the newer version after the removal: %v", err)
	}
}

// testRequestID: a backend that records Rotate request ids lists each
// with its version, after revocation and from another instance too.
func (h Harness) testRequestID(t *testing.T, alg backends.Algorithm) {
	s := h.open(t)
	rec := s.(backends.RequestRecorder)
	ring := newRing(alg)
	const id1, id2 = "0f8b8c1e-3b7a-4d2e-9f1a-6c5d4e3b2a19", "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a8b"
	v1, err := rec.CreateVersionForRequest(ctxFor(t), ring, "", id1)
	if err != nil {
		t.Fatal(err)
	}
	if v1.RequestID != id1 {
		t.Errorf("CreateVersionForRequest returned request id %q, want %q", v1.RequestID, id1)
	}
	v2 := CreateVersion(t, s, ring, v1.ID)
	v3, err := rec.CreateVersionForRequest(ctxFor(t), ring, v2.ID, id2)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DisableVersion(ctxFor(t), ring, v1.ID); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{v1.ID: id1, v2.ID: "", v3.ID: id2}
	for _, inst := range []backends.Signer{s, h.open(t)} {
		vs, err := inst.Versions(ctxFor(t), ring)
		if err != nil {
			t.Fatal(err)
		}
		if len(vs) != 3 {
			t.Fatalf("%d versions, want 3", len(vs))
		}
		for _, v := range vs {
			if v.RequestID != want[v.ID] {
				t.Errorf("version %s lists request id %q, want %q", v.ID, v.RequestID, want[v.ID])
			}
		}
	}
}

func (h Harness) testUnknown(t *testing.T, alg backends.Algorithm) {
	s := h.open(t)
	ring := newRing(alg)
	if _, err := s.Sign(ctxFor(t), ring, "1", signingInput(alg, "{}")); backends.KindOf(err) != backends.KindNotFound {
		t.Errorf("Sign on a ring with no versions: got %v, want not found", err)
	}
	v := CreateVersion(t, s, ring, "")
	for _, id := range []string{"999999", "no-such-version"} {
		if id == v.ID {
			continue
		}
		if _, err := s.Sign(ctxFor(t), ring, id, signingInput(alg, "{}")); backends.KindOf(err) != backends.KindNotFound {
			t.Errorf("Sign with unknown version %q: got %v, want not found", id, err)
		}
	}
}

func (h Harness) testCancelled(t *testing.T, alg backends.Algorithm) {
	s := h.open(t)
	ring := newRing(alg)
	v := CreateVersion(t, s, ring, "")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	calls := map[string]func() error{
		"Sign": func() error {
			_, err := s.Sign(ctx, ring, v.ID, signingInput(alg, "{}"))
			return err
		},
		"Versions": func() error {
			_, err := s.Versions(ctx, ring)
			return err
		},
		"CreateVersion": func() error {
			_, err := s.CreateVersion(ctx, ring, v.ID)
			return err
		},
	}
	for name, call := range calls {
		done := make(chan error, 1)
		go func() { done <- call() }()
		select {
		case err := <-done:
			if err == nil {
				t.Errorf("%s with a cancelled context succeeded", name)
			}
		case <-time.After(30 * time.Second): // a hang detector, not a speed check
			t.Errorf("%s with a cancelled context did not return", name)
		}
	}
}

func (h Harness) testConcurrent(t *testing.T, alg backends.Algorithm) {
	s := h.open(t)
	ring := newRing(alg)
	v := CreateVersion(t, s, ring, "")
	const perWorker = 8
	load := SignConcurrently(s, ring, v, h.Concurrency, func(i int) bool { return i < perWorker })
	for _, err := range load.Errors {
		t.Error(err)
	}
	if load.Failed > 0 {
		t.Errorf("%d of %d concurrent signatures failed", load.Failed, h.Concurrency*perWorker)
	}
}

func publicEqual(a, b crypto.PublicKey) bool {
	ea, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ea.Equal(b)
}
