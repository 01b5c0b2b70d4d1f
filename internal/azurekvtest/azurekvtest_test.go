package azurekvtest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha512"
	"crypto/tls"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"

	"github.com/signet-dev/signet/internal/testtls"
)

// These tests check the server against the official client, as the
// backend uses it: azkeys over TLS with a DefaultAzureCredential token.

var id *Identity

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "signet-azurekvtest-")
	if err != nil {
		panic(err)
	}
	id = StartIdentity()
	id.SetEnv(dir)
	code := m.Run()
	id.Close()
	os.RemoveAll(dir)
	os.Exit(code)
}

func to[T any](v T) *T { return &v }

func start(t *testing.T) (*Server, *azkeys.Client) {
	t.Helper()
	s := Start(id)
	t.Cleanup(s.Close)
	cred, err := azidentity.NewDefaultAzureCredential(&azidentity.DefaultAzureCredentialOptions{DisableInstanceDiscovery: true})
	if err != nil {
		t.Fatal(err)
	}
	c, err := azkeys.NewClient(s.URL, cred, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s, c
}

func errorCode(err error) (int, string) {
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		return 0, ""
	}
	return re.StatusCode, re.ErrorCode
}

func TestChallengeAndTokens(t *testing.T) {
	s, _ := start(t)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: testtls.Pool(), MinVersion: tls.VersionTLS12}}}
	resp, err := hc.Get(s.URL + "/keys/k/versions?api-version=" + APIVersion)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	port := s.URL[strings.LastIndex(s.URL, ":")+1:]
	want := `Bearer authorization="` + id.URL + "/" + TenantID + `", resource="https://0.0.1:` + port + `"`
	if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") != want {
		t.Errorf("unauthenticated: %d %q, want 401 %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), want)
	}
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {ClientID}, "client_secret": {"wrong"}, "scope": {"https://x/.default"}}
	resp, err = hc.PostForm(id.URL+"/"+TenantID+"/oauth2/v2.0/token", form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a wrong client secret: %d, want 401", resp.StatusCode)
	}
	resp, err = hc.Get(s.URL + "/keys/k/versions?api-version=7.4")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("another api-version: %d, want 400", resp.StatusCode)
	}
}

func TestKeysThroughTheOfficialClient(t *testing.T) {
	_, c := start(t)
	ctx := context.Background()
	created, err := c.CreateKey(ctx, "k", azkeys.CreateKeyParameters{Kty: to(azkeys.KeyTypeEC), Curve: to(azkeys.CurveNameP521),
		Tags: map[string]*string{"a": to("b")}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ver := created.Key.KID.Version()
	if len(ver) != 32 || created.Attributes.Created == nil || time.Since(*created.Attributes.Created) > time.Minute || *created.Tags["a"] != "b" {
		t.Errorf("created %+v", created.KeyBundle)
	}
	d := sha512.Sum512([]byte("m"))
	sig, err := c.Sign(ctx, "k", ver, azkeys.SignParameters{Algorithm: to(azkeys.SignatureAlgorithmES512), Value: d[:]}, nil)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P521(), append(append([]byte{4}, created.Key.X...), created.Key.Y...))
	if err != nil {
		t.Fatal(err)
	}
	if len(sig.Result) != 132 || !ecdsa.Verify(pub, d[:], new(big.Int).SetBytes(sig.Result[:66]), new(big.Int).SetBytes(sig.Result[66:])) {
		t.Error("the ES512 signature is not a verifying R||S")
	}
	if _, err := c.Sign(ctx, "k", ver, azkeys.SignParameters{Algorithm: to(azkeys.SignatureAlgorithmES256), Value: d[:32]}, nil); func() bool {
		st, code := errorCode(err)
		return st != http.StatusBadRequest || code != "BadParameter"
	}() {
		t.Errorf("ES256 with a P-521 key: %v", err)
	}
	if _, err := c.UpdateKey(ctx, "k", ver, azkeys.UpdateKeyParameters{KeyAttributes: &azkeys.KeyAttributes{Enabled: to(false)}}, nil); err != nil {
		t.Fatal(err)
	}
	for what, call := range map[string]func() error{
		"get": func() error { _, err := c.GetKey(ctx, "k", ver, nil); return err },
		"sign": func() error {
			_, err := c.Sign(ctx, "k", ver, azkeys.SignParameters{Algorithm: to(azkeys.SignatureAlgorithmES512), Value: d[:]}, nil)
			return err
		},
	} {
		err := call()
		var re *azcore.ResponseError
		if st, code := errorCode(err); st != http.StatusForbidden || code != "Forbidden" || !errors.As(err, &re) || !strings.Contains(err.Error(), "KeyDisabled") {
			t.Errorf("%s on a disabled version: %v", what, err)
		}
	}
	if _, err := c.GetKey(ctx, "none", "", nil); func() bool { st, code := errorCode(err); return st != 404 || code != "KeyNotFound" }() {
		t.Errorf("an unknown key: %v", err)
	}
	// Paging: 27 versions come in two pages of at most 25.
	for range 26 {
		if _, err := c.CreateKey(ctx, "k", azkeys.CreateKeyParameters{Kty: to(azkeys.KeyTypeEC), Curve: to(azkeys.CurveNameP256)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	n, pages := 0, 0
	for p := c.NewListKeyPropertiesVersionsPager("k", nil); p.More(); pages++ {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		n += len(page.Value)
	}
	if n != 27 || pages != 2 {
		t.Errorf("listed %d versions in %d pages, want 27 in 2", n, pages)
	}
	if _, err := c.CreateKey(ctx, "k", azkeys.CreateKeyParameters{Kty: to(azkeys.KeyType("OKP"))}, nil); func() bool { st, _ := errorCode(err); return st != 400 }() {
		t.Errorf("an OKP (Ed25519) key: %v", err)
	}
}

// A version can be created disabled, and every answer carries Key
// Vault's clock in a Date header.
func TestCreateDisabledAndDate(t *testing.T) {
	_, c := start(t)
	var resp *http.Response
	created, err := c.CreateKey(policy.WithCaptureResponse(context.Background(), &resp), "d",
		azkeys.CreateKeyParameters{Kty: to(azkeys.KeyTypeEC), Curve: to(azkeys.CurveNameP256), KeyAttributes: &azkeys.KeyAttributes{Enabled: to(false)}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if *created.Attributes.Enabled || created.Key == nil || len(created.Key.X) != 32 {
		t.Errorf("created disabled: %+v", created.KeyBundle)
	}
	date, err := http.ParseTime(resp.Header.Get("Date"))
	if err != nil || date.Before(created.Attributes.Created.Add(-time.Second)) || time.Since(date) > time.Minute {
		t.Errorf("Date %q (%v) for a version created %v", resp.Header.Get("Date"), err, created.Attributes.Created)
	}
}

// Soft-delete: a deleted key's name reads as not found and cannot be
// created again until the key is recovered or purged.
func TestSoftDelete(t *testing.T) {
	_, c := start(t)
	ctx := context.Background()
	params := azkeys.CreateKeyParameters{Kty: to(azkeys.KeyTypeEC), Curve: to(azkeys.CurveNameP256)}
	created, err := c.CreateKey(ctx, "sd", params, nil)
	if err != nil {
		t.Fatal(err)
	}
	del, err := c.DeleteKey(ctx, "sd", nil)
	if err != nil || del.RecoveryID == nil || del.DeletedDate == nil || del.ScheduledPurgeDate == nil || *del.Key.KID != *created.Key.KID {
		t.Fatalf("DeleteKey: %+v, %v", del, err)
	}
	if _, err := c.GetKey(ctx, "sd", "", nil); func() bool { st, code := errorCode(err); return st != 404 || code != "KeyNotFound" }() {
		t.Errorf("get of a deleted key: %v", err)
	}
	_, err = c.CreateKey(ctx, "sd", params, nil)
	if st, code := errorCode(err); st != http.StatusConflict || code != "Conflict" || !strings.Contains(err.Error(), "ObjectIsDeletedButRecoverable") {
		t.Errorf("create on a deleted name: %v", err)
	}
	if _, err := c.RecoverDeletedKey(ctx, "sd", nil); err != nil {
		t.Fatal(err)
	}
	if got, err := c.GetKey(ctx, "sd", created.Key.KID.Version(), nil); err != nil || *got.Key.KID != *created.Key.KID {
		t.Errorf("get after recovery: %v", err)
	}
	if _, err := c.DeleteKey(ctx, "sd", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PurgeDeletedKey(ctx, "sd", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateKey(ctx, "sd", params, nil); err != nil {
		t.Errorf("create after the purge: %v", err)
	}
}

// FuzzServe feeds arbitrary authenticated requests to the keys API: each
// gets a JSON answer with a status Key Vault uses, never a panic.
func FuzzServe(f *testing.F) {
	ident := &Identity{tokens: map[string]token{}}
	s := &Server{id: ident, URL: "https://127.0.0.1:1", resource: "https://0.0.1:1", keys: map[string][]*version{},
		deleted: map[string]deletedKey{}, calls: map[string]int{}, denied: map[string]bool{}}
	ident.tokens["t"] = token{scope: s.resource + "/.default", expires: time.Now().Add(time.Hour)}
	for _, c := range []struct{ method, path, body string }{
		{"POST", "/keys/k/create", `{"kty":"EC","crv":"P-256","key_ops":["sign"],"tags":{"signet-seq":"1"}}`},
		{"GET", "/keys/k/versions", ""},
		{"PATCH", "/keys/k/0123456789abcdef0123456789abcdef", `{"attributes":{"enabled":false},"tags":{}}`},
		{"POST", "/keys/k/0123456789abcdef0123456789abcdef/sign", `{"alg":"ES256","value":"AAAA"}`},
		{"DELETE", "/keys/k", ""},
		{"POST", "/deletedkeys/k/recover", ""},
		{"DELETE", "/deletedkeys/k", ""},
	} {
		f.Add(c.method, c.path, c.body)
	}
	f.Fuzz(func(t *testing.T, method, path, body string) {
		if strings.Contains(body, "RSA") {
			return // RSA key generation is slow; the EC paths cover the parsing
		}
		u, err := url.Parse("https://127.0.0.1:1" + path)
		if err != nil || !strings.HasPrefix(u.Path, "/") {
			return
		}
		q := u.Query()
		q.Set("api-version", APIVersion)
		u.RawQuery = q.Encode()
		req, err := http.NewRequest(method, u.String(), strings.NewReader(body))
		if err != nil {
			return
		}
		req.Header.Set("Authorization", "Bearer t")
		w := httptest.NewRecorder()
		s.serve(w, req)
		switch w.Code {
		case 204:
			return // a purge: no body
		case 200, 400, 403, 404, 409:
		default:
			t.Fatalf("%s %s %q: status %d", method, path, body, w.Code)
		}
		if !strings.HasPrefix(w.Header().Get("Content-Type"), "application/json") {
			t.Fatalf("%s %s: content type %q", method, path, w.Header().Get("Content-Type"))
		}
	})
}
