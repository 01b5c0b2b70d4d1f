package server

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	externaljwtv1 "k8s.io/externaljwt/apis/v1"

	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
	"github.com/signet-dev/signet/server/config"
)

const kubeIssuer = "https://kubernetes.default.svc.cluster.local"

// kubeEnv is a running Signet with kubernetes_signer on a Unix socket and
// an ExternalJWTSigner client on it, as kube-apiserver dials it.
type kubeEnv struct {
	*testServer
	socket, auditPath string
	kube              externaljwtv1.ExternalJWTSignerClient
}

// shortDir is a temporary directory with a path short enough for a Unix
// socket (108 bytes), removed when the test ends.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "sk")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func kubeConfig(t *testing.T, backend string) (config.Config, string) {
	cfg := testConfig(t)
	if backend != "" {
		cfg.KeyRings[0].Backend = backend
	}
	dir := shortDir(t)
	cfg.Audit.Path = filepath.Join(t.TempDir(), "audit.log")
	cfg.KubernetesSigner = &config.KubernetesSigner{Socket: filepath.Join(dir, "k.sock"), KeyRing: "default", Issuer: kubeIssuer,
		AllowedUIDs: []uint32{uint32(os.Getuid())}} // #nosec G115 -- a uid
	return cfg, dir
}

func startKube(t *testing.T, cfg config.Config) *kubeEnv {
	t.Helper()
	ts := startServer(t, cfg, Options{})
	e := &kubeEnv{testServer: ts, socket: cfg.KubernetesSigner.Socket, auditPath: cfg.Audit.Path}
	e.kube = externaljwtv1.NewExternalJWTSignerClient(dialUnix(t, e.socket))
	return e
}

func dialUnix(t *testing.T, path string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority("localhost"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// kubeClaims are claims as kube-apiserver writes them for a pod's token.
func kubeClaims(now time.Time, ttl time.Duration) map[string]any {
	return map[string]any{
		"aud": []string{"https://kubernetes.default.svc.cluster.local", "vault"},
		"exp": now.Add(ttl).Unix(), "iat": now.Unix(), "nbf": now.Unix(),
		"iss": kubeIssuer, "jti": "5f1c7e1a-1111-4d2e-9c3b-6a7b8c9d0e1f",
		"kubernetes.io": map[string]any{"namespace": "default", "serviceaccount": map[string]any{"name": "app", "uid": "9b1e"},
			"pod": map[string]any{"name": "app-1", "uid": "7c2d"}},
		"sub": "system:serviceaccount:default:app",
	}
}

func encodeClaims(t *testing.T, c map[string]any) string {
	t.Helper()
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// kubeSign signs claims as kube-apiserver does and assembles the token.
func (e *kubeEnv) kubeSign(t *testing.T, claims string) (string, error) {
	t.Helper()
	resp, err := e.kube.Sign(ctxT(t), &externaljwtv1.SignJWTRequest{Claims: claims})
	if err != nil {
		return "", err
	}
	return resp.GetHeader() + "." + claims + "." + resp.GetSignature(), nil
}

func (e *kubeEnv) fetchKeys(t *testing.T) *externaljwtv1.FetchKeysResponse {
	t.Helper()
	resp, err := e.kube.FetchKeys(ctxT(t), &externaljwtv1.FetchKeysRequest{})
	if err != nil {
		t.Fatalf("FetchKeys: %v", err)
	}
	return resp
}

func kubeKids(resp *externaljwtv1.FetchKeysResponse) []string {
	var out []string
	for _, k := range resp.GetKeys() {
		out = append(out, k.GetKeyId())
	}
	return out
}

// verifyWith checks token against a JWKS with go-jose and returns its claims.
func verifyWith(t *testing.T, token string, keys jose.JSONWebKeySet) jwt.Claims {
	t.Helper()
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256, jose.RS256, jose.ES384, jose.ES512})
	if err != nil {
		t.Fatalf("parse %s: %v", token, err)
	}
	var c jwt.Claims
	if err := tok.Claims(keys, &c); err != nil {
		t.Fatalf("token does not verify with the keys: %v", err)
	}
	return c
}

// fetchedJWKS is FetchKeys's answer as a JWKS, each PKIX key parsed.
func fetchedJWKS(t *testing.T, resp *externaljwtv1.FetchKeysResponse) jose.JSONWebKeySet {
	t.Helper()
	var set jose.JSONWebKeySet
	for _, k := range resp.GetKeys() {
		pub, err := x509.ParsePKIXPublicKey(k.GetKey())
		if err != nil {
			t.Fatalf("key %s is not PKIX DER: %v", k.GetKeyId(), err)
		}
		jwk := jose.JSONWebKey{Key: pub, KeyID: k.GetKeyId()}
		tp, err := jwk.Thumbprint(crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		if got := base64.RawURLEncoding.EncodeToString(tp); got != k.GetKeyId() {
			t.Fatalf("key_id %s is not the key's RFC 7638 thumbprint %s", k.GetKeyId(), got)
		}
		set.Keys = append(set.Keys, jwk)
	}
	return set
}

func (e *kubeEnv) signetJWKS(t *testing.T) jose.JSONWebKeySet {
	t.Helper()
	_, body := e.get(t, JWKSPath)
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(body, &set); err != nil {
		t.Fatal(err)
	}
	return set
}

func (e *kubeEnv) auditLines(t *testing.T) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(e.auditPath)
	if err != nil {
		t.Fatal(err)
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return nil
	}
	var out []map[string]any
	for _, l := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
		var m map[string]any
		if err := json.Unmarshal(l, &m); err != nil {
			t.Fatalf("audit line %q: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

func TestKubeSignerSignFetchKeysMetadata(t *testing.T) {
	t.Parallel()
	cfg, _ := kubeConfig(t, "")
	e := startKube(t, cfg)

	// The socket: owner-only from the start, in the configured place.
	st, err := os.Lstat(e.socket)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Type() != os.ModeSocket || st.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, want an owner-only (0600) socket", st.Mode())
	}

	md, err := e.kube.Metadata(ctxT(t), &externaljwtv1.MetadataRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if md.GetMaxTokenExpirationSeconds() != int64(time.Hour/time.Second) {
		t.Fatalf("max_token_expiration_seconds %d, want token_max_ttl 3600", md.GetMaxTokenExpirationSeconds())
	}

	keys := e.fetchKeys(t)
	if len(keys.GetKeys()) != 1 || keys.GetRefreshHintSeconds() != 30 || keys.GetDataTimestamp().CheckValid() != nil {
		t.Fatalf("FetchKeys: %v", keys)
	}
	active := e.KeySet().Versions(e.KeySet().Ring("default"))[0].Kid
	if keys.GetKeys()[0].GetKeyId() != active || keys.GetKeys()[0].GetExcludeFromOidcDiscovery() {
		t.Fatalf("FetchKeys key %v, want the active kid %s in OIDC discovery", keys.GetKeys()[0], active)
	}

	now := time.Now()
	claims := encodeClaims(t, kubeClaims(now, time.Hour))
	token, err := e.kubeSign(t, claims)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	// The header is alg, kid, typ and nothing else (kube-apiserver
	// refuses unknown fields), and the payload is the claims as sent.
	parts := strings.Split(token, ".")
	hdr, _ := base64.RawURLEncoding.DecodeString(parts[0])
	if want := `{"alg":"ES256","kid":"` + active + `","typ":"JWT"}`; string(hdr) != want {
		t.Fatalf("header %s, want %s", hdr, want)
	}
	if parts[1] != claims {
		t.Fatalf("payload changed")
	}
	// Verified independently (go-jose) with FetchKeys's keys and with
	// Signet's own JWKS.
	for name, set := range map[string]jose.JSONWebKeySet{"FetchKeys": fetchedJWKS(t, keys), "JWKS": e.signetJWKS(t)} {
		c := verifyWith(t, token, set)
		if c.Subject != "system:serviceaccount:default:app" || c.Issuer != kubeIssuer {
			t.Fatalf("%s: claims %+v", name, c)
		}
	}

	// Audited: the caller's uid and gid, sub, aud, exp, kid.
	lines := e.auditLines(t)
	last := lines[len(lines)-1]
	wantCaller := unixCaller(uint32(os.Getuid()), uint32(os.Getgid())) // #nosec G115 -- ids
	if last["rpc"] != "ExternalJWTSigner/Sign" || last["outcome"] != "ok" || last["caller"] != wantCaller ||
		last["sub"] != "system:serviceaccount:default:app" || last["kid"] != active ||
		int64(last["exp"].(float64)) != now.Add(time.Hour).Unix() || len(last["aud"].([]any)) != 2 {
		t.Fatalf("audit record %v", last)
	}
	if strings.Contains(string(mustRead(t, e.auditPath)), parts[2]) {
		t.Fatal("the audit log holds the signature")
	}

	// A refused Sign: InvalidArgument naming the field, audited, no signature.
	bad := kubeClaims(now, 2*time.Hour)
	_, err = e.kubeSign(t, encodeClaims(t, bad))
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "token_max_ttl") {
		t.Fatalf("a 2h token: %v, want InvalidArgument naming token_max_ttl", err)
	}
	lines = e.auditLines(t)
	if l := lines[len(lines)-1]; l["outcome"] != "error" || l["caller"] != wantCaller {
		t.Fatalf("refusal audit record %v", l)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A process whose uid and gid the config does not admit gets no RPC
// through: the handshake refuses it before a request is read, and the
// refusal is audited.
func TestKubeSignerRefusesOtherUIDs(t *testing.T) {
	t.Parallel()
	cfg, _ := kubeConfig(t, "")
	cfg.KubernetesSigner.AllowedUIDs = []uint32{uint32(os.Getuid()) + 1} // #nosec G115 -- a uid
	e := startKube(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := e.kube.Metadata(ctx, &externaljwtv1.MetadataRequest{})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("Metadata from a uid not admitted: %v, want Unavailable (connection refused at the handshake)", err)
	}
	var found bool
	for _, l := range e.auditLines(t) {
		if l["rpc"] == "ExternalJWTSigner/connect" && l["outcome"] == "denied" &&
			l["caller"] == unixCaller(uint32(os.Getuid()), uint32(os.Getgid())) { // #nosec G115 -- ids
			found = true
		}
	}
	if !found {
		t.Fatalf("no audit record of the refused connection: %v", e.auditLines(t))
	}
}

// Rotation and revocation reach FetchKeys: a rotation adds the pending kid
// (published before it signs) with a new data_timestamp; an emergency
// rotation leaves only the new kid.
func TestKubeSignerKeysFollowRotation(t *testing.T) {
	t.Parallel()
	cfg, _ := kubeConfig(t, "")
	e := startKube(t, cfg)
	before := e.fetchKeys(t)
	old := before.GetKeys()[0].GetKeyId()
	token, err := e.kubeSign(t, encodeClaims(t, kubeClaims(time.Now(), time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond) // data_timestamp is the time of the change: keep the two apart
	rot, err := e.client.Rotate(ctxT(t), &signetv1.RotateRequest{KeyRing: "default"})
	if err != nil {
		t.Fatal(err)
	}
	after := e.fetchKeys(t)
	if got := kubeKids(after); len(got) != 2 || got[0] != old || got[1] != rot.GetVersion().GetKid() {
		t.Fatalf("after Rotate FetchKeys lists %v, want [%s %s]", got, old, rot.GetVersion().GetKid())
	}
	if !after.GetDataTimestamp().AsTime().After(before.GetDataTimestamp().AsTime()) {
		t.Fatalf("data_timestamp did not move: %v then %v", before.GetDataTimestamp().AsTime(), after.GetDataTimestamp().AsTime())
	}
	// The pending version does not sign yet: the old kid still does.
	token2, err := e.kubeSign(t, encodeClaims(t, kubeClaims(time.Now(), time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	verifyWith(t, token2, fetchedJWKS(t, after))
	if h, _ := base64.RawURLEncoding.DecodeString(strings.Split(token2, ".")[0]); !strings.Contains(string(h), old) {
		t.Fatalf("a pending version signed: %s", h)
	}
	verifyWith(t, token, fetchedJWKS(t, after))

	em, err := e.client.Rotate(ctxT(t), &signetv1.RotateRequest{KeyRing: "default", RevokePrevious: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := kubeKids(e.fetchKeys(t)); len(got) != 1 || got[0] != em.GetVersion().GetKid() {
		t.Fatalf("after the emergency rotation FetchKeys lists %v, want only %s", got, em.GetVersion().GetKid())
	}
}

// A backend that does not answer: Sign is Unavailable within its deadline,
// FetchKeys still answers from the snapshot.
func TestKubeSignerBackendOutage(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg, _ := kubeConfig(t, "flaky-test:"+dir)
	e := startKube(t, cfg)
	keys := e.fetchKeys(t)
	flakyAt(dir).down.Store(true)
	defer flakyAt(dir).down.Store(false)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := e.kube.Sign(ctx, &externaljwtv1.SignJWTRequest{Claims: encodeClaims(t, kubeClaims(time.Now(), time.Hour))})
	if c := status.Code(err); c != codes.Unavailable && c != codes.DeadlineExceeded {
		t.Fatalf("Sign with the backend down: %v, want Unavailable", err)
	}
	if got := e.fetchKeys(t); !slicesEqual(kubeKids(got), kubeKids(keys)) {
		t.Fatalf("FetchKeys during the outage: %v, want %v", kubeKids(got), kubeKids(keys))
	}
}

func slicesEqual(a, b []string) bool { return strings.Join(a, ",") == strings.Join(b, ",") }

// kubernetes_signer.rate bounds the Signs of each admitted uid.
func TestKubeSignerRate(t *testing.T) {
	t.Parallel()
	cfg, _ := kubeConfig(t, "")
	cfg.KubernetesSigner.Rate = &config.KubernetesRate{PerSecond: 0.01, Burst: 2}
	e := startKube(t, cfg)
	claims := encodeClaims(t, kubeClaims(time.Now(), time.Hour))
	for i := range 2 {
		if _, err := e.kubeSign(t, claims); err != nil {
			t.Fatalf("Sign %d within the burst: %v", i, err)
		}
	}
	if _, err := e.kubeSign(t, claims); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("Sign beyond the burst: %v, want ResourceExhausted", err)
	}
}

// The socket is not created where another user could replace it, and a
// file that is not a socket is never removed to make room.
func TestKubeSignerSocketPlace(t *testing.T) {
	t.Parallel()
	dir := shortDir(t)
	if err := os.Chmod(dir, 0o777); err != nil { // #nosec G302 -- the point of the test
		t.Fatal(err)
	}
	if _, err := listenUnix(filepath.Join(dir, "k.sock")); err == nil || !strings.Contains(err.Error(), "writable by other users") {
		t.Fatalf("socket in a world-writable directory: %v", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := listenUnix(file); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("socket over a regular file: %v", err)
	}
	if b, _ := os.ReadFile(file); string(b) != "keep" {
		t.Fatal("the file was replaced")
	}
	// A socket left by an earlier run is replaced.
	path := filepath.Join(dir, "k.sock")
	l, err := listenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	l, err = listenUnix(path)
	if err != nil {
		t.Fatalf("over a stale socket: %v", err)
	}
	l.Close()
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Fatalf("the socket outlived its listener: %v", err)
	}
}

// previous_key_files: the cluster's old key file is listed after the
// ring's keys, with the kid kube-apiserver gave it.
func TestKubeSignerPreviousKeyFiles(t *testing.T) {
	t.Parallel()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	path := filepath.Join(t.TempDir(), "sa.pub")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _ := kubeConfig(t, "")
	cfg.KubernetesSigner.PreviousKeyFiles = []string{path}
	e := startKube(t, cfg)
	keys := e.fetchKeys(t)
	sum := sha256.Sum256(der)
	if len(keys.GetKeys()) != 2 || keys.GetKeys()[1].GetKeyId() != base64.RawURLEncoding.EncodeToString(sum[:]) ||
		!bytes.Equal(keys.GetKeys()[1].GetKey(), der) {
		t.Fatalf("FetchKeys with a previous key file: %v", keys)
	}
	// A rotation keeps it, after the ring's keys.
	if _, err := e.client.Rotate(ctxT(t), &signetv1.RotateRequest{KeyRing: "default"}); err != nil {
		t.Fatal(err)
	}
	if got := e.fetchKeys(t).GetKeys(); len(got) != 3 || got[2].GetKeyId() != keys.GetKeys()[1].GetKeyId() {
		t.Fatalf("after Rotate: %v", got)
	}
}

// BenchmarkKubeSignerSign is the ExternalJWTSigner Sign over the Unix
// socket, as kube-apiserver calls it, at 1, 16 and 64 concurrent callers
// (beyond 1: GOMAXPROCS × parallelism goroutines).
func BenchmarkKubeSignerSign(b *testing.B) {
	cfg := testConfig(b)
	dir, err := os.MkdirTemp("", "sk")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	cfg.KubernetesSigner = &config.KubernetesSigner{Socket: filepath.Join(dir, "k.sock"), KeyRing: "default", Issuer: kubeIssuer,
		AllowedUIDs: []uint32{uint32(os.Getuid())}} // #nosec G115 -- a uid
	startServer(b, cfg, Options{})
	conn, err := grpc.NewClient("unix://"+cfg.KubernetesSigner.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	client := externaljwtv1.NewExternalJWTSignerClient(conn)
	c, _ := json.Marshal(kubeClaims(time.Now(), time.Hour))
	req := &externaljwtv1.SignJWTRequest{Claims: base64.RawURLEncoding.EncodeToString(c)}
	for _, conc := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("c=%d", conc), func(b *testing.B) {
			if conc == 1 {
				for b.Loop() {
					if _, err := client.Sign(context.Background(), req); err != nil {
						b.Fatal(err)
					}
				}
				return
			}
			b.SetParallelism(max(1, conc/runtime.GOMAXPROCS(0)))
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := client.Sign(context.Background(), req); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
