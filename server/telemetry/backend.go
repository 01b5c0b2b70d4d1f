package telemetry

import (
	"context"
	"time"

	"github.com/signet-dev/signet/backends"
)

// Instrument wraps a backend so that every call is measured, by backend
// scheme, operation and outcome: the backends themselves stay free of
// metrics.
func Instrument(s backends.Signer, scheme string, m *Metrics) backends.Signer {
	return &instrumented{Signer: s, scheme: scheme, m: m}
}

type instrumented struct {
	backends.Signer
	scheme string
	m      *Metrics
}

func (i *instrumented) Versions(ctx context.Context, ring backends.KeyRing) (vs []backends.Version, err error) {
	defer i.observe("versions", time.Now(), &err)
	return i.Signer.Versions(ctx, ring)
}

func (i *instrumented) Sign(ctx context.Context, ring backends.KeyRing, id string, input []byte) (sig []byte, err error) {
	defer i.observe("sign", time.Now(), &err)
	return i.Signer.Sign(ctx, ring, id, input)
}

func (i *instrumented) CreateVersion(ctx context.Context, ring backends.KeyRing, latest string) (v backends.Version, err error) {
	defer i.observe("create_version", time.Now(), &err)
	return i.Signer.CreateVersion(ctx, ring, latest)
}

func (i *instrumented) DisableVersion(ctx context.Context, ring backends.KeyRing, id string) (err error) {
	defer i.observe("disable_version", time.Now(), &err)
	return i.Signer.DisableVersion(ctx, ring, id)
}

func (i *instrumented) observe(op string, start time.Time, err *error) {
	i.m.observeCall(i.scheme, op, start, *err)
}
