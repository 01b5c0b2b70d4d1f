package lifecycle

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/signet-dev/signet/backends"
	"github.com/signet-dev/signet/internal/clocktest"
)

const testKEK = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="

// importLocal writes into a key directory, as an operator importing a key
// would, version toID of ring toRing holding the very key pair of version
// fromID of ring fromRing: the private key is decrypted and sealed again
// for its new place (the key file's format: AES-256-GCM under the KEK,
// bound to ring, version, algorithm and public key).
func importLocal(t *testing.T, dir, fromRing, fromID, toRing, toID string) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, "rings", fromRing, fromID+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var f map[string]any
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	kek, _ := base64.StdEncoding.DecodeString(testKEK)
	block, _ := aes.NewCipher(kek)
	gcm, _ := cipher.NewGCM(block)
	aad := func(ring, version string) []byte {
		return []byte(strings.Join([]string{"signet-local-v1", ring, version, f["algorithm"].(string), f["public_key"].(string)}, "\x00"))
	}
	sealed, _ := base64.StdEncoding.DecodeString(f["private_key"].(string))
	ns := gcm.NonceSize()
	der, err := gcm.Open(nil, sealed[:ns], sealed[ns:], aad(fromRing, fromID))
	if err != nil {
		t.Fatalf("opening the key file: %v", err)
	}
	nonce := make([]byte, ns)
	rand.Read(nonce)
	f["ring"], f["version"] = toRing, toID
	f["private_key"] = gcm.Seal(nonce, nonce, der, aad(toRing, toID))
	delete(f, "request_id")
	out, _ := json.Marshal(f)
	if err := os.MkdirAll(filepath.Join(dir, "rings", toRing), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "rings", toRing, toID+".json"), out, 0o600); err != nil {
		t.Fatal(err)
	}
}

// twoRings starts a key set with rings a and b on one backend.
func twoRings(b backends.Signer, c *clocktest.Clock) (*KeySet, error) {
	return New(context.Background(), []RingSpec{{Name: "a", Algorithm: backends.ES256, Schedule: testSchedule, Backend: b},
		{Name: "b", Algorithm: backends.ES256, Schedule: testSchedule, Backend: b}}, Options{Now: c.Now})
}

// wantDuplicate checks that err refuses a kid held twice and names both
// versions and their rings.
func wantDuplicate(t *testing.T, err error, kid string, names ...string) {
	t.Helper()
	t.Logf("refused: %v", err)
	if !errors.Is(err, ErrDuplicateKid) {
		t.Fatalf("got %v, want a duplicate kid refused", err)
	}
	for _, n := range append(names, kid) {
		if !strings.Contains(err.Error(), n) {
			t.Errorf("the error does not name %q: %v", n, err)
		}
	}
}

// Two rings holding one key (an operator imported it into both, or
// pointed both at it): the JWKS could hold its kid only once, with one
// ring's alg, and revoking it in one ring would leave it signing in the
// other. Start-up refuses, naming both; at a refresh the new state is
// refused and the last good key set stays.
func TestDuplicateKidAcrossRings(t *testing.T) {
	dir := t.TempDir()
	c := clocktest.New()
	ks, err := twoRings(openLocalDir(t, dir, c), c)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := ks.Active(ks.Ring("a"))
	b, _ := ks.Active(ks.Ring("b"))
	importLocal(t, dir, "a", a.ID, "b", "2") // ring b's newest version is ring a's key
	err = ks.Refresh(context.Background(), ks.Ring("b"))
	wantDuplicate(t, err, a.Kid, `version `+a.ID+` of key ring "a"`, `version 2 of key ring "b"`)
	if vs := ks.Versions(ks.Ring("b")); len(vs) != 1 || vs[0].Kid != b.Kid {
		t.Errorf("after the refused refresh ring b holds %+v; want its last good version only", vs)
	}
	if st := ks.Status()[1]; st.LastError == nil || st.RefreshFailures != 1 {
		t.Errorf("ring b's status does not report the refused refresh: %+v", st)
	}
	_, err = twoRings(openLocalDir(t, dir, c), c)
	wantDuplicate(t, err, a.Kid, `version `+a.ID+` of key ring "a"`, `version 2 of key ring "b"`)
}

// Two versions of one ring holding one key: refused the same way.
func TestDuplicateKidAcrossVersions(t *testing.T) {
	dir := t.TempDir()
	c := clocktest.New()
	ks, err := twoRings(openLocalDir(t, dir, c), c)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := ks.Active(ks.Ring("a"))
	importLocal(t, dir, "a", a.ID, "a", "2")
	err = ks.Refresh(context.Background(), ks.Ring("a"))
	wantDuplicate(t, err, a.Kid, `version `+a.ID+` of key ring "a"`, `version 2 of key ring "a"`)
	if pub := ks.Published(); len(pub) != 2 {
		t.Errorf("after the refused refresh %d versions are published, want the 2 of before", len(pub))
	}
	_, err = twoRings(openLocalDir(t, dir, c), c)
	wantDuplicate(t, err, a.Kid, `version `+a.ID+` of key ring "a"`, `version 2 of key ring "a"`)
}
