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
	return &instrumented{Signer: s, scheme: scheme, m: m, tracer: tracer}
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
var operations = [...]string{opVersions: "versions", opSign: "sign", opCreateVersion: "create_version", opDisableVersion: "disable_version"}

const (
	opVersions = iota
	opSign
	opCreateVersion
	opDisableVersion
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

func (i *instrumented) DisableVersion(ctx context.Context, ring backends.KeyRing, id string) (err error) {
	ctx, c := i.begin(ctx, opDisableVersion, ring)
	defer c.end(&err)
	return i.Signer.DisableVersion(ctx, ring, id)
}
