package server

import (
	"context"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	gojose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/signet-dev/signet/backends"
	signetclient "github.com/signet-dev/signet/client"
	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
	"github.com/signet-dev/signet/internal/clocktest"
	"github.com/signet-dev/signet/server/config"
	"github.com/signet-dev/signet/server/jose"
)

// verify checks a token with go-jose against a JWKS document, the way an
// independent verifier would, and returns its claims.
func verify(t *testing.T, jwksBody []byte, token string) (map[string]any, error) {
	t.Helper()
	var set gojose.JSONWebKeySet
	if err := json.Unmarshal(jwksBody, &set); err != nil {
		t.Fatalf("JWKS is not a JWK set: %v\n%s", err, jwksBody)
	}
	tok, err := jwt.ParseSigned(token, []gojose.SignatureAlgorithm{gojose.ES256, gojose.ES384, gojose.ES512,
		gojose.RS256, gojose.RS384, gojose.RS512, gojose.PS256, gojose.PS384, gojose.PS512, gojose.EdDSA})
	if err != nil {
		return nil, err
	}
	keys := set.Key(tok.Headers[0].KeyID)
	if len(keys) == 0 {
		return nil, errKidNotPublished
	}
	var claims map[string]any
	if err := tok.Claims(keys[0].Key, &claims); err != nil {
		return nil, err
	}
	return claims, nil
}

var errKidNotPublished = status.Error(codes.NotFound, "kid not in JWKS")

func kids(t *testing.T, jwksBody []byte) []string {
	var doc struct {
		Keys []struct {
			Kid string `json:"kid"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(jwksBody, &doc); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, k := range doc.Keys {
		out = append(out, k.Kid)
	}
	return out
}

func sign(t *testing.T, ts *testServer, ring string) *signetv1.SignResponse {
	t.Helper()
	resp, err := ts.client.Sign(ctxT(t), &signetv1.SignRequest{KeyRing: ring, Subject: "svc-a", Audience: []string{"svc-b"}})
	if err != nil {
		t.Fatalf("Sign(%s): %v", ring, err)
	}
	return resp
}

func TestSignEveryAlgorithmVerifiesThroughJWKS(t *testing.T) {
	t.Parallel()
	ts := startServer(t, testConfig(t, backends.AllAlgorithms...), Options{})
	_, body := ts.get(t, JWKSPath)
	for _, r := range ts.KeySet().Rings() {
		t.Run(string(r.Algorithm()), func(t *testing.T) {
			resp := sign(t, ts, r.Name)
			claims, err := verify(t, body, resp.GetToken())
			if err != nil {
				t.Fatalf("token does not verify against the live JWKS: %v", err)
			}
			if claims["iss"] != "http://127.0.0.1:8080" || claims["sub"] != "svc-a" || claims["aud"] != "svc-b" || claims["jti"] != resp.GetJti() {
				t.Errorf("claims %v", claims)
			}
			if exp := int64(claims["exp"].(float64)); exp != resp.GetExpiresAt().GetSeconds() || exp-int64(claims["iat"].(float64)) != int64(config.DefaultRing.TokenDefaultTTL.D().Seconds()) {
				t.Errorf("exp %d, iat %v, expires_at %v", exp, claims["iat"], resp.GetExpiresAt())
			}
			hdr := strings.Split(resp.GetToken(), ".")[0]
			if want := jose.Header(string(r.Algorithm()), resp.GetKid(), jose.DefaultTyp); hdr != want {
				t.Errorf("header %s, want %s", hdr, want)
			}
		})
	}
}

func TestJWKSHasOnlyPublicMembers(t *testing.T) {
	t.Parallel()
	ts := startServer(t, testConfig(t, backends.AllAlgorithms...), Options{})
	resp, body := ts.get(t, JWKSPath)
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	var doc map[string][]map[string]any
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc) != 1 || len(doc["keys"]) != len(backends.AllAlgorithms) {
		t.Fatalf("JWKS has members %v and %d keys; want only \"keys\" with %d", doc, len(doc["keys"]), len(backends.AllAlgorithms))
	}
	allowed := map[string][]string{
		"EC":  {"kty", "use", "alg", "kid", "crv", "x", "y"},
		"RSA": {"kty", "use", "alg", "kid", "n", "e"},
		"OKP": {"kty", "use", "alg", "kid", "crv", "x"},
	}
	for _, k := range doc["keys"] {
		kty, _ := k["kty"].(string)
		var got []string
		for m := range k {
			got = append(got, m)
		}
		slices.Sort(got)
		want := slices.Clone(allowed[kty])
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("%v key has members %v, want exactly %v", k["alg"], got, want)
		}
		if k["use"] != "sig" {
			t.Errorf("use = %v", k["use"])
		}
		// go-jose must see a public key whose RFC 7638 thumbprint is the kid.
		raw, _ := json.Marshal(k)
		var jwk gojose.JSONWebKey
		if err := jwk.UnmarshalJSON(raw); err != nil {
			t.Fatalf("go-jose rejects %s: %v", raw, err)
		}
		if !jwk.IsPublic() {
			t.Errorf("%s is not a public key", raw)
		}
		tp, _ := jwk.Thumbprint(crypto.SHA256)
		if want := base64.RawURLEncoding.EncodeToString(tp); want != k["kid"] {
			t.Errorf("kid %v is not the RFC 7638 thumbprint %s", k["kid"], want)
		}
	}
	for _, private := range []string{`"d":`, `"p":`, `"q":`, `"dp":`, `"dq":`, `"qi":`, `"k":`} {
		if strings.Contains(string(body), private) {
			t.Errorf("JWKS contains the private member %s", private)
		}
	}
}

func TestJWKSCachingHeaders(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	ts := startServer(t, cfg, Options{})
	resp, body := ts.get(t, JWKSPath)
	etag := resp.Header.Get("ETag")
	if !strings.HasPrefix(etag, `"`) || !strings.HasSuffix(etag, `"`) || len(etag) < 10 {
		t.Fatalf("ETag %q is not a strong entity tag", etag)
	}
	if cc, want := resp.Header.Get("Cache-Control"), "public, max-age=300, stale-if-error=86400"; cc != want {
		t.Errorf("Cache-Control %q, want %q", cc, want)
	}
	if n := len(resp.Header.Values("ETag")); n != 1 {
		t.Errorf("%d ETag headers", n)
	}
	for _, inm := range []string{etag, "W/" + etag, `"other", ` + etag, "*"} {
		r, b := ts.get(t, JWKSPath, "If-None-Match", inm)
		if r.StatusCode != http.StatusNotModified || len(b) != 0 || r.Header.Get("ETag") != etag || r.Header.Get("Cache-Control") == "" {
			t.Errorf("If-None-Match %s: status %d, %d body bytes, ETag %q", inm, r.StatusCode, len(b), r.Header.Get("ETag"))
		}
	}
	r, b := ts.get(t, JWKSPath, "If-None-Match", `"stale"`)
	if r.StatusCode != http.StatusOK || string(b) != string(body) {
		t.Errorf("stale If-None-Match: status %d", r.StatusCode)
	}
	req, _ := http.NewRequest(http.MethodHead, ts.httpURL+JWKSPath, nil)
	hr, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	hr.Body.Close()
	if hr.StatusCode != http.StatusOK || hr.Header.Get("ETag") != etag || hr.ContentLength != int64(len(body)) {
		t.Errorf("HEAD: status %d, ETag %q, length %d", hr.StatusCode, hr.Header.Get("ETag"), hr.ContentLength)
	}
	// The same document over gRPC carries the same ETag as header metadata.
	var md metadata.MD
	if _, err := ts.keys.GetJWKS(ctxT(t), &signetv1.GetJWKSRequest{}, grpc.Header(&md)); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(md.Get("etag"), ","); got != etag {
		t.Errorf("gRPC etag %q, HTTP %q", got, etag)
	}
}

func TestRotateChangesJWKSInTheSameRequest(t *testing.T) {
	t.Parallel()
	ts := startServer(t, testConfig(t), Options{})
	resp1, body1 := ts.get(t, JWKSPath)
	old := sign(t, ts, "default")
	rot, err := ts.client.Rotate(ctxT(t), &signetv1.RotateRequest{KeyRing: "default"})
	if err != nil {
		t.Fatal(err)
	}
	if rot.GetVersion().GetState() != signetv1.KeyState_KEY_STATE_PENDING {
		t.Errorf("a rotated version is %v, want pending", rot.GetVersion().GetState())
	}
	resp2, body2 := ts.get(t, JWKSPath)
	if got := kids(t, body2); !slices.Contains(got, rot.GetVersion().GetKid()) || !slices.Contains(got, old.GetKid()) {
		t.Fatalf("JWKS right after Rotate has kids %v; want old %s and new %s", got, old.GetKid(), rot.GetVersion().GetKid())
	}
	if resp1.Header.Get("ETag") == resp2.Header.Get("ETag") {
		t.Error("ETag did not change after Rotate")
	}
	if r, _ := ts.get(t, JWKSPath, "If-None-Match", resp1.Header.Get("ETag")); r.StatusCode != http.StatusOK {
		t.Errorf("the pre-rotation ETag still gets %d", r.StatusCode)
	}
	// The new version is pending: tokens still come from the old one.
	if now := sign(t, ts, "default"); now.GetKid() != old.GetKid() {
		t.Errorf("signed with %s right after Rotate; the pending version must not sign", now.GetKid())
	}
	if _, err := verify(t, body1, old.GetToken()); err != nil {
		t.Errorf("old token against old JWKS: %v", err)
	}
}

func TestLifecycleFollowsTheClock(t *testing.T) {
	t.Parallel()
	clock := clocktest.New()
	cfg := testConfig(t)
	ts := startServer(t, cfg, Options{Now: clock.Now})
	pol := cfg.KeyRings[0].Schedule()
	v1 := sign(t, ts, "default")
	rot := rotate(t, ts, false)
	v2 := rot.GetVersion().GetKid()

	states := func() map[string]signetv1.KeyState {
		out := map[string]signetv1.KeyState{}
		for _, v := range listKeys(t, ts) {
			out[v.GetKid()] = v.GetState()
		}
		return out
	}
	ks := ts.KeySet()
	step := func(name string, wantSigner string, want map[string]signetv1.KeyState, published []string) {
		t.Helper()
		// Sign and ListKeys follow the clock at once; the JWKS is re-rendered
		// when the refresh loop runs, which the test does here itself.
		ks.Tick(ctxT(t), ks.Ring("default"))
		if got := sign(t, ts, "default").GetKid(); got != wantSigner {
			t.Errorf("%s: signed by %s, want %s", name, got, wantSigner)
		}
		got := states()
		for kid, st := range want {
			if got[kid] != st {
				t.Errorf("%s: %s is %v, want %v", name, kid, got[kid], st)
			}
		}
		_, body := ts.get(t, JWKSPath)
		if k := kids(t, body); !slices.Equal(k, published) {
			t.Errorf("%s: JWKS kids %v, want %v", name, k, published)
		}
	}
	step("just rotated", v1.GetKid(), map[string]signetv1.KeyState{v1.GetKid(): signetv1.KeyState_KEY_STATE_ACTIVE, v2: signetv1.KeyState_KEY_STATE_PENDING}, []string{v1.GetKid(), v2})
	activates := rot.GetVersion().GetActivatesAt().AsTime()
	clock.Advance(activates.Sub(clock.Now()) - time.Second)
	step("a second before activation", v1.GetKid(), map[string]signetv1.KeyState{v2: signetv1.KeyState_KEY_STATE_PENDING}, []string{v1.GetKid(), v2})
	clock.Advance(time.Second)
	step("at activation", v2, map[string]signetv1.KeyState{v1.GetKid(): signetv1.KeyState_KEY_STATE_RETIRING, v2: signetv1.KeyState_KEY_STATE_ACTIVE}, []string{v1.GetKid(), v2})
	clock.Advance(pol.RetireAfter - time.Second)
	step("a second before retirement", v2, map[string]signetv1.KeyState{v1.GetKid(): signetv1.KeyState_KEY_STATE_RETIRING}, []string{v1.GetKid(), v2})
	clock.Advance(time.Second)
	step("at retirement", v2, map[string]signetv1.KeyState{v1.GetKid(): signetv1.KeyState_KEY_STATE_RETIRED, v2: signetv1.KeyState_KEY_STATE_ACTIVE}, []string{v2})
}

func TestRevokePrevious(t *testing.T) {
	t.Parallel()
	clock := clocktest.New()
	cfg := testConfig(t)
	ts := startServer(t, cfg, Options{Now: clock.Now})
	old := sign(t, ts, "default")
	rotate(t, ts, false)
	rot := rotate(t, ts, true)
	if rot.GetVersion().GetState() != signetv1.KeyState_KEY_STATE_PENDING || len(rot.GetRevoked()) != 2 {
		t.Fatalf("emergency rotation: new version %v, %d revoked; want pending (until every replica publishes it) and 2",
			rot.GetVersion().GetState(), len(rot.GetRevoked()))
	}
	for _, r := range rot.GetRevoked() {
		if r.GetState() != signetv1.KeyState_KEY_STATE_REVOKED {
			t.Errorf("revoked version %s is %v", r.GetKid(), r.GetState())
		}
	}
	_, body := ts.get(t, JWKSPath)
	if k := kids(t, body); !slices.Equal(k, []string{rot.GetVersion().GetKid()}) {
		t.Errorf("JWKS after emergency rotation: %v, want only %s", k, rot.GetVersion().GetKid())
	}
	if _, err := verify(t, body, old.GetToken()); err == nil {
		t.Error("a token of a revoked version still verifies")
	}
	// No version signs until every replica can have published the new one.
	_, err := ts.client.Sign(ctxT(t), &signetv1.SignRequest{KeyRing: "default", Subject: "svc-a", Audience: []string{"svc-b"}})
	if status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), "emergency rotation") ||
		signetclient.ReasonOf(err) != signetv1.ErrorReason_NO_SIGNING_KEY {
		t.Errorf("Sign right after the emergency rotation: %v (reason %v), want Unavailable NO_SIGNING_KEY naming the emergency rotation",
			err, signetclient.ReasonOf(err))
	}
	clock.Advance(2 * time.Duration(cfg.KeyRings[0].RefreshInterval))
	now := sign(t, ts, "default")
	if now.GetKid() != rot.GetVersion().GetKid() {
		t.Errorf("signed by %s after emergency rotation, want %s", now.GetKid(), rot.GetVersion().GetKid())
	}
	if _, err := verify(t, body, now.GetToken()); err != nil {
		t.Error(err)
	}
}

func TestScheduledRotationCreatesOneVersionAcrossReplicas(t *testing.T) {
	t.Parallel()
	clock := clocktest.New()
	cfg := testConfig(t)
	cfg.KeyRings[0].RotationPeriod = config.Duration(24 * time.Hour)
	var replicas []*Server
	for range 3 {
		srv, err := New(ctxT(t), cfg, Options{Now: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Close() })
		replicas = append(replicas, srv)
	}
	count := func() int {
		ks := replicas[0].KeySet()
		if err := ks.Refresh(ctxT(t), ks.Ring("default")); err != nil {
			t.Fatal(err)
		}
		return len(ks.Versions(ks.Ring("default")))
	}
	if n := count(); n != 1 {
		t.Fatalf("three replicas starting on an empty store made %d versions, want 1", n)
	}
	for period := 1; period <= 3; period++ {
		clock.Advance(24*time.Hour + time.Second)
		done := make(chan struct{})
		for _, r := range replicas {
			go func() {
				ks := r.KeySet()
				ks.Tick(context.Background(), ks.Ring("default"))
				done <- struct{}{}
			}()
		}
		for range replicas {
			<-done
		}
		if n := count(); n != 1+period {
			t.Fatalf("after %d rotation periods with 3 replicas: %d versions, want %d", period, n, 1+period)
		}
	}
}

func rotate(t *testing.T, ts *testServer, revoke bool) *signetv1.RotateResponse {
	t.Helper()
	resp, err := ts.client.Rotate(ctxT(t), &signetv1.RotateRequest{KeyRing: "default", RevokePrevious: revoke})
	if err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	return resp
}

func listKeys(t *testing.T, ts *testServer) []*signetv1.KeyVersion {
	t.Helper()
	resp, err := ts.client.ListKeys(ctxT(t), &signetv1.ListKeysRequest{KeyRing: "default"})
	if err != nil {
		t.Fatalf("ListKeys: %v", err)
	}
	return resp.GetVersions()
}

// The documents' headers come through the gateway exactly once each, the
// same as over gRPC, where they are header metadata.
func TestDocumentHeadersOverHTTPAndGRPC(t *testing.T) {
	t.Parallel()
	ts := startServer(t, testConfig(t), Options{})
	const cc = "public, max-age=300, stale-if-error=86400"
	for _, path := range []string{JWKSPath, OpenIDConfigurationPath} {
		resp, body := ts.get(t, path)
		want := map[string]string{"Access-Control-Allow-Origin": "*", "Cache-Control": cc, "Content-Type": "application/json",
			"Content-Length": strconv.Itoa(len(body)), "X-Content-Type-Options": "nosniff"}
		if path == JWKSPath {
			want["Etag"] = resp.Header.Get("ETag")
		}
		resp.Header.Del("Date")
		if len(resp.Header) != len(want) {
			t.Errorf("%s: headers %v, want %v", path, resp.Header, want)
		}
		for k, v := range want {
			if got := resp.Header.Values(k); len(got) != 1 || got[0] != v || v == "" {
				t.Errorf("%s: %s = %q, want [%q]", path, k, got, v)
			}
		}
	}
	var md metadata.MD
	if _, err := ts.keys.GetOpenIDConfiguration(ctxT(t), &signetv1.GetOpenIDConfigurationRequest{}, grpc.Header(&md)); err != nil {
		t.Fatal(err)
	}
	if got := md.Get("cache-control"); len(got) != 1 || got[0] != cc {
		t.Errorf("gRPC cache-control %q, want [%q]", got, cc)
	}
}
