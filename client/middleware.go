package signetclient

import (
	"context"
	"crypto/x509"
	"errors"
	"net/http"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

type claimsKey struct{}

// ContextWithClaims returns ctx carrying claims, as the middleware does.
func ContextWithClaims(ctx context.Context, claims *VerifiedToken) context.Context {
	return context.WithValue(ctx, claimsKey{}, claims)
}

// ClaimsFromContext returns the claims the middleware or interceptors
// verified for this request.
func ClaimsFromContext(ctx context.Context) (*VerifiedToken, bool) {
	c, ok := ctx.Value(claimsKey{}).(*VerifiedToken)
	return c, ok && c != nil
}

// errNoToken is a request without a bearer token.
var errNoToken = errors.New("signetclient: no bearer token")

// bearer returns the token of the one Authorization value "Bearer <token>"
// (RFC 6750 section 2.1: the scheme case-insensitive, then one or more
// spaces). More than one value is refused: which of them was checked would
// be a guess.
func bearer(values []string) (string, error) {
	if len(values) != 1 {
		return "", errNoToken
	}
	scheme, token, ok := strings.Cut(values[0], " ")
	token = strings.TrimLeft(token, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" || strings.ContainsAny(token, " \t") {
		return "", errNoToken
	}
	return token, nil
}

// Middleware serves next only the requests whose "Authorization: Bearer"
// token verifies, with its claims in the request's context
// (ClaimsFromContext). A token bound to a client certificate verifies only
// on a TLS connection where the caller presented that certificate
// (VerifyPresented). Others get 401 with a WWW-Authenticate challenge
// (RFC 6750), or 503 when the JWKS cannot be fetched; the reason is not
// told to the caller (it is the Verify error, for the service to log
// through OnError). Behind a proxy that terminates TLS the certificate is
// not the caller's: bound tokens need the service to see its callers' TLS.
func (v *Verifier) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, err := bearer(r.Header.Values("Authorization"))
		if err == nil {
			var cert *x509.Certificate
			if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
				cert = r.TLS.PeerCertificates[0]
			}
			var claims *VerifiedToken
			if claims, err = v.VerifyPresented(r.Context(), token, cert); err == nil {
				next.ServeHTTP(w, r.WithContext(ContextWithClaims(r.Context(), claims)))
				return
			}
		}
		if v.cfg.OnError != nil {
			v.cfg.OnError(r.Context(), err)
		}
		switch {
		case errors.Is(err, ErrJWKSUnavailable):
			http.Error(w, "token verification unavailable", http.StatusServiceUnavailable)
		case errors.Is(err, errNoToken):
			w.Header().Set("WWW-Authenticate", `Bearer`)
			http.Error(w, "bearer token required", http.StatusUnauthorized)
		default:
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			http.Error(w, "invalid token", http.StatusUnauthorized)
		}
	})
}

// verifyMetadata verifies the token of ctx's incoming "authorization"
// metadata and returns ctx with its claims, or the status to fail with.
func (v *Verifier) verifyMetadata(ctx context.Context) (context.Context, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	token, err := bearer(md.Get("authorization"))
	var claims *VerifiedToken
	if err == nil {
		if claims, err = v.VerifyPresented(ctx, token, peerCertificate(ctx)); err == nil {
			return ContextWithClaims(ctx, claims), nil
		}
	}
	if v.cfg.OnError != nil {
		v.cfg.OnError(ctx, err)
	}
	switch {
	case errors.Is(err, ErrJWKSUnavailable):
		return nil, status.Error(codes.Unavailable, "token verification unavailable")
	case errors.Is(err, errNoToken):
		return nil, status.Error(codes.Unauthenticated, "bearer token required")
	default:
		return nil, status.Error(codes.Unauthenticated, "invalid token")
	}
}

// peerCertificate is the leaf certificate the gRPC caller presented on its
// TLS connection, nil without one.
func peerCertificate(ctx context.Context) *x509.Certificate {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	if info, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(info.State.PeerCertificates) > 0 {
		return info.State.PeerCertificates[0]
	}
	return nil
}

// UnaryServerInterceptor fails every unary call whose "authorization"
// metadata is not "Bearer <token>" with a token that verifies
// (Unauthenticated; Unavailable when the JWKS cannot be fetched), and runs
// the others with the claims in their context (ClaimsFromContext).
func (v *Verifier) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, err := v.verifyMetadata(ctx)
		if err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamServerInterceptor is UnaryServerInterceptor for streams: the token
// is checked once, when the stream opens.
func (v *Verifier) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, err := v.verifyMetadata(ss.Context())
		if err != nil {
			return err
		}
		return handler(srv, &claimsStream{ServerStream: ss, ctx: ctx})
	}
}

type claimsStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *claimsStream) Context() context.Context { return s.ctx }
