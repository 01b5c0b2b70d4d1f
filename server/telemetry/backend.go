package telemetry

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/signet-dev/signet/backends"
)

// Instrument wraps a backend so that every call is measured, by backend
// scheme, operation and outcome, and, with a tracer, traced as a span that
// is a child of the request's: the backends themselves stay free of
// metrics and of Signet's spans.
func Instrument(s backends.Signer, scheme string, m *Metrics, tracer trace.Tracer) backends.Signer {
	i := &instrumented{Signer: s, scheme: scheme, m: m, tracer: tracer}
	if _, ok := s.(backends.CertificateStore); ok {
		return &instrumentedCerts{i} // a CertificateStore only where the backend is one
	}
	return i
}

type instrumented struct {
	backends.Signer
	scheme string
	m      *Metrics
	tracer trace.Tracer // nil: tracing off
	// ok holds, per operation, the histogram child of its successful calls
	// once the first has happened: the call every Sign makes.
	ok [len(operations)]atomic.Pointer[prometheus.Observer]
}

// operations are the backend operations as the metrics name them.
var operations = [...]string{opVersions: "versions", opSign: "sign", opCreateVersion: "create_version",
	opDisableVersion: "disable_version", opLeftovers: "leftovers", opCheckKeyUsage: "check_key_usage",
	opPutCertificates: "put_certificates", opDisableVersionsBefore: "disable_versions_before"}

const (
	opVersions = iota
	opSign
	opCreateVersion
	opDisableVersion
	opLeftovers
	opCheckKeyUsage
	opPutCertificates
	opDisableVersionsBefore
)

// call is one backend call in progress.
type call struct {
	i     *instrumented
	op    int
	start time.Time
	span  trace.Span
}

func (i *instrumented) begin(ctx context.Context, op int, ring backends.KeyRing) (context.Context, call) {
	c := call{i: i, op: op, start: time.Now()}
	if i.tracer != nil {
		ctx, c.span = i.tracer.Start(ctx, "backend "+operations[op], trace.WithSpanKind(trace.SpanKindClient),
			trace.WithAttributes(attribute.String("signet.backend", i.scheme), attribute.String("signet.key_ring", ring.Name)))
	}
	return ctx, c
}

func (c call) end(err *error) {
	if *err == nil {
		ok := c.i.ok[c.op].Load()
		if ok == nil {
			o := c.i.m.backendCalls.WithLabelValues(c.i.scheme, operations[c.op], "ok")
			ok = &o
			c.i.ok[c.op].Store(ok)
		}
		(*ok).Observe(time.Since(c.start).Seconds())
	} else {
		c.i.m.observeCall(c.i.scheme, operations[c.op], c.start, *err)
	}
	if c.span != nil {
		if *err != nil {
			c.span.SetStatus(codes.Error, outcomeOf(*err))
			c.span.SetAttributes(attribute.String("signet.outcome", outcomeOf(*err)))
		}
		c.span.End()
	}
}

func (i *instrumented) Versions(ctx context.Context, ring backends.KeyRing) (vs []backends.Version, err error) {
	ctx, c := i.begin(ctx, opVersions, ring)
	defer c.end(&err)
	return i.Signer.Versions(ctx, ring)
}

func (i *instrumented) Sign(ctx context.Context, ring backends.KeyRing, id string, input []byte) (sig []byte, err error) {
	ctx, c := i.begin(ctx, opSign, ring)
	defer c.end(&err)
	return i.Signer.Sign(ctx, ring, id, input)
}

func (i *instrumented) CreateVersion(ctx context.Context, ring backends.KeyRing, latest string) (v backends.Version, err error) {
	ctx, c := i.begin(ctx, opCreateVersion, ring)
	defer c.end(&err)
	return i.Signer.CreateVersion(ctx, ring, latest)
}

// CreateVersionForRequest records requestID with the version if the
// backend can (backends.RequestRecorder); otherwise it is CreateVersion and
// the id is not recorded (the key set remembers it for a while instead).
func (i *instrumented) CreateVersionForRequest(ctx context.Context, ring backends.KeyRing, latest, requestID string) (v backends.Version, err error) {
	rec, ok := i.Signer.(backends.RequestRecorder)
	if !ok {
		return i.CreateVersion(ctx, ring, latest)
	}
	ctx, c := i.begin(ctx, opCreateVersion, ring)
	defer c.end(&err)
	return rec.CreateVersionForRequest(ctx, ring, latest, requestID)
}

func (i *instrumented) DisableVersion(ctx context.Context, ring backends.KeyRing, id string) (err error) {
	ctx, c := i.begin(ctx, opDisableVersion, ring)
	defer c.end(&err)
	return i.Signer.DisableVersion(ctx, ring, id)
}

// DisableVersionsBefore revokes every version older than id in one step
// if the backend can (backends.PrefixDisabler); otherwise the error is
// KindUnimplemented and the caller disables them one by one.
func (i *instrumented) DisableVersionsBefore(ctx context.Context, ring backends.KeyRing, id string) (err error) {
	pd, ok := i.Signer.(backends.PrefixDisabler)
	if !ok {
		return backends.Errorf(backends.KindUnimplemented, i.scheme, "this backend cannot revoke several versions in one step")
	}
	ctx, c := i.begin(ctx, opDisableVersionsBefore, ring)
	defer c.end(&err)
	return pd.DisableVersionsBefore(ctx, ring, id)
}

// Leftovers lists what the backend holds for the ring that is not a
// version, if it can (backends.LeftoverLister); otherwise the error is
// KindUnimplemented.
func (i *instrumented) Leftovers(ctx context.Context, ring backends.KeyRing) (ls []backends.Leftover, err error) {
	lister, ok := i.Signer.(backends.LeftoverLister)
	if !ok {
		return nil, backends.Errorf(backends.KindUnimplemented, i.scheme, "this backend cannot list what it holds besides versions")
	}
	ctx, c := i.begin(ctx, opLeftovers, ring)
	defer c.end(&err)
	return lister.Leftovers(ctx, ring)
}

// CheckKeyUsage asks the backend whether the ring's keys can do more than
// sign, if it can tell (backends.UsageChecker); otherwise the error is
// KindUnimplemented.
func (i *instrumented) CheckKeyUsage(ctx context.Context, ring backends.KeyRing) (err error) {
	checker, ok := i.Signer.(backends.UsageChecker)
	if !ok {
		return backends.Errorf(backends.KindUnimplemented, i.scheme, "this backend cannot tell what its keys may be used for")
	}
	ctx, c := i.begin(ctx, opCheckKeyUsage, ring)
	defer c.end(&err)
	return checker.CheckKeyUsage(ctx, ring)
}

// instrumentedCerts is an instrumented backend that stores certificate
// chains (backends.CertificateStore).
type instrumentedCerts struct{ *instrumented }

func (i *instrumentedCerts) PutCertificates(ctx context.Context, ring backends.KeyRing, id string, old, chain [][]byte) (stored [][]byte, err error) {
	ctx, c := i.begin(ctx, opPutCertificates, ring)
	defer c.end(&err)
	return i.Signer.(backends.CertificateStore).PutCertificates(ctx, ring, id, old, chain)
}
