package vaultpki

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/signet-dev/signet/backends"
	"github.com/signet-dev/signet/server/x5c"
)

// What Vault PKI answers decides whether a failure is worth retrying: an
// outage or throttling is Unavailable, a refusal of the token
// PermissionDenied, a request it will never accept FailedPrecondition.
func TestVaultPKIClassifiesFailures(t *testing.T) {
	for status, want := range map[int]backends.Kind{
		http.StatusTooManyRequests: backends.KindUnavailable, http.StatusServiceUnavailable: backends.KindUnavailable,
		http.StatusForbidden: backends.KindPermissionDenied, http.StatusBadRequest: backends.KindFailedPrecondition,
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			_, _ = w.Write([]byte(`{"errors":["test"]}`))
		}))
		p, err := New(srv.URL, "pki", "signet", "token", true)
		if err != nil {
			t.Fatal(err)
		}
		_, err = p.Issue(context.Background(), []byte("csr"), x5c.Profile{Validity: time.Hour, RenewBefore: time.Minute})
		srv.Close()
		if got := backends.KindOf(err); got != want {
			t.Errorf("HTTP %d: kind %v (%v), want %v", status, got, err, want)
		}
	}
}

// The token never travels in clear unless the configuration says so.
func TestVaultPKIRefusesHTTPUnlessAllowed(t *testing.T) {
	if _, err := New("http://127.0.0.1:8200", "pki", "signet", "token", false); err == nil || !strings.Contains(err.Error(), "https") {
		t.Errorf("an http address without allow_http: %v, want a refusal", err)
	}
	if _, err := New("https://vault.internal:8200", "pki", "signet", "token", false); err != nil {
		t.Errorf("an https address: %v", err)
	}
}
