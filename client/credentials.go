package signetclient

import (
	"context"
	"net/http"

	"google.golang.org/grpc/credentials"
)

// PerRPCCredentials puts a token from Source in every gRPC call's
// "authorization" metadata as "Bearer <token>":
//
//	grpc.WithPerRPCCredentials(signetclient.PerRPCCredentials{Source: ts})
//
// It requires transport security, as a bearer token must not travel in
// clear; AllowInsecure lifts that for a connection to loopback in tests.
type PerRPCCredentials struct {
	Source        *TokenSource
	AllowInsecure bool
}

var _ credentials.PerRPCCredentials = PerRPCCredentials{}

// GetRequestMetadata returns the authorization metadata, waiting for a Sign
// no longer than the call's context allows; an error fails the call with
// the *Error's code (Unavailable when Signet is down, say).
func (c PerRPCCredentials) GetRequestMetadata(ctx context.Context, _ ...string) (map[string]string, error) {
	tok, err := c.Source.TokenContext(ctx)
	if err != nil {
		return nil, err
	}
	return map[string]string{"authorization": "Bearer " + tok.Token}, nil
}

// RequireTransportSecurity is true unless AllowInsecure.
func (c PerRPCCredentials) RequireTransportSecurity() bool { return !c.AllowInsecure }

// Transport is an http.RoundTripper that sends each request through Base
// (nil: http.DefaultTransport) with "Authorization: Bearer <token>", the
// token from Source:
//
//	client := &http.Client{Transport: &signetclient.Transport{Source: ts}}
//
// A request that already has an Authorization header is sent as it is.
type Transport struct {
	Source *TokenSource
	Base   http.RoundTripper
}

// RoundTrip implements http.RoundTripper. It does not modify req (it sends a
// clone); the token's wait is bounded by req's context, and its error (an
// *Error) is the RoundTrip's.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	if req.Header.Get("Authorization") != "" {
		return base.RoundTrip(req)
	}
	tok, err := t.Source.TokenContext(req.Context())
	if err != nil {
		if req.Body != nil {
			_ = req.Body.Close() // a RoundTripper closes the body, even on error
		}
		return nil, err
	}
	r := req.Clone(req.Context())
	r.Header.Set("Authorization", "Bearer "+tok.Token)
	return base.RoundTrip(r)
}
