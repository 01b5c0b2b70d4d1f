package server

import (
	"context"
	"sync"

	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
	"github.com/signet-dev/signet/server/authz"
	"github.com/signet-dev/signet/server/lifecycle"
)

// Signing health. The gRPC health service answers for:
//   - signet.v1.SignerService: SERVING while at least one ring can sign and
//     the audit log can be written. One ring that cannot sign (its backend
//     down, an emergency rotation's wait) must not take the replica away
//     from the callers of every other ring: a load balancer steering by
//     this name would drain every replica at once for all rings;
//   - signet.v1.SignerService/RING, for each ring that signs tokens (not
//     CA rings): SERVING while that ring can sign and the audit log can be
//     written. A caller that uses one ring watches its ring's name: the
//     overall name says SERVING while another ring can sign and its own
//     cannot;
//   - signet.v1.KeySetService, always SERVING (the JWKS is served from the
//     last good key set whatever the backends do), and "" (the server).
//
// Any other name, an unknown ring's included, is NOT_FOUND, as gRPC health
// answers for every unknown service. Why a ring cannot sign is for the
// admin listener (/statusz) and the log, never the public ports.

// ringHealthName is the gRPC health service name of ring's signing health.
func ringHealthName(ring string) string { return signerServiceName + "/" + ring }

// signingState is whether this replica can sign now, overall and per ring,
// and why not.
type signingState struct {
	audit string        // why the audit log cannot be written; "" if it can
	rings []ringSigning // every ring, in configuration order
}

type ringSigning struct {
	name     string
	ca       bool     // a CA ring: never signs tokens, has no health of its own
	problems []string // why it cannot sign; empty if it can
}

// signing reads the state from the key set and the audit log.
func signing(ks *lifecycle.KeySet, a *authz.Authorizer) signingState {
	st := signingState{audit: a.AuditProblem()}
	for _, r := range ks.Rings() {
		st.rings = append(st.rings, ringSigning{name: r.Name, ca: r.IsCA(), problems: ks.RingProblems(r)})
	}
	return st
}

// ringServing reports whether ring r can sign.
func (st signingState) ringServing(r ringSigning) bool {
	return !r.ca && st.audit == "" && len(r.problems) == 0
}

// ringProblems lists why ring r cannot sign: the audit log's problem
// (not a CA ring's: it signs no tokens), then the ring's own.
func (st signingState) ringProblems(r ringSigning) []string {
	if st.audit == "" || r.ca {
		return r.problems
	}
	return append([]string{st.audit}, r.problems...)
}

// serving reports whether at least one ring can sign.
func (st signingState) serving() bool {
	for _, r := range st.rings {
		if st.ringServing(r) {
			return true
		}
	}
	return false
}

// problems lists every reason some ring cannot sign, the audit log's first.
func (st signingState) problems() []string {
	var why []string
	if st.audit != "" {
		why = append(why, st.audit)
	}
	for _, r := range st.rings {
		why = append(why, r.problems...)
	}
	return why
}

// healthPublisher is what the gRPC health service says of signing: the
// last status set for each name, kept so that changes are logged once.
type healthPublisher struct {
	// mu is held from reading the state to setting the statuses: calls
	// come concurrently (a Sign that found the backend down, a refresh
	// that found it up, the audit log), and a call that read the state
	// earlier must not set its status after one that read it later.
	mu   sync.Mutex
	last map[string]healthpb.HealthCheckResponse_ServingStatus
}

// updateHealth sets the gRPC health of SignerService and of each ring from
// the key set's and the audit log's state as it is now, so that gRPC
// clients with health checking route around this replica for the rings it
// cannot sign with. The JWKS (KeySetService, /readyz) is never affected.
// It is lifecycle's OnHealth and the audit log's OnAuditHealth.
func (s *Server) updateHealth() {
	if s.ks == nil || s.authz == nil {
		return // during New: set once both are in place
	}
	s.healthPub.mu.Lock()
	defer s.healthPub.mu.Unlock()
	st := signing(s.ks, s.authz)
	s.setHealth(signerServiceName, st.serving(), st.problems())
	for _, r := range st.rings {
		if !r.ca {
			s.setHealth(ringHealthName(r.name), st.ringServing(r), st.ringProblems(r))
		}
	}
}

// setHealth sets service's status, logging a change. Called with
// healthPub.mu held.
func (s *Server) setHealth(service string, serving bool, why []string) {
	status := healthpb.HealthCheckResponse_NOT_SERVING
	if serving {
		status = healthpb.HealthCheckResponse_SERVING
	}
	prev, known := s.healthPub.last[service]
	if known && prev == status {
		return
	}
	if s.healthPub.last == nil {
		s.healthPub.last = map[string]healthpb.HealthCheckResponse_ServingStatus{}
	}
	s.healthPub.last[service] = status
	if !serving {
		s.log.Warn("signing is not ready; the JWKS is still served", "health_service", service, "problems", why)
	} else if known {
		s.log.Info("signing is ready again", "health_service", service)
	}
	s.health.SetServingStatus(service, status)
}

// healthService is grpc-go's health service with a List that names only
// the services, never the rings: health needs no credentials, and ring
// names are not published anywhere else (the JWKS carries kids, not
// rings). A caller who guesses a ring's name still learns from Check that
// it exists and whether it can sign now, nothing more.
type healthService struct{ *health.Server }

var keySetServiceName = signetv1.KeySetService_ServiceDesc.ServiceName

func (h healthService) List(ctx context.Context, _ *healthpb.HealthListRequest) (*healthpb.HealthListResponse, error) {
	out := map[string]*healthpb.HealthCheckResponse{}
	for _, name := range []string{"", signerServiceName, keySetServiceName} {
		if r, err := h.Check(ctx, &healthpb.HealthCheckRequest{Service: name}); err == nil {
			out[name] = r
		}
	}
	return &healthpb.HealthListResponse{Statuses: out}, nil
}
