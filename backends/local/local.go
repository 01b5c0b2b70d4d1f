package local

import (
	"context"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/signet-dev/signet/backends"
)

// Scheme is the URI scheme of this backend.
const Scheme = "local"

// KEKEnv names the environment variable holding the key-encryption key.
const KEKEnv = "SIGNET_LOCAL_KEK"

func init() {
	backends.Register(Scheme, func(ctx context.Context, u *url.URL, opts backends.OpenOptions) (backends.Signer, error) {
		dir, err := dirFromURI(u)
		if err != nil {
			return nil, err
		}
		return Open(dir, opts)
	})
}

// dirFromURI is the key directory a local: URI names: local://./dir,
// local:relative/dir or local:///absolute/dir. It takes no options.
func dirFromURI(u *url.URL) (string, error) {
	if u.RawQuery != "" || u.Fragment != "" {
		return "", errorf(backends.KindInvalidArgument, "URI %q: the local backend takes no options", u.Redacted())
	}
	dir := u.Opaque
	if dir == "" {
		dir = u.Host + u.Path
	}
	if dir == "" {
		return "", errorf(backends.KindInvalidArgument, "URI %q names no directory (for example local://./signet-data)", u.Redacted())
	}
	return dir, nil
}

func errorf(kind backends.Kind, format string, args ...any) error {
	return backends.Errorf(kind, Scheme, format, args...)
}

// Store is the local backend.
type Store struct {
	dir  string
	kek  cipher.AEAD
	now  func() time.Time
	opts backends.OpenOptions
	seen backends.Sightings // temporary files of interrupted writes, by when this process first saw them

	mu     sync.RWMutex
	closed bool
	rings  map[string]map[string]*entry // ring -> version ID -> entry
}

type entry struct {
	version backends.Version
	key     crypto.Signer // nil once disabled
	modTime time.Time
	size    int64
}

// Open opens (and on first use creates) the store in dir.
func Open(dir string, opts backends.OpenOptions) (*Store, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	getenv := opts.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	if pkg := insideGoPackage(dir); pkg != "" {
		log.Warn("the local key directory is inside Go source code: its private keys and key-encryption key "+
			"may end up committed with it; use a directory outside the source tree (a test: t.TempDir())",
			"dir", dir, "package_dir", pkg)
	}
	if err := os.MkdirAll(filepath.Join(dir, "rings"), 0o700); err != nil { // #nosec G703 -- the key directory the operator configures
		return nil, errorf(backends.KindUnavailable, "creating key directory: %w", err)
	}
	kek, err := loadKEK(dir, getenv(KEKEnv), log)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, errorf(backends.KindInvalidArgument, "key-encryption key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, errorf(backends.KindInvalidArgument, "key-encryption key: %w", err)
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	opts.Logger = log
	return &Store{dir: dir, kek: aead, now: now, opts: opts, rings: map[string]map[string]*entry{}}, nil
}

// insideGoPackage returns the nearest directory at or above dir, up to the
// root of the Go module that holds it, that contains .go files: a key
// directory there is one a test (or a developer) is about to commit. The
// module root itself (where make run keeps ./signet-data) holds none.
func insideGoPackage(dir string) string {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return ""
	}
	var chain []string // abs and its parents, up to the module root
	for d := abs; ; d = filepath.Dir(d) {
		chain = append(chain, d)
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil { // #nosec G703 -- only looks: the directory is the operator's
			break
		}
		if filepath.Dir(d) == d {
			return "" // in no Go module
		}
	}
	for _, d := range chain {
		if gofiles, _ := filepath.Glob(filepath.Join(d, "*.go")); len(gofiles) > 0 {
			return d
		}
	}
	return ""
}

func loadKEK(dir, fromEnv string, log *slog.Logger) ([]byte, error) {
	if fromEnv != "" {
		kek, err := decodeKEK(fromEnv)
		if err != nil {
			return nil, errorf(backends.KindInvalidArgument, "%s: %v", KEKEnv, err)
		}
		return kek, nil
	}
	path := filepath.Join(dir, "kek")
	data, err := os.ReadFile(path) // #nosec G304 G703 -- the KEK file in the key directory the operator configures
	if err == nil {
		kek, err := decodeKEK(strings.TrimSpace(string(data)))
		if err != nil {
			return nil, errorf(backends.KindInvalidArgument, "key-encryption key file %s: %v", path, err)
		}
		return kek, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, errorf(backends.KindUnavailable, "reading key-encryption key: %w", err)
	}
	// A new KEK would make existing key files unreadable; never do that silently.
	if files, _ := filepath.Glob(filepath.Join(dir, "rings", "*", "*.json")); len(files) > 0 {
		return nil, errorf(backends.KindFailedPrecondition,
			"%s holds %d key files but no key-encryption key: set %s or restore %s", dir, len(files), KEKEnv, path)
	}
	kek := make([]byte, 32)
	if _, err := rand.Read(kek); err != nil {
		return nil, err
	}
	err = writeFileExclusive(context.Background(), path, []byte(base64.StdEncoding.EncodeToString(kek)+"\n"))
	if errors.Is(err, fs.ErrExist) {
		return loadKEK(dir, "", log) // another process opening the directory generated it first: use that one
	}
	if err != nil {
		return nil, errorf(backends.KindUnavailable, "writing generated key-encryption key: %w", err)
	}
	log.Warn("GENERATED A KEY-ENCRYPTION KEY AND STORED IT NEXT TO THE KEYS IT PROTECTS: anyone who can read kek_file "+
		"can read every private key; fine for development only. Set "+KEKEnv+" (32 bytes, base64) or use a real backend.",
		"kek_file", path)
	return kek, nil
}

func decodeKEK(s string) ([]byte, error) {
	for _, dec := range []func(string) ([]byte, error){
		hex.DecodeString, base64.StdEncoding.DecodeString, base64.RawStdEncoding.DecodeString,
		base64.URLEncoding.DecodeString, base64.RawURLEncoding.DecodeString,
	} {
		if b, err := dec(s); err == nil && len(b) == 32 {
			return b, nil
		}
	}
	return nil, errors.New("want 32 bytes, base64 or hex encoded (for example: openssl rand -base64 32)")
}

// Algorithms reports that every JWS algorithm Signet knows is supported.
func (s *Store) Algorithms() []backends.Algorithm { return backends.AllAlgorithms }

var ringName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

func (s *Store) ringDir(ring backends.KeyRing) (string, error) {
	if !ringName.MatchString(ring.Name) {
		return "", errorf(backends.KindInvalidArgument, "key ring name %q: use letters, digits, '.', '_' and '-'", ring.Name)
	}
	return filepath.Join(s.dir, "rings", ring.Name), nil
}

func (s *Store) checkOpen() error {
	if s.closed {
		return errorf(backends.KindFailedPrecondition, "store is closed")
	}
	return nil
}

// readRingDir lists the ring's directory; ok is false, with no error, when
// the ring has no directory yet.
func (s *Store) readRingDir(ctx context.Context, ring backends.KeyRing) (dir string, des []os.DirEntry, ok bool, err error) {
	if err := ctx.Err(); err != nil {
		return "", nil, false, err
	}
	if dir, err = s.ringDir(ring); err != nil {
		return "", nil, false, err
	}
	des, err = os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return dir, nil, false, nil
	}
	if err != nil {
		return "", nil, false, errorf(backends.KindUnavailable, "reading %s: %w", dir, err)
	}
	return dir, des, true, nil
}

// Versions reads the ring's directory, decrypting files it has not seen or
// that changed since it last read them.
func (s *Store) Versions(ctx context.Context, ring backends.KeyRing) ([]backends.Version, error) {
	dir, des, ok, err := s.readRingDir(ctx, ring)
	if err != nil || !ok {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	cached := s.rings[ring.Name]
	fresh := map[string]*entry{}
	for _, de := range des {
		if strings.HasPrefix(de.Name(), tempPrefix) {
			s.removeStaleTemp(dir, de)
			continue
		}
		id, ok := strings.CutSuffix(de.Name(), ".json")
		if !ok {
			continue
		}
		if _, err := strconv.ParseUint(id, 10, 64); err != nil {
			continue
		}
		info, err := de.Info()
		if err != nil {
			return nil, errorf(backends.KindUnavailable, "reading %s: %w", de.Name(), err)
		}
		if e := cached[id]; e != nil && e.modTime.Equal(info.ModTime()) && e.size == info.Size() {
			fresh[id] = e
			continue
		}
		e, err := s.load(ring, id)
		if err != nil {
			return nil, err
		}
		fresh[id] = e
	}
	s.rings[ring.Name] = fresh
	chains, problems, err := s.chainsInForce(dir, des)
	if err != nil {
		return nil, err
	}
	out := make([]backends.Version, 0, len(fresh))
	for id, e := range fresh {
		v := e.version
		v.Certificates, v.CertificatesProblem = chains[id], problems[id]
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return versionNumber(out[i].ID) < versionNumber(out[j].ID) })
	return out, nil
}

// removeStaleTemp removes a temporary file that an interrupted write left
// in a ring's directory, once this process has seen it for longer than the
// grace (backends.OpenOptions.Reap; not by its modification time, which
// another host's clock may have set): a live write links or renames its
// temporary file within a backend call, so an older one can only be a
// crashed writer's. It never becomes a version: versions are only ever
// read from <n>.json.
func (s *Store) removeStaleTemp(dir string, de fs.DirEntry) {
	path := filepath.Join(dir, de.Name())
	why := "temporary file of an interrupted write"
	if info, err := de.Info(); err == nil {
		why += ", modified " + info.ModTime().UTC().Format(time.RFC3339)
	}
	_, err := s.opts.Reap(&s.seen, path, func() error { return os.Remove(path) }, Scheme, backends.RecoveredRemoved, path, why)
	switch {
	case errors.Is(err, fs.ErrNotExist): // another replica removed it
		s.seen.Forget(path)
	case err != nil:
		s.opts.Logger.Warn("local: cannot remove a temporary file left by an interrupted write", "file", path, "err", err)
	}
}

// Leftovers lists the temporary files of interrupted writes in the ring's
// directory: nothing else in it is ever anything but a version.
func (s *Store) Leftovers(ctx context.Context, ring backends.KeyRing) ([]backends.Leftover, error) {
	dir, des, ok, err := s.readRingDir(ctx, ring)
	if err != nil || !ok {
		return nil, err
	}
	var out []backends.Leftover
	for _, de := range des {
		if !strings.HasPrefix(de.Name(), tempPrefix) {
			continue
		}
		l := backends.Leftover{ID: filepath.Join(dir, de.Name()), Kind: "temporary file of an interrupted write",
			State: "awaiting clean-up"}
		if info, err := de.Info(); err == nil {
			l.Created = info.ModTime()
		}
		out = append(out, l)
	}
	return out, nil
}

// CheckKeyUsage refuses a ring whose private keys others than this
// process's user may read: the ring's directory, a key file of a version
// that can still sign, or the key-encryption key file open to the group or
// to others (Signet makes them 0700 and 0600). A key anyone on the machine
// can copy can do more than sign here.
func (s *Store) CheckKeyUsage(ctx context.Context, ring backends.KeyRing) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	dir, err := s.ringDir(ring)
	if err != nil {
		return err
	}
	vs, err := s.Versions(ctx, ring)
	if err != nil {
		return err
	}
	paths := []string{filepath.Join(s.dir, "kek"), dir}
	for _, v := range vs {
		if !v.Disabled {
			paths = append(paths, s.path(ring, v.ID))
		}
	}
	var broad []string
	for _, p := range paths {
		info, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue // no KEK file: the KEK comes from the environment
		}
		if err != nil {
			return errorf(backends.KindUnavailable, "reading %s: %w", p, err)
		}
		if perm := info.Mode().Perm(); perm&0o077 != 0 {
			broad = append(broad, fmt.Sprintf("%s has mode %#o (group or others may use it)", p, perm))
		}
	}
	if len(broad) > 0 {
		return errorf(backends.KindFailedPrecondition, "key ring %q: %s: its private keys may be read by others than this user "+
			"(Signet makes key files 0600 in 0700 directories); chmod them", ring.Name, strings.Join(broad, "; "))
	}
	return nil
}

func versionNumber(id string) uint64 {
	n, _ := strconv.ParseUint(id, 10, 64)
	return n
}

// file is the on-disk form of a version.
type file struct {
	Ring       string    `json:"ring"`
	Version    string    `json:"version"`
	Algorithm  string    `json:"algorithm"`
	Created    time.Time `json:"created"`
	PublicKey  []byte    `json:"public_key"`            // PKIX DER
	PrivateKey []byte    `json:"private_key,omitempty"` // nonce || AES-256-GCM(PKCS#8 DER)
	Disabled   bool      `json:"disabled,omitempty"`
	DisabledAt time.Time `json:"disabled_at,omitzero"`
	// RequestID is the Rotate request id that created the version
	// (backends.RequestRecorder), written with the version in one file.
	RequestID string `json:"request_id,omitempty"`
}

func (f *file) aad() []byte {
	return []byte(strings.Join([]string{"signet-local-v1", f.Ring, f.Version, f.Algorithm,
		base64.StdEncoding.EncodeToString(f.PublicKey)}, "\x00"))
}

func (s *Store) path(ring backends.KeyRing, id string) string {
	return filepath.Join(s.dir, "rings", ring.Name, id+".json")
}

// load reads and checks one version file. Any inconsistency is an error
// naming the file: a key is never replaced because its file is unreadable.
func (s *Store) load(ring backends.KeyRing, id string) (*entry, error) {
	path := s.path(ring, id)
	data, err := os.ReadFile(path) // #nosec G304 -- under the key directory; ringDir checked the ring name, and ids are numbers
	if errors.Is(err, fs.ErrNotExist) {
		return nil, errorf(backends.KindNotFound, "key ring %q has no version %s", ring.Name, id)
	}
	if err != nil {
		return nil, errorf(backends.KindUnavailable, "reading %s: %w", path, err)
	}
	info, err := os.Stat(path)
	if err != nil {
		return nil, errorf(backends.KindUnavailable, "reading %s: %w", path, err)
	}
	bad := func(format string, args ...any) error {
		return errorf(backends.KindFailedPrecondition, "key file %s is unusable: %s", path, fmt.Sprintf(format, args...))
	}
	var f file
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, bad("not valid JSON (%v)", err)
	}
	if f.Ring != ring.Name || f.Version != id {
		return nil, bad("it says it is version %q of ring %q", f.Version, f.Ring)
	}
	alg, err := backends.ParseAlgorithm(f.Algorithm)
	if err != nil {
		return nil, bad("%v", err)
	}
	if alg != ring.Algorithm {
		return nil, errorf(backends.KindFailedPrecondition,
			"key ring %q holds %s keys but is configured for %s", ring.Name, alg, ring.Algorithm)
	}
	pub, err := x509.ParsePKIXPublicKey(f.PublicKey)
	if err == nil {
		err = alg.CheckPublicKey(pub)
	}
	switch {
	case err != nil && f.Disabled:
		pub = nil // a revoked version is listed without a usable key: it is never published
	case err != nil:
		return nil, bad("public key: %v", err)
	}
	e := &entry{
		version: backends.Version{ID: id, Algorithm: alg, PublicKey: pub, Created: f.Created, Disabled: f.Disabled, RequestID: f.RequestID},
		modTime: info.ModTime(),
		size:    info.Size(),
	}
	if f.Disabled {
		return e, nil
	}
	ns := s.kek.NonceSize()
	if len(f.PrivateKey) < ns+s.kek.Overhead() {
		return nil, bad("the private key is missing or truncated")
	}
	der, err := s.kek.Open(nil, f.PrivateKey[:ns], f.PrivateKey[ns:], f.aad())
	if err != nil {
		return nil, bad("the private key does not decrypt: wrong key-encryption key (%s) or a corrupted file", KEKEnv)
	}
	priv, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, bad("private key: %v", err)
	}
	signer, ok := priv.(crypto.Signer)
	if !ok || !publicEqual(signer.Public(), pub) {
		return nil, bad("the private key does not match the public key")
	}
	e.key = signer
	return e, nil
}

func publicEqual(a, b crypto.PublicKey) bool {
	ea, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ea.Equal(b)
}

// Sign signs with the named version, reading it from disk if another process
// created it since the last Versions call.
func (s *Store) Sign(ctx context.Context, ring backends.KeyRing, versionID string, signingInput []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	e, err := s.entry(ring, versionID)
	if err != nil {
		return nil, err
	}
	if e.key != nil {
		if e, err = s.current(ring, e); err != nil {
			return nil, err
		}
	}
	if e.key == nil {
		return nil, errorf(backends.KindFailedPrecondition, "version %s of key ring %q is revoked", versionID, ring.Name)
	}
	sig, err := backends.SignWithKey(ring.Algorithm, e.key, signingInput)
	if err != nil {
		return nil, errorf(backends.KindInvalidArgument, "signing with version %s of key ring %q: %w", versionID, ring.Name, err)
	}
	return sig, nil
}

// current re-reads a version's file if it changed since e was read: another
// process sharing the directory may have revoked the version (the file
// rewritten without its private key), and a revoked version never signs.
// The soak found replicas signing with a version another had revoked, from
// the key they had in memory, until their next refresh. One stat per Sign.
func (s *Store) current(ring backends.KeyRing, e *entry) (*entry, error) {
	info, err := os.Stat(s.path(ring, e.version.ID))
	if err != nil {
		return nil, errorf(backends.KindUnavailable, "reading %s: %w", s.path(ring, e.version.ID), err)
	}
	if info.ModTime().Equal(e.modTime) && info.Size() == e.size {
		return e, nil
	}
	ne, err := s.load(ring, e.version.ID)
	if err != nil {
		return nil, err
	}
	s.remember(ring, ne)
	return ne, nil
}

func (s *Store) entry(ring backends.KeyRing, id string) (*entry, error) {
	s.mu.RLock()
	if err := s.checkOpen(); err != nil {
		s.mu.RUnlock()
		return nil, err
	}
	e := s.rings[ring.Name][id]
	s.mu.RUnlock()
	if e != nil {
		if e.version.Algorithm != ring.Algorithm {
			return nil, errorf(backends.KindFailedPrecondition, "key ring %q holds %s keys, not %s", ring.Name, e.version.Algorithm, ring.Algorithm)
		}
		return e, nil
	}
	if _, err := s.ringDir(ring); err != nil {
		return nil, err
	}
	if _, err := strconv.ParseUint(id, 10, 64); err != nil {
		return nil, errorf(backends.KindNotFound, "key ring %q has no version %q", ring.Name, id)
	}
	e, err := s.load(ring, id)
	if err != nil {
		return nil, err
	}
	s.remember(ring, e)
	return e, nil
}

func (s *Store) remember(ring backends.KeyRing, e *entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	if s.rings[ring.Name] == nil {
		s.rings[ring.Name] = map[string]*entry{}
	}
	s.rings[ring.Name][e.version.ID] = e
}

// CreateVersion generates a key pair and stores it as the version after latest.
func (s *Store) CreateVersion(ctx context.Context, ring backends.KeyRing, latest string) (backends.Version, error) {
	return s.createVersion(ctx, ring, latest, "")
}

// CreateVersionForRequest is CreateVersion that writes requestID into the
// version's file, which appears whole or not at all.
func (s *Store) CreateVersionForRequest(ctx context.Context, ring backends.KeyRing, latest, requestID string) (backends.Version, error) {
	return s.createVersion(ctx, ring, latest, requestID)
}

func (s *Store) createVersion(ctx context.Context, ring backends.KeyRing, latest, requestID string) (backends.Version, error) {
	dir, err := s.ringDir(ring)
	if err != nil {
		return backends.Version{}, err
	}
	if !backends.Supports(s, ring.Algorithm) {
		return backends.Version{}, errorf(backends.KindUnimplemented, "algorithm %q is not supported", ring.Algorithm)
	}
	var next uint64 = 1
	if latest != "" {
		n, err := strconv.ParseUint(latest, 10, 64)
		if err != nil {
			return backends.Version{}, errorf(backends.KindInvalidArgument, "latest version %q is not a version of this backend", latest)
		}
		next = n + 1
	}
	return backends.Rotate(ctx, s.opts, Scheme, ring, latest, &rotation{s: s, ring: ring, dir: dir, next: next, requestID: requestID})
}

// rotation is the local backend's primitives of the rotation protocol
// (backends.Protocol). The candidate is a temporary file holding the whole
// version, which Versions never reads as one; linking it as <n>.json,
// exclusively, is the claim, the pick and the commit at once: the one link
// that succeeds wins, and a version file appears whole or not at all.
type rotation struct {
	s         *Store
	ring      backends.KeyRing
	dir       string
	next      uint64
	requestID string
	version   string // the slot: <next>
	tmp       string // the candidate's temporary file, until it is removed
}

// Newest reads the ring's versions.
func (r *rotation) Newest(ctx context.Context) (string, error) {
	existing, err := r.s.Versions(ctx, r.ring)
	if err != nil {
		return "", err
	}
	backends.Step(ctx, "read versions")
	if n := len(existing); n > 0 {
		return existing[n-1].ID, nil
	}
	return "", nil
}

// Claim does nothing: the exclusive link (Commit) claims the slot.
func (r *rotation) Claim(context.Context) error {
	r.version = strconv.FormatUint(r.next, 10)
	return nil
}

// Create writes the new version's file under a temporary name.
func (r *rotation) Create(ctx context.Context) error {
	key, err := generate(ctx, r.ring.Algorithm)
	if err != nil {
		return err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return errorf(backends.KindUnknown, "encoding public key: %w", err)
	}
	privDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return errorf(backends.KindUnknown, "encoding private key: %w", err)
	}
	f := file{
		Ring: r.ring.Name, Version: r.version, Algorithm: string(r.ring.Algorithm),
		Created: r.s.now().UTC().Round(0), PublicKey: pubDER, RequestID: r.requestID,
	}
	nonce := make([]byte, r.s.kek.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return err
	}
	f.PrivateKey = r.s.kek.Seal(nonce, nonce, privDER, f.aad())
	data, err := json.MarshalIndent(&f, "", "  ") // #nosec G117 -- PrivateKey is AES-256-GCM ciphertext under the KEK
	if err != nil {
		return err
	}
	if err := os.MkdirAll(r.dir, 0o700); err != nil {
		return errorf(backends.KindUnavailable, "creating %s: %w", r.dir, err)
	}
	if r.tmp, err = writeTemp(r.dir, data); err != nil {
		return errorf(backends.KindUnavailable, "writing key file: %w", err)
	}
	backends.Step(ctx, "write temporary file")
	return nil
}

// Resolve has nothing to read back: a file system call does not lose its
// answer.
func (r *rotation) Resolve(_ context.Context, err error) error { return err }

// Settle does nothing: the link is atomic.
func (r *rotation) Settle(context.Context) error { return nil }

// Pick does nothing: the link decides (Commit).
func (r *rotation) Pick(context.Context) error { return nil }

// Commit links the temporary file as the version's file, which fails if
// another replica's link made it first.
func (r *rotation) Commit(ctx context.Context) (backends.Version, error) {
	path := r.s.path(r.ring, r.version)
	if err := os.Link(r.tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return backends.Version{}, backends.Lost(r.version)
		}
		return backends.Version{}, errorf(backends.KindUnavailable, "writing key file: %w", err)
	}
	backends.Step(ctx, "link version file")
	err := os.Remove(r.tmp)
	r.tmp = ""
	if err == nil {
		backends.Step(ctx, "remove temporary file")
	}
	e, err := r.s.load(r.ring, r.version)
	if err != nil {
		return backends.Version{}, err
	}
	backends.Step(ctx, "read version file")
	r.s.remember(r.ring, e)
	return e.version, nil
}

// Abandon removes the temporary file; if that fails, Versions removes it
// once stale.
func (r *rotation) Abandon(context.Context, bool) (string, error) {
	if r.tmp != "" {
		_ = os.Remove(r.tmp) // #nosec G703 -- our temporary file
	}
	return backends.NothingMade, nil
}

// Release does nothing: there is no claim apart from the version file.
func (r *rotation) Release(context.Context) {}

// generate runs key generation (seconds for RSA-4096) so that a cancelled
// context returns at once; the abandoned key is simply dropped.
func generate(ctx context.Context, alg backends.Algorithm) (crypto.Signer, error) {
	type result struct {
		key crypto.Signer
		err error
	}
	done := make(chan result, 1)
	go func() {
		k, err := backends.GenerateKey(alg)
		done <- result{k, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			return nil, errorf(backends.KindUnknown, "generating %s key: %w", alg, r.err)
		}
		return r.key, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// DisableVersion erases the version's private key from its file.
func (s *Store) DisableVersion(ctx context.Context, ring backends.KeyRing, versionID string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if _, err := s.entry(ring, versionID); err != nil {
		return err
	}
	path := s.path(ring, versionID)
	data, err := os.ReadFile(path) // #nosec G304 -- under the key directory; entry has checked the ring and version
	if err != nil {
		return errorf(backends.KindUnavailable, "reading %s: %w", path, err)
	}
	var f file
	if err := json.Unmarshal(data, &f); err != nil {
		return errorf(backends.KindFailedPrecondition, "key file %s is unusable: %v", path, err)
	}
	if f.Disabled {
		return nil
	}
	backends.Step(ctx, "read version file")
	f.Disabled, f.DisabledAt, f.PrivateKey = true, s.now().UTC().Round(0), nil
	if data, err = json.MarshalIndent(&f, "", "  "); err != nil { // #nosec G117 -- a revoked version's file: PrivateKey is empty
		return err
	}
	tmp, err := writeTemp(filepath.Dir(path), data)
	if err != nil {
		return errorf(backends.KindUnavailable, "writing %s: %w", path, err)
	}
	backends.Step(ctx, "write temporary file")
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp) // #nosec G703 -- our temporary file; if it stays, Versions removes it once stale
		return errorf(backends.KindUnavailable, "writing %s: %w", path, err)
	}
	backends.Step(ctx, "rename over version file")
	e, err := s.load(ring, versionID)
	if err != nil {
		return err
	}
	s.remember(ring, e)
	return nil
}

// Close forgets the decrypted keys. It is safe to call more than once.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.rings = nil
	return nil
}

// writeFileExclusive writes data to path only if path does not exist yet,
// atomically: readers see either no file or the whole file. A crash leaves
// at most a temporary file, which Versions removes once it is stale.
func writeFileExclusive(ctx context.Context, path string, data []byte) error {
	tmp, err := writeTemp(filepath.Dir(path), data)
	if err != nil {
		return err
	}
	backends.Step(ctx, "write temporary file")
	err = os.Link(tmp, path)
	if err == nil {
		backends.Step(ctx, "link version file")
	}
	_ = os.Remove(tmp) // #nosec G703 -- our temporary file; if it stays, Versions removes it once stale
	if err == nil {
		backends.Step(ctx, "remove temporary file")
	}
	return err
}

// tempPrefix starts the name of every temporary file; no version file
// starts with it.
const tempPrefix = ".tmp-"

func writeTemp(dir string, data []byte) (string, error) {
	f, err := os.CreateTemp(dir, tempPrefix+"*")
	if err != nil {
		return "", err
	}
	name := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(name) // #nosec G703 -- our temporary file; if it stays, Versions removes it once stale
		return "", err
	}
	return name, nil // CreateTemp makes the file 0600
}
