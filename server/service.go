package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/signet-dev/signet/backends"
	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
)

// Service implements the gRPC services.
type Service struct {
	signetv1.UnimplementedSignerServiceServer
	signetv1.UnimplementedKeySetServiceServer

	ks     *KeySet
	issuer string
	log    *slog.Logger
	openID *signetv1.GetOpenIDConfigurationResponse
	access *access
}

// JWKSPath and OpenIDConfigurationPath are where the HTTP side serves the
// key set and the discovery document.
const (
	JWKSPath                = "/.well-known/jwks.json"
	OpenIDConfigurationPath = "/.well-known/openid-configuration"
)

// NewService serves ks, issuing tokens as issuer.
func NewService(ks *KeySet, issuer string, log *slog.Logger) *Service {
	return &Service{ks: ks, issuer: issuer, log: log, access: &access{}, openID: &signetv1.GetOpenIDConfigurationResponse{
		Issuer:                           issuer,
		JwksUri:                          strings.TrimSuffix(issuer, "/") + JWKSPath,
		IdTokenSigningAlgValuesSupported: ks.Algorithms(),
		ResponseTypesSupported:           []string{"id_token"},
		SubjectTypesSupported:            []string{"public"},
	}}
}

func (s *Service) ring(name string) (*Ring, error) {
	switch {
	case name == "":
		return nil, status.Error(codes.InvalidArgument, "key_ring is required")
	case !utf8.ValidString(name):
		return nil, status.Error(codes.InvalidArgument, "key_ring is not valid UTF-8")
	}
	r := s.ks.Ring(name)
	if r == nil {
		names := make([]string, 0, len(s.ks.Rings()))
		for _, r := range s.ks.Rings() {
			names = append(names, r.Name)
		}
		return nil, status.Errorf(codes.NotFound, "key ring %q is not configured (configured: %s)", truncate(name, 64), strings.Join(names, ", "))
	}
	return r, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// Sign issues a JWT.
func (s *Service) Sign(ctx context.Context, req *signetv1.SignRequest) (*signetv1.SignResponse, error) {
	r, err := s.ring(req.GetKeyRing())
	if err != nil {
		return nil, err
	}
	if err := validateIdentity(req.GetSubject(), req.GetAudience()); err != nil {
		return nil, s.toStatus(ctx, err)
	}
	ttl, err := tokenTTL(r, req)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	custom, err := encodeClaims(req.GetClaims())
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	typ, err := tokenTyp(req.GetTyp())
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	const rpc = "Sign"
	rec := auditRecord{KeyRing: r.Name, Sub: req.GetSubject(), Aud: req.GetAudience(), ClaimsSHA256: claimsDigest(custom)}
	names := make([]string, 0, len(req.GetClaims().GetFields()))
	for k := range req.GetClaims().GetFields() {
		names = append(names, k)
	}
	ttl, err = s.access.authorizeSign(ctx, signRequest{ring: r.Name, subject: req.GetSubject(), audience: req.GetAudience(),
		claims: names, ttl: ttl, ttlDefaulted: req.GetTtl() == nil, typ: typ})
	if err != nil {
		if aerr := s.access.record(ctx, rpc, rec, err); aerr != nil {
			return nil, aerr
		}
		return nil, err
	}
	signed, err := s.ks.Sign(ctx, r, s.issuer, claimsRequest{Subject: req.GetSubject(), Audience: req.GetAudience(), TTL: ttl, Typ: typ}, custom)
	if err != nil {
		err = s.toStatus(ctx, err)
		s.access.record(ctx, rpc, rec, err)
		return nil, err
	}
	rec.Kid, rec.JTI, rec.Exp = signed.Kid, signed.JTI, signed.Expires.Unix()
	if err := s.access.record(ctx, rpc, rec, nil); err != nil {
		return nil, err // fail closed: no token leaves unaudited
	}
	return &signetv1.SignResponse{Token: signed.Token, Kid: signed.Kid, Jti: signed.JTI,
		ExpiresAt: timestamppb.New(signed.Expires)}, nil
}

func tokenTTL(r *Ring, req *signetv1.SignRequest) (time.Duration, error) {
	if req.GetTtl() == nil {
		return r.Policy.TokenDefaultTTL, nil
	}
	if err := req.GetTtl().CheckValid(); err != nil {
		return 0, invalid("ttl: %v", err)
	}
	ttl := req.GetTtl().AsDuration()
	switch {
	case ttl <= 0:
		return 0, invalid("ttl must be positive, got %v", ttl)
	case ttl < minTokenLifetime:
		return 0, invalid("ttl %v is shorter than %v: token times have one-second resolution", ttl, minTokenLifetime)
	case ttl > r.Policy.TokenMaxTTL:
		return 0, invalid("ttl %v exceeds key ring %q token_max_ttl of %v", ttl, r.Name, r.Policy.TokenMaxTTL)
	}
	return ttl, nil
}

// Rotate creates a new version, optionally revoking the older ones.
func (s *Service) Rotate(ctx context.Context, req *signetv1.RotateRequest) (*signetv1.RotateResponse, error) {
	r, err := s.ring(req.GetKeyRing())
	if err != nil {
		return nil, err
	}
	const rpc = "Rotate"
	rec := auditRecord{KeyRing: r.Name}
	if err := s.access.authorizeRing(ctx, "rotate", r.Name); err != nil {
		if aerr := s.access.record(ctx, rpc, rec, err); aerr != nil {
			return nil, aerr
		}
		return nil, err
	}
	// Rotation cannot be undone, so its authorization is on record before
	// anything changes: an unwritable audit log stops it here.
	authorized := rec
	authorized.Outcome, authorized.Reason = "authorized", fmt.Sprintf("revoke_previous=%v", req.GetRevokePrevious())
	if err := s.access.record(ctx, rpc, authorized, nil); err != nil {
		return nil, err
	}
	created, revoked, err := s.ks.Rotate(ctx, r, req.GetRevokePrevious())
	if err != nil {
		err = s.toStatus(ctx, err)
		s.access.record(ctx, rpc, rec, err)
		return nil, err
	}
	rec.Kid = created.kid
	if err := s.access.record(ctx, rpc, rec, nil); err != nil {
		s.log.Error("rotation done but its outcome is not in the audit log", "key_ring", r.Name, "kid", created.kid, "err", err)
	}
	resp := &signetv1.RotateResponse{Version: versionProto(r, created)}
	kids := make([]string, 0, len(revoked))
	for _, v := range revoked {
		resp.Revoked = append(resp.Revoked, versionProto(r, v))
		kids = append(kids, v.kid)
	}
	s.log.Info("rotated key ring", "key_ring", r.Name, "kid", created.kid, "backend_id", created.ID,
		"state", created.State.String(), "revoked_kids", kids)
	return resp, nil
}

// ListKeys lists versions with their derived states.
func (s *Service) ListKeys(ctx context.Context, req *signetv1.ListKeysRequest) (*signetv1.ListKeysResponse, error) {
	rings := s.ks.Rings()
	if req.GetKeyRing() != "" {
		r, err := s.ring(req.GetKeyRing())
		if err != nil {
			return nil, err
		}
		if err := s.access.authorizeRing(ctx, "list", r.Name); err != nil {
			return nil, err
		}
		rings = []*Ring{r}
	} else {
		// All rings: those the caller may list.
		var allowed []*Ring
		for _, r := range rings {
			if s.access.authorizeRing(ctx, "list", r.Name) == nil {
				allowed = append(allowed, r)
			}
		}
		if len(allowed) == 0 {
			return nil, status.Errorf(codes.PermissionDenied, "no grant lets %q list any key ring", callerOf(ctx))
		}
		rings = allowed
	}
	resp := &signetv1.ListKeysResponse{}
	for _, r := range rings {
		for _, v := range s.ks.Versions(r) {
			resp.Versions = append(resp.Versions, versionProto(r, v))
		}
	}
	return resp, nil
}

var stateProto = map[State]signetv1.KeyState{
	StatePending: signetv1.KeyState_KEY_STATE_PENDING, StateActive: signetv1.KeyState_KEY_STATE_ACTIVE,
	StateRetiring: signetv1.KeyState_KEY_STATE_RETIRING, StateRetired: signetv1.KeyState_KEY_STATE_RETIRED,
	StateRevoked: signetv1.KeyState_KEY_STATE_REVOKED,
}

func versionProto(r *Ring, v *version) *signetv1.KeyVersion {
	kv := &signetv1.KeyVersion{KeyRing: r.Name, Kid: v.kid, BackendId: v.ID, Algorithm: string(v.Algorithm),
		State: stateProto[v.State], CreatedAt: timestamppb.New(v.Created)}
	if !v.ActivatesAt.IsZero() {
		kv.ActivatesAt = timestamppb.New(v.ActivatesAt)
	}
	if !v.RetiresAt.IsZero() {
		kv.RetiresAt = timestamppb.New(v.RetiresAt)
	}
	return kv
}

// GetJWKS returns the published keys. Its ETag and Cache-Control travel as
// response header metadata, which the gateway turns into HTTP headers.
func (s *Service) GetJWKS(ctx context.Context, _ *signetv1.GetJWKSRequest) (*signetv1.GetJWKSResponse, error) {
	doc := s.ks.JWKS()
	grpc.SetHeader(ctx, metadata.Pairs("etag", doc.etag, "cache-control", doc.cacheControl))
	return doc.msg, nil
}

// GetOpenIDConfiguration returns the discovery document.
func (s *Service) GetOpenIDConfiguration(ctx context.Context, _ *signetv1.GetOpenIDConfigurationRequest) (*signetv1.GetOpenIDConfigurationResponse, error) {
	grpc.SetHeader(ctx, metadata.Pairs("cache-control", s.ks.JWKS().cacheControl))
	return s.openID, nil
}

// toStatus is the one place where errors become gRPC statuses.
func (s *Service) toStatus(ctx context.Context, err error) error {
	var in *inputError
	if errors.As(err, &in) {
		return status.Error(codes.InvalidArgument, in.msg)
	}
	if ctx.Err() != nil {
		return status.FromContextError(ctx.Err()).Err()
	}
	kind := backends.KindOf(err)
	msg := err.Error()
	if kind == backends.KindUnavailable && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)) {
		msg = "key backend did not answer in time"
	}
	code, ok := kindCodes[kind]
	if !ok {
		s.log.Error("internal error", "err", err)
		return status.Error(codes.Internal, "internal error (details are in the server log)")
	}
	return status.Error(code, msg)
}

// kindCodes maps backend error kinds to gRPC codes (and, through
// grpc-gateway, to HTTP: Unavailable is 503, InvalidArgument 400, ...).
var kindCodes = map[backends.Kind]codes.Code{
	backends.KindNotFound:           codes.NotFound,
	backends.KindInvalidArgument:    codes.InvalidArgument,
	backends.KindPermissionDenied:   codes.PermissionDenied,
	backends.KindUnavailable:        codes.Unavailable,
	backends.KindFailedPrecondition: codes.FailedPrecondition,
	backends.KindConflict:           codes.Aborted,
	backends.KindUnimplemented:      codes.Unimplemented,
}
