package server

import (
	"context"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// access is who may call what: caller authentication (mTLS), the policy,
// per-caller rate limits and the audit log. A nil policy is development
// mode: every caller may do everything (gRPC is then loopback only).
type access struct {
	certs  *certificates
	policy *policyStore
	audit  *auditLog
}

// DevelopmentCaller is the identity of every caller in plaintext
// development mode.
const DevelopmentCaller = "development (unauthenticated)"

type callerKey struct{}

// callerOf returns the authenticated identity of the caller.
func callerOf(ctx context.Context) string {
	if id, ok := ctx.Value(callerKey{}).(string); ok {
		return id
	}
	return DevelopmentCaller
}

func peerOf(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

// authenticateUnary establishes the caller's identity for SignerService
// calls. Health, reflection and the public key set need no identity.
func (a *access) authenticateUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if a.certs == nil || !strings.HasPrefix(info.FullMethod, "/signet.v1.SignerService/") {
		return handler(ctx, req)
	}
	id, err := a.certs.authenticate(ctx)
	if err != nil {
		a.audit.write(auditRecord{Time: time.Now().UTC(), Caller: "unauthenticated", Peer: peerOf(ctx), RPC: info.FullMethod,
			Outcome: "denied", Reason: status.Convert(err).Message()})
		return nil, err
	}
	return handler(context.WithValue(ctx, callerKey{}, id), req)
}

// authorizeSign checks a Sign against the policy and the caller's rate,
// and returns the token lifetime to use: a defaulted ttl is capped at the
// grant's max_ttl.
func (a *access) authorizeSign(ctx context.Context, r signRequest) (time.Duration, error) {
	if a.policy == nil {
		return r.ttl, nil
	}
	caller := callerOf(ctx)
	g, err := a.policy.cur.Load().authorizeSign(caller, r)
	if err != nil {
		return 0, status.Error(codes.PermissionDenied, err.Error())
	}
	if !a.policy.allow(caller, g) {
		return 0, status.Errorf(codes.ResourceExhausted, "rate limit for %q: %v signatures per second (burst %d)", caller, g.Rate.PerSecond, g.Rate.Burst)
	}
	if g.MaxTTL > 0 && r.ttl > g.MaxTTL.D() {
		return g.MaxTTL.D(), nil
	}
	return r.ttl, nil
}

// authorizeRing checks rotate or list on a ring.
func (a *access) authorizeRing(ctx context.Context, action, ring string) error {
	if a.policy == nil {
		return nil
	}
	if err := a.policy.cur.Load().authorizeRing(callerOf(ctx), action, ring); err != nil {
		return status.Error(codes.PermissionDenied, err.Error())
	}
	return nil
}

// record writes an audit record filled from the context; the record's
// outcome follows err.
func (a *access) record(ctx context.Context, rpc string, r auditRecord, err error) error {
	r.Time, r.Caller, r.Peer, r.RPC = time.Now().UTC(), callerOf(ctx), peerOf(ctx), rpc
	if r.Outcome == "" {
		r.Outcome = "ok"
		if err != nil {
			r.Outcome, r.Reason = "error", status.Convert(err).Message()
			if c := status.Code(err); c == codes.PermissionDenied || c == codes.ResourceExhausted {
				r.Outcome = "denied"
			}
		}
	}
	if werr := a.audit.write(r); werr != nil {
		return status.Errorf(codes.Unavailable, "%v: refusing to act unaudited", werr)
	}
	return nil
}
