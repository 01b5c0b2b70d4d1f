package server

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	gojose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signet-dev/signet/backends"
	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
	"github.com/signet-dev/signet/internal/vaulttest"
	"github.com/signet-dev/signet/server/config"
)

// x5cRings configures, on the backend URI given, a CA ring "ca" (ES384,
// usage: ca) and three signing rings: "default" (ES256) and "pss" (PS256)
// issued by it, and "self" (EdDSA) self-signed. algs overrides the
// algorithms of ca, default, pss and self for backends that lack some.
func x5cRings(t *testing.T, backend string, algs ...backends.Algorithm) config.Config {
	t.Helper()
	if len(algs) == 0 {
		algs = []backends.Algorithm{backends.ES384, backends.ES256, backends.PS256, backends.EdDSA}
	}
	cfg := testConfig(t)
	ring := func(name string, alg backends.Algorithm, x *config.X5CConfig) config.RingConfig {
		r := config.DefaultRing
		r.Name, r.Backend, r.Algorithm, r.X5C = name, backend, string(alg), x
		return r
	}
	ca := ring("ca", algs[0], &config.X5CConfig{Subject: config.SubjectConfig{CommonName: "Signet test CA", Organization: []string{"Signet"}}})
	ca.Usage = "ca"
	cfg.KeyRings = []config.RingConfig{ca,
		ring("default", algs[1], &config.X5CConfig{CARing: "ca"}),
		ring("pss", algs[2], &config.X5CConfig{CARing: "ca", DNSNames: []string{"signet.test"}}),
		ring("self", algs[3], &config.X5CConfig{SelfSigned: true}),
	}
	return cfg
}

// ringChain is the DER chain of the ring's active version, from ListKeys.
func ringChain(t *testing.T, ts *testServer, ring string) [][]byte {
	t.Helper()
	resp, err := ts.client.ListKeys(ctxT(t), &signetv1.ListKeysRequest{KeyRing: ring})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range resp.GetVersions() {
		if v.GetState() == signetv1.KeyState_KEY_STATE_ACTIVE {
			if len(v.GetCertificateChain()) == 0 {
				t.Fatalf("the active version of %s has no chain: %s", ring, v.GetCertificateProblem())
			}
			return v.GetCertificateChain()
		}
	}
	t.Fatalf("ring %s has no active version", ring)
	return nil
}

type jwkJSON struct {
	Kid      string   `json:"kid"`
	X5c      []string `json:"x5c"`
	X5tS256  string   `json:"x5t#S256"`
	Kty      string   `json:"kty"`
	Raw      json.RawMessage
	Verifier *gojose.JSONWebKey
}

// jwksKeys fetches the JWKS over HTTP and returns its keys by kid.
func jwksKeys(t *testing.T, ts *testServer) (map[string]jwkJSON, []byte) {
	t.Helper()
	_, body := ts.get(t, JWKSPath)
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatal(err)
	}
	out := map[string]jwkJSON{}
	for _, raw := range doc.Keys {
		var k jwkJSON
		if err := json.Unmarshal(raw, &k); err != nil {
			t.Fatal(err)
		}
		k.Raw = raw
		var jk gojose.JSONWebKey // go-jose checks x5c against the key and x5t#S256
		if err := jk.UnmarshalJSON(raw); err != nil {
			t.Fatalf("go-jose refuses JWK %s: %v", k.Kid, err)
		}
		k.Verifier = &jk
		out[k.Kid] = k
	}
	return out, body
}

func pemFile(t *testing.T, name string, ders ...[]byte) string {
	t.Helper()
	var buf bytes.Buffer
	for _, d := range ders {
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: d})
	}
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// checkX5C checks, for each signing ring, that the JWKS entry of its
// active version carries its chain as x5c (base64 DER) and x5t#S256, and
// that the chain verifies against the ring's trust anchor with Go's
// x509.Verify, OpenSSL and Python's cryptography; and that a token signed
// by the ring verifies with the key of the leaf certificate, in Go and in
// PyJWT. anchors maps each ring to the ring whose active chain's last
// certificate is its trust anchor.
func checkX5C(t *testing.T, ts *testServer, anchors map[string]string) {
	t.Helper()
	keys, _ := jwksKeys(t, ts)
	for ring, anchorRing := range anchors {
		chain := ringChain(t, ts, ring)
		anchorChain := ringChain(t, ts, anchorRing)
		anchorDER := anchorChain[len(anchorChain)-1]
		tok := sign(t, ts, ring)
		parsed, err := jwt.ParseSigned(tok.GetToken(), []gojose.SignatureAlgorithm{gojose.ES256, gojose.ES384, gojose.ES512,
			gojose.RS256, gojose.RS384, gojose.RS512, gojose.PS256, gojose.PS384, gojose.PS512, gojose.EdDSA})
		if err != nil {
			t.Fatal(err)
		}
		k, ok := keys[tok.GetKid()]
		if !ok {
			t.Fatalf("%s: kid %s is not in the JWKS", ring, tok.GetKid())
		}
		if len(k.X5c) != len(chain) {
			t.Fatalf("%s: x5c has %d certificates, ListKeys %d", ring, len(k.X5c), len(chain))
		}
		for i, c := range k.X5c {
			der, err := base64.StdEncoding.DecodeString(c) // standard base64 with padding, RFC 7517 4.7
			if err != nil || !bytes.Equal(der, chain[i]) {
				t.Fatalf("%s: x5c[%d] is not the standard base64 of the chain's DER (%v)", ring, i, err)
			}
		}
		sum := sha256.Sum256(chain[0])
		if k.X5tS256 != base64.RawURLEncoding.EncodeToString(sum[:]) {
			t.Errorf("%s: x5t#S256 %q is not the leaf's SHA-256", ring, k.X5tS256)
		}

		// Go: the chain to the anchor, and the token with the leaf's key.
		leaf, err := x509.ParseCertificate(chain[0])
		if err != nil {
			t.Fatal(err)
		}
		roots, inter := x509.NewCertPool(), x509.NewCertPool()
		root, _ := x509.ParseCertificate(anchorDER)
		roots.AddCert(root)
		for _, d := range chain[1:] {
			c, _ := x509.ParseCertificate(d)
			inter.AddCert(c)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: ts.KeySet().Now(),
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Errorf("%s: x509.Verify: %v", ring, err)
		}
		if leaf.IsCA || leaf.KeyUsage != x509.KeyUsageDigitalSignature {
			t.Errorf("%s: leaf has CA %v, key usage %v; want no CA bit and digitalSignature only", ring, leaf.IsCA, leaf.KeyUsage)
		}
		var claims jwt.Claims
		if err := parsed.Claims(leaf.PublicKey, &claims); err != nil {
			t.Errorf("%s: the token does not verify with the leaf certificate's key: %v", ring, err)
		}
		if !k.Verifier.Key.(interface{ Equal(crypto.PublicKey) bool }).Equal(leaf.PublicKey) {
			t.Errorf("%s: the JWK's key is not the leaf's", ring)
		}

		// OpenSSL.
		anchorFile := pemFile(t, "anchor.pem", anchorDER)
		args := []string{"verify", "-CAfile", anchorFile}
		if len(chain) > 2 {
			args = append(args, "-untrusted", pemFile(t, "untrusted.pem", chain[1:len(chain)-1]...))
		}
		args = append(args, pemFile(t, "leaf.pem", chain[0]))
		if out, err := exec.Command("openssl", args...).CombinedOutput(); err != nil || !strings.Contains(string(out), ": OK") {
			t.Errorf("%s: openssl %s: %v\n%s", ring, strings.Join(args, " "), err, out)
		}

		// Python: cryptography's path validation, then PyJWT with the leaf's key.
		root0, _ := os.Getwd()
		py := exec.Command("/usr/bin/python3", filepath.Join(root0, "..", "scripts", "verify_x5c.py"),
			ts.httpURL+JWKSPath, anchorFile, testIssuer(ts), "svc-b")
		py.Stdin = strings.NewReader(tok.GetToken() + "\n")
		out, err := py.CombinedOutput()
		if err != nil || !bytes.Contains(out, []byte(`"ok": true`)) {
			t.Errorf("%s: verify_x5c.py: %v\n%s", ring, err, out)
		}
	}
}

func testIssuer(ts *testServer) string { return ts.cfg.Issuer }

func TestX5CLocal(t *testing.T) {
	t.Parallel()
	ts := startServer(t, x5cRings(t, "local://"+t.TempDir()), Options{})
	checkX5C(t, ts, map[string]string{"default": "ca", "pss": "ca", "self": "self"})
	checkCARing(t, ts)
}

// checkCARing: the CA ring is never in the JWKS, refuses Sign with
// FailedPrecondition, and its certificate is a CA with path length 0.
func checkCARing(t *testing.T, ts *testServer) {
	t.Helper()
	caDER := ringChain(t, ts, "ca")
	ca, err := x509.ParseCertificate(caDER[0])
	if err != nil {
		t.Fatal(err)
	}
	if !ca.IsCA || ca.MaxPathLen != 0 || !ca.MaxPathLenZero || ca.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("CA certificate: IsCA %v, MaxPathLen %d (zero %v), key usage %v", ca.IsCA, ca.MaxPathLen, ca.MaxPathLenZero, ca.KeyUsage)
	}
	keys, _ := jwksKeys(t, ts)
	for _, v := range ts.KeySet().Versions(ts.KeySet().Ring("ca")) {
		if _, ok := keys[v.Kid]; ok {
			t.Errorf("CA version %s is in the JWKS", v.ID)
		}
	}
	_, err = ts.client.Sign(ctxT(t), &signetv1.SignRequest{KeyRing: "ca", Audience: []string{"svc"}})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "CA ring") {
		t.Errorf("Sign on the CA ring: %v, want FailedPrecondition saying it is a CA ring", err)
	}
}

// Rotating the CA ring (revoking the old CA version, so the new one issues
// at once) re-issues the leaves of the rings it serves, and they verify
// against the new CA certificate, not the old one.
func TestX5CCARotationReissuesLeaves(t *testing.T) {
	t.Parallel()
	ts := startServer(t, x5cRings(t, "local://"+t.TempDir()), Options{})
	oldCA := ringChain(t, ts, "ca")[0]
	if _, err := ts.client.Rotate(ctxT(t), &signetv1.RotateRequest{KeyRing: "ca", RevokePrevious: true}); err != nil {
		t.Fatal(err)
	}
	newCA := ringChain(t, ts, "ca")[0]
	if bytes.Equal(oldCA, newCA) {
		t.Fatal("the CA ring's certificate did not change with its version")
	}
	for _, ring := range []string{"default", "pss"} {
		if chain := ringChain(t, ts, ring); !bytes.Equal(chain[len(chain)-1], newCA) {
			t.Errorf("%s: the leaf chain still ends at the old CA certificate", ring)
		}
	}
	checkX5C(t, ts, map[string]string{"default": "ca", "pss": "ca"})
}

// Three replicas on one backend serve byte-identical JWKS with chains,
// after a rotation and after a version appears without a chain and every
// replica races to attach one: the backend keeps one, and every replica
// publishes the one it reads back.
func TestX5CReplicasServeIdenticalJWKS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var replicas []*testServer
	for range 3 {
		replicas = append(replicas, startServer(t, x5cRings(t, "local://"+dir), Options{}))
	}
	same := func(when string) []byte {
		t.Helper()
		for _, ts := range replicas {
			for _, r := range ts.KeySet().Rings() {
				ts.KeySet().Tick(ctxT(t), r)
			}
		}
		_, first := jwksKeys(t, replicas[0])
		etag := replicas[0].jwks.current().ETag
		for i, ts := range replicas[1:] {
			if _, body := jwksKeys(t, ts); !bytes.Equal(body, first) || ts.jwks.current().ETag != etag {
				t.Fatalf("%s: replica %d serves another JWKS:\n%s\nreplica 0:\n%s", when, i+1, body, first)
			}
		}
		return first
	}
	same("at start")
	if _, err := replicas[1].client.Rotate(ctxT(t), &signetv1.RotateRequest{KeyRing: "default"}); err != nil {
		t.Fatal(err)
	}
	body := same("after a rotation")
	if n := strings.Count(string(body), `"x5c"`); n != 4 { // default (2 versions), pss, self
		t.Errorf("JWKS has %d keys with x5c, want 4:\n%s", n, body)
	}

	// A version created behind the replicas' backs (as a replica that
	// crashed before attaching its chain leaves it), then all three race.
	b, err := backends.Open(ctxT(t), "local://"+dir, backends.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ring := backends.KeyRing{Name: "default", Algorithm: backends.ES256}
	vs, _ := b.Versions(ctxT(t), ring)
	v, err := b.CreateVersion(ctxT(t), ring, vs[len(vs)-1].ID)
	if err != nil {
		t.Fatal(err)
	}
	start := make(chan struct{})
	done := make(chan struct{})
	for _, ts := range replicas {
		go func() {
			defer func() { done <- struct{}{} }()
			<-start
			ts.KeySet().Tick(ctxT(t), ts.KeySet().Ring("default"))
		}()
	}
	close(start)
	for range replicas {
		<-done
	}
	body = same("after racing to attach a chain")
	kid, _ := backends.KeyID(v.PublicKey)
	keys, _ := jwksKeys(t, replicas[0])
	if len(keys[kid].X5c) != 2 {
		t.Errorf("the raced version %s is published with %d certificates, want 2:\n%s", v.ID, len(keys[kid].X5c), body)
	}
	chains, _ := filepath.Glob(filepath.Join(dir, "rings", "default", v.ID+".x5c.*"))
	if len(chains) != 1 {
		t.Errorf("the raced version has chain files %v, want one", chains)
	}
}

func vaultEnv(k string) string {
	if k == "VAULT_TOKEN" {
		return vaulttest.RootToken
	}
	return ""
}

// On a real Vault, the chains live in Transit (set-certificate) and come
// back with every read of the key. A CA ring's certificate cannot
// (set-certificate takes leaves only), so the CA ring lives on the local
// backend here, and a CA ring on Transit is refused at startup.
func TestX5CVaultTransit(t *testing.T) {
	t.Parallel()
	v := vaulttest.Start(t)
	u, _ := url.Parse(v.Addr)
	transit := "vault://" + u.Host + "/transit?scheme=http&key_prefix=signet-"
	cfg := x5cRings(t, transit)
	cfg.KeyRings[0].Backend = "local://" + t.TempDir()
	ts := startServer(t, cfg, Options{Getenv: vaultEnv})
	checkX5C(t, ts, map[string]string{"default": "ca", "pss": "ca", "self": "self"})
	checkCARing(t, ts)
	key := v.Root(t).Logical()
	sec, err := key.Read("transit/keys/signet-default")
	if err != nil {
		t.Fatal(err)
	}
	stored := sec.Data["keys"].(map[string]any)["1"].(map[string]any)["certificate_chain"].(string)
	chain := ringChain(t, ts, "default")
	if got, err := backends.DecodePEMChain([]byte(stored)); err != nil || !backends.SameChain(got, chain) {
		t.Errorf("Transit holds another chain for version 1 than the one published:\n%s", stored)
	}

	cfg = x5cRings(t, transit)
	cfg.KeyRings = cfg.KeyRings[:1]
	cfg.KeyRings[0].Name = "vault-ca"
	_, err = New(ctxT(t), cfg, Options{Getenv: vaultEnv, Logger: testLogger(t)})
	if err == nil || !strings.Contains(err.Error(), "leaf certificates only") {
		t.Errorf("a CA ring on Transit: New returned %v, want a refusal saying set-certificate takes leaves only", err)
	}
}
