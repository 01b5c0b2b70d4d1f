package jose

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestCheckKubernetesClaims(t *testing.T) {
	const iss = "https://kubernetes.default.svc"
	now := time.Unix(1_800_000_000, 0)
	good := `{"aud":["api"],"exp":1800003600,"iat":1800000000,"iss":"https://kubernetes.default.svc","jti":"j1",` +
		`"kubernetes.io":{"namespace":"ns"},"nbf":1800000000,"sub":"system:serviceaccount:ns:app"}`
	enc := base64.RawURLEncoding.EncodeToString
	c, err := CheckKubernetesClaims(enc([]byte(good)), iss, time.Hour, now)
	if err != nil {
		t.Fatalf("kube-apiserver's claims: %v", err)
	}
	if c.Subject != "system:serviceaccount:ns:app" || c.Audience[0] != "api" || c.JTI != "j1" || c.Expiry.Unix() != 1800003600 {
		t.Fatalf("read %+v", c)
	}
	if _, err := CheckKubernetesClaims(enc([]byte(strings.Replace(good, `["api"]`, `"api"`, 1))), iss, time.Hour, now); err != nil {
		t.Fatalf("aud as one string: %v", err)
	}

	swap := func(old, new string) string { return enc([]byte(strings.Replace(good, old, new, 1))) }
	for _, tc := range []struct{ name, claims, want string }{
		{"empty", "", "empty"},
		{"padded base64", enc([]byte(good)) + "==", "base64url"},
		{"standard base64", base64.StdEncoding.EncodeToString([]byte(good + "??>")), "base64url"},
		{"too large", strings.Repeat("A", MaxKubernetesClaims+4), "at most"},
		{"not UTF-8", enc([]byte("{\"sub\":\"\xff\"}")), "UTF-8"},
		{"not an object", enc([]byte(`["a"]`)), "object"},
		{"trailing data", enc([]byte(good + `{}`)), "after"},
		{"duplicate iss", swap(`"jti":"j1"`, `"jti":"j1","iss":"https://evil"`), "twice"},
		{"other issuer", swap(iss, "https://evil.example"), "issuer"},
		{"no sub", swap(`"sub":"system:serviceaccount:ns:app"`, `"x":1`), "no sub"},
		{"sub not a service account", swap("system:serviceaccount:ns:app", "admin"), "service account"},
		{"sub without name", swap("system:serviceaccount:ns:app", "system:serviceaccount:ns:"), "service account"},
		{"no aud", swap(`"aud":["api"],`, ``), "no aud"},
		{"empty aud", swap(`["api"]`, `[]`), "aud"},
		{"aud number", swap(`["api"]`, `7`), "aud"},
		{"no exp", swap(`"exp":1800003600,`, ``), "no exp"},
		{"fractional exp", swap(`1800003600`, `1800003600.5`), "whole seconds"},
		{"exp string", swap(`1800003600`, `"1800003600"`), "not a number"},
		{"exp before iat", swap(`"iat":1800000000`, `"iat":1800003601`), "not after iat"},
		{"longer than token_max_ttl", swap(`"exp":1800003600`, `"exp":1800003601`), "token_max_ttl"},
		{"iat in the future", swap(`"exp":1800003600,"iat":1800000000`, `"exp":1800090000,"iat":1800086400`), "future"},
		{"expired", swap(`"exp":1800003600,"iat":1800000000`, `"exp":1799999999,"iat":1799996400`), "passed"},
		{"nbf after exp", swap(`"nbf":1800000000`, `"nbf":1800003601`), "nbf"},
		{"huge exp", swap(`1800003600`, `99999999999999999999`), "whole seconds"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := CheckKubernetesClaims(tc.claims, iss, time.Hour, now)
			var in *InvalidError
			if !errors.As(err, &in) || in.Field != "claims" || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an InvalidError on claims containing %q", err, tc.want)
			}
		})
	}
}

// A token may not outlive token_max_ttl from now: an iat a little in the
// future (clock skew) is accepted, exp then stays within the skew.
func TestCheckKubernetesClaimsSkew(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	claims := `{"aud":"a","exp":1800003630,"iat":1800000030,"iss":"https://k","sub":"system:serviceaccount:a:b"}`
	if _, err := CheckKubernetesClaims(base64.RawURLEncoding.EncodeToString([]byte(claims)), "https://k", time.Hour, now); err != nil {
		t.Fatalf("30s of skew: %v", err)
	}
}

func FuzzCheckKubernetesClaims(f *testing.F) {
	f.Add(`{"aud":"a","exp":1800003600,"iat":1800000000,"iss":"https://k","sub":"system:serviceaccount:a:b"}`)
	now := time.Unix(1_800_000_000, 0)
	f.Fuzz(func(t *testing.T, s string) {
		c, err := CheckKubernetesClaims(base64.RawURLEncoding.EncodeToString([]byte(s)), "https://k", time.Hour, now)
		if err == nil && (c.Expiry.After(now.Add(time.Hour+KubernetesClockSkew)) || !strings.HasPrefix(c.Subject, KubernetesSubjectPrefix)) {
			t.Fatalf("accepted %q: %+v", s, c)
		}
	})
}
