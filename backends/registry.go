package backends

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// OpenOptions carries what every backend may need besides its URI.
// Secrets (tokens, PINs, key-encryption keys) come from the environment or
// files named in the URI, never from the URI itself.
type OpenOptions struct {
	Logger *slog.Logger
	// Getenv reads the environment; tests replace it. Nil means os.Getenv.
	Getenv func(string) string
	// Now is the clock of a backend that records creation times itself (the
	// local one); remote backends use their own. Nil means time.Now.
	Now func() time.Time
	// OnBatch, if set, is told the number of signatures in each batched
	// request a backend sends (Vault Transit's batch_input), for metrics.
	OnBatch func(size int)
	// TracerProvider, if set, traces the requests a remote backend sends
	// (its HTTP client), as children of the caller's span. Nil: no tracing.
	TracerProvider trace.TracerProvider
	// RecoveryGrace is how long this process must have seen the evidence
	// of an interrupted operation before it cleans up after it, so that
	// nothing a live replica is still creating is touched. The server sets
	// it to 2 × backend_timeout; zero means DefaultRecoveryGrace. See
	// recovery.go.
	RecoveryGrace time.Duration
	// OnRecover, if set, is told of each object a backend cleaned up after
	// an interrupted operation (RecoveredRemoved, ...), after the backend
	// logged it at warn, for metrics. Backends report through it rather than
	// import a metrics library.
	OnRecover func(action string)
	// Timeout bounds what Open itself asks of the backend (Vault: logging
	// in). The server sets backend_timeout; zero means BackgroundTimeout.
	// A backend that does not answer then is opened all the same where it
	// can be (Vault logs in in the background): a replica must start while
	// its backend is down and serve the key set it has (docs/runbook.md).
	Timeout time.Duration
}

// Opener opens a backend from its URI.
type Opener func(ctx context.Context, uri *url.URL, opts OpenOptions) (Signer, error)

var (
	registryMu sync.RWMutex
	registry   = map[string]Opener{}
)

// Register makes a backend available under a URI scheme. Backends call it
// from init; registering a scheme twice panics.
func Register(scheme string, open Opener) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if _, dup := registry[scheme]; dup {
		panic("backends: scheme registered twice: " + scheme)
	}
	registry[scheme] = open
}

// Schemes lists the registered schemes, sorted.
func Schemes() []string {
	registryMu.RLock()
	defer registryMu.RUnlock()
	s := make([]string, 0, len(registry))
	for k := range registry {
		s = append(s, k)
	}
	sort.Strings(s)
	return s
}

// ParseURI parses a backend URI and checks that its scheme is registered.
// Both "scheme://..." and "scheme:opaque" forms are accepted.
func ParseURI(raw string) (*url.URL, Opener, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("backend URI %q: %w", raw, err)
	}
	if u.Scheme == "" {
		return nil, nil, fmt.Errorf("backend URI %q has no scheme (known: %s)", raw, strings.Join(Schemes(), ", "))
	}
	registryMu.RLock()
	open, ok := registry[u.Scheme]
	registryMu.RUnlock()
	if !ok {
		return nil, nil, fmt.Errorf("backend URI %q: no backend for scheme %q in this build (known: %s)",
			raw, u.Scheme, strings.Join(Schemes(), ", "))
	}
	return u, open, nil
}

// Open opens the backend a URI names.
func Open(ctx context.Context, raw string, opts OpenOptions) (Signer, error) {
	u, open, err := ParseURI(raw)
	if err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return open(ctx, u, opts)
}

// Supports reports whether s can sign with alg.
func Supports(s Signer, alg Algorithm) bool {
	for _, a := range s.Algorithms() {
		if a == alg {
			return true
		}
	}
	return false
}
