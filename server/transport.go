package server

import (
	"context"
	"crypto/x509"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/tap"

	"github.com/signet-dev/signet/server/authz"
	"github.com/signet-dev/signet/server/config"
	"github.com/signet-dev/signet/server/telemetry"
)

// What the transport holds for any peer before its identity is known is
// bounded: a request's size on the wire and decompressed (grpc-go checks
// MaxRecvMsgSize against both, and stops its gzip decompressor one byte past
// it), streams per connection, connections, header bytes, and the time to
// finish a handshake. gzip is accepted: google.golang.org/grpc/encoding/gzip
// is registered process-wide by the OTLP gRPC exporter's import of it
// (otlptracegrpc/internal/otlpconfig), grpc-go offers no way to refuse a
// registered compressor per server, and the decompressed bound makes a
// gzip request cost no more than an uncompressed one.

// maxHeaderListSize bounds a gRPC request's headers (metadata): a traceparent
// and a few custom keys need a few hundred bytes; grpc-go's default is 16 MiB.
const maxHeaderListSize = 16 << 10

// grpcLimits are the gRPC server options that bound every peer.
func grpcLimits(l config.GRPCLimits) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(l.MaxRequestBytes),
		grpc.MaxConcurrentStreams(l.MaxConcurrentStreams),
		grpc.MaxHeaderListSize(maxHeaderListSize),
		grpc.ConnectionTimeout(l.HandshakeTimeout.D()),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: l.KeepaliveMinTime.D(), PermitWithoutStream: true}),
		// Idle connections go, so that connections left open do not hold
		// the connection limit; a peer that stops answering pings too.
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: l.MaxConnectionIdle.D(),
			Time: time.Minute, Timeout: 20 * time.Second}),
	}
}

// limitListener closes connections accepted beyond max open ones at once,
// rather than leaving them queued (golang.org/x/net/netutil's LimitListener
// blocks Accept, and a peer that holds the slots then holds every newcomer
// in the kernel's backlog without a word).
type limitListener struct {
	net.Listener
	max     int64
	open    atomic.Int64
	refused func()
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.open.Add(1) > l.max {
			l.open.Add(-1)
			_ = c.Close() // refused: nothing was read from it
			l.refused()
			continue
		}
		return &limitedConn{Conn: c, release: func() { l.open.Add(-1) }}, nil
	}
}

type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// authenticateTap establishes the caller's identity for SignerService and
// PeerService streams from the TLS connection's client certificate, in the transport,
// as the stream's headers arrive: a caller without a verified certificate
// is answered Unauthenticated before any of its request is read, let alone
// decoded. Health, reflection and the public key set need no identity.
// Refusals are counted and audited within the per-peer rate (authz's
// AuditRefusal). It runs on the connection's reader: it must not block.
func authenticateTap(a *authz.Authorizer, m *telemetry.Metrics) tap.ServerInHandle {
	return func(ctx context.Context, info *tap.Info) (context.Context, error) {
		if !needsCaller(info.FullMethodName) {
			return ctx, nil
		}
		var chain []*x509.Certificate
		p, _ := peer.FromContext(ctx)
		if p != nil {
			if tlsInfo, ok := p.AuthInfo.(credentials.TLSInfo); ok {
				chain = tlsInfo.State.PeerCertificates
			}
		}
		id, err := a.Authenticate(chain)
		if err != nil {
			countDenial(m, err)
			st := toStatus(ctx, nil, err)
			// No trace id: this caller's traceparent is its own say-so,
			// and no span has started yet anyway.
			rec := authz.Record{Caller: "unauthenticated", Peer: peerOf(ctx), RPC: info.FullMethodName,
				Outcome: "denied", Reason: st.Message()}
			recorded, aerr := a.AuditRefusal(rec, peerAddr(p))
			if aerr != nil {
				m.AuditFailed()
			} else if !recorded {
				m.AuditSummarized()
			}
			return nil, st.Err()
		}
		ctx = context.WithValue(ctx, callerKey{}, id)
		if len(chain) > 0 && a.MTLS() {
			// The leaf Authenticate verified, whose key the caller proved
			// it holds in the handshake: what a bound token is bound to.
			ctx = context.WithValue(ctx, clientCertKey{}, chain[0])
		}
		return ctx, nil
	}
}

// needsCaller reports whether method is of a service whose callers must
// be authenticated: SignerService, and PeerService (peers.go).
func needsCaller(method string) bool {
	return strings.HasPrefix(method, "/"+signerServiceName+"/") || strings.HasPrefix(method, "/"+peerServiceName+"/")
}

func peerAddr(p *peer.Peer) netip.Addr {
	if p == nil || p.Addr == nil {
		return netip.Addr{}
	}
	if ap, err := netip.ParseAddrPort(p.Addr.String()); err == nil {
		return ap.Addr()
	}
	return netip.Addr{}
}

// HTTP servers' limits: a client gets ReadHeaderTimeout to send its headers
// (a client trickling them a byte at a time is cut off), ReadTimeout for the
// whole request, WriteTimeout for the answer, and at most MaxHeaderBytes of
// headers. The admin listener writes for longer: a CPU profile or trace
// runs for up to maxPprofSeconds.
const (
	httpReadHeaderTimeout = 5 * time.Second
	httpReadTimeout       = 10 * time.Second
	httpWriteTimeout      = 30 * time.Second
	httpIdleTimeout       = 2 * time.Minute
	httpMaxHeaderBytes    = 16 << 10
	adminWriteTimeout     = maxPprofSeconds*time.Second + 30*time.Second
	maxPprofSeconds       = 60
)

func newHTTPServer(h http.Handler, writeTimeout time.Duration, log *slog.Logger) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: httpReadHeaderTimeout, ReadTimeout: httpReadTimeout,
		WriteTimeout: writeTimeout, IdleTimeout: httpIdleTimeout, MaxHeaderBytes: httpMaxHeaderBytes,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
}

// capSeconds refuses a pprof request whose seconds= (a CPU profile, a
// trace, a delta profile) is over maxPprofSeconds or not a number: each
// holds a connection, and a profile the runtime's profiler, that long.
func capSeconds(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if v := r.URL.Query().Get("seconds"); v != "" {
			s, err := strconv.ParseFloat(v, 64)
			if err != nil || !(s <= maxPprofSeconds) {
				http.Error(w, "seconds: want a number up to "+strconv.Itoa(maxPprofSeconds), http.StatusBadRequest)
				return
			}
		}
		h(w, r)
	}
}
