package vault

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"

	"github.com/signet-dev/signet/backends"
)

// Scheme is the URI scheme of this backend.
const Scheme = "vault"

func init() { backends.Register(Scheme, Open) }

func errorf(kind backends.Kind, format string, args ...any) error {
	return backends.Errorf(kind, Scheme, format, args...)
}

// Backend is the Vault Transit backend.
type Backend struct {
	client    *api.Client
	mount     string
	keyPrefix string
	keyNames  map[string]string // ring -> Transit key name
	log       *slog.Logger
	auth      *authenticator
	batches   *batcher

	// ctx ends when the backend closes: it bounds every goroutine the
	// backend starts and, through closingTransport, every request it sends.
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup // the token watchers, re-logins and batch workers
	closeOnce sync.Once
	transport *closingTransport

	opts      backends.OpenOptions
	seenLocks backends.Sightings // rotation lock keys, by when this process first saw them
	locksMu   sync.Mutex
	lockKeys  map[string]string // lock key name -> the sighting key of the lock seen last
}

// transitTypes is the Transit key type each algorithm needs.
var transitTypes = map[backends.Algorithm]string{
	backends.ES256: "ecdsa-p256", backends.ES384: "ecdsa-p384", backends.ES512: "ecdsa-p521",
	backends.RS256: "rsa-2048", backends.RS384: "rsa-3072", backends.RS512: "rsa-4096",
	backends.PS256: "rsa-2048", backends.PS384: "rsa-3072", backends.PS512: "rsa-4096",
	backends.EdDSA: "ed25519",
}

// Open opens the backend a vault:// URI describes and logs in.
func Open(ctx context.Context, u *url.URL, opts backends.OpenOptions) (backends.Signer, error) {
	getenv := opts.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	o, err := parseURI(u)
	if err != nil {
		return nil, err
	}
	cfg := api.DefaultConfig() // reads VAULT_ADDR, VAULT_CACERT, ... like the vault CLI
	if cfg.Error != nil {
		return nil, errorf(backends.KindInvalidArgument, "Vault client environment: %v", cfg.Error)
	}
	// Keep a connection for every request the backend may have in flight:
	// the client's default keeps GOMAXPROCS+1 idle, so with more batches in
	// flight (maxWorkers per key version) each extra request opened a new
	// connection and closed it again, at Vault's expense.
	if t, ok := cfg.HttpClient.Transport.(*http.Transport); ok {
		t.MaxIdleConnsPerHost = max(t.MaxIdleConnsPerHost, idleConnections)
	}
	if o.address != "" {
		cfg.Address = o.address
	}
	if o.tls != nil {
		if err := cfg.ConfigureTLS(o.tls); err != nil {
			return nil, errorf(backends.KindInvalidArgument, "TLS to Vault: %v", err)
		}
	}
	// Retry only what can succeed on a second try, fast, and never past the
	// caller's deadline: a sealed or unreachable Vault must be answered with
	// Unavailable while the caller still waits.
	cfg.MaxRetries = 2
	cfg.MinRetryWait, cfg.MaxRetryWait = 50*time.Millisecond, 250*time.Millisecond
	cfg.CheckRetry = checkRetry
	client, err := api.NewClient(cfg)
	if err != nil {
		return nil, errorf(backends.KindInvalidArgument, "Vault client: %v", err)
	}
	// Wrap the transport only now: NewClient needs the *http.Transport
	// itself to dial a unix:// VAULT_ADDR. The client sends with
	// cfg.HttpClient, which it keeps.
	bctx, cancel := context.WithCancel(context.Background())
	base := cfg.HttpClient.Transport
	if opts.TracerProvider != nil {
		base = otelhttp.NewTransport(base, otelhttp.WithTracerProvider(opts.TracerProvider))
	}
	transport := &closingTransport{base: base, closed: bctx}
	cfg.HttpClient.Transport = transport
	client.ClearToken() // the token comes from the configured auth method only
	if o.namespace != "" {
		client.SetNamespace(o.namespace)
	}
	b := &Backend{client: client, mount: o.mount, keyPrefix: o.keyPrefix, keyNames: o.keyNames,
		log: opts.Logger, opts: opts, ctx: bctx, cancel: cancel, transport: transport}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	b.batches = newBatcher(b, o.batchSize, o.batchWait)
	b.batches.observe = opts.OnBatch
	if b.auth, err = newAuthenticator(client, o.query, getenv, b.log, b.ctx, &b.wg); err == nil {
		timeout := opts.Timeout
		if timeout <= 0 {
			timeout = backends.BackgroundTimeout
		}
		lctx, cancel := context.WithTimeout(ctx, timeout)
		err = b.auth.login(lctx)
		cancel()
	}
	if backends.KindOf(err) == backends.KindUnavailable && ctx.Err() == nil && !untrusted(err) {
		// Vault does not answer: open all the same and log in in the
		// background, so that the replica starts and serves the key set it
		// has; every call fails as unavailable (or is refused and logs in
		// again: auth.call) until Vault answers. A certificate Signet does
		// not trust is configuration, not an outage: Open fails.
		b.log.Warn("Vault does not answer; logging in in the background", "auth", b.auth.method, "err", err)
		b.wg.Go(func() { b.auth.relogin(nil) })
		return b, nil
	}
	if err != nil {
		_ = b.Close() // always nil; the login's error is the one to return
		return nil, err
	}
	return b, nil
}

// untrusted reports whether err is Vault's TLS certificate failing
// verification (a missing or wrong ca_file, a host name it does not name).
func untrusted(err error) bool {
	var (
		verify   *tls.CertificateVerificationError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
	)
	return errors.As(err, &verify) || errors.As(err, &unknown) || errors.As(err, &hostname) || errors.As(err, &invalid)
}

// idleConnections is how many idle connections to Vault the backend keeps.
const idleConnections = 64

// checkRetry retries connection failures and the statuses a healthy Vault
// answers again soon (sealed or standby 503, 502, 504, 429), never a 4xx or
// an ordinary 500 (Transit reports a refused signature as 500), and never a
// call that changes Vault's state (see once).
func checkRetry(ctx context.Context, resp *http.Response, err error) (bool, error) {
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	if ctx.Value(onceKey{}) != nil {
		return false, nil
	}
	if err != nil {
		return true, nil
	}
	switch resp.StatusCode {
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true, nil
	}
	return false, nil
}

type onceKey struct{}

// once marks a request that changes Vault's state (creating a Transit key,
// rotating it, taking or deleting the rotation lock, writing a key's
// config or a certificate chain): the client sends it once and never again
// by itself. A 502 or a dropped connection says nothing about whether
// Vault carried it out, and a copy sent a second later lands on a state
// that may have moved on: a rotate makes a second version, a lock delete
// removes the lock another replica took meanwhile, a min_encryption_version
// write lowers the one another replica raised (re-enabling a disabled
// version), a set-certificate overwrites a newer chain. What such a call
// did is found out by reading (resolveRotate, findVersion, acquireLock), or
// the caller gets an unavailable error and starts over from a read. Reads
// and signatures are retried.
func once(ctx context.Context) context.Context {
	return context.WithValue(ctx, onceKey{}, true)
}

// Algorithms reports that Transit can sign every JWS algorithm Signet knows.
func (b *Backend) Algorithms() []backends.Algorithm { return backends.AllAlgorithms }

func (b *Backend) keyName(ring backends.KeyRing) string {
	if n, ok := b.keyNames[ring.Name]; ok {
		return n
	}
	return b.keyPrefix + ring.Name
}

func (b *Backend) path(parts ...string) string {
	return b.mount + "/" + strings.Join(parts, "/")
}

func (b *Backend) checkOpen() error {
	if b.ctx.Err() != nil {
		return errClosed
	}
	return nil
}

var errClosed = errorf(backends.KindFailedPrecondition, "backend is closed")

// transitKey is the part of a Transit key read that Signet uses.
type transitKey struct {
	Type                 string                     `json:"type"`
	LatestVersion        int                        `json:"latest_version"`
	MinEncryptionVersion int                        `json:"min_encryption_version"`
	Exportable           bool                       `json:"exportable"`
	AllowPlaintextBackup bool                       `json:"allow_plaintext_backup"`
	DeletionAllowed      bool                       `json:"deletion_allowed"`
	Keys                 map[string]transitKeyEntry `json:"keys"`
}

type transitKeyEntry struct {
	CreationTime time.Time `json:"creation_time"`
	PublicKey    string    `json:"public_key"`
	// CertificateChain is the PEM chain set-certificate stored; "" for none.
	CertificateChain string `json:"certificate_chain"`
}

// readKey reads the ring's Transit key; nil when it does not exist.
func (b *Backend) readKey(ctx context.Context, ring backends.KeyRing) (*transitKey, error) {
	name := b.keyName(ring)
	secret, err := b.call(ctx, func(ctx context.Context) (*api.Secret, error) {
		return b.client.Logical().ReadWithContext(ctx, b.path("keys", name))
	})
	if err != nil {
		return nil, b.classify(err, "reading Transit key %q", name)
	}
	if secret == nil || secret.Data == nil {
		return nil, nil
	}
	raw, err := json.Marshal(secret.Data)
	if err != nil {
		return nil, err
	}
	var k transitKey
	if err := json.Unmarshal(raw, &k); err != nil {
		return nil, errorf(backends.KindUnknown, "Transit key %q: unexpected answer: %v", name, err)
	}
	if want := transitTypes[ring.Algorithm]; k.Type != want {
		return nil, errorf(backends.KindFailedPrecondition,
			"Transit key %q is of type %s but key ring %q needs %s for %s: use another key (key.%s=NAME) or another algorithm",
			name, k.Type, ring.Name, want, ring.Algorithm, ring.Name)
	}
	return &k, nil
}

// CheckKeyUsage refuses a ring whose Transit key lets its private key leave
// Vault (exportable, allow_plaintext_backup) or lets it be deleted
// (deletion_allowed: deleted and re-created under the same name, it would
// sign with another key). Signet creates keys with all three false. The
// key's type is checked on every read.
func (b *Backend) CheckKeyUsage(ctx context.Context, ring backends.KeyRing) error {
	if err := b.checkOpen(); err != nil {
		return err
	}
	k, err := b.readKey(ctx, ring)
	if err != nil || k == nil {
		return err
	}
	var broad []string
	for _, f := range []struct {
		set  bool
		name string
	}{{k.Exportable, "exportable"}, {k.AllowPlaintextBackup, "allow_plaintext_backup"}, {k.DeletionAllowed, "deletion_allowed"}} {
		if f.set {
			broad = append(broad, f.name)
		}
	}
	if len(broad) > 0 {
		return errorf(backends.KindFailedPrecondition, "key ring %q: Transit key %q has %s set: its private key may leave Vault "+
			"or the key be replaced (Signet creates keys with exportable, allow_plaintext_backup and deletion_allowed false)",
			ring.Name, b.keyName(ring), strings.Join(broad, " and "))
	}
	return nil
}

// Versions lists the Transit key's versions with Vault's creation times.
func (b *Backend) Versions(ctx context.Context, ring backends.KeyRing) ([]backends.Version, error) {
	if err := b.checkOpen(); err != nil {
		return nil, err
	}
	k, err := b.readKey(ctx, ring)
	if err != nil || k == nil {
		return nil, err
	}
	if _, err := b.cleanLock(ctx, ring); err != nil {
		return nil, err
	}
	out := make([]backends.Version, 0, len(k.Keys))
	for id, e := range k.Keys {
		n, err := strconv.Atoi(id)
		if err != nil {
			return nil, errorf(backends.KindUnknown, "Transit key %q has a version named %q", b.keyName(ring), id)
		}
		disabled := k.MinEncryptionVersion > 0 && n < k.MinEncryptionVersion
		pub, err := parsePublicKey(ring.Algorithm, e.PublicKey)
		if err != nil && !disabled {
			return nil, errorf(backends.KindUnknown, "Transit key %q version %d: %v", b.keyName(ring), n, err)
		}
		// A revoked version is listed whatever Transit shows of its key
		// (without one when it is unusable): it is never published.
		v := backends.Version{ID: id, Algorithm: ring.Algorithm, PublicKey: pub, Created: e.CreationTime, Disabled: disabled}
		if v.Certificates, err = decodeChain(b.keyName(ring), id, e.CertificateChain); err != nil {
			v.CertificatesProblem = err.Error() // this version's problem, not the ring's
		}
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return versionNumber(out[i].ID) < versionNumber(out[j].ID) })
	return out, nil
}

func versionNumber(id string) int {
	n, _ := strconv.Atoi(id)
	return n
}

// parsePublicKey reads Transit's public_key: PEM PKIX for ECDSA and RSA,
// base64 of the raw key for Ed25519.
func parsePublicKey(alg backends.Algorithm, s string) (crypto.PublicKey, error) {
	var pub crypto.PublicKey
	if alg.IsEdDSA() {
		raw, err := base64.StdEncoding.DecodeString(s)
		if err != nil || len(raw) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("public key is not a base64 Ed25519 key")
		}
		pub = ed25519.PublicKey(raw)
	} else {
		block, _ := pem.Decode([]byte(s))
		if block == nil {
			return nil, fmt.Errorf("public key is not PEM")
		}
		var err error
		if pub, err = x509.ParsePKIXPublicKey(block.Bytes); err != nil {
			return nil, err
		}
	}
	if err := alg.CheckPublicKey(pub); err != nil {
		return nil, err
	}
	return pub, nil
}

// CreateVersion creates the Transit key (first version) or rotates it,
// through the rotation protocol (backends.Rotate) over rotation's
// primitives.
func (b *Backend) CreateVersion(ctx context.Context, ring backends.KeyRing, latest string) (backends.Version, error) {
	if err := b.checkOpen(); err != nil {
		return backends.Version{}, err
	}
	typ, ok := transitTypes[ring.Algorithm]
	if !ok {
		return backends.Version{}, errorf(backends.KindUnimplemented, "algorithm %q is not supported", ring.Algorithm)
	}
	return backends.Rotate(ctx, b.opts, Scheme, ring, latest, &rotation{b: b, ring: ring, latest: latest, typ: typ})
}

// rotation is Vault's primitives of the rotation protocol
// (backends.Protocol). Transit offers two atomic calls and no condition:
// creating a key is create-if-absent, and a rotate always makes a
// version. So the ring's first version is claimed, created, picked and
// committed by creating the key (replicas racing for it all find that one
// version), and a rotation is claimed with the rotation lock (lock.go):
// its holder checks the newest version again under it, then rotates
// (create and commit in one call; nothing to settle, and the winner is the
// lock holder). A loser makes nothing. The rotate is never sent twice
// (once): a lost answer is resolved by reading the key under the lock.
type rotation struct {
	b      *Backend
	ring   backends.KeyRing
	latest string
	typ    string

	k        *transitKey // the key as read (under the lock, for a rotation)
	ticket   int64       // the rotation lock's ticket while this replica holds it
	lostErr  error       // the error of a create whose answer was lost, when reading found it carried out
	resolved backends.Version
}

func (r *rotation) first() bool { return r.k == nil }

// Newest reads the Transit key.
func (r *rotation) Newest(ctx context.Context) (string, error) {
	k, err := r.b.readKey(ctx, r.ring)
	if err != nil {
		return "", err
	}
	backends.Step(ctx, "read key")
	r.k = k
	return newestVersion(k), nil
}

// Claim takes the ring's rotation lock and reads the key again under it;
// the first version needs no claim (creating the key is create-if-absent).
func (r *rotation) Claim(ctx context.Context) error {
	if r.first() {
		return nil
	}
	ticket, err := r.b.acquireLock(ctx, r.ring)
	if err != nil {
		return err
	}
	r.ticket = ticket
	backends.Step(ctx, "take lock")
	k, err := r.b.readKey(ctx, r.ring)
	if err != nil {
		return err
	}
	backends.Step(ctx, "read key under lock")
	if err := backends.CheckNewest(Scheme, r.ring, newestVersion(k), r.latest); err != nil {
		return err
	}
	r.k = k
	return nil
}

// Create creates the key (its version 1) or rotates it, once.
func (r *rotation) Create(ctx context.Context) error {
	name := r.b.keyName(r.ring)
	if r.first() {
		_, err := r.b.call(once(ctx), func(ctx context.Context) (*api.Secret, error) {
			return r.b.client.Logical().WriteWithContext(ctx, r.b.path("keys", name), map[string]any{"type": r.typ, "exportable": false,
				"allow_plaintext_backup": false})
		})
		if err != nil {
			return r.b.classify(err, "creating a version of Transit key %q", name)
		}
		backends.Step(ctx, "create key")
		return nil
	}
	if _, err := r.b.call(once(ctx), func(ctx context.Context) (*api.Secret, error) {
		return r.b.client.Logical().WriteWithContext(ctx, r.b.path("keys", name, "rotate"), nil)
	}); err != nil {
		return r.b.classify(err, "creating a version of Transit key %q", name)
	}
	backends.Step(ctx, "rotate")
	return nil
}

// want is the version this rotation makes.
func (r *rotation) want() int {
	if r.first() {
		return 1
	}
	return r.k.LatestVersion + 1
}

// Resolve finds out, by reading the key, what a create whose answer did
// not arrive did. The first version: whether version 1 exists. A rotate:
// whether the newest version is the one after the one read under the
// lock; Pick then checks that the lock still holds this replica's ticket,
// since then no other replica held the lock (and so rotated) from the
// moment this one took it. Otherwise the caller gets the create's error,
// which is never a success and is safe to retry: a retry that finds the
// version made meanwhile answers Conflict, never a second version for one
// call.
func (r *rotation) Resolve(ctx context.Context, err error) error {
	if r.first() {
		v, rerr := r.b.findVersion(ctx, r.ring, 1)
		if rerr != nil {
			return err
		}
		r.resolved = v
	} else {
		k, rerr := r.b.readKey(ctx, r.ring)
		if rerr != nil || k == nil || k.LatestVersion != r.want() {
			return err
		}
	}
	r.lostErr = err
	return nil
}

// Settle does nothing: the key's creation and the lock are atomic.
func (r *rotation) Settle(context.Context) error { return nil }

// Pick: the lock holder won, if it still holds the lock after rotating.
// The version after the one checked is this rotation's only if no other
// replica rotated in between: if the lock was removed as stale while this
// replica stalled, another may have checked the same version and rotated
// first, and both would report its version. Once the lock does not hold
// the ticket it never will again (a ticket is never reused).
func (r *rotation) Pick(ctx context.Context) error {
	if r.first() {
		return nil
	}
	if _, held, err := r.b.readLock(ctx, r.ring); err == nil && held == r.ticket {
		return nil
	}
	if r.lostErr != nil {
		return r.lostErr
	}
	return errorf(backends.KindUnavailable,
		"Transit key %q was rotated, but the rotation lock was removed as stale meanwhile: which version this rotation made is unknown", r.b.keyName(r.ring))
}

// Commit reads the version made: the rotate (or the key's creation) made
// it a version already.
func (r *rotation) Commit(ctx context.Context) (backends.Version, error) {
	if r.resolved.ID != "" {
		return r.resolved, nil
	}
	v, err := r.b.findVersion(ctx, r.ring, r.want())
	if err != nil && r.lostErr != nil {
		return backends.Version{}, r.lostErr
	}
	if err == nil && r.lostErr != nil {
		r.b.log.Warn("vault: the answer to a rotate was lost; reading the key found the version it made", "key", r.b.keyName(r.ring),
			"version", v.ID, "err", r.lostErr)
	}
	return v, err
}

// Abandon has nothing to remove: a rotation that makes no version made
// nothing (Transit cannot delete a version, and never needs to here).
func (r *rotation) Abandon(context.Context, bool) (string, error) { return backends.NothingMade, nil }

// Release deletes the rotation lock if this replica holds it.
func (r *rotation) Release(ctx context.Context) {
	if r.ticket == 0 {
		return
	}
	if err := r.b.releaseLock(ctx, r.ring, r.ticket); err != nil {
		// A live replica deletes the lock key after the grace.
		r.b.log.Warn("vault: could not release the rotation lock; a replica removes it after the recovery grace", "err", err)
	}
}

// findVersion reads the versions and returns version want.
func (b *Backend) findVersion(ctx context.Context, ring backends.KeyRing, want int) (backends.Version, error) {
	vs, err := b.Versions(ctx, ring)
	if err != nil {
		return backends.Version{}, err
	}
	backends.Step(ctx, "read versions")
	for _, v := range vs {
		if v.ID == strconv.Itoa(want) {
			return v, nil
		}
	}
	return backends.Version{}, backends.LostRace(Scheme, ring, "", fmt.Sprintf("Transit key %q has no version %d", b.keyName(ring), want))
}

// newestVersion is the ID of the key's newest version; "" for no key.
func newestVersion(k *transitKey) string {
	if k == nil {
		return ""
	}
	return strconv.Itoa(k.LatestVersion)
}

// Leftovers lists the ring's rotation lock key while it exists: held by a
// rotation under way, or left by one whose replica died (a refresh deletes
// it once the grace has passed). A Transit key holds nothing else but its
// versions: creating the key and rotating it are calls that Vault carries
// out whole or not at all, and revocation is one write of
// min_encryption_version.
func (b *Backend) Leftovers(ctx context.Context, ring backends.KeyRing) ([]backends.Leftover, error) {
	if err := b.checkOpen(); err != nil {
		return nil, err
	}
	created, _, err := b.readLock(ctx, ring)
	if err != nil || created.IsZero() {
		return nil, err
	}
	return []backends.Leftover{{ID: b.lockName(ring), Kind: "rotation lock (Transit key) of a rotation under way or interrupted",
		State: "awaiting clean-up", Created: created}}, nil
}

// Sign signs with exactly the named version. Concurrent calls for the same
// version travel together as one batch_input request.
func (b *Backend) Sign(ctx context.Context, ring backends.KeyRing, versionID string, signingInput []byte) ([]byte, error) {
	if err := b.checkOpen(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	n, err := strconv.Atoi(versionID)
	if err != nil || n < 1 {
		return nil, errorf(backends.KindNotFound, "Transit key %q has no version %q", b.keyName(ring), versionID)
	}
	if _, ok := transitTypes[ring.Algorithm]; !ok {
		return nil, errorf(backends.KindUnimplemented, "algorithm %q is not supported", ring.Algorithm)
	}
	return b.batches.sign(ctx, ring, n, signingInput)
}

// signParams are the Transit sign parameters for an algorithm.
func signParams(alg backends.Algorithm, version int) map[string]any {
	p := map[string]any{"key_version": version, "marshaling_algorithm": "jws"}
	switch {
	case alg.IsEdDSA():
		// Pure Ed25519 over the input; Transit refuses a hash here.
	case alg.IsECDSA():
		p["hash_algorithm"] = hashName(alg)
	case alg.IsRSAPKCS1():
		p["hash_algorithm"], p["signature_algorithm"] = hashName(alg), "pkcs1v15"
	case alg.IsRSAPSS():
		p["hash_algorithm"], p["signature_algorithm"], p["salt_length"] = hashName(alg), "pss", "hash"
	}
	return p
}

func hashName(alg backends.Algorithm) string {
	switch alg.Hash() {
	case crypto.SHA384:
		return "sha2-384"
	case crypto.SHA512:
		return "sha2-512"
	}
	return "sha2-256"
}

// signBatch sends one batch_input request and returns, per input, a
// signature or an error.
func (b *Backend) signBatch(ctx context.Context, ring backends.KeyRing, version int, inputs [][]byte) ([][]byte, []error, error) {
	name := b.keyName(ring)
	params := signParams(ring.Algorithm, version)
	items := make([]map[string]string, len(inputs))
	for i, in := range inputs {
		items[i] = map[string]string{"input": base64.StdEncoding.EncodeToString(in)}
	}
	params["batch_input"] = items
	secret, err := b.call(ctx, func(ctx context.Context) (*api.Secret, error) {
		return b.client.Logical().WriteWithContext(ctx, b.path("sign", name), params)
	})
	if err != nil {
		return nil, nil, b.classify(err, "signing with version %d of Transit key %q", version, name)
	}
	var data map[string]any
	if secret != nil {
		data = secret.Data
	}
	return decodeSignBatch(data, ring.Algorithm, version, len(inputs), name)
}

// Close stops token renewal and the batch workers, ends the requests they
// have in flight, waits for every goroutine the backend started, and closes
// idle connections. Calls still running fail. It is safe to call more than
// once.
func (b *Backend) Close() error {
	b.closeOnce.Do(func() {
		b.cancel()
		if b.batches != nil {
			b.batches.stop()
		}
		if b.auth != nil {
			b.auth.stop()
		}
		b.wg.Wait()
		b.transport.CloseIdleConnections()
	})
	return nil
}

// closingTransport ends every request when the backend closes, whatever
// context it was sent with: the Vault client's lifetime watcher renews the
// token with context.Background, and Close must not wait for a frozen Vault.
type closingTransport struct {
	base   http.RoundTripper
	closed context.Context
}

func (t *closingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancel(req.Context())
	stop := context.AfterFunc(t.closed, cancel)
	release := func() { stop(); cancel() }
	resp, err := t.base.RoundTrip(req.WithContext(ctx))
	if err != nil {
		release()
		return nil, err
	}
	// The body is read after RoundTrip returns: release the request's
	// context only when it is closed.
	resp.Body = &releasingBody{ReadCloser: resp.Body, release: release}
	return resp, nil
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach the base
// transport.
func (t *closingTransport) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

type releasingBody struct {
	io.ReadCloser
	release func()
}

func (b *releasingBody) Close() error {
	err := b.ReadCloser.Close()
	b.release()
	return err
}
