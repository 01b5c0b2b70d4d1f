package telemetry

import (
	"net/http"
	"strconv"
	"sync"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/signet-dev/signet/backends"
	"github.com/signet-dev/signet/server/lifecycle"
)

const namespace = "signet"

// Metrics is Signet's Prometheus registry and the metrics the server
// records into it. Every label set is bounded: no jti, subject, claim or
// caller identity appears in a label.
type Metrics struct {
	reg *prometheus.Registry

	// GRPC is the gRPC server's metrics (go-grpc-middleware): RPCs by
	// method and code, and a handling-time histogram.
	GRPC *grpcprom.ServerMetrics

	tokens        *prometheus.CounterVec
	backendCalls  *prometheus.HistogramVec
	batchSize     prometheus.Histogram
	recovered     *prometheus.CounterVec
	jwksResponses *prometheus.CounterVec
	jwksInfo      *prometheus.GaugeVec
	jwksKeys      prometheus.Gauge
	reloads       *prometheus.CounterVec
	auditFailures prometheus.Counter
	auditSkipped  prometheus.Counter
	connsRefused  prometheus.Counter
	rateLimited   *prometheus.CounterVec
	denials       *prometheus.CounterVec
	mismatches    *prometheus.CounterVec
	certProblems  *prometheus.CounterVec

	// The children of the vectors that every Sign and JWKS response
	// touches, kept once looked up: WithLabelValues hashes its labels and
	// takes a lock on each call.
	jwksOK, jwksNotModified prometheus.Counter
	tokenCounters           sync.Map // tokenKey -> prometheus.Counter
	callObservers           sync.Map // callKey -> prometheus.Observer
}

type tokenKey struct {
	ring string
	alg  backends.Algorithm
}

type callKey struct{ backend, op, outcome string }

// NewMetrics creates the registry with the Go runtime and process
// collectors, signet_build_info and every metric below.
func NewMetrics() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.GRPC = grpcprom.NewServerMetrics(
		grpcprom.WithServerCounterOptions(grpcprom.WithNamespace(namespace)),
		grpcprom.WithServerHandlingTimeHistogram(grpcprom.WithHistogramNamespace(namespace),
			grpcprom.WithHistogramBuckets([]float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10})),
	)
	m.tokens = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "tokens_issued_total",
		Help: "Tokens issued, by key ring and algorithm."}, []string{"key_ring", "algorithm"})
	m.backendCalls = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: "backend_call_duration_seconds",
		Help:    "Duration of calls to key backends, by backend scheme, operation and outcome (ok or the error kind).",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"backend", "operation", "outcome"})
	m.batchSize = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Name: "vault_batch_size",
		Help: "Signatures per Vault Transit sign request (batch_input).", Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128}})
	m.recovered = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "backend_recovered_objects_total",
		Help: "Backend objects cleaned up after an interrupted rotation or revocation (a crashed replica's), by backend scheme and action: removed, scheduled_deletion, adopted."},
		[]string{"backend", "action"})
	m.jwksResponses = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "jwks_responses_total",
		Help: "JWKS responses over HTTP, by status code (200 or 304)."}, []string{"code"})
	m.jwksInfo = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Name: "jwks_info",
		Help: "The JWKS this replica serves, by its ETag: replicas that serve the same keys show the same etag."}, []string{"etag"})
	m.jwksKeys = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "jwks_keys",
		Help: "Keys in the JWKS this replica serves."})
	m.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "reloads_total",
		Help: "Reloads of the policy file and the TLS certificates after their files changed, by outcome."}, []string{"file", "outcome"})
	m.auditFailures = prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: "audit_write_failures_total",
		Help: "Audit records that could not be written (the request was refused)."})
	m.auditSkipped = prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: "audit_refusals_summarized_total",
		Help: "Refusals of unauthenticated callers beyond the audit log's per-peer rate, counted in a periodic summary line instead of a line each."})
	m.connsRefused = prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: "grpc_connections_refused_total",
		Help: "gRPC connections closed on accept because grpc.limits.max_connections were open."})
	m.rateLimited = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "rate_limited_total",
		Help: "Sign requests refused by a grant's rate limit, by the grant's identity pattern."}, []string{"grant"})
	m.denials = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "denials_total",
		Help: "Requests refused by authentication or authorization, by reason: unauthenticated, not_granted, rate_limited."}, []string{"reason"})
	m.mismatches = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "key_mismatches_total",
		Help: "Signatures from a backend that did not verify with the version's published key, and reads in which a version's public key had changed, by key ring."}, []string{"key_ring"})
	m.certProblems = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "x5c_failures_total",
		Help: "Failed attempts to obtain or store a version's X.509 certificate chain, by key ring and reason: issue_failed, store_failed, invalid, no_ca_certificate."},
		[]string{"key_ring", "reason"})

	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfo(), m.GRPC, m.tokens, m.backendCalls, m.batchSize, m.recovered, m.jwksResponses, m.jwksInfo, m.jwksKeys,
		m.reloads, m.auditFailures, m.auditSkipped, m.connsRefused, m.rateLimited, m.denials, m.mismatches, m.certProblems)
	m.jwksOK, m.jwksNotModified = m.jwksResponses.WithLabelValues("200"), m.jwksResponses.WithLabelValues("304")
	for _, reason := range []string{"unauthenticated", "not_granted", "rate_limited"} {
		m.denials.WithLabelValues(reason)
	}
	return m
}

func buildInfo() prometheus.Collector {
	b := Build()
	g := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "build_info",
		Help:        "Always 1; the labels say which Signet this is.",
		ConstLabels: prometheus.Labels{"version": b.Version, "commit": b.Commit, "goversion": b.GoVersion}})
	g.Set(1)
	return g
}

// Handler serves the registry: the Prometheus text format, or OpenMetrics
// when the scraper asks for it.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{EnableOpenMetrics: true, Registry: m.reg})
}

// Register adds a collector, such as the key set's.
func (m *Metrics) Register(c prometheus.Collector) { m.reg.MustRegister(c) }

// TokenIssued counts a token.
func (m *Metrics) TokenIssued(ring string, alg backends.Algorithm) {
	k := tokenKey{ring, alg}
	c, ok := m.tokenCounters.Load(k)
	if !ok { // bounded: rings and their algorithms are configured
		c, _ = m.tokenCounters.LoadOrStore(k, m.tokens.WithLabelValues(ring, string(alg)))
	}
	c.(prometheus.Counter).Inc()
}

// ObserveBatch records the size of one batched backend request.
func (m *Metrics) ObserveBatch(n int) { m.batchSize.Observe(float64(n)) }

// Recovered counts a backend object cleaned up after an interrupted
// operation (backends.OpenOptions.OnRecover).
func (m *Metrics) Recovered(backend, action string) {
	m.recovered.WithLabelValues(backend, action).Inc()
}

// InitRecovered makes the recovery counters of a backend exist at zero, so
// that an alert can tell "none yet" from "not reported".
func (m *Metrics) InitRecovered(backend string) {
	for _, a := range []string{backends.RecoveredRemoved, backends.RecoveredScheduledDeletion} {
		m.recovered.WithLabelValues(backend, a)
	}
}

// JWKSResponse counts an HTTP JWKS response by status code.
func (m *Metrics) JWKSResponse(code int) {
	switch code {
	case http.StatusOK:
		m.jwksOK.Inc()
	case http.StatusNotModified:
		m.jwksNotModified.Inc()
	default:
		m.jwksResponses.WithLabelValues(strconv.Itoa(code)).Inc()
	}
}

// JWKSServed records the JWKS now in force.
func (m *Metrics) JWKSServed(etag string, keys int) {
	m.jwksInfo.Reset()
	m.jwksInfo.WithLabelValues(etag).Set(1)
	m.jwksKeys.Set(float64(keys))
}

// Reloaded counts a reload of "policy" or "certificates".
func (m *Metrics) Reloaded(file string, err error) {
	outcome := "ok"
	if err != nil {
		outcome = "error"
	}
	m.reloads.WithLabelValues(file, outcome).Inc()
}

// KeyMismatch counts a backend key that did not match what the ring
// published.
func (m *Metrics) KeyMismatch(ring string) { m.mismatches.WithLabelValues(ring).Inc() }

// CertificateProblem counts a failed attempt to obtain or store a
// version's certificate chain.
func (m *Metrics) CertificateProblem(ring, reason string) {
	m.certProblems.WithLabelValues(ring, reason).Inc()
}

// AuditFailed counts an audit record that could not be written.
func (m *Metrics) AuditFailed() { m.auditFailures.Inc() }

// AuditSummarized counts a refusal of an unauthenticated caller that the
// audit log records only in its periodic summary.
func (m *Metrics) AuditSummarized() { m.auditSkipped.Inc() }

// ConnectionRefused counts a gRPC connection closed at the connection limit.
func (m *Metrics) ConnectionRefused() { m.connsRefused.Inc() }

// Denied counts a refused request: reason is unauthenticated, not_granted
// or rate_limited; grant, for rate_limited, the grant's identity pattern.
func (m *Metrics) Denied(reason, grant string) {
	m.denials.WithLabelValues(reason).Inc()
	if reason == "rate_limited" {
		m.rateLimited.WithLabelValues(grant).Inc()
	}
}

// observeCall records one backend call.
func (m *Metrics) observeCall(backend, op string, start time.Time, err error) {
	outcome := "ok"
	if err != nil {
		outcome = outcomeOf(err)
	}
	k := callKey{backend, op, outcome}
	o, ok := m.callObservers.Load(k)
	if !ok { // bounded: schemes × operations × outcomes
		o, _ = m.callObservers.LoadOrStore(k, m.backendCalls.WithLabelValues(backend, op, outcome))
	}
	o.(prometheus.Observer).Observe(time.Since(start).Seconds())
}

var kindOutcomes = map[backends.Kind]string{
	backends.KindUnknown: "unknown", backends.KindNotFound: "not_found", backends.KindInvalidArgument: "invalid_argument",
	backends.KindPermissionDenied: "permission_denied", backends.KindUnavailable: "unavailable",
	backends.KindFailedPrecondition: "failed_precondition", backends.KindConflict: "conflict",
	backends.KindUnimplemented: "unimplemented",
}

func outcomeOf(err error) string {
	if o, ok := kindOutcomes[backends.KindOf(err)]; ok {
		return o
	}
	return "unknown"
}

// keySetCollector reports every ring's state at scrape time, read from the
// key set: nothing is stored twice.
type keySetCollector struct {
	ks *lifecycle.KeySet

	versions, activeAge, nextRotation, nextRetirement, lastRefresh, failures, down, refreshInterval *prometheus.Desc
	withoutChain, chainExpiry                                                                       *prometheus.Desc
}

// NewKeySetCollector is a collector of the key set's per-ring gauges.
func NewKeySetCollector(ks *lifecycle.KeySet) prometheus.Collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(namespace+"_key_ring_"+name, help, append([]string{"key_ring"}, labels...), nil)
	}
	return &keySetCollector{ks: ks,
		versions:        d("versions", "Versions of the key ring by lifecycle state.", "state"),
		activeAge:       d("active_version_age_seconds", "Age of the version that signs."),
		nextRotation:    d("next_rotation_timestamp_seconds", "When scheduled rotation next creates a version (absent: manual rotation only)."),
		nextRetirement:  d("next_retirement_timestamp_seconds", "When the oldest retiring version leaves the JWKS (absent: none is retiring)."),
		lastRefresh:     d("last_refresh_success_timestamp_seconds", "When the ring's versions were last read from its backend."),
		failures:        d("refresh_failures", "Consecutive failed reads of the ring's versions (0 after a good one)."),
		down:            d("backend_down", "1 while the ring's backend does not answer (the ring cannot sign), else 0."),
		refreshInterval: d("refresh_interval_seconds", "The ring's refresh_interval."),
		withoutChain: d("versions_without_x5c", "Versions of a ring with x5c that have no valid certificate chain: "+
			"withheld=\"true\" (x5c.required: neither published nor signing) or \"false\" (published without x5c); /statusz says why.", "withheld"),
		chainExpiry: d("x5c_not_after_timestamp_seconds", "The earliest notAfter of the certificate chains of the ring's published versions (a CA ring: of its enabled versions)."),
	}
}

func (c *keySetCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.versions, c.activeAge, c.nextRotation, c.nextRetirement, c.lastRefresh, c.failures, c.down,
		c.refreshInterval, c.withoutChain, c.chainExpiry} {
		ch <- d
	}
}

var states = []lifecycle.State{lifecycle.StatePending, lifecycle.StateActive, lifecycle.StateRetiring,
	lifecycle.StateRetired, lifecycle.StateRevoked}

func (c *keySetCollector) Collect(ch chan<- prometheus.Metric) {
	now := c.ks.Now()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	seconds := func(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }
	for _, st := range c.ks.Status() {
		counts := map[lifecycle.State]int{}
		var retiresFirst time.Time
		for _, v := range st.Versions {
			counts[v.State]++
			if v.State == lifecycle.StateRetiring && (retiresFirst.IsZero() || v.RetiresAt.Before(retiresFirst)) {
				retiresFirst = v.RetiresAt
			}
		}
		for _, s := range states {
			gauge(c.versions, float64(counts[s]), st.Name, s.String())
		}
		if st.Active != nil {
			gauge(c.activeAge, now.Sub(st.Active.Created).Seconds(), st.Name)
		}
		if !st.NextRotation.IsZero() {
			gauge(c.nextRotation, seconds(st.NextRotation), st.Name)
		}
		if !retiresFirst.IsZero() {
			gauge(c.nextRetirement, seconds(retiresFirst), st.Name)
		}
		if !st.LastRefresh.IsZero() {
			gauge(c.lastRefresh, seconds(st.LastRefresh), st.Name)
		}
		gauge(c.failures, float64(st.RefreshFailures), st.Name)
		down := 0.0
		if !st.Down.IsZero() {
			down = 1
		}
		gauge(c.down, down, st.Name)
		gauge(c.refreshInterval, st.Schedule.RefreshInterval.Seconds(), st.Name)
		if !st.X5C {
			continue
		}
		var withheld, bare int
		var expiry time.Time
		for _, v := range st.Versions {
			switch {
			case v.Withheld:
				withheld++
			case v.Disabled || v.State == lifecycle.StateRetired:
			case v.Chain == nil:
				bare++
			case expiry.IsZero() || v.Chain.Expires().Before(expiry):
				expiry = v.Chain.Expires()
			}
		}
		gauge(c.withoutChain, float64(withheld), st.Name, "true")
		gauge(c.withoutChain, float64(bare), st.Name, "false")
		if !expiry.IsZero() {
			gauge(c.chainExpiry, seconds(expiry), st.Name)
		}
	}
}

// NewCertificateCollector reports the notAfter of the serving certificate
// and of the client CA, as expiry returns them at scrape time (nothing
// without mTLS).
func NewCertificateCollector(expiry func() (serving, clientCA time.Time, ok bool)) prometheus.Collector {
	return &certCollector{expiry: expiry, desc: prometheus.NewDesc(namespace+"_certificate_not_after_timestamp_seconds",
		"When a TLS certificate in use expires: the gRPC serving certificate or the client CA.", []string{"certificate"}, nil)}
}

type certCollector struct {
	expiry func() (time.Time, time.Time, bool)
	desc   *prometheus.Desc
}

func (c *certCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *certCollector) Collect(ch chan<- prometheus.Metric) {
	serving, ca, ok := c.expiry()
	if !ok {
		return
	}
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(serving.Unix()), "serving")
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(ca.Unix()), "client_ca")
}
