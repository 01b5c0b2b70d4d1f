package gcpkmstest

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/signet-dev/signet/internal/testtls"
)

// ServiceAccount is the email of the made-up service account whose key
// file Env writes; the server accepts the self-signed JWTs Google's auth
// library makes from it (as Google accepts them for service-account keys).
const ServiceAccount = "signet@signet-test.iam.gserviceaccount.com"

var (
	saOnce sync.Once
	saKey  *rsa.PrivateKey
)

func serviceAccountKey() *rsa.PrivateKey {
	saOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		saKey = k
	})
	return saKey
}

// Env writes a service-account key file and this process's test CA into
// dir and returns the environment that makes Application Default
// Credentials use the one and the system trust store hold the other:
// GOOGLE_APPLICATION_CREDENTIALS and SSL_CERT_FILE. The key is made up;
// only these test servers accept it.
func Env(dir string) (map[string]string, error) {
	der, err := x509.MarshalPKCS8PrivateKey(serviceAccountKey())
	if err != nil {
		return nil, err
	}
	file, err := json.Marshal(map[string]string{ // #nosec G101 -- a made-up service account only these test servers accept
		"type": "service_account", "project_id": "signet-test", "private_key_id": "signet-test-key",
		"private_key":  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email": ServiceAccount, "client_id": "1",
		// Never called: the KMS client signs its own JWTs with the key.
		"token_uri": "https://127.0.0.1:1/token",
	})
	if err != nil {
		return nil, err
	}
	creds := filepath.Join(dir, "gcp-service-account.json")
	if err := os.WriteFile(creds, file, 0o600); err != nil {
		return nil, err
	}
	ca, err := testtls.CAFile(dir)
	if err != nil {
		return nil, err
	}
	return map[string]string{"GOOGLE_APPLICATION_CREDENTIALS": creds, "SSL_CERT_FILE": ca,
		// Keep the auth library off this machine's metadata server and gcloud config.
		"GCE_METADATA_HOST": "127.0.0.1:1", "CLOUDSDK_CONFIG": filepath.Join(dir, "no-gcloud")}, nil
}

// SetEnv writes Env's files into dir and sets its variables in the process
// environment. Call it from TestMain, before anything loads the system
// roots (Go reads SSL_CERT_FILE once).
func SetEnv(dir string) {
	env, err := Env(dir)
	if err != nil {
		panic(err)
	}
	for k, v := range env {
		if err := os.Setenv(k, v); err != nil {
			panic(err)
		}
	}
}

// authenticate checks the bearer token of a call: a JWT signed with the
// service account's key for it, unexpired, as Google checks self-signed
// JWTs. Unauthenticated otherwise, with Google's message.
func (s *Server) authenticate(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	unauth := status.Error(codes.Unauthenticated, "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.")
	var raw string
	for _, v := range md.Get("authorization") {
		if t, ok := strings.CutPrefix(v, "Bearer "); ok {
			raw = t
		}
	}
	if raw == "" {
		return nil, unauth
	}
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		return nil, unauth
	}
	var claims jwt.Claims
	if err := tok.Claims(&serviceAccountKey().PublicKey, &claims); err != nil {
		return nil, unauth
	}
	if claims.Issuer != ServiceAccount || claims.Validate(jwt.Expected{Time: time.Now()}) != nil {
		return nil, unauth
	}
	return handler(ctx, req)
}
