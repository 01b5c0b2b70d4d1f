package signetclient_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
)

// This module cannot import Signet's server (that is the point of it being
// a module of its own): its tests talk real gRPC and HTTP over loopback to
// testSignet, an in-process implementation of the generated SignerService
// that signs ES256 tokens as Signet does and serves their JWKS. The tests
// against the real binary are cmd/signet's client_e2e_test.go.
type testSignet struct {
	signetv1.UnimplementedSignerServiceServer
	key      *ecdsa.PrivateKey
	kid      string
	grpcAddr string
	jwksURL  string
	signs    atomic.Int32

	mu   sync.Mutex
	fail error // what Sign returns instead of a token, when set
}

const exampleIssuer = "https://signet.example"

// The test Signet the examples talk to.
var exampleSignet, exampleJWKS string

func TestMain(m *testing.M) {
	s, stop, err := startTestSignet()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	exampleSignet, exampleJWKS = s.grpcAddr, s.jwksURL
	code := m.Run()
	stop()
	os.Exit(code)
}

func newTestSignet(t *testing.T) *testSignet {
	t.Helper()
	s, stop, err := startTestSignet()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return s
}

func startTestSignet() (*testSignet, func(), error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	s := &testSignet{key: key, kid: fmt.Sprintf("k-%x", sha256.Sum256([]byte(fmt.Sprint(time.Now().UnixNano()))))[:12]}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	gs := grpc.NewServer()
	signetv1.RegisterSignerServiceServer(gs, s)
	go func() { _ = gs.Serve(lis) }()
	pub, err := key.PublicKey.Bytes() // 0x04 || X || Y
	if err != nil {
		return nil, nil, err
	}
	jwks, _ := json.Marshal(map[string]any{"keys": []map[string]string{{"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig",
		"kid": s.kid, "x": b64(pub[1:33]), "y": b64(pub[33:])}}})
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "max-age=60")
		_, _ = w.Write(jwks)
	}))
	s.grpcAddr, s.jwksURL = lis.Addr().String(), hs.URL+"/.well-known/jwks.json"
	return s, func() { gs.Stop(); hs.Close() }, nil
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// setFail makes Sign fail with err (nil: sign again).
func (s *testSignet) setFail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = err
}

// unavailable is the status Signet answers when a ring's backend is down.
func unavailable() error {
	st, _ := status.New(codes.Unavailable, "backend unavailable").WithDetails(
		&errdetails.ErrorInfo{Domain: "signet.v1", Reason: signetv1.ErrorReason_BACKEND_UNAVAILABLE.String()})
	return st.Err()
}

// Sign signs the request's claims as Signet does (iss, sub, aud, iat, nbf,
// exp, jti, then claims_json), with typ as asked.
func (s *testSignet) Sign(_ context.Context, req *signetv1.SignRequest) (*signetv1.SignResponse, error) {
	s.signs.Add(1)
	s.mu.Lock()
	fail := s.fail
	s.mu.Unlock()
	if fail != nil {
		return nil, fail
	}
	ttl := time.Minute
	if req.GetTtl() != nil {
		ttl = req.GetTtl().AsDuration()
	}
	now := time.Now()
	claims := map[string]any{}
	if req.GetClaimsJson() != "" {
		dec := json.NewDecoder(strings.NewReader(req.GetClaimsJson()))
		dec.UseNumber() // every digit kept, as Signet does
		if err := dec.Decode(&claims); err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		if _, ok := claims["exp"]; ok {
			st, _ := status.New(codes.InvalidArgument, "exp is reserved").WithDetails(
				&errdetails.ErrorInfo{Domain: "signet.v1", Reason: signetv1.ErrorReason_RESERVED_CLAIM.String()},
				&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "claims_json.exp"}}})
			return nil, st.Err()
		}
	}
	jti := fmt.Sprintf("jti-%d", s.signs.Load())
	claims["iss"], claims["aud"], claims["jti"] = exampleIssuer, req.GetAudience(), jti
	claims["iat"], claims["nbf"], claims["exp"] = now.Unix(), now.Unix(), now.Add(ttl).Unix()
	if req.GetSubject() != "" {
		claims["sub"] = req.GetSubject()
	}
	typ := req.GetTyp()
	if typ == "" {
		typ = "JWT"
	}
	tok, err := s.signJWT(map[string]any{"alg": "ES256", "kid": s.kid, "typ": typ}, claims)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &signetv1.SignResponse{Token: tok, Kid: s.kid, Jti: jti, ExpiresAt: timestamppb.New(now.Add(ttl))}, nil
}

// signJWT is a compact ES256 JWS of header and claims by s's key.
func (s *testSignet) signJWT(header, claims map[string]any) (string, error) {
	h, _ := json.Marshal(header)
	c, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	input := b64(h) + "." + b64(c)
	digest := sha256.Sum256([]byte(input))
	r, ss, err := ecdsa.Sign(rand.Reader, s.key, digest[:])
	if err != nil {
		return "", err
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	ss.FillBytes(sig[32:])
	return input + "." + b64(sig), nil
}
