package signetclient

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"google.golang.org/grpc/credentials"
)

// PerRPCCredentials puts a token from Source in every gRPC call's
// "authorization" metadata as "Bearer <token>":
//
//	grpc.WithPerRPCCredentials(signetclient.PerRPCCredentials{Source: ts})
//
// It requires transport security, as a bearer token must not travel in
// clear: with RequireTransportSecurity true, gRPC refuses to dial with
// insecure credentials and to use a connection whose handshake reports less
// than PrivacyAndIntegrity (local credentials over TCP, say), before a token
// is asked for. AllowInsecure lifts that, for a connection to loopback in
// tests.
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
// A request that already has an Authorization header is sent as it is (the
// caller chose its credential). The token goes only over https, unless
// AllowInsecure (loopback tests, a sidecar on localhost): a plain http
// request fails without being sent. It does not follow a redirect to
// another host: http.Client asks the Transport again for each hop, and a
// hop whose host differs from the previous one's is sent without a token
// (as http.Client itself drops a caller's Authorization there), so that a
// service cannot redirect a token meant for it to a host of its choosing.
type Transport struct {
	Source        *TokenSource
	Base          http.RoundTripper
	AllowInsecure bool
}

// errInsecureURL is a request the Transport will not put a token on.
var errInsecureURL = errors.New("signetclient: not sending a bearer token over plain http (Transport.AllowInsecure is for tests)")

// RoundTrip implements http.RoundTripper. It does not modify req (it sends a
// clone); the token's wait is bounded by req's context, and its error (an
// *Error) is the RoundTrip's.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	if req.Header.Get("Authorization") != "" || crossHostRedirect(req) {
		return base.RoundTrip(req)
	}
	if !t.AllowInsecure && !strings.EqualFold(req.URL.Scheme, "https") {
		closeBody(req)
		return nil, errInsecureURL
	}
	tok, err := t.Source.TokenContext(req.Context())
	if err != nil {
		closeBody(req)
		return nil, err
	}
	r := req.Clone(req.Context())
	r.Header.Set("Authorization", "Bearer "+tok.Token)
	return base.RoundTrip(r)
}

// crossHostRedirect says whether req is a redirect (http.Client sets
// Response on the requests it makes to follow one) to a host other than the
// previous request's: the token is for the host the caller named, not for
// wherever that host sends it.
func crossHostRedirect(req *http.Request) bool {
	if req.Response == nil || req.Response.Request == nil || req.Response.Request.URL == nil {
		return false
	}
	return !strings.EqualFold(req.Response.Request.URL.Host, req.URL.Host)
}

// closeBody closes req's body: a RoundTripper closes it, even on error.
func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}
