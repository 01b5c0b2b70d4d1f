// Package gcpkmstest is a Google Cloud KMS look-alike for tests: a gRPC
// server on 127.0.0.1 implementing google.cloud.kms.v1.KeyManagementService
// from Google's own generated types (cloud.google.com/go/kms/apiv1/kmspb),
// over TLS, that the official Go client (kms.NewKeyManagementClient) talks to
// unchanged with Application Default Credentials (Env). NOT FOR PRODUCTION:
// keys live in process memory.
//
// What it implements follows Google's documentation of the API:
//
//   - key rings, CryptoKeys (purpose ASYMMETRIC_SIGN, a version template,
//     labels, skip_initial_version_creation) and CryptoKeyVersions, named
//     projects/P/locations/L/keyRings/R/cryptoKeys/K/cryptoKeyVersions/N with
//     N = 1, 2, 3, ... in creation order; create_time and generate_time;
//   - the version state machine: a new version is PENDING_GENERATION (it may
//     not be used, enabled, disabled or destroyed) until the service marks it
//     ENABLED (after PendingFor); UpdateCryptoKeyVersion (update_mask
//     "state") moves ENABLED <-> DISABLED; DestroyCryptoKeyVersion moves
//     ENABLED or DISABLED to DESTROY_SCHEDULED with a destroy_time;
//   - AsymmetricSign over a digest (EC and RSA algorithms) or over data
//     (EC_SIGN_ED25519), with digest_crc32c/data_crc32c checked and
//     signature_crc32c, verified_digest_crc32c/verified_data_crc32c and name
//     in the answer; only an ENABLED version signs (FAILED_PRECONDITION
//     "... is not enabled, current state is: DISABLED.");
//   - GetPublicKey as PEM with pem_crc32c, for ENABLED versions only;
//     FAILED_PRECONDITION ("key version ... is not enabled") for a version
//     in any other state, DISABLED and DESTROY_SCHEDULED included;
//   - ListCryptoKeyVersions with page_size/page_token;
//   - error codes: NOT_FOUND, ALREADY_EXISTS, INVALID_ARGUMENT,
//     FAILED_PRECONDITION, PERMISSION_DENIED naming the permission ("Permission
//     'cloudkms.cryptoKeyVersions.useToSign' denied on resource '...' (or it
//     may not exist)."), UNAUTHENTICATED without a valid bearer token.
//
// Checked against Google's kms-integrations repository, whose fakekms is
// held to the real service by contract tests that also run against Cloud
// KMS (fakekms/contract/*_test.go; read, not copied):
//
//   - GetPublicKey on a DISABLED version: FAILED_PRECONDITION
//     (get_public_key_test.go, TestGetPublicKeyDisabled). This server used
//     to return the key, which hid a replica failing to start after a
//     revocation;
//   - AsymmetricSign on a DISABLED version: FAILED_PRECONDITION
//     (asymmetric_sign_test.go, TestAsymmetricSignDisabled);
//   - DestroyCryptoKeyVersion of an ENABLED or a DISABLED version answers
//     it DESTROY_SCHEDULED with a destroy_time; of a version already
//     scheduled: FAILED_PRECONDITION (destroy_crypto_key_version_test.go);
//   - UpdateCryptoKeyVersion: ENABLED <-> DISABLED both ways; no update
//     mask, or a state other than ENABLED/DISABLED: INVALID_ARGUMENT
//     (update_crypto_key_version_test.go);
//   - ListCryptoKeyVersions lists a key's versions in creation order
//     (list_crypto_key_versions_test.go, TestListCryptoKeyVersions); the
//     contract tests use no filter, and this server refuses filter and
//     order_by rather than ignore them (without a filter the API reference
//     lists versions in every state, destroyed ones included);
//   - NOT_FOUND for an unknown version, INVALID_ARGUMENT for a malformed
//     name (the *NotFound and *MalformedName cases of each file).
//
// Not covered by a contract test, from Google's documentation ("Key
// version states"): UpdateCryptoKeyVersion of a DESTROY_SCHEDULED or
// DESTROYED version is FAILED_PRECONDITION here (only RestoreCryptoKeyVersion
// brings one back, as DISABLED).
//
// Faults a test can inject: Deny a permission, FailNext a method with a
// code (UNAVAILABLE, RESOURCE_EXHAUSTED, ...), CorruptSignCRC (a
// signature_crc32c that does not match, as a corrupted answer would carry),
// HoldCreates (let several CreateCryptoKeyVersion calls meet before any
// runs, to force a race), BeforeNext (another client's change between two
// calls, e.g. a version disabled between its listing and GetPublicKey),
// HideFromNextList (a listing that lags behind).
package gcpkmstest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"hash/crc32"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"cloud.google.com/go/kms/apiv1/kmspb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/signet-dev/signet/internal/testtls"
)

// KeyRing is the key ring every server starts with.
const KeyRing = "projects/signet-test/locations/global/keyRings/signet"

// Server is a running fake Cloud KMS.
type Server struct {
	kmspb.UnimplementedKeyManagementServiceServer

	// Addr is host:port of the TLS gRPC listener, for the client's endpoint.
	Addr string
	// CorruptSignCRC makes the next N AsymmetricSign answers carry a
	// signature_crc32c that does not match the signature.
	CorruptSignCRC atomic.Int64

	lis net.Listener
	srv *grpc.Server

	mu         sync.Mutex
	pendingFor time.Duration
	keyRings   map[string]time.Time
	keys       map[string]*cryptoKey
	calls      map[string]int
	denied     map[string]bool
	fail       map[string][]codes.Code
	before     map[string]func()
	hidden     map[string]bool // versions the next ListCryptoKeyVersions leaves out
	hold       *holdGroup
	lose       map[string]bool // methods whose next call loses its answer (one between them)
	lost       int
}

type cryptoKey struct {
	pb       *kmspb.CryptoKey
	versions []*version
}

type version struct {
	pb      *kmspb.CryptoKeyVersion
	readyAt time.Time
	priv    crypto.Signer
}

// holdGroup lets n CreateCryptoKeyVersion calls wait for each other.
type holdGroup struct {
	n       int
	arrived int
	all     chan struct{}
}

// Start starts a fake Cloud KMS on a loopback port with the key ring
// KeyRing; call Close when done. New versions are ENABLED 20ms after they
// are created (SetPendingFor changes it).
func Start() *Server {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	s := &Server{Addr: lis.Addr().String(), lis: lis, pendingFor: 20 * time.Millisecond,
		keyRings: map[string]time.Time{KeyRing: time.Now()}, keys: map[string]*cryptoKey{},
		calls: map[string]int{}, denied: map[string]bool{}, fail: map[string][]codes.Code{}, before: map[string]func(){},
		hidden: map[string]bool{}}
	s.srv = grpc.NewServer(grpc.Creds(credentials.NewTLS(testtls.ServerConfig())),
		grpc.ChainUnaryInterceptor(s.count, s.authenticate, s.faults))
	kmspb.RegisterKeyManagementServiceServer(s.srv, s)
	go func() { _ = s.srv.Serve(lis) }()
	return s
}

// Close stops the server at once; clients then get UNAVAILABLE.
func (s *Server) Close() { s.srv.Stop() }

// SetPendingFor sets how long versions created from now on stay
// PENDING_GENERATION.
func (s *Server) SetPendingFor(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pendingFor = d
}

// Calls reports how many times a method (e.g. "AsymmetricSign") was called.
func (s *Server) Calls(method string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[method]
}

// Deny makes calls needing permission (e.g.
// "cloudkms.cryptoKeyVersions.useToSign") fail with PERMISSION_DENIED;
// allow=true grants it again.
func (s *Server) Deny(permission string, deny bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.denied[permission] = deny
}

// FailNext makes the next n calls of method fail with code.
func (s *Server) FailNext(method string, code codes.Code, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.fail[method] = append(s.fail[method], code)
	}
}

// BeforeNext runs f once, just before the next call of method is
// served: another client's change landing between two calls of one
// reader (a version disabled between its listing and GetPublicKey).
func (s *Server) BeforeNext(method string, f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.before[method] = f
}

// LoseNext makes the next call of any of the methods take effect and then
// fail with UNAVAILABLE, as a connection lost after the server acted
// does: the client never learns what the call did. It fires once.
func (s *Server) LoseNext(methods ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lose = map[string]bool{}
	for _, m := range methods {
		s.lose[m] = true
	}
}

// Lost is how many answers LoseNext has lost.
func (s *Server) Lost() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lost
}

// HideFromNextList makes the next ListCryptoKeyVersions leave out the
// named version, whatever its state: a listing that lags (or a page lost),
// which a reader must not take for a removal.
func (s *Server) HideFromNextList(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hidden[name] = true
}

// HoldCreates makes the next n CreateCryptoKeyVersion calls wait until all
// n have arrived, so that n replicas that each checked the newest version
// create theirs together.
func (s *Server) HoldCreates(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hold = &holdGroup{n: n, all: make(chan struct{})}
}

// Version is what the fake holds for a CryptoKeyVersion.
type Version struct {
	Name      string
	State     kmspb.CryptoKeyVersion_CryptoKeyVersionState
	Algorithm kmspb.CryptoKeyVersion_CryptoKeyVersionAlgorithm
	Created   time.Time
}

// Versions lists a CryptoKey's versions, oldest first, as they are now.
func (s *Server) Versions(key string) []Version {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := s.keys[key]
	if k == nil {
		return nil
	}
	var out []Version
	for _, v := range k.versions {
		pb := s.refresh(v)
		out = append(out, Version{Name: pb.GetName(), State: pb.GetState(), Algorithm: pb.GetAlgorithm(), Created: pb.GetCreateTime().AsTime()})
	}
	return out
}

// SetState sets a version's state by hand, as an operator's console would.
func (s *Server) SetState(name string, state kmspb.CryptoKeyVersion_CryptoKeyVersionState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v := s.findVersion(name); v != nil {
		v.pb.State = state
	}
}

func method(full string) string { return full[strings.LastIndex(full, "/")+1:] }

func (s *Server) count(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	s.mu.Lock()
	s.calls[method(info.FullMethod)]++
	s.mu.Unlock()
	return handler(ctx, req)
}

// permissions is the IAM permission each method needs, from the API
// reference.
var permissions = map[string]string{
	"GetKeyRing": "cloudkms.keyRings.get", "CreateCryptoKey": "cloudkms.cryptoKeys.create",
	"GetCryptoKey": "cloudkms.cryptoKeys.get", "ListCryptoKeyVersions": "cloudkms.cryptoKeyVersions.list",
	"GetCryptoKeyVersion": "cloudkms.cryptoKeyVersions.get", "CreateCryptoKeyVersion": "cloudkms.cryptoKeyVersions.create",
	"UpdateCryptoKeyVersion": "cloudkms.cryptoKeyVersions.update", "DestroyCryptoKeyVersion": "cloudkms.cryptoKeyVersions.destroy",
	"GetPublicKey": "cloudkms.cryptoKeyVersions.viewPublicKey", "AsymmetricSign": "cloudkms.cryptoKeyVersions.useToSign",
}

// resourceOf is the resource a request names, for error messages.
func resourceOf(req any) string {
	switch r := req.(type) {
	case interface{ GetName() string }:
		return r.GetName()
	case interface{ GetParent() string }:
		return r.GetParent()
	case *kmspb.UpdateCryptoKeyVersionRequest:
		return r.GetCryptoKeyVersion().GetName()
	}
	return ""
}

func (s *Server) faults(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	m := method(info.FullMethod)
	s.mu.Lock()
	perm, denied := permissions[m], false
	if perm != "" {
		denied = s.denied[perm]
	}
	var code codes.Code
	if q := s.fail[m]; len(q) > 0 {
		code, s.fail[m] = q[0], q[1:]
	}
	before := s.before[m]
	delete(s.before, m)
	lose := s.lose[m] && !denied && code == codes.OK
	if lose {
		s.lose = nil
	}
	s.mu.Unlock()
	if before != nil {
		before()
	}
	switch {
	case denied:
		return nil, status.Errorf(codes.PermissionDenied, "Permission '%s' denied on resource '%s' (or it may not exist).", perm, resourceOf(req))
	case code != codes.OK:
		return nil, status.Errorf(code, "injected %s", code)
	}
	resp, err := handler(ctx, req)
	if lose && err == nil {
		s.mu.Lock()
		s.lost++
		s.mu.Unlock()
		return nil, status.Error(codes.Unavailable, "connection lost after the call took effect")
	}
	return resp, err
}

var (
	keyIDPattern     = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,63}$`)
	keyNamePattern   = regexp.MustCompile(`^(projects/[^/]+/locations/[^/]+/keyRings/[^/]+)/cryptoKeys/[a-zA-Z0-9_-]{1,63}$`)
	versionPattern   = regexp.MustCompile(`^(projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[a-zA-Z0-9_-]{1,63})/cryptoKeyVersions/([1-9][0-9]*)$`)
	errNameMalformed = func(name string) error {
		return status.Errorf(codes.InvalidArgument, "Resource name [%s] does not match any known resource name pattern.", name)
	}
)

func notFound(name string) error { return status.Errorf(codes.NotFound, "%s not found.", name) }

// refresh completes a pending generation whose time has come and returns
// the version's message.
func (s *Server) refresh(v *version) *kmspb.CryptoKeyVersion {
	if v.pb.State == kmspb.CryptoKeyVersion_PENDING_GENERATION && !time.Now().Before(v.readyAt) {
		v.pb.State = kmspb.CryptoKeyVersion_ENABLED
		v.pb.GenerateTime = timestamppb.New(v.readyAt)
	}
	return v.pb
}

func (s *Server) findVersion(name string) *version {
	m := versionPattern.FindStringSubmatch(name)
	if m == nil {
		return nil
	}
	k := s.keys[m[1]]
	if k == nil {
		return nil
	}
	n, err := strconv.Atoi(m[2])
	if err != nil || n > len(k.versions) {
		return nil
	}
	return k.versions[n-1]
}

// lookupVersion finds a version by name, with Google's errors.
func (s *Server) lookupVersion(name string) (*cryptoKey, *version, error) {
	m := versionPattern.FindStringSubmatch(name)
	if m == nil {
		return nil, nil, errNameMalformed(name)
	}
	k := s.keys[m[1]]
	v := s.findVersion(name)
	if k == nil || v == nil {
		return nil, nil, notFound(name)
	}
	s.refresh(v)
	return k, v, nil
}

func clone[T proto.Message](m T) T { return proto.Clone(m).(T) }

// GetCryptoKey returns a CryptoKey.
func (s *Server) GetCryptoKey(_ context.Context, req *kmspb.GetCryptoKeyRequest) (*kmspb.CryptoKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !keyNamePattern.MatchString(req.GetName()) {
		return nil, errNameMalformed(req.GetName())
	}
	k := s.keys[req.GetName()]
	if k == nil {
		return nil, notFound(req.GetName())
	}
	return clone(k.pb), nil
}

// CreateCryptoKey creates an ASYMMETRIC_SIGN key and, unless told not to,
// its first version.
func (s *Server) CreateCryptoKey(_ context.Context, req *kmspb.CreateCryptoKeyRequest) (*kmspb.CryptoKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.keyRings[req.GetParent()]; !ok {
		return nil, notFound(req.GetParent())
	}
	if !keyIDPattern.MatchString(req.GetCryptoKeyId()) {
		return nil, status.Errorf(codes.InvalidArgument, "Invalid crypto key id %q: must match [a-zA-Z0-9_-]{1,63}.", req.GetCryptoKeyId())
	}
	in := req.GetCryptoKey()
	if in.GetPurpose() != kmspb.CryptoKey_ASYMMETRIC_SIGN {
		return nil, status.Errorf(codes.InvalidArgument, "this test server creates only ASYMMETRIC_SIGN keys, not %s", in.GetPurpose())
	}
	tmpl := in.GetVersionTemplate()
	if _, err := newKeyPair(tmpl.GetAlgorithm()); err != nil {
		return nil, err
	}
	name := req.GetParent() + "/cryptoKeys/" + req.GetCryptoKeyId()
	if _, ok := s.keys[name]; ok {
		return nil, status.Errorf(codes.AlreadyExists, "%s already exists.", name)
	}
	level := tmpl.GetProtectionLevel()
	if level == kmspb.ProtectionLevel_PROTECTION_LEVEL_UNSPECIFIED {
		level = kmspb.ProtectionLevel_SOFTWARE
	}
	pb := &kmspb.CryptoKey{Name: name, Purpose: kmspb.CryptoKey_ASYMMETRIC_SIGN, CreateTime: timestamppb.Now(), Labels: in.GetLabels(),
		VersionTemplate:          &kmspb.CryptoKeyVersionTemplate{Algorithm: tmpl.GetAlgorithm(), ProtectionLevel: level},
		DestroyScheduledDuration: durationpb.New(30 * 24 * time.Hour)}
	if d := in.GetDestroyScheduledDuration(); d != nil {
		pb.DestroyScheduledDuration = d
	}
	k := &cryptoKey{pb: pb}
	s.keys[name] = k
	if !req.GetSkipInitialVersionCreation() {
		if _, err := s.newVersion(k); err != nil {
			return nil, err
		}
	}
	return clone(pb), nil
}

// newVersion makes a version of k from its template; it is pending until
// pendingFor has passed.
func (s *Server) newVersion(k *cryptoKey) (*version, error) {
	alg := k.pb.GetVersionTemplate().GetAlgorithm()
	priv, err := newKeyPair(alg)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	v := &version{priv: priv, readyAt: now.Add(s.pendingFor), pb: &kmspb.CryptoKeyVersion{
		Name:  fmt.Sprintf("%s/cryptoKeyVersions/%d", k.pb.GetName(), len(k.versions)+1),
		State: kmspb.CryptoKeyVersion_PENDING_GENERATION, ProtectionLevel: k.pb.GetVersionTemplate().GetProtectionLevel(),
		Algorithm: alg, CreateTime: timestamppb.New(now)}}
	k.versions = append(k.versions, v)
	s.refresh(v)
	return v, nil
}

// CreateCryptoKeyVersion creates a version from the key's template.
func (s *Server) CreateCryptoKeyVersion(ctx context.Context, req *kmspb.CreateCryptoKeyVersionRequest) (*kmspb.CryptoKeyVersion, error) {
	s.mu.Lock()
	h := s.hold
	if h != nil {
		if h.arrived++; h.arrived == h.n {
			close(h.all)
			s.hold = nil
		}
	}
	s.mu.Unlock()
	if h != nil {
		select {
		case <-h.all:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !keyNamePattern.MatchString(req.GetParent()) {
		return nil, errNameMalformed(req.GetParent())
	}
	k := s.keys[req.GetParent()]
	if k == nil {
		return nil, notFound(req.GetParent())
	}
	v, err := s.newVersion(k)
	if err != nil {
		return nil, err
	}
	return clone(v.pb), nil
}

// GetCryptoKeyVersion returns a version.
func (s *Server) GetCryptoKeyVersion(_ context.Context, req *kmspb.GetCryptoKeyVersionRequest) (*kmspb.CryptoKeyVersion, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, v, err := s.lookupVersion(req.GetName())
	if err != nil {
		return nil, err
	}
	return clone(v.pb), nil
}

// ListCryptoKeyVersions lists a key's versions in creation order, a page at
// a time.
func (s *Server) ListCryptoKeyVersions(_ context.Context, req *kmspb.ListCryptoKeyVersionsRequest) (*kmspb.ListCryptoKeyVersionsResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !keyNamePattern.MatchString(req.GetParent()) {
		return nil, errNameMalformed(req.GetParent())
	}
	if req.GetFilter() != "" || req.GetOrderBy() != "" {
		return nil, status.Error(codes.InvalidArgument, "this test server supports neither filter nor order_by")
	}
	k := s.keys[req.GetParent()]
	if k == nil {
		return nil, notFound(req.GetParent())
	}
	size := int(req.GetPageSize())
	if size <= 0 || size > 1000 {
		size = 1000
	}
	start := 0
	if t := req.GetPageToken(); t != "" {
		n, err := strconv.Atoi(t)
		if err != nil || n < 0 || n > len(k.versions) {
			return nil, status.Errorf(codes.InvalidArgument, "invalid page token %q", t)
		}
		start = n
	}
	end := min(start+size, len(k.versions))
	out := &kmspb.ListCryptoKeyVersionsResponse{TotalSize: int32(len(k.versions))} // #nosec G115 -- a test server's few versions
	for _, v := range k.versions[start:end] {
		if s.hidden[v.pb.GetName()] {
			continue
		}
		out.CryptoKeyVersions = append(out.CryptoKeyVersions, clone(s.refresh(v)))
	}
	clear(s.hidden)
	if end < len(k.versions) {
		out.NextPageToken = strconv.Itoa(end)
	}
	return out, nil
}

// UpdateCryptoKeyVersion changes a version's state between ENABLED and
// DISABLED, the only field the API lets callers update besides external
// key options.
func (s *Server) UpdateCryptoKeyVersion(_ context.Context, req *kmspb.UpdateCryptoKeyVersionRequest) (*kmspb.CryptoKeyVersion, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if paths := req.GetUpdateMask().GetPaths(); len(paths) != 1 || paths[0] != "state" {
		return nil, status.Errorf(codes.InvalidArgument, "update_mask %v: this test server updates only \"state\"", paths)
	}
	_, v, err := s.lookupVersion(req.GetCryptoKeyVersion().GetName())
	if err != nil {
		return nil, err
	}
	want := req.GetCryptoKeyVersion().GetState()
	if want != kmspb.CryptoKeyVersion_ENABLED && want != kmspb.CryptoKeyVersion_DISABLED {
		return nil, status.Errorf(codes.InvalidArgument, "The requested state %s is not ENABLED or DISABLED.", want)
	}
	if st := v.pb.GetState(); st != kmspb.CryptoKeyVersion_ENABLED && st != kmspb.CryptoKeyVersion_DISABLED {
		return nil, status.Errorf(codes.FailedPrecondition, "%s is not enabled or disabled, current state is: %s.", v.pb.GetName(), st)
	}
	v.pb.State = want
	return clone(v.pb), nil
}

// DestroyCryptoKeyVersion schedules a version's destruction.
func (s *Server) DestroyCryptoKeyVersion(_ context.Context, req *kmspb.DestroyCryptoKeyVersionRequest) (*kmspb.CryptoKeyVersion, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, v, err := s.lookupVersion(req.GetName())
	if err != nil {
		return nil, err
	}
	if st := v.pb.GetState(); st != kmspb.CryptoKeyVersion_ENABLED && st != kmspb.CryptoKeyVersion_DISABLED {
		return nil, status.Errorf(codes.FailedPrecondition, "%s is not enabled or disabled, current state is: %s.", v.pb.GetName(), st)
	}
	v.pb.State = kmspb.CryptoKeyVersion_DESTROY_SCHEDULED
	v.pb.DestroyTime = timestamppb.New(time.Now().Add(k.pb.GetDestroyScheduledDuration().AsDuration()))
	return clone(v.pb), nil
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func crc(b []byte) *wrapperspb.Int64Value {
	return wrapperspb.Int64(int64(crc32.Checksum(b, castagnoli)))
}

// GetPublicKey returns a version's public key as PEM.
func (s *Server) GetPublicKey(_ context.Context, req *kmspb.GetPublicKeyRequest) (*kmspb.PublicKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, v, err := s.lookupVersion(req.GetName())
	if err != nil {
		return nil, err
	}
	// Only an ENABLED version's public key is returned: the contract test
	// TestGetPublicKeyDisabled expects FAILED_PRECONDITION for a DISABLED
	// one from the real service.
	if st := v.pb.GetState(); st != kmspb.CryptoKeyVersion_ENABLED {
		return nil, status.Errorf(codes.FailedPrecondition, "key version %s is not enabled, current state is: %s.", v.pb.GetName(), st)
	}
	der, err := x509.MarshalPKIXPublicKey(v.priv.Public())
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	p := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	return &kmspb.PublicKey{Pem: p, PemCrc32C: crc([]byte(p)), Algorithm: v.pb.GetAlgorithm(), Name: v.pb.GetName(),
		ProtectionLevel: v.pb.GetProtectionLevel()}, nil
}

// AsymmetricSign signs a digest (or, for EC_SIGN_ED25519, data) with an
// ENABLED version.
func (s *Server) AsymmetricSign(_ context.Context, req *kmspb.AsymmetricSignRequest) (*kmspb.AsymmetricSignResponse, error) {
	s.mu.Lock()
	_, v, err := s.lookupVersion(req.GetName())
	var pb *kmspb.CryptoKeyVersion
	if err == nil {
		pb = clone(v.pb)
	}
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if st := pb.GetState(); st != kmspb.CryptoKeyVersion_ENABLED {
		return nil, status.Errorf(codes.FailedPrecondition, "%s is not enabled, current state is: %s.", pb.GetName(), st)
	}
	out := &kmspb.AsymmetricSignResponse{Name: pb.GetName(), ProtectionLevel: pb.GetProtectionLevel()}
	spec := algorithms[pb.GetAlgorithm()]
	if spec.hash == 0 { // Ed25519 signs the data itself
		if req.GetDigest() != nil || len(req.GetData()) == 0 {
			return nil, status.Errorf(codes.InvalidArgument, "%s signs data, not a digest.", pb.GetAlgorithm())
		}
		if len(req.GetData()) > 64*1024 {
			return nil, status.Error(codes.InvalidArgument, "The data field is larger than 65536 bytes.")
		}
		if c := req.GetDataCrc32C(); c != nil {
			if c.GetValue() != crc(req.GetData()).GetValue() {
				return nil, status.Error(codes.InvalidArgument, "The checksum in field data_crc32c did not match the data in field data.")
			}
			out.VerifiedDataCrc32C = true
		}
		out.Signature = ed25519.Sign(v.priv.(ed25519.PrivateKey), req.GetData())
	} else {
		var digest []byte
		switch d := req.GetDigest().GetDigest().(type) {
		case *kmspb.Digest_Sha256:
			digest = d.Sha256
		case *kmspb.Digest_Sha384:
			digest = d.Sha384
		case *kmspb.Digest_Sha512:
			digest = d.Sha512
		}
		if len(req.GetData()) > 0 || len(digest) != spec.hash.Size() {
			return nil, status.Errorf(codes.InvalidArgument, "The digest type or length does not match the algorithm %s.", pb.GetAlgorithm())
		}
		if c := req.GetDigestCrc32C(); c != nil {
			if c.GetValue() != crc(digest).GetValue() {
				return nil, status.Error(codes.InvalidArgument, "The checksum in field digest_crc32c did not match the data in field digest.")
			}
			out.VerifiedDigestCrc32C = true
		}
		var opts crypto.SignerOpts = spec.hash
		if spec.pss {
			opts = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: spec.hash}
		}
		if out.Signature, err = v.priv.Sign(rand.Reader, digest, opts); err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
	}
	out.SignatureCrc32C = crc(out.Signature)
	for n := s.CorruptSignCRC.Load(); n > 0; n = s.CorruptSignCRC.Load() {
		if s.CorruptSignCRC.CompareAndSwap(n, n-1) {
			out.SignatureCrc32C = wrapperspb.Int64(out.SignatureCrc32C.GetValue() ^ 1)
			break
		}
	}
	return out, nil
}

type algSpec struct {
	curve elliptic.Curve
	bits  int
	hash  crypto.Hash
	pss   bool
	ed    bool
}

// algorithms are the signing algorithms this server makes keys for.
var algorithms = map[kmspb.CryptoKeyVersion_CryptoKeyVersionAlgorithm]algSpec{
	kmspb.CryptoKeyVersion_EC_SIGN_P256_SHA256:        {curve: elliptic.P256(), hash: crypto.SHA256},
	kmspb.CryptoKeyVersion_EC_SIGN_P384_SHA384:        {curve: elliptic.P384(), hash: crypto.SHA384},
	kmspb.CryptoKeyVersion_EC_SIGN_ED25519:            {ed: true},
	kmspb.CryptoKeyVersion_RSA_SIGN_PKCS1_2048_SHA256: {bits: 2048, hash: crypto.SHA256},
	kmspb.CryptoKeyVersion_RSA_SIGN_PKCS1_3072_SHA256: {bits: 3072, hash: crypto.SHA256},
	kmspb.CryptoKeyVersion_RSA_SIGN_PKCS1_4096_SHA256: {bits: 4096, hash: crypto.SHA256},
	kmspb.CryptoKeyVersion_RSA_SIGN_PKCS1_4096_SHA512: {bits: 4096, hash: crypto.SHA512},
	kmspb.CryptoKeyVersion_RSA_SIGN_PSS_2048_SHA256:   {bits: 2048, hash: crypto.SHA256, pss: true},
	kmspb.CryptoKeyVersion_RSA_SIGN_PSS_3072_SHA256:   {bits: 3072, hash: crypto.SHA256, pss: true},
	kmspb.CryptoKeyVersion_RSA_SIGN_PSS_4096_SHA256:   {bits: 4096, hash: crypto.SHA256, pss: true},
	kmspb.CryptoKeyVersion_RSA_SIGN_PSS_4096_SHA512:   {bits: 4096, hash: crypto.SHA512, pss: true},
}

func newKeyPair(alg kmspb.CryptoKeyVersion_CryptoKeyVersionAlgorithm) (crypto.Signer, error) {
	spec := algorithms[alg]
	switch {
	case spec.curve != nil:
		return ecdsa.GenerateKey(spec.curve, rand.Reader)
	case spec.bits != 0:
		return rsa.GenerateKey(rand.Reader, spec.bits)
	case spec.ed:
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	}
	return nil, status.Errorf(codes.InvalidArgument, "The version template algorithm %s is not an ASYMMETRIC_SIGN algorithm this test server makes.", alg)
}
