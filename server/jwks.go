package server

import (
	"bytes"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
	"github.com/signet-dev/signet/server/jose"
	"github.com/signet-dev/signet/server/lifecycle"
	"github.com/signet-dev/signet/server/telemetry"
)

// JWKSPath and OpenIDConfigurationPath are where the HTTP side serves the
// key set and the discovery document.
const (
	JWKSPath                = "/.well-known/jwks.json"
	OpenIDConfigurationPath = "/.well-known/openid-configuration"
)

// publisher holds the JWKS as served, rendered when the key set changes
// (lifecycle's OnChange), never per request.
type publisher struct {
	staleIfError time.Duration
	log          *slog.Logger
	metrics      *telemetry.Metrics
	ks           *lifecycle.KeySet

	mu     sync.Mutex // serialises renders
	doc    atomic.Pointer[jwksDoc]
	recent atomic.Pointer[[]*jwksDoc] // doc and the ones it replaced, newest first, at most keepDocs

	spiffe *spiffeSetup              // nil: no SPIFFE bundle
	bundle atomic.Pointer[jose.JWKS] // the SPIFFE bundle, rendered with the JWKS
}

// keepDocs is how many renderings the publisher remembers: a request that
// fetched a document's message while the key set changed again (twice, ...)
// still gets that document's bytes and headers.
const keepDocs = 8

// jwksDoc is one rendering of the key set: the bytes HTTP serves and the
// same document as the gRPC message, and its response headers ready to put
// in an http.Header as they are (canonical keys, values never changed).
type jwksDoc struct {
	*jose.JWKS
	msg          *signetv1.GetJWKSResponse
	etag         []string
	cacheControl []string
}

func (p *publisher) start(ks *lifecycle.KeySet) error {
	p.ks = ks
	return p.render()
}

// update re-renders after the key set changed.
func (p *publisher) update() {
	if p.ks == nil {
		return // not started yet: start renders
	}
	if err := p.render(); err != nil {
		p.log.Error("cannot render the JWKS; serving the previous one", "err", err)
	}
}

func (p *publisher) render() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.spiffe != nil {
		b, err := buildBundle(p.ks, p.spiffe, p.staleIfError)
		if err != nil {
			return err
		}
		if old := p.bundle.Load(); old == nil || !bytes.Equal(old.Body, b.Body) {
			p.bundle.Store(b)
		}
	}
	d, err := p.build()
	if err != nil {
		return err
	}
	old := p.doc.Load()
	if old != nil && bytes.Equal(old.Body, d.Body) {
		return nil // unchanged: the same ETag, and the message the handlers hold stays current
	}
	recent := []*jwksDoc{d}
	if r := p.recent.Load(); r != nil {
		recent = append(recent, (*r)[:min(len(*r), keepDocs-1)]...)
	}
	p.recent.Store(&recent)
	p.doc.Store(d)
	p.metrics.JWKSServed(d.ETag, len(d.msg.GetKeys()))
	return nil
}

// build renders the versions every ring publishes now. The
// Cache-Control max-age is the smallest jwks_max_age of all rings: each
// ring's schedule was validated against its own, and a shorter cache life is
// safe for all.
func (p *publisher) build() (*jwksDoc, error) {
	var maxAge time.Duration
	for _, r := range p.ks.Rings() {
		if maxAge == 0 || r.Schedule.JWKSMaxAge < maxAge {
			maxAge = r.Schedule.JWKSMaxAge
		}
	}
	published := p.ks.Published()
	keys := make([]jose.PublicKey, len(published))
	for i, v := range published {
		keys[i] = jose.PublicKey{Kid: v.Kid, Algorithm: string(v.Algorithm), Key: v.PublicKey, Certificates: v.Chain}
	}
	set, err := jose.NewJWKS(keys, maxAge, p.staleIfError)
	if err != nil {
		return nil, err
	}
	msg := &signetv1.GetJWKSResponse{}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(set.Body, msg); err != nil {
		return nil, err
	}
	return &jwksDoc{JWKS: set, msg: msg, etag: []string{set.ETag}, cacheControl: []string{set.CacheControl}}, nil
}

// current returns the JWKS in force. It is re-rendered whenever the key set
// installs a snapshot: on every refresh and rotation, and when the Run loop
// wakes at a boundary of the clock (the only one that changes the JWKS is a
// retirement, and a key published a moment longer is harmless).
func (p *publisher) current() *jwksDoc { return p.doc.Load() }

// of returns the document whose message msg is, among the recent ones;
// nil for an older message.
func (p *publisher) of(msg *signetv1.GetJWKSResponse) *jwksDoc {
	if d := p.doc.Load(); d != nil && d.msg == msg {
		return d
	}
	if r := p.recent.Load(); r != nil {
		for _, d := range *r {
			if d.msg == msg {
				return d
			}
		}
	}
	return nil
}

// body returns the rendered bytes of msg, the message of a recent
// document; nil for an older message.
func (p *publisher) body(msg *signetv1.GetJWKSResponse) []byte {
	if d := p.of(msg); d != nil {
		return d.Body
	}
	return nil
}
