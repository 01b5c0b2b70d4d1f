package server

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
	gatewayv1 "github.com/signet-dev/signet/server/gateway/signet/v1"
	"github.com/signet-dev/signet/server/telemetry"
)

// newHTTPHandler serves the public, read-only HTTP side: the JWKS and the
// discovery document through grpc-gateway, plus /healthz and /readyz, and
// the SPIFFE bundle when a trust domain is configured (bundleHandler).
// Nothing that signs or rotates is reachable here.
func newHTTPHandler(ctx context.Context, svc *service, jwks *publisher, m *telemetry.Metrics) (http.Handler, error) {
	mux := runtime.NewServeMux(
		runtime.WithMarshalerOption(runtime.MIMEWildcard, &documentMarshaler{
			jwks:    jwks,
			metrics: m,
			openID:  svc.discovery,
			JSONPb:  runtime.JSONPb{MarshalOptions: protojson.MarshalOptions{UseProtoNames: true}},
		}),
		// No gRPC metadata crosses: the handlers read none from the
		// request, and documentHeaders sets the documents' headers.
		runtime.WithIncomingHeaderMatcher(func(string) (string, bool) { return "", false }),
		runtime.WithOutgoingHeaderMatcher(func(string) (string, bool) { return "", false }),
		runtime.WithForwardResponseOption(documentHeaders(jwks)),
		runtime.WithWriteContentLength(),
	)
	if err := gatewayv1.RegisterKeySetServiceHandlerServer(ctx, mux, svc); err != nil {
		return nil, err
	}
	if err := mux.HandlePath(http.MethodGet, "/healthz", func(w http.ResponseWriter, _ *http.Request, _ map[string]string) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n")) // fails only if the client has gone
	}); err != nil {
		return nil, err
	}
	// Ready means this replica can serve the JWKS, which it can from the
	// moment it started (the key set was read before it listened, or, for
	// a ring whose backend did not answer, taken from the disk snapshot or
	// a peer) whatever its backends do: a backend outage must not take
	// every replica out of the load balancer at once and the JWKS with
	// them. A replica that has some ring's key set from nowhere (no
	// snapshot, no peer, backend down since start-up) is not ready: its
	// JWKS would lack keys that verifiers need. Whether it can sign
	// is the gRPC health of SignerService; the body says it too, and no
	// more: why not (ring names, backend errors) is for the admin
	// listener's /statusz and the log, never the public port.
	if err := mux.HandlePath(http.MethodGet, "/readyz", func(w http.ResponseWriter, _ *http.Request, _ map[string]string) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		ready := jwks.current() != nil && len(svc.ks.Unseeded()) == 0
		if !ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(struct { // fails only if the client has gone
			Ready   bool `json:"ready"`
			Signing bool `json:"signing"`
		}{ready, signing(svc.ks, svc.authz).serving()})
	}); err != nil {
		return nil, err
	}
	return bundleHandler(jwks, publicDocuments(notModified(jwks, m, mux))), nil
}

// Header values every response of a kind shares. An http.Header holds
// them as they are (canonical keys, assigned, not Set): nothing changes a
// value in place, and Add would copy, so sharing is safe and allocates
// nothing per request.
var (
	anyOrigin        = []string{"*"}
	noSniff          = []string{"nosniff"}
	applicationJSON  = []string{"application/json"}
	canonicalETag    = http.CanonicalHeaderKey("ETag")
	canonicalCacheCC = http.CanonicalHeaderKey("Cache-Control")
)

// publicDocuments lets browsers read the key set and discovery document from
// any origin, as identity providers' JWKS endpoints do: they are public.
func publicDocuments(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == JWKSPath || r.URL.Path == OpenIDConfigurationPath {
			h := w.Header()
			h["Access-Control-Allow-Origin"] = anyOrigin
			h["X-Content-Type-Options"] = noSniff
		}
		next.ServeHTTP(w, r)
	})
}

// documentHeaders is the gateway's forward-response option that gives the
// JWKS its ETag and Cache-Control, those of the very document whose message
// it is, and the discovery document the JWKS's Cache-Control.
func documentHeaders(jwks *publisher) func(context.Context, http.ResponseWriter, proto.Message) error {
	return func(_ context.Context, w http.ResponseWriter, m proto.Message) error {
		switch m := m.(type) {
		case *signetv1.GetJWKSResponse:
			d := jwks.of(m)
			if d == nil { // older than the recent documents: its headers are gone
				d = jwks.current()
			}
			h := w.Header()
			h[canonicalETag] = d.etag
			h[canonicalCacheCC] = d.cacheControl
		case *signetv1.GetOpenIDConfigurationResponse:
			w.Header()[canonicalCacheCC] = jwks.current().cacheControl
		}
		return nil
	}
}

// documentMarshaler writes the JWKS and the discovery document from bytes
// rendered once, not re-marshalled per request; everything else (errors)
// goes through JSONPb.
type documentMarshaler struct {
	runtime.JSONPb
	jwks    *publisher
	metrics *telemetry.Metrics
	openID  []byte
}

func (m *documentMarshaler) Marshal(v any) ([]byte, error) {
	switch v := v.(type) {
	case *signetv1.GetJWKSResponse:
		m.metrics.JWKSResponse(http.StatusOK)
		if body := m.jwks.body(v); body != nil {
			return body, nil
		}
		// The key set changed twice while this request was in the
		// gateway: the same keys, in protobuf's JSON form.
		return m.JSONPb.Marshal(v)
	case *signetv1.GetOpenIDConfigurationResponse:
		return m.openID, nil
	}
	return m.JSONPb.Marshal(v)
}

func (m *documentMarshaler) ContentType(any) string { return "application/json" }

// notModified answers a conditional GET of the JWKS whose ETag still
// matches with 304, and a HEAD with the headers of a GET, before the gateway
// renders anything.
func notModified(jwks *publisher, m *telemetry.Metrics, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != JWKSPath || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
			next.ServeHTTP(w, r)
			return
		}
		inm := r.Header.Get("If-None-Match")
		if inm == "" && r.Method == http.MethodGet {
			next.ServeHTTP(w, r)
			return
		}
		doc := jwks.current()
		matched := inm != "" && etagMatches(inm, doc.ETag)
		if !matched && r.Method == http.MethodGet {
			next.ServeHTTP(w, r) // the gateway sets ETag and Cache-Control itself
			return
		}
		h := w.Header()
		h[canonicalETag] = doc.etag
		h[canonicalCacheCC] = doc.cacheControl
		if matched {
			m.JWKSResponse(http.StatusNotModified)
			w.WriteHeader(http.StatusNotModified)
			return
		}
		m.JWKSResponse(http.StatusOK)
		h["Content-Type"] = applicationJSON // HEAD
		h.Set("Content-Length", strconv.Itoa(len(doc.Body)))
	})
}

// etagMatches applies If-None-Match's weak comparison (RFC 9110 13.1.2).
func etagMatches(header, etag string) bool {
	for _, candidate := range strings.Split(header, ",") {
		candidate = strings.TrimSpace(candidate)
		if candidate == "*" || strings.TrimPrefix(candidate, "W/") == etag {
			return true
		}
	}
	return false
}
