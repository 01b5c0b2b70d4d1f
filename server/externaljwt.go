package server

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
	externaljwtv1 "k8s.io/externaljwt/apis/v1"

	"github.com/signet-dev/signet/server/authz"
	"github.com/signet-dev/signet/server/config"
	"github.com/signet-dev/signet/server/jose"
	"github.com/signet-dev/signet/server/lifecycle"
)

// kubeSigner serves the Kubernetes ExternalJWTSigner API
// (k8s.io/externaljwt/apis/v1) for one key ring on a Unix socket:
// kube-apiserver signs its service-account tokens through Sign and serves
// the keys of FetchKeys as the cluster's JWKS. It is the only file of
// package server that knows the API, and it uses the key set only through
// Ring, Versions, Active, SignWith and Now.
type kubeSigner struct {
	externaljwtv1.UnimplementedExternalJWTSignerServer

	cfg  config.KubernetesSigner
	ks   *lifecycle.KeySet
	ring *lifecycle.Ring
	svc  *service
	log  *slog.Logger

	// keys is FetchKeys's answer, rebuilt when the ring's published kids
	// change (update, from the key set's OnChange): its data_timestamp is
	// when this replica first saw that set of keys.
	keysMu sync.Mutex
	keys   atomic.Pointer[externaljwtv1.FetchKeysResponse]
	// previous are the keys of previous_key_files, listed after the ring's.
	previous []*externaljwtv1.Key

	limitMu  sync.Mutex
	limiters map[uint32]*rate.Limiter // per admitted uid, with cfg.Rate
}

// kubeRPC names the ExternalJWTSigner RPCs in the audit log and metrics.
const kubeRPC = "ExternalJWTSigner/"

func newKubeSigner(cfg config.KubernetesSigner, ks *lifecycle.KeySet, svc *service, log *slog.Logger) (*kubeSigner, error) {
	r := ks.Ring(cfg.KeyRing)
	if r == nil {
		return nil, fmt.Errorf("kubernetes_signer.key_ring %q is not a configured key ring", cfg.KeyRing)
	}
	k := &kubeSigner{cfg: cfg, ks: ks, ring: r, svc: svc, log: log, limiters: map[uint32]*rate.Limiter{}}
	for _, f := range cfg.PreviousKeyFiles {
		key, err := previousKey(f)
		if err != nil {
			return nil, err
		}
		k.previous = append(k.previous, key)
	}
	if err := k.update(); err != nil {
		return nil, err
	}
	return k, nil
}

// published is the ring's versions that verifiers must know now (pending,
// active, retiring; not withheld), as FetchKeys lists them.
func (k *kubeSigner) published() []*lifecycle.Version {
	var out []*lifecycle.Version
	for _, v := range k.ks.Versions(k.ring) {
		if v.State.Published() && !v.Withheld {
			out = append(out, v)
		}
	}
	return out
}

// update rebuilds FetchKeys's answer if the published kids changed. It
// runs on every snapshot the key set installs, so the answer comes from
// the last snapshot: a backend outage leaves it as it was.
func (k *kubeSigner) update() error {
	k.keysMu.Lock()
	defer k.keysMu.Unlock()
	vs := k.published()
	if old := k.keys.Load(); old != nil && len(old.Keys) == len(vs)+len(k.previous) &&
		slices.EqualFunc(old.Keys[:len(vs)], vs, func(a *externaljwtv1.Key, v *lifecycle.Version) bool { return a.KeyId == v.Kid }) {
		return nil
	}
	resp := &externaljwtv1.FetchKeysResponse{DataTimestamp: timestamppb.New(k.ks.Now()),
		RefreshHintSeconds: refreshHint(k.ring.Schedule.RefreshInterval)}
	for _, v := range vs {
		der, err := x509.MarshalPKIXPublicKey(v.PublicKey)
		if err != nil {
			return fmt.Errorf("key ring %q version %s: the public key has no PKIX form: %w", k.ring.Name, v.ID, err)
		}
		resp.Keys = append(resp.Keys, &externaljwtv1.Key{KeyId: v.Kid, Key: der})
	}
	resp.Keys = append(resp.Keys, k.previous...)
	k.keys.Store(resp)
	return nil
}

// previousKey reads a previous_key_files entry: one PEM PKIX public key of
// a kind kube-apiserver verifies (RSA, ECDSA), with the kid kube-apiserver
// derives for a key file (base64url SHA-256 of the PKIX DER), which is what
// the tokens it signed carry.
func previousKey(path string) (*externaljwtv1.Key, error) {
	b, err := os.ReadFile(path) // #nosec G304 -- a file the operator names in the config
	if err != nil {
		return nil, fmt.Errorf("kubernetes_signer.previous_key_files: %w", err)
	}
	block, rest := pem.Decode(b)
	if block == nil || block.Type != "PUBLIC KEY" || len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("kubernetes_signer.previous_key_files: %s: want one PEM PUBLIC KEY block (the --service-account-key-file)", path)
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("kubernetes_signer.previous_key_files: %s: %w", path, err)
	}
	switch pub.(type) {
	case *rsa.PublicKey, *ecdsa.PublicKey:
	default:
		return nil, fmt.Errorf("kubernetes_signer.previous_key_files: %s: a %T; kube-apiserver verifies RSA and ECDSA keys", path, pub)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("kubernetes_signer.previous_key_files: %s: %w", path, err)
	}
	sum := sha256.Sum256(der)
	return &externaljwtv1.Key{KeyId: base64.RawURLEncoding.EncodeToString(sum[:]), Key: der}, nil
}

// refreshHint is refresh_interval in whole seconds, at least 1 (the API
// calls anything <= 0 a misconfiguration).
func refreshHint(d time.Duration) int64 {
	return max(1, int64((d+time.Second-1)/time.Second))
}

// FetchKeys returns every published version of the ring as PKIX DER with
// its kid, from the snapshot: never a backend call.
func (k *kubeSigner) FetchKeys(ctx context.Context, _ *externaljwtv1.FetchKeysRequest) (*externaljwtv1.FetchKeysResponse, error) {
	resp := k.keys.Load()
	if len(resp.GetKeys()) == 0 {
		// kube-apiserver refuses an empty answer and keeps its cache.
		return nil, status.Errorf(codes.Unavailable, "key ring %q publishes no key", k.ring.Name)
	}
	return resp, nil
}

// Metadata tells kube-apiserver the longest token Sign accepts.
func (k *kubeSigner) Metadata(context.Context, *externaljwtv1.MetadataRequest) (*externaljwtv1.MetadataResponse, error) {
	return &externaljwtv1.MetadataResponse{MaxTokenExpirationSeconds: int64(k.ring.Schedule.TokenMaxTTL / time.Second)}, nil
}

// Sign signs the claims kube-apiserver sends, exactly as encoded, once
// jose.CheckKubernetesClaims accepts them, with the ring's active version;
// the header is alg, kid and typ JWT. Every answer is audited with the
// caller's uid and gid; no signature leaves unaudited.
func (k *kubeSigner) Sign(ctx context.Context, req *externaljwtv1.SignJWTRequest) (*externaljwtv1.SignJWTResponse, error) {
	rec := authz.Record{KeyRing: k.ring.Name, RPC: kubeRPC + "Sign"}
	rec.Caller, rec.Peer = kubeCaller(ctx)
	claims, err := jose.CheckKubernetesClaims(req.GetClaims(), k.cfg.Issuer, k.ring.Schedule.TokenMaxTTL, k.ks.Now())
	if err != nil {
		return nil, k.refuse(ctx, rec, err)
	}
	rec.Sub, rec.Aud, rec.JTI, rec.Exp = claims.Subject, claims.Audience, claims.JTI, claims.Expiry.Unix()
	sum := sha256.Sum256(claims.Payload)
	rec.ClaimsSHA256 = hex.EncodeToString(sum[:])
	if err := k.allow(ctx); err != nil {
		return nil, k.refuse(ctx, rec, err)
	}
	v, err := k.ks.Active(k.ring)
	if err != nil {
		return nil, k.refuse(ctx, rec, err)
	}
	rec.Kid = v.Kid
	header := jose.Header(string(v.Algorithm), v.Kid, jose.DefaultTyp)
	input := make([]byte, 0, len(header)+1+len(req.GetClaims()))
	input = append(append(append(input, header...), '.'), req.GetClaims()...)
	sig, err := k.ks.SignWith(ctx, k.ring, v, input)
	if err != nil {
		return nil, k.refuse(ctx, rec, err)
	}
	rec.Outcome = "ok"
	if err := k.audit(rec); err != nil {
		return nil, k.svc.status(ctx, err) // fail closed: no token leaves unaudited
	}
	k.svc.metrics.TokenIssued(k.ring.Name, v.Algorithm)
	return &externaljwtv1.SignJWTResponse{Header: header, Signature: base64.RawURLEncoding.EncodeToString(sig)}, nil
}

// allow takes a token from the caller uid's bucket (kubernetes_signer.rate).
func (k *kubeSigner) allow(ctx context.Context) error {
	rc := k.cfg.Rate
	if rc == nil {
		return nil
	}
	uid := uint32(0)
	if a, ok := kubeAuth(ctx); ok {
		uid = a.UID
	}
	k.limitMu.Lock()
	l := k.limiters[uid] // bounded: only admitted uids get here
	if l == nil {
		l = rate.NewLimiter(rate.Limit(rc.PerSecond), rc.Burst)
		k.limiters[uid] = l
	}
	wait := authz.Take(l, k.ks.Now())
	k.limitMu.Unlock()
	if wait > 0 {
		return &authz.Error{Reason: authz.RateLimited, RetryAfter: wait,
			Msg: fmt.Sprintf("kubernetes_signer.rate: %v signatures per second (burst %d) for uid %d", rc.PerSecond, rc.Burst, uid)}
	}
	return nil
}

// refuse audits a Sign that produced no token and returns its status.
func (k *kubeSigner) refuse(ctx context.Context, rec authz.Record, err error) error {
	st := toStatus(ctx, k.log, err)
	rec.Outcome, rec.Reason = "error", st.Message()
	if authz.IsDenial(err) {
		rec.Outcome = "denied"
	}
	countDenial(k.svc.metrics, err)
	if aerr := k.audit(rec); aerr != nil {
		k.log.Error("a refused ExternalJWTSigner Sign is not in the audit log", "err", aerr)
	}
	return st.Err()
}

func (k *kubeSigner) audit(rec authz.Record) error {
	if !k.svc.authz.Auditing() {
		return nil
	}
	err := k.svc.authz.Audit(rec)
	if err != nil {
		k.svc.metrics.AuditFailed()
	}
	return err
}

// ---- the socket and its callers ----

// peerAuth is a connection's peer credentials, as the kernel reported them
// when it was accepted (SO_PEERCRED: the connecting process's at connect()).
type peerAuth struct {
	credentials.CommonAuthInfo
	UID, GID uint32
	PID      int32
}

func (peerAuth) AuthType() string { return "peercred" }

func kubeAuth(ctx context.Context) (peerAuth, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return peerAuth{}, false
	}
	a, ok := p.AuthInfo.(peerAuth)
	return a, ok
}

// kubeCaller is the audit log's caller and peer of a call on the socket.
func kubeCaller(ctx context.Context) (caller, peerDesc string) {
	a, ok := kubeAuth(ctx)
	if !ok {
		return "unix:unknown", "" // cannot happen: the handshake sets it
	}
	return unixCaller(a.UID, a.GID), "pid " + strconv.Itoa(int(a.PID))
}

func unixCaller(uid, gid uint32) string { return fmt.Sprintf("unix:uid=%d,gid=%d", uid, gid) }

// peerCreds are the socket's transport credentials: no encryption (a Unix
// socket never leaves the machine), and each connection admitted or
// refused by its peer's uid and gid before a byte of it is read. A refusal
// is audited, within a bounded rate: any local user who can reach the
// socket could otherwise fill the audit log.
type peerCreds struct {
	admit   func(uid, gid uint32) bool
	refused func(a peerAuth)
}

var errNotAdmitted = errors.New("peer credentials not admitted by kubernetes_signer.allowed_uids/allowed_gids")

func (p *peerCreds) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return nil, nil, fmt.Errorf("kubernetes_signer: a %T is not a Unix socket connection", c)
	}
	a, err := peerCredentials(uc)
	if err != nil {
		return nil, nil, err
	}
	if !p.admit(a.UID, a.GID) {
		p.refused(a)
		return nil, nil, errNotAdmitted
	}
	a.CommonAuthInfo = credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}
	return c, a, nil
}

func (p *peerCreds) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("peerCreds are server credentials")
}
func (p *peerCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "peercred"}
}
func (p *peerCreds) Clone() credentials.TransportCredentials { c := *p; return &c }

// OverrideServerName is part of the interface; a Unix socket has no server name.
func (p *peerCreds) OverrideServerName(string) error { return nil }

// unixPeer is the refusal rate's key for every local peer.
var unixPeer = netip.IPv4Unspecified()

// admit reports whether the config lets uid or gid connect.
func (k *kubeSigner) admit(uid, gid uint32) bool {
	return slices.Contains(k.cfg.AllowedUIDs, uid) || slices.Contains(k.cfg.AllowedGIDs, gid)
}

// refused audits a connection refused for its peer credentials, within the
// refusal rate (all local peers share one bucket: they have no address).
func (k *kubeSigner) refused(a peerAuth) {
	k.svc.metrics.ConnectionRefused()
	k.log.Warn("kubernetes_signer: connection refused: its uid and gid are not admitted", "uid", a.UID, "gid", a.GID, "pid", a.PID)
	rec := authz.Record{RPC: kubeRPC + "connect", Caller: unixCaller(a.UID, a.GID), Peer: "pid " + strconv.Itoa(int(a.PID)),
		KeyRing: k.ring.Name, Outcome: "denied", Reason: errNotAdmitted.Error()}
	if _, err := k.svc.authz.AuditRefusal(rec, unixPeer); err != nil {
		k.svc.metrics.AuditFailed()
		k.log.Error("a refused kubernetes_signer connection is not in the audit log", "err", err)
	}
}

// listenUnix creates the socket at path, owner-only (0600) from the moment
// it exists: the umask is narrowed around bind, since a chmod after it would
// leave a moment in which anyone could connect. A socket left by an earlier
// run is replaced; any other file is not. The directory must not let other
// users replace the socket (writable by group or others without the sticky
// bit), or one of them could put their own signer in its place.
func listenUnix(path string) (*net.UnixListener, error) {
	dir := filepath.Dir(path)
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("kubernetes_signer.socket: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("kubernetes_signer.socket: %s is not a directory", dir)
	}
	if m := st.Mode(); m.Perm()&0o022 != 0 && m&os.ModeSticky == 0 {
		return nil, fmt.Errorf("kubernetes_signer.socket: %s is writable by other users (%v): they could replace the socket", dir, m.Perm())
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("kubernetes_signer.socket: %s exists and is not a socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("kubernetes_signer.socket: removing the previous socket: %w", err)
		}
	}
	var l *net.UnixListener
	ownerOnly(func() { l, err = net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"}) })
	if err != nil {
		return nil, fmt.Errorf("kubernetes_signer.socket: %w", err)
	}
	l.SetUnlinkOnClose(true)
	if err := os.Chmod(path, 0o600); err != nil { // whatever the umask did, owner-only
		_ = l.Close()
		return nil, fmt.Errorf("kubernetes_signer.socket: %w", err)
	}
	return l, nil
}

// grpcServer is the socket's gRPC server: the same bounds and interceptors
// as the TCP listener's, the peer credentials instead of TLS, and only the
// ExternalJWTSigner service.
func (k *kubeSigner) grpcServer(s *Server) *grpc.Server {
	opts := append(grpcLimits(s.cfg.GRPC.Limits),
		grpc.Creds(&peerCreds{admit: k.admit, refused: k.refused}),
		grpc.ForceServerCodecV2(newRequestCodec()),
		grpc.ChainUnaryInterceptor(recoverUnary(s.log), s.metrics.GRPC.UnaryServerInterceptor(), rejectMalformed, logUnary(s.log)),
	)
	gs := grpc.NewServer(opts...)
	externaljwtv1.RegisterExternalJWTSignerServer(gs, k)
	return gs
}
