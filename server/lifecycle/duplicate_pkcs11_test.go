//go:build pkcs11 && cgo

package lifecycle

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/asn1"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	p11 "github.com/miekg/pkcs11"

	"github.com/signet-dev/signet/backends"
	_ "github.com/signet-dev/signet/backends/pkcs11"
	"github.com/signet-dev/signet/internal/clocktest"
	"github.com/signet-dev/signet/internal/softhsmtest"
)

// importPair writes one P-256 key pair onto the token as version n of
// ring, labelled as Signet labels its versions, the way an operator
// importing a key would; it returns the version's id (the CKA_ID in hex).
func importPair(t *testing.T, tok *softhsmtest.Token, key *ecdsa.PrivateKey, ring string, n byte) string {
	t.Helper()
	ctx := p11.New(tok.Module)
	// The backend under test has initialised the library in this process
	// already: share it, and leave finalising to the backend.
	if err := ctx.Initialize(); err != nil && err != p11.Error(p11.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		t.Fatal(err)
	}
	defer ctx.Destroy()
	slots, err := ctx.GetSlotList(true)
	if err != nil {
		t.Fatal(err)
	}
	var slot uint
	found := false
	for _, s := range slots {
		if info, err := ctx.GetTokenInfo(s); err == nil && strings.TrimRight(info.Label, " \x00") == tok.Label {
			slot, found = s, true
		}
	}
	if !found {
		t.Fatalf("no token %q", tok.Label)
	}
	sh, err := ctx.OpenSession(slot, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
	if err != nil {
		t.Fatal(err)
	}
	defer ctx.CloseSession(sh)
	if err := ctx.Login(sh, p11.CKU_USER, tok.PIN); err != nil && err != p11.Error(p11.CKR_USER_ALREADY_LOGGED_IN) {
		t.Fatal(err)
	}
	id := []byte{0, 0, 0, n, 0, 0, 0, 0}
	rand.Read(id[4:])
	label := fmt.Sprintf("signet/%s/%d/%s", ring, n, time.Now().UTC().Format(time.RFC3339Nano))
	params, _ := asn1.Marshal(asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7})
	point, err := key.PublicKey.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	ecPoint, _ := asn1.Marshal(point)
	common := func(class uint) []*p11.Attribute {
		return []*p11.Attribute{p11.NewAttribute(p11.CKA_CLASS, class), p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_EC),
			p11.NewAttribute(p11.CKA_TOKEN, true), p11.NewAttribute(p11.CKA_LABEL, label), p11.NewAttribute(p11.CKA_ID, id),
			p11.NewAttribute(p11.CKA_EC_PARAMS, params)}
	}
	pub := append(common(p11.CKO_PUBLIC_KEY), p11.NewAttribute(p11.CKA_EC_POINT, ecPoint), p11.NewAttribute(p11.CKA_VERIFY, true),
		p11.NewAttribute(p11.CKA_ENCRYPT, false), p11.NewAttribute(p11.CKA_WRAP, false), p11.NewAttribute(p11.CKA_DERIVE, false))
	scalar, err := key.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	priv := append(common(p11.CKO_PRIVATE_KEY), p11.NewAttribute(p11.CKA_VALUE, scalar),
		p11.NewAttribute(p11.CKA_PRIVATE, true), p11.NewAttribute(p11.CKA_SENSITIVE, true), p11.NewAttribute(p11.CKA_SIGN, true),
		p11.NewAttribute(p11.CKA_DECRYPT, false), p11.NewAttribute(p11.CKA_UNWRAP, false), p11.NewAttribute(p11.CKA_DERIVE, false),
		p11.NewAttribute(p11.CKA_SIGN_RECOVER, false))
	for _, attrs := range [][]*p11.Attribute{priv, pub} {
		if _, err := ctx.CreateObject(sh, attrs); err != nil {
			t.Fatalf("importing %s: %v", label, err)
		}
	}
	return hex.EncodeToString(id)
}

// One key pair imported twice onto a PKCS#11 token (SoftHSM2), as two
// rings' versions and as two versions of one ring: start-up refuses, naming
// both versions and rings.
func TestDuplicateKidOnPKCS11(t *testing.T) {
	tok := softhsmtest.New(t)
	c := clocktest.New()
	b, err := backends.Open(context.Background(), tok.URI(), backends.OpenOptions{Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	kid, err := backends.KeyID(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	start := func(rings ...string) error {
		var specs []RingSpec
		for _, r := range rings {
			specs = append(specs, RingSpec{Name: r, Algorithm: backends.ES256, Schedule: testSchedule, Backend: b})
		}
		_, err := New(context.Background(), specs, Options{Now: c.Now})
		return err
	}

	a1 := importPair(t, tok, key, "a", 1)
	if err := start("a"); err != nil {
		t.Fatalf("one ring holding the imported key: %v", err)
	}
	b1 := importPair(t, tok, key, "b", 1)
	wantDuplicate(t, start("a", "b"), kid, `version `+a1+` of key ring "a"`, `version `+b1+` of key ring "b"`)

	c1 := importPair(t, tok, key, "c", 1)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	importPair(t, tok, other, "c", 2)
	c3 := importPair(t, tok, key, "c", 3)
	wantDuplicate(t, start("c"), kid, `version `+c1+` of key ring "c"`, `version `+c3+` of key ring "c"`)
}
