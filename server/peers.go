package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/signet-dev/signet/backends"
	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
	"github.com/signet-dev/signet/server/authz"
	"github.com/signet-dev/signet/server/config"
	"github.com/signet-dev/signet/server/keystate"
	"github.com/signet-dev/signet/server/lifecycle"
)

var peerServiceName = signetv1.PeerService_ServiceDesc.ServiceName

// keyState keeps the published key set outside the process: it renders
// the snapshot document after every install (OnChange), writes it to
// state_dir when its content changed, and answers PeerService with it; at
// start-up it is the key set's Fallback for a ring whose backend does not
// answer: the disk snapshot first, else the peers'.
type keyState struct {
	cfg      config.Config
	log      *slog.Logger
	now      func() time.Time
	backends map[string]string // ring name → keystate.BackendID of its backend URI
	file     *keystate.File    // nil without state_dir
	peers    authz.Peers

	mu   sync.Mutex      // one render and save at a time, so that an older rendering never overwrites a newer one
	last []keystate.Ring // guarded by mu: the rings of the last rendering (or of the file loaded)
	doc  atomic.Pointer[[]byte]

	// What start-up found, loaded once: the disk snapshot, the peers'.
	diskOnce  sync.Once
	disk      []keystate.Ring
	diskErr   error
	peersOnce sync.Once
	fromPeers []peerRings
	peersErr  error
}

// peerRings is one peer's answer.
type peerRings struct {
	source string
	rings  []keystate.Ring
}

func newKeyState(cfg config.Config, log *slog.Logger, now func() time.Time) (*keyState, error) {
	k := &keyState{cfg: cfg, log: log, now: now, backends: map[string]string{}}
	if k.now == nil {
		k.now = time.Now
	}
	for _, rc := range cfg.KeyRings {
		k.backends[rc.Name] = keystate.BackendID(rc.Backend)
	}
	if cfg.StateDir != "" {
		st, err := os.Stat(cfg.StateDir)
		if err != nil {
			return nil, fmt.Errorf("state_dir: %w", err)
		}
		if !st.IsDir() {
			return nil, fmt.Errorf("state_dir %q is not a directory", cfg.StateDir)
		}
		k.file = keystate.NewFile(cfg.StateDir)
	}
	if cfg.Peers.Enabled() {
		var err error
		if k.peers, err = authz.ParsePeers(cfg.Peers.Identities); err != nil {
			return nil, err
		}
	}
	return k, nil
}

// save renders the key set's snapshot and writes it to state_dir if it
// changed. Called on every install (OnChange) and once after New.
func (k *keyState) save(ks *lifecycle.KeySet) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var rings []keystate.Ring
	for _, s := range ks.Saved() {
		rings = append(rings, keystate.Ring{Name: s.Name, Algorithm: s.Algorithm, Backend: k.backends[s.Name],
			ReadAt: s.ReadAt, Versions: s.Versions})
	}
	rings = keystate.KeepReadTimes(k.last, rings)
	data, err := keystate.Encode(rings)
	if err != nil {
		k.log.Error("cannot render the key set snapshot", "err", err)
		return
	}
	k.last = rings
	k.doc.Store(&data)
	if k.file == nil {
		return
	}
	if wrote, err := k.file.Save(data); err != nil {
		k.log.Error("cannot write the key set snapshot to state_dir; a restart while a backend does not answer "+
			"will need the peers", "path", k.file.Path(), "err", err)
	} else if wrote {
		k.log.Debug("wrote the key set snapshot", "path", k.file.Path(), "bytes", len(data))
	}
}

// fallback is the key set's Fallback: the ring's key set from the disk
// snapshot, else from the peer that read it last.
func (k *keyState) fallback(ctx context.Context, ring string, alg backends.Algorithm) (lifecycle.Seed, error) {
	var why []string
	if k.file == nil {
		why = append(why, "no state_dir")
	} else {
		k.diskOnce.Do(func() {
			k.disk, k.diskErr = k.file.Load()
			if k.diskErr != nil {
				k.log.Error("the key set snapshot in state_dir is not used", "path", k.file.Path(), "err", k.diskErr)
			}
			k.mu.Lock()
			k.last = k.disk
			k.mu.Unlock()
		})
		switch r, miss, ok := keystate.Find(k.disk, ring, alg, k.backends[ring]); {
		case k.diskErr != nil:
			why = append(why, "state_dir: "+k.diskErr.Error())
		case k.disk == nil:
			why = append(why, "state_dir holds no snapshot")
		case ok:
			return lifecycle.Seed{Versions: r.Versions, ReadAt: r.ReadAt, Source: "state_dir " + k.file.Path()}, nil
		default:
			why = append(why, "state_dir: "+miss)
		}
	}
	if len(k.cfg.Peers.Addresses) == 0 {
		why = append(why, "no peers.addresses")
		return lifecycle.Seed{}, errors.New(strings.Join(why, "; "))
	}
	k.peersOnce.Do(func() { k.fromPeers, k.peersErr = k.fetchPeers(ctx) })
	var best lifecycle.Seed
	for _, p := range k.fromPeers {
		if r, _, ok := keystate.Find(p.rings, ring, alg, k.backends[ring]); ok && r.ReadAt.After(best.ReadAt) {
			best = lifecycle.Seed{Versions: r.Versions, ReadAt: r.ReadAt, Source: p.source}
		}
	}
	if best.Source != "" {
		return best, nil
	}
	switch {
	case k.peersErr != nil:
		why = append(why, "peers: "+k.peersErr.Error())
	default:
		why = append(why, fmt.Sprintf("none of the %d peers that answered has key ring %q on this backend", len(k.fromPeers), ring))
	}
	return lifecycle.Seed{}, errors.New(strings.Join(why, "; "))
}

// fetchPeers asks every address of every configured peer for its snapshot,
// at once, within peers.timeout, over mTLS: the peer's certificate must
// verify against the peer CA and name one of peers.identities, and this
// replica presents its own. It returns the answers that parsed; the error
// says why none did.
func (k *keyState) fetchPeers(ctx context.Context) ([]peerRings, error) {
	ctx, cancel := context.WithTimeout(ctx, k.cfg.Peers.Timeout.D())
	defer cancel()
	roots, err := loadPool(k.cfg.PeerCA())
	if err != nil {
		return nil, err
	}
	// This replica's gRPC certificate (read here: it asks only at start-up).
	cert, err := tls.LoadX509KeyPair(k.cfg.GRPC.TLS.CertFile, k.cfg.GRPC.TLS.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("grpc.tls: %w", err)
	}
	var targets []string
	var errs []error
	for _, a := range k.cfg.Peers.Addresses {
		host, port, _ := net.SplitHostPort(a) // validated
		ips, err := net.DefaultResolver.LookupHost(ctx, host)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", a, err))
			continue
		}
		for _, ip := range ips {
			if t := net.JoinHostPort(ip, port); !slices.Contains(targets, t) {
				targets = append(targets, t)
			}
		}
	}
	type answer struct {
		p   peerRings
		err error
	}
	answers := make(chan answer, len(targets))
	for _, t := range targets {
		go func() {
			p, err := k.fetchPeer(ctx, t, roots, &cert)
			answers <- answer{p, err}
		}()
	}
	var out []peerRings
	for range targets {
		a := <-answers
		if a.err != nil {
			errs = append(errs, a.err)
			continue
		}
		out = append(out, a.p)
	}
	for _, e := range errs {
		k.log.Warn("a peer did not give its key set snapshot", "err", e)
	}
	if len(out) == 0 {
		if len(errs) == 0 {
			errs = append(errs, errors.New("the peer addresses resolve to nothing"))
		}
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// fetchPeer asks one peer address.
func (k *keyState) fetchPeer(ctx context.Context, target string, roots *x509.CertPool, cert *tls.Certificate) (peerRings, error) {
	var peerID atomic.Value
	tc := &tls.Config{
		MinVersion: tls.VersionTLS13,
		// The peer is named by its certificate's identity, not by a host
		// name (the addresses are a headless Service's pod IPs): the chain
		// is verified against the peer CA and the identity checked in
		// VerifyConnection, which fails the handshake otherwise.
		InsecureSkipVerify: true, // #nosec G402 -- verified in VerifyConnection
		VerifyConnection: func(cs tls.ConnectionState) error {
			id, err := k.peers.VerifyServer(cs.PeerCertificates, roots, k.now())
			peerID.Store(id)
			return err
		},
		Certificates: []tls.Certificate{*cert},
	}
	conn, err := grpc.NewClient("passthrough:///"+target, grpc.WithTransportCredentials(credentials.NewTLS(tc)),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(keystate.MaxBytes+1024)))
	if err != nil {
		return peerRings{}, fmt.Errorf("peer %s: %w", target, err)
	}
	defer conn.Close()
	resp, err := signetv1.NewPeerServiceClient(conn).GetKeySetSnapshot(ctx, &signetv1.GetKeySetSnapshotRequest{})
	if err != nil {
		return peerRings{}, fmt.Errorf("peer %s: %w", target, err)
	}
	rings, err := keystate.Decode(resp.GetSnapshot())
	if err != nil {
		return peerRings{}, fmt.Errorf("peer %s: %w", target, err)
	}
	id, _ := peerID.Load().(string)
	return peerRings{source: fmt.Sprintf("peer %s (%s)", target, id), rings: rings}, nil
}

func loadPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file) // #nosec G304 -- the operator's configured CA file
	if err != nil {
		return nil, fmt.Errorf("peers.ca_file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("peers.ca_file %s holds no PEM certificate", file)
	}
	return pool, nil
}

// peerService answers PeerService. Its caller was authenticated in the
// transport (authenticateTap) like a SignerService caller; here it must
// be a peer.
type peerService struct {
	signetv1.UnimplementedPeerServiceServer
	state *keyState
	log   *slog.Logger
}

func (p *peerService) GetKeySetSnapshot(ctx context.Context, _ *signetv1.GetKeySetSnapshotRequest) (*signetv1.GetKeySetSnapshotResponse, error) {
	caller := callerOf(ctx)
	if !p.state.peers.Allows(caller) {
		p.log.Warn("refused a key set snapshot to a caller that is not a peer", "caller", caller, "peer", peerOf(ctx))
		return nil, status.Errorf(codes.PermissionDenied, "%q is not one of peers.identities", caller)
	}
	doc := p.state.doc.Load()
	if doc == nil {
		return nil, status.Error(codes.Unavailable, "no key set snapshot yet")
	}
	p.log.Info("gave the key set snapshot to a peer", "caller", caller, "peer", peerOf(ctx), "bytes", len(*doc))
	return &signetv1.GetKeySetSnapshotResponse{Snapshot: *doc}, nil
}
