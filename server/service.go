package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/signet-dev/signet/backends"
	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
	"github.com/signet-dev/signet/server/authz"
	"github.com/signet-dev/signet/server/jose"
	"github.com/signet-dev/signet/server/lifecycle"
	"github.com/signet-dev/signet/server/telemetry"
)

var signerServiceName = signetv1.SignerService_ServiceDesc.ServiceName

// service implements the gRPC SignerService and KeySetService: it checks a
// request, asks authz, has jose assemble the token around a signature from
// the key set, audits, and turns every error into a status with toStatus.
type service struct {
	signetv1.UnimplementedSignerServiceServer
	signetv1.UnimplementedKeySetServiceServer

	ks        *lifecycle.KeySet
	authz     *authz.Authorizer
	jwks      *publisher
	metrics   *telemetry.Metrics
	issuer    string
	log       *slog.Logger
	discovery []byte // the OpenID discovery document, rendered once
	openID    *signetv1.GetOpenIDConfigurationResponse
	// headers holds the encoded JOSE header of each version for the
	// default typ, rendered at its first token: one per version, bounded.
	headers sync.Map // headerKey -> string
}

type headerKey struct {
	alg backends.Algorithm
	kid string
}

// header is the encoded JOSE header for a token signed by v with typ.
func (s *service) header(v *lifecycle.Version, typ string) string {
	if typ != jose.DefaultTyp {
		return jose.Header(string(v.Algorithm), v.Kid, typ)
	}
	k := headerKey{v.Algorithm, v.Kid}
	if h, ok := s.headers.Load(k); ok {
		return h.(string)
	}
	h := jose.Header(string(v.Algorithm), v.Kid, typ)
	s.headers.Store(k, h)
	return h
}

func newService(ks *lifecycle.KeySet, a *authz.Authorizer, jwks *publisher, m *telemetry.Metrics, issuer string, log *slog.Logger) *service {
	s := &service{ks: ks, authz: a, jwks: jwks, metrics: m, issuer: issuer, log: log}
	jwksURI := strings.TrimSuffix(issuer, "/") + JWKSPath
	s.discovery = jose.Discovery(issuer, jwksURI, ks.Algorithms())
	s.openID = &signetv1.GetOpenIDConfigurationResponse{Issuer: issuer, JwksUri: jwksURI,
		IdTokenSigningAlgValuesSupported: ks.Algorithms(),
		ResponseTypesSupported:           []string{"id_token"}, SubjectTypesSupported: []string{"public"}}
	return s
}

// status converts err with toStatus, logging what has no kind.
func (s *service) status(ctx context.Context, err error) error {
	return toStatus(ctx, s.log, err).Err()
}

// checkRingName refuses a key_ring that no configuration could name (the
// form alone: it says nothing of which rings are configured).
func checkRingName(name string) error {
	switch {
	case name == "":
		return jose.Invalid("key_ring", "key_ring is required")
	case !utf8.ValidString(name):
		return jose.Invalid("key_ring", "key_ring is not valid UTF-8")
	case len(name) > maxRingName:
		return jose.Invalid("key_ring", "key_ring is longer than a key ring name can be (%d bytes)", maxRingName)
	}
	return nil
}

// maxRingName is the longest key ring name the configuration accepts.
const maxRingName = 64

// ring returns the configured ring named name, once the caller is
// authorized for action ("sign", "rotate", "list") on that name. The
// policy matches names, so the authorization comes first: a caller with no
// grant for the name gets NO_GRANT whether or not the ring is configured,
// and cannot probe for ring names. Only a caller granted the name (or any
// caller in development mode, which has no policy) learns that it is not
// configured (KEY_RING_NOT_FOUND).
func (s *service) ring(ctx context.Context, action, name string) (*lifecycle.Ring, error) {
	if err := checkRingName(name); err != nil {
		return nil, err
	}
	if err := s.authz.AuthorizeRing(callerOf(ctx), action, name); err != nil {
		return nil, err
	}
	r := s.ks.Ring(name)
	if r == nil {
		// Not the configured rings' names: the caller may not be allowed
		// to know them (ListKeys lists those it may).
		return nil, &requestError{code: codes.NotFound, reason: signetv1.ErrorReason_KEY_RING_NOT_FOUND,
			msg: fmt.Sprintf("key ring %q is not configured", name)}
	}
	return r, nil
}

// audit writes the audit record of an RPC whose outcome err is (nil: ok),
// filled in from the context. It returns the audit log's own error: an
// action that cannot be audited must not happen (or, done, must be logged).
func (s *service) audit(ctx context.Context, rpc string, rec authz.Record, err error) error {
	if !s.authz.Auditing() {
		return nil
	}
	rec.Caller, rec.Peer, rec.RPC, rec.TraceID = callerOf(ctx), peerOf(ctx), rpc, telemetry.TraceID(ctx)
	if rec.Outcome == "" {
		rec.Outcome = "ok"
		if err != nil {
			rec.Outcome, rec.Reason = "error", toStatus(ctx, nil, err).Message()
			if authz.IsDenial(err) {
				rec.Outcome = "denied"
			}
		}
	}
	err = s.authz.Audit(rec)
	if err != nil {
		s.metrics.AuditFailed()
	}
	return err
}

// refuse audits a refused or failed RPC and returns the error the caller
// gets: the refusal, or the audit log's failure if it cannot be recorded.
func (s *service) refuse(ctx context.Context, rpc string, rec authz.Record, err error) error {
	countDenial(s.metrics, err)
	if aerr := s.audit(ctx, rpc, rec, err); aerr != nil && authz.IsDenial(err) {
		return s.status(ctx, aerr)
	}
	return s.status(ctx, err)
}

// refuseRing answers an error of ring: a policy refusal is audited (with
// the name asked for, which ring bounds), anything else is bad input.
func (s *service) refuseRing(ctx context.Context, rpc, name string, err error) error {
	if authz.IsDenial(err) {
		return s.refuse(ctx, rpc, authz.Record{KeyRing: name}, err)
	}
	return s.status(ctx, err)
}

// Sign issues a JWT.
func (s *service) Sign(ctx context.Context, req *signetv1.SignRequest) (*signetv1.SignResponse, error) {
	const rpc = "Sign"
	if err := jose.CheckIdentity(req.GetSubject(), req.GetAudience()); err != nil {
		return nil, s.status(ctx, err)
	}
	if req.GetTtl() != nil {
		if err := req.GetTtl().CheckValid(); err != nil {
			return nil, s.status(ctx, jose.Invalid("ttl", "ttl: %v", err))
		}
	}
	r, err := s.ring(ctx, "sign", req.GetKeyRing())
	if err != nil {
		return nil, s.refuseRing(ctx, rpc, req.GetKeyRing(), err)
	}
	// The ring's limits only once the caller may sign with it: the
	// message names token_max_ttl.
	ttl := r.Schedule.TokenDefaultTTL
	if req.GetTtl() != nil {
		ttl = req.GetTtl().AsDuration()
		if err := jose.CheckTTL(ttl, r.Schedule.TokenMaxTTL, r.Name); err != nil {
			return nil, s.status(ctx, err)
		}
	}
	custom, names, err := customClaims(req)
	if err != nil {
		return nil, s.status(ctx, err)
	}
	typ, err := jose.CheckTyp(req.GetTyp())
	if err != nil {
		return nil, s.status(ctx, err)
	}
	subject := req.GetSubject()
	if sp := s.jwks.spiffe; sp.issuesSVIDs(r.Name) {
		if subject, err = sp.svidSubject(r.Name, callerOf(ctx), subject, req.GetAudience(), typ); err != nil {
			return nil, s.status(ctx, err)
		}
	}
	rec := authz.Record{KeyRing: r.Name, Sub: subject, Aud: req.GetAudience()}
	if s.authz.Auditing() {
		rec.ClaimsSHA256 = authz.ClaimsDigest(custom)
	}
	cert := clientCertOf(ctx)
	decision, err := s.authz.AuthorizeSign(callerOf(ctx), authz.SignRequest{Ring: r.Name, Subject: subject,
		Audience: req.GetAudience(), Claims: names, TTL: ttl, TTLDefaulted: req.GetTtl() == nil, Typ: typ,
		Bind: req.GetBindToCertificate(), Bindable: cert != nil})
	if err != nil {
		return nil, s.refuse(ctx, rpc, rec, err)
	}
	claims := jose.Claims{Issuer: s.issuer, Subject: subject, Audience: req.GetAudience(), TTL: decision.TTL}
	if decision.Bind {
		claims.CertThumbprint = jose.CertThumbprint(cert.Raw)
		rec.CnfX5tS256 = claims.CertThumbprint
	}
	v, err := s.ks.Active(r)
	if err != nil {
		return nil, s.refuse(ctx, rpc, rec, err)
	}
	body, jti, exp := jose.Payload(claims, custom, s.ks.Now())
	token, err := jose.Compact(ctx, s.header(v, typ), body, v.Algorithm.SignatureSize(),
		func(ctx context.Context, input []byte) ([]byte, error) { return s.ks.SignWith(ctx, r, v, input) })
	if err != nil {
		return nil, s.refuse(ctx, rpc, rec, err)
	}
	rec.Kid, rec.JTI, rec.Exp = v.Kid, jti, exp.Unix()
	if err := s.audit(ctx, rpc, rec, nil); err != nil {
		return nil, s.status(ctx, err) // fail closed: no token leaves unaudited
	}
	s.metrics.TokenIssued(r.Name, v.Algorithm)
	return &signetv1.SignResponse{Token: token, Kid: v.Kid, Jti: jti, ExpiresAt: timestamppb.New(exp),
		CertificateThumbprint: claims.CertThumbprint}, nil
}

// customClaims validates and renders the request's custom claims, from
// claims or claims_json (not both), and returns their top-level names.
func customClaims(req *signetv1.SignRequest) ([]byte, []string, error) {
	if req.GetClaimsJson() != "" {
		if len(req.GetClaims().GetFields()) > 0 {
			return nil, nil, &jose.InvalidError{Field: "claims_json", Problem: jose.ClaimsInvalid,
				Msg: "set claims or claims_json, not both"}
		}
		return jose.EncodeClaimsJSON(req.GetClaimsJson())
	}
	custom, err := jose.EncodeClaims(req.GetClaims())
	if err != nil {
		return nil, nil, err
	}
	names := make([]string, 0, len(req.GetClaims().GetFields()))
	for k := range req.GetClaims().GetFields() {
		names = append(names, k)
	}
	return custom, names, nil
}

// checkRequestID checks a Rotate's request_id: a UUID (AIP-155), in its
// usual text form, so that every backend can record it.
func checkRequestID(id string) error {
	if id == "" {
		return nil
	}
	if len(id) != 36 || !uuidRE.MatchString(id) {
		return jose.Invalid("request_id", "request_id %q is not a UUID such as 3f1e9c6e-8b1a-4c1e-9a53-2c4d5e6f7a8b", jose.Truncate(id, 64))
	}
	return nil
}

var uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// Rotate creates a new version, optionally revoking the older ones.
func (s *service) Rotate(ctx context.Context, req *signetv1.RotateRequest) (*signetv1.RotateResponse, error) {
	const rpc = "Rotate"
	requestID := strings.ToLower(req.GetRequestId())
	if err := checkRequestID(requestID); err != nil {
		return nil, s.status(ctx, err)
	}
	r, err := s.ring(ctx, "rotate", req.GetKeyRing())
	if err != nil {
		return nil, s.refuseRing(ctx, rpc, req.GetKeyRing(), err)
	}
	rec := authz.Record{KeyRing: r.Name}
	// Each rotation adds a key every verifier fetches until retire_after:
	// limited per caller and ring, once the ring is known to be configured
	// (so that names nobody configured make no buckets).
	refund, err := s.authz.AllowRotate(callerOf(ctx), r.Name)
	if err != nil {
		return nil, s.refuse(ctx, rpc, rec, err)
	}
	// Rotation cannot be undone, so its authorization is on record before
	// anything changes: an unwritable audit log stops it here.
	authorized := rec
	authorized.Outcome, authorized.Reason = "authorized", fmt.Sprintf("revoke_previous=%v", req.GetRevokePrevious())
	if requestID != "" {
		authorized.Reason += " request_id=" + requestID
	}
	if err := s.audit(ctx, rpc, authorized, nil); err != nil {
		refund() // stopped before anything changed: an audit outage costs no rotation
		return nil, s.status(ctx, err)
	}
	created, revoked, replayed, err := s.ks.Rotate(ctx, r, req.GetRevokePrevious(), requestID)
	// Nothing created: a retry, a mismatched id, a race another replica
	// won. A conflict after created is a revocation's: a key was created.
	if replayed || created == nil && (errors.Is(err, lifecycle.ErrRequestMismatch) || backends.KindOf(err) == backends.KindConflict) {
		refund()
	}
	if errors.Is(err, lifecycle.ErrRequestMismatch) {
		err = jose.Invalid("request_id", "%v", err)
	}
	if err != nil {
		return nil, s.refuse(ctx, rpc, rec, err)
	}
	rec.Kid = created.Kid
	if replayed {
		rec.Reason = "request_id " + requestID + " was served before: returned the version it created"
	}
	if err := s.audit(ctx, rpc, rec, nil); err != nil {
		s.log.Error("rotation done but its outcome is not in the audit log", "key_ring", r.Name, "kid", created.Kid, "err", err)
	}
	resp := &signetv1.RotateResponse{Version: s.versionProto(r, created)}
	kids := make([]string, 0, len(revoked))
	for _, v := range revoked {
		resp.Revoked = append(resp.Revoked, s.versionProto(r, v))
		kids = append(kids, v.Kid)
	}
	s.log.Info("rotated key ring", "key_ring", r.Name, "kid", created.Kid, "backend_id", created.ID,
		"state", created.State.String(), "revoked_kids", kids, "request_id", requestID, "replayed", replayed)
	return resp, nil
}

var stateProto = map[lifecycle.State]signetv1.KeyState{
	lifecycle.StatePending: signetv1.KeyState_KEY_STATE_PENDING, lifecycle.StateActive: signetv1.KeyState_KEY_STATE_ACTIVE,
	lifecycle.StateRetiring: signetv1.KeyState_KEY_STATE_RETIRING, lifecycle.StateRetired: signetv1.KeyState_KEY_STATE_RETIRED,
	lifecycle.StateRevoked: signetv1.KeyState_KEY_STATE_REVOKED,
}

func (s *service) versionProto(r *lifecycle.Ring, v *lifecycle.Version) *signetv1.KeyVersion {
	kv := &signetv1.KeyVersion{KeyRing: r.Name, Kid: v.Kid, BackendId: v.ID, Algorithm: string(v.Algorithm),
		State: stateProto[v.State], CreatedAt: timestamppb.New(v.Created)}
	if !v.ActivatesAt.IsZero() {
		kv.ActivatesAt = timestamppb.New(v.ActivatesAt)
	}
	if !v.RetiresAt.IsZero() {
		kv.RetiresAt = timestamppb.New(v.RetiresAt)
	}
	if c := v.Chain; c != nil {
		kv.CertificateSubject, kv.CertificateIssuer = c[0].Subject.String(), c[0].Issuer.String()
		kv.CertificateSerial, kv.CertificateNotAfter = c[0].SerialNumber.Text(16), timestamppb.New(c[0].NotAfter)
		kv.CertificateChain = c.DER()
	}
	kv.CertificateProblem = s.ks.CertificateProblem(r, v)
	return kv
}

// GetJWKS returns the published keys. Over gRPC its ETag and Cache-Control
// travel as response header metadata. Through the gateway (HTTP) they are
// set straight from the document the response is (documentHeaders), not
// through gRPC metadata, which cost the gateway a third of its allocations
// per request.
func (s *service) GetJWKS(ctx context.Context, _ *signetv1.GetJWKSRequest) (*signetv1.GetJWKSResponse, error) {
	doc := s.jwks.current()
	if !viaGateway(ctx) {
		if err := grpc.SetHeader(ctx, metadata.Pairs("etag", doc.ETag, "cache-control", doc.CacheControl)); err != nil {
			s.log.Warn("cannot set the JWKS response's ETag and Cache-Control", "err", err)
		}
	}
	return doc.msg, nil
}

// GetOpenIDConfiguration returns the discovery document, with the JWKS's
// Cache-Control (as header metadata over gRPC; through the gateway,
// documentHeaders sets it).
func (s *service) GetOpenIDConfiguration(ctx context.Context, _ *signetv1.GetOpenIDConfigurationRequest) (*signetv1.GetOpenIDConfigurationResponse, error) {
	if !viaGateway(ctx) {
		if err := grpc.SetHeader(ctx, metadata.Pairs("cache-control", s.jwks.current().CacheControl)); err != nil {
			s.log.Warn("cannot set the discovery document's Cache-Control", "err", err)
		}
	}
	return s.openID, nil
}

// viaGateway reports whether the call came through grpc-gateway's HTTP
// handler (which marks the context with the HTTP path pattern) rather than
// over gRPC.
func viaGateway(ctx context.Context) bool {
	_, ok := runtime.HTTPPathPattern(ctx)
	return ok
}
