package server

import (
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/signet-dev/signet/server/lifecycle"
)

// StatusPath is where the admin listener serves the status document.
const StatusPath = "/statusz"

// adminHandler serves the operators' side on the admin listener: /metrics,
// /statusz and, only with admin.pprof, /debug/pprof/. None of it is on the
// public port.
func (s *Server) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", s.metrics.Handler())
	mux.HandleFunc("GET "+StatusPath, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(s.status()) // fails only if the client has gone
	})
	if s.cfg.Admin.Pprof {
		// seconds= is capped on every one: Index serves delta profiles
		// (heap?seconds=N) too.
		mux.HandleFunc("GET /debug/pprof/", capSeconds(pprof.Index))
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", capSeconds(pprof.Profile))
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", capSeconds(pprof.Trace))
	}
	return mux
}

// Status is the document /statusz serves and `signet status` prints.
type Status struct {
	Issuer string `json:"issuer"`
	// Signing is the gRPC health of signet.v1.SignerService: at least one
	// ring can sign and the audit log can be written. SigningProblems
	// lists every reason a ring cannot sign, the audit log's first.
	Signing         bool     `json:"signing"`
	SigningProblems []string `json:"signing_problems,omitempty"`
	// AuditProblem says why the audit log cannot be written (every Sign
	// and Rotate is refused meanwhile); empty while it can.
	AuditProblem string       `json:"audit_problem,omitempty"`
	JWKS         JWKSStatus   `json:"jwks"`
	KeyRings     []RingStatus `json:"key_rings"`
}

// JWKSStatus identifies the JWKS this replica serves: replicas that agree
// show the same ETag.
type JWKSStatus struct {
	ETag string `json:"etag"`
	Keys int    `json:"keys"`
}

// RingStatus is one key ring in /statusz.
type RingStatus struct {
	Name            string          `json:"name"`
	Algorithm       string          `json:"algorithm"`
	Usage           string          `json:"usage,omitempty"` // "ca" for a CA ring
	ActiveKid       string          `json:"active_kid,omitempty"`
	LastRefresh     *time.Time      `json:"last_refresh,omitempty"`
	RefreshFailures int             `json:"refresh_failures"`
	LastError       string          `json:"last_error,omitempty"`
	BackendDown     *time.Time      `json:"backend_down_since,omitempty"`
	NextRotation    *time.Time      `json:"next_rotation,omitempty"`
	Versions        []VersionStatus `json:"versions"`
	// Health is the gRPC health of signet.v1.SignerService/NAME: SERVING
	// or NOT_SERVING; empty for a CA ring, which has none. SigningProblems
	// says why the ring cannot sign.
	Health          string   `json:"health,omitempty"`
	SigningProblems []string `json:"signing_problems,omitempty"`

	// Startup is set while the ring has not read its backend since this
	// replica started (it then does not sign): why, and where the key set
	// it publishes comes from.
	Startup *StartupStatus `json:"startup,omitempty"`
}

// StartupStatus is a ring that started without its backend.
type StartupStatus struct {
	Reason string `json:"reason"`
	// PublishedFrom is the disk snapshot or peer the published key set
	// came from; empty: nothing is published for the ring.
	PublishedFrom string `json:"published_from,omitempty"`
	// ReadAt is when that key set was read from the backend.
	ReadAt *time.Time `json:"read_at,omitempty"`
}

// VersionStatus is one version in /statusz.
type VersionStatus struct {
	Kid         string     `json:"kid"`
	BackendID   string     `json:"backend_id"`
	State       string     `json:"state"`
	Created     time.Time  `json:"created"`
	ActivatesAt *time.Time `json:"activates_at,omitempty"`
	RetiresAt   *time.Time `json:"retires_at,omitempty"`
	// Rings with x5c: the version's certificate, and why it has no valid
	// chain (withheld: neither published nor signing for want of one).
	CertificateSubject  string     `json:"certificate_subject,omitempty"`
	CertificateNotAfter *time.Time `json:"certificate_not_after,omitempty"`
	CertificateProblem  string     `json:"certificate_problem,omitempty"`
	Withheld            bool       `json:"withheld,omitempty"`
}

func (s *Server) status() Status {
	sg := signing(s.ks, s.authz)
	doc := s.jwks.current()
	st := Status{Issuer: s.cfg.Issuer, Signing: sg.serving(), SigningProblems: sg.problems(), AuditProblem: sg.audit,
		JWKS: JWKSStatus{ETag: doc.ETag, Keys: len(doc.msg.GetKeys())}}
	for i, r := range s.ks.Status() {
		rs := RingStatus{Name: r.Name, RefreshFailures: r.RefreshFailures, LastRefresh: timePtr(r.LastRefresh),
			BackendDown: timePtr(r.Down), NextRotation: timePtr(r.NextRotation), Versions: []VersionStatus{}}
		ring := s.ks.Ring(r.Name)
		rs.Algorithm = string(ring.Algorithm())
		rs.SigningProblems = sg.ringProblems(sg.rings[i])
		switch {
		case r.CA:
			rs.Usage = "ca"
		case sg.ringServing(sg.rings[i]):
			rs.Health = healthpb.HealthCheckResponse_SERVING.String()
		default:
			rs.Health = healthpb.HealthCheckResponse_NOT_SERVING.String()
		}
		if r.Active != nil {
			rs.ActiveKid = r.Active.Kid
		}
		if r.LastError != nil {
			rs.LastError = r.LastError.Error()
		}
		if r.Waiting {
			rs.Startup = &StartupStatus{Reason: "the backend did not answer at start-up: " + r.WaitingReason.Error(),
				PublishedFrom: r.Source, ReadAt: timePtr(r.ReadAt)}
		}
		for _, v := range r.Versions {
			vs := versionStatus(v)
			vs.CertificateProblem = s.ks.CertificateProblem(ring, v)
			rs.Versions = append(rs.Versions, vs)
		}
		st.KeyRings = append(st.KeyRings, rs)
	}
	return st
}

func versionStatus(v *lifecycle.Version) VersionStatus {
	vs := VersionStatus{Kid: v.Kid, BackendID: v.ID, State: v.State.String(), Created: v.Created.UTC(),
		ActivatesAt: timePtr(v.ActivatesAt), RetiresAt: timePtr(v.RetiresAt), Withheld: v.Withheld}
	if v.Chain != nil {
		vs.CertificateSubject, vs.CertificateNotAfter = v.Chain[0].Subject.String(), timePtr(v.Chain[0].NotAfter)
	}
	return vs
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}
