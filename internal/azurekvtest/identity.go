package azurekvtest

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/signet-dev/signet/internal/testtls"
)

// The made-up Microsoft Entra ID application that Env configures and the
// Identity server issues tokens to.
const (
	TenantID     = "5e1e7000-0000-4000-8000-00000000516e"
	ClientID     = "c11e0700-0000-4000-8000-00000000516e"
	ClientSecret = "signet-test-client-secret" // #nosec G101 -- a made-up secret only this test server accepts
)

// Identity is a Microsoft Entra ID look-alike for tests: the OpenID
// configuration and the OAuth 2.0 token endpoint (client credentials grant)
// that MSAL, under azidentity's EnvironmentCredential, calls when
// AZURE_AUTHORITY_HOST names it. Key Vault test servers accept the tokens
// it issues.
type Identity struct {
	URL string
	srv *httptest.Server

	mu     sync.Mutex
	tokens map[string]token
	issued int
}

type token struct {
	scope   string
	expires time.Time
}

// StartIdentity starts the identity server on a loopback port.
func StartIdentity() *Identity {
	id := &Identity{tokens: map[string]token{}}
	id.srv = httptest.NewUnstartedServer(http.HandlerFunc(id.serve))
	id.srv.TLS = testtls.ServerConfig()
	id.srv.StartTLS()
	id.URL = id.srv.URL
	return id
}

// Close stops the server.
func (id *Identity) Close() {
	id.srv.CloseClientConnections()
	id.srv.Close()
}

// Issued reports how many tokens were issued.
func (id *Identity) Issued() int {
	id.mu.Lock()
	defer id.mu.Unlock()
	return id.issued
}

// Env returns the environment that makes azidentity's
// DefaultAzureCredential authenticate as the test application against this
// server (EnvironmentCredential with a client secret) and the system trust
// store hold the test CA (SSL_CERT_FILE, written into dir).
func (id *Identity) Env(dir string) (map[string]string, error) {
	ca, err := testtls.CAFile(dir)
	if err != nil {
		return nil, err
	}
	return map[string]string{"AZURE_TENANT_ID": TenantID, "AZURE_CLIENT_ID": ClientID, "AZURE_CLIENT_SECRET": ClientSecret,
		"AZURE_AUTHORITY_HOST": id.URL, "SSL_CERT_FILE": ca,
		// Keep the chain away from this machine's managed identity endpoint and az CLI.
		"IDENTITY_ENDPOINT": "", "MSI_ENDPOINT": "", "AZURE_CONFIG_DIR": dir}, nil
}

// SetEnv sets Env's variables in the process environment. Call it from
// TestMain, before anything loads the system roots (Go reads SSL_CERT_FILE
// once).
func (id *Identity) SetEnv(dir string) {
	env, err := id.Env(dir)
	if err != nil {
		panic(err)
	}
	for k, v := range env {
		if err := os.Setenv(k, v); err != nil {
			panic(err)
		}
	}
}

func oauthError(w http.ResponseWriter, status int, code, desc string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
}

func (id *Identity) serve(w http.ResponseWriter, r *http.Request) {
	base := id.URL + "/" + TenantID
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/"+TenantID+"/v2.0/.well-known/openid-configuration":
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"token_endpoint": base + "/oauth2/v2.0/token", "authorization_endpoint": base + "/oauth2/v2.0/authorize",
			"issuer": base + "/v2.0", "token_endpoint_auth_methods_supported": []string{"client_secret_post", "private_key_jwt"},
		})
	case r.Method == http.MethodPost && r.URL.Path == "/"+TenantID+"/oauth2/v2.0/token":
		if err := r.ParseForm(); err != nil {
			oauthError(w, http.StatusBadRequest, "invalid_request", "AADSTS900144: malformed request body")
			return
		}
		f := r.PostForm
		switch {
		case f.Get("grant_type") != "client_credentials":
			oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "AADSTS70003: this test server only grants client_credentials")
		case f.Get("client_id") != ClientID ||
			subtle.ConstantTimeCompare([]byte(f.Get("client_secret")), []byte(ClientSecret)) != 1:
			oauthError(w, http.StatusUnauthorized, "invalid_client", "AADSTS7000215: Invalid client secret provided.")
		case resourceScope(f.Get("scope")) == "":
			oauthError(w, http.StatusBadRequest, "invalid_scope", "AADSTS1002012: The provided value for scope is not valid.")
		default:
			b := make([]byte, 24)
			_, _ = rand.Read(b)
			tok := hex.EncodeToString(b)
			scope := resourceScope(f.Get("scope"))
			id.mu.Lock()
			id.tokens[tok] = token{scope: scope, expires: time.Now().Add(time.Hour)}
			id.issued++
			id.mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]any{"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": tok})
		}
	default:
		oauthError(w, http.StatusNotFound, "not_found", "no such endpoint on the test identity server: "+r.URL.Path)
	}
}

// resourceScope is the one resource scope (".../.default") among the
// scopes MSAL asks for (it adds openid, profile and offline_access).
func resourceScope(scopes string) string {
	out := ""
	for _, sc := range strings.Fields(scopes) {
		if strings.HasSuffix(sc, "/.default") {
			if out != "" {
				return ""
			}
			out = sc
		}
	}
	return out
}

// valid reports whether tok was issued for scope and has not expired.
func (id *Identity) valid(tok, scope string) bool {
	id.mu.Lock()
	defer id.mu.Unlock()
	t, ok := id.tokens[tok]
	return ok && t.scope == scope && time.Now().Before(t.expires)
}
