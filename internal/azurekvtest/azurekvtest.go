// Package azurekvtest is an Azure Key Vault look-alike for tests: an HTTPS
// server on 127.0.0.1 speaking the Key Vault keys REST API (api-version
// 2025-07-01, the one azkeys v1.5 sends) that the official client
// (azkeys.NewClient) talks to unchanged, with a token from azidentity's
// DefaultAzureCredential obtained from Identity, the Entra ID look-alike
// beside it. NOT FOR PRODUCTION: keys live in process memory.
//
// What it implements follows the REST reference:
//
//   - the challenge-based bearer authentication the SDK performs: a request
//     without a valid token gets 401 with WWW-Authenticate: Bearer
//     authorization="<authority>/<tenant>", resource="<resource>"; Key Vault
//     names https://vault.azure.net, the DNS suffix of every vault, and the
//     SDK checks that the vault's host ends with it. Reached as
//     127.0.0.1:PORT, this server names https://0.0.1:PORT, the suffix of its
//     own host, so that check runs unchanged;
//   - POST /keys/{name}/create (a new key, or a new version of an existing
//     one): kty EC, EC-HSM, RSA, RSA-HSM (no OKP: Key Vault has no Ed25519),
//     crv, key_size, key_ops, attributes.enabled/exportable, up to 15 tags
//     of at most 256 characters; versions are 32 lowercase hex digits and
//     "created" is in whole seconds;
//   - GET /keys/{name}/versions (paged with maxresults and nextLink), GET
//     /keys/{name}/{version}, PATCH /keys/{name}/{version} (attributes,
//     key_ops, tags), POST /keys/{name}/{version}/sign with alg ES256...PS512
//     over a digest of the algorithm's length, answering R||S for ECDSA;
//   - errors as Key Vault shapes them: 404 KeyNotFound; 403 Forbidden with
//     innererror KeyDisabled for get and sign on a disabled version
//     ("Operation get is not allowed on a disabled key."); 403 Forbidden with
//     innererror ForbiddenByRbac naming the data action a denied caller
//     lacks; 400 BadParameter; 429 Throttled with Retry-After;
//   - soft-delete, on by default in every vault: DELETE /keys/{name} moves
//     the key and all its versions to the deleted keys (answering the
//     DeletedKeyBundle with recoveryId, deletedDate, scheduledPurgeDate);
//     the name then answers 404 KeyNotFound to reads and 409 Conflict with
//     innererror ObjectIsDeletedButRecoverable to a create, until POST
//     /deletedkeys/{name}/recover brings it back or DELETE
//     /deletedkeys/{name} purges it;
//   - a Date header on every answer (net/http writes it), Key Vault's
//     clock.
//
// Checked against the real service's answers recorded by Azure's own SDK
// tests (repository Azure/azure-sdk-for-js, recordings under
// sdk/keyvault/keyvault-keys/recordings/node/; read, not copied):
//
//   - a key created with attributes.enabled=false is answered 200 with its
//     full KeyBundle, public key included, enabled false
//     (keys_client__create_read_update_and_delete_operations/
//     recording_can_create_a_disabled_key.js);
//   - PATCH of a disabled version is allowed and answers the full
//     KeyBundle, public key included, still disabled
//     (recording_can_update_a_disabled_key.js);
//   - DELETE of a key answers the DeletedKeyBundle (recoveryId,
//     deletedDate, scheduledPurgeDate, the key and its attributes with
//     recoveryLevel "Recoverable+Purgeable"); a deleted key read after it
//     is purged is 404 KeyNotFound "Deleted Key not found: NAME" (the same
//     recordings);
//   - an RSA key created without key_ops gets encrypt, decrypt, sign,
//     verify, wrapKey and unwrapKey (this server used to add "import"); an
//     answer for a key without tags has no "tags" member (this server used
//     to send null);
//   - a request without a token: 401 Unauthorized "Request is missing a
//     Bearer or PoP token." with WWW-Authenticate naming
//     login.windows.net/<tenant> and https://vault.azure.net (every
//     recording's first exchange; this server prefixes the AKV10000 code
//     newer service versions send).
//
// Not found in a recording, from the REST reference and Microsoft's
// Key Vault documentation ("About keys": a disabled key cannot be used for
// cryptographic operations): sign on a disabled version is 403 Forbidden
// with innererror KeyDisabled. Get of a disabled version is answered the
// same way here ("Operation get is not allowed on a disabled key."), the
// behaviour Signet's azurekv backend is built for (it keeps a revoked
// version's public key in its tags), unconfirmed by a recorded exchange.
//
// Faults a test can inject: Deny a data action, Throttle the next requests,
// HoldCreates (let several creations meet before any runs, to force a race),
// BeforeNext (another client's change between two requests).
package azurekvtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/signet-dev/signet/internal/testtls"
)

// APIVersion is the one api-version this server speaks.
const APIVersion = "2025-07-01"

// Server is a running fake Key Vault.
type Server struct {
	// URL is the vault URL, https://127.0.0.1:PORT.
	URL string
	// Throttle makes the next N requests fail with 429.
	Throttle atomic.Int64

	id       *Identity
	resource string
	srv      *httptest.Server

	mu      sync.Mutex
	keys    map[string][]*version // by name, in creation order
	deleted map[string]deletedKey // soft-deleted keys, by name
	calls   map[string]int
	denied  map[string]bool
	before  map[string]func()
	hold    *holdGroup
	lose    map[string]bool // operations whose next request loses its answer
	lost    int
}

type version struct {
	id       string
	kty      string
	crv      string
	priv     crypto.Signer
	ops      []string
	enabled  bool
	export   bool
	created  int64
	updated  int64
	tags     map[string]string
	sequence int // creation order, for tests
}

type deletedKey struct {
	versions []*version
	at       int64
}

type holdGroup struct {
	n, arrived int
	all        chan struct{}
}

// Start starts a fake Key Vault on a loopback port whose challenge points
// callers at id; call Close when done.
func Start(id *Identity) *Server {
	s := &Server{id: id, keys: map[string][]*version{}, deleted: map[string]deletedKey{}, calls: map[string]int{}, denied: map[string]bool{}, before: map[string]func(){}}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.srv.TLS = testtls.ServerConfig()
	s.srv.StartTLS()
	s.URL = s.srv.URL
	u, _ := url.Parse(s.URL)
	s.resource = "https://0.0.1:" + u.Port()
	return s
}

// Close stops the server; clients then get connection errors.
func (s *Server) Close() {
	s.srv.CloseClientConnections()
	s.srv.Close()
}

// Calls reports how many authenticated requests an operation ("create",
// "get", "list", "update", "sign") got.
func (s *Server) Calls(op string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[op]
}

// Deny refuses (or, with deny=false, grants again) a data action, e.g.
// "Microsoft.KeyVault/vaults/keys/sign/action", as Azure RBAC would.
func (s *Server) Deny(action string, deny bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.denied[action] = deny
}

// BeforeNext runs f once, just before the next request of an operation
// ("get", "list", ...) is served: another client's change landing between
// two requests of one reader (a version disabled between its listing and
// its get).
func (s *Server) BeforeNext(op string, f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.before[op] = f
}

// LoseNext makes the next request of the operation ("create", ...) take
// effect and then end without an answer, as a network failure after the
// fact does. It fires once.
func (s *Server) LoseNext(op string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lose = map[string]bool{op: true}
}

// Lost is how many answers LoseNext has lost.
func (s *Server) Lost() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lost
}

// HoldCreates makes the next n creations wait until all n have arrived.
func (s *Server) HoldCreates(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hold = &holdGroup{n: n, all: make(chan struct{})}
}

// Version is what the fake holds for a key version.
type Version struct {
	ID       string // the version, 32 hex digits
	Enabled  bool
	Ops      []string
	Tags     map[string]string
	Created  time.Time
	Sequence int // 1 for the key's first version, in creation order
}

// Versions lists a key's versions in creation order.
func (s *Server) Versions(name string) []Version {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Version
	for _, v := range s.keys[name] {
		tags := map[string]string{}
		for k, t := range v.tags {
			tags[k] = t
		}
		out = append(out, Version{ID: v.id, Enabled: v.enabled, Ops: append([]string(nil), v.ops...), Tags: tags,
			Created: time.Unix(v.created, 0), Sequence: v.sequence})
	}
	return out
}

// SetOps sets a version's key_ops by hand, as an operator could.
func (s *Server) SetOps(name, versionID string, ops ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range s.keys[name] {
		if v.id == versionID {
			v.ops = ops
		}
	}
}

type kvError struct {
	status        int
	code, message string
	inner         string
}

func (e *kvError) write(w http.ResponseWriter) {
	body := map[string]any{"code": e.code, "message": e.message}
	if e.inner != "" {
		body["innererror"] = map[string]string{"code": e.inner}
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(e.status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": body})
}

func badParameter(format string, args ...any) *kvError {
	return &kvError{status: http.StatusBadRequest, code: "BadParameter", message: fmt.Sprintf(format, args...)}
}

func keyNotFound(name string) *kvError {
	return &kvError{status: http.StatusNotFound, code: "KeyNotFound",
		message: fmt.Sprintf("A key with (name/id) %s was not found in this key vault. If you recently deleted this key you may be able to recover it using the correct recovery command.", name)}
}

func disabled(op string) *kvError {
	return &kvError{status: http.StatusForbidden, code: "Forbidden", inner: "KeyDisabled",
		message: fmt.Sprintf("Operation %s is not allowed on a disabled key.", op)}
}

var (
	namePattern    = regexp.MustCompile(`^[0-9a-zA-Z-]{1,127}$`)
	versionPattern = regexp.MustCompile(`^[0-9a-f]{32}$`)
)

// route is an operation on the keys API: its name, data action, key name
// and version.
type route struct {
	op, action, name, version string
}

func parseRoute(method, path string) (route, bool) {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	const a = "Microsoft.KeyVault/vaults/keys/"
	if len(parts) >= 2 && parts[0] == "deletedkeys" {
		r := route{name: parts[1]}
		switch {
		case len(parts) == 3 && parts[2] == "recover" && method == http.MethodPost:
			r.op, r.action = "recover", a+"recover/action"
		case len(parts) == 2 && method == http.MethodDelete:
			r.op, r.action = "purge", "Microsoft.KeyVault/vaults/deletedKeys/delete"
		default:
			return route{}, false
		}
		return r, true
	}
	if len(parts) < 2 || parts[0] != "keys" {
		return route{}, false
	}
	r := route{name: parts[1]}
	switch {
	case len(parts) == 3 && parts[2] == "create" && method == http.MethodPost:
		r.op, r.action = "create", a+"create/action"
	case len(parts) == 3 && parts[2] == "versions" && method == http.MethodGet:
		r.op, r.action = "list", a+"read"
	case len(parts) == 3 && method == http.MethodGet:
		r.op, r.action, r.version = "get", a+"read", parts[2]
	case len(parts) == 2 && method == http.MethodGet:
		r.op, r.action = "get", a+"read"
	case len(parts) == 2 && method == http.MethodDelete:
		r.op, r.action = "delete", a+"delete"
	case len(parts) == 3 && method == http.MethodPatch:
		r.op, r.action, r.version = "update", a+"update/action", parts[2]
	case len(parts) == 4 && parts[3] == "sign" && method == http.MethodPost:
		r.op, r.action, r.version = "sign", a+"sign/action", parts[2]
	default:
		return route{}, false
	}
	return r, true
}

// deleteKey soft-deletes a key with all its versions.
func (s *Server) deleteKey(name string) (any, *kvError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	vs := s.keys[name]
	if len(vs) == 0 {
		return nil, keyNotFound(name)
	}
	now := time.Now().Unix()
	delete(s.keys, name)
	s.deleted[name] = deletedKey{versions: vs, at: now}
	out := s.bundle(name, vs[len(vs)-1])
	out["recoveryId"] = s.URL + "/deletedkeys/" + name
	out["deletedDate"] = now
	out["scheduledPurgeDate"] = now + 90*24*3600
	return out, nil
}

// recoverKey brings a soft-deleted key back.
func (s *Server) recoverKey(name string) (any, *kvError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.deleted[name]
	if !ok {
		return nil, &kvError{status: http.StatusNotFound, code: "KeyNotFound", message: fmt.Sprintf("Deleted Key not found: %s", name)}
	}
	delete(s.deleted, name)
	s.keys[name] = d.versions
	return s.bundle(name, d.versions[len(d.versions)-1]), nil
}

// purgeKey removes a soft-deleted key for good.
func (s *Server) purgeKey(name string) (any, *kvError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.deleted[name]; !ok {
		return nil, &kvError{status: http.StatusNotFound, code: "KeyNotFound", message: fmt.Sprintf("Deleted Key not found: %s", name)}
	}
	delete(s.deleted, name)
	return nil, nil
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if v := r.URL.Query().Get("api-version"); v != APIVersion {
		badParameter("The specified version (%s) is not recognized. Consider using the latest supported version (%s).", v, APIVersion).write(w)
		return
	}
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if tok == "" || !s.id.valid(tok, s.resource+"/.default") {
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer authorization="%s/%s", resource="%s"`, s.id.URL, TenantID, s.resource))
		(&kvError{status: http.StatusUnauthorized, code: "Unauthorized", message: "AKV10000: Request is missing a Bearer or PoP token."}).write(w)
		return
	}
	for n := s.Throttle.Load(); n > 0; n = s.Throttle.Load() {
		if s.Throttle.CompareAndSwap(n, n-1) {
			w.Header().Set("Retry-After", "0")
			(&kvError{status: http.StatusTooManyRequests, code: "Throttled", message: "Request was not processed because too many requests were received. Reason: VaultRequestTypeLimitReached"}).write(w)
			return
		}
	}
	rt, ok := parseRoute(r.Method, r.URL.Path)
	if !ok {
		badParameter("The request URI %s %s is not valid for this test server.", r.Method, r.URL.Path).write(w)
		return
	}
	s.mu.Lock()
	s.calls[rt.op]++
	denied := s.denied[rt.action]
	before := s.before[rt.op]
	delete(s.before, rt.op)
	s.mu.Unlock()
	if before != nil {
		before()
	}
	if denied {
		(&kvError{status: http.StatusForbidden, code: "Forbidden", inner: "ForbiddenByRbac", message: fmt.Sprintf(
			"Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\nCaller: appid=%s\r\nAction: '%s'\r\nResource: '%s/keys/%s'",
			ClientID, rt.action, s.URL, rt.name)}).write(w)
		return
	}
	if !namePattern.MatchString(rt.name) {
		badParameter("The request URI contains an invalid name: %s", rt.name).write(w)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		badParameter("cannot read the request body").write(w)
		return
	}
	var out any
	var kerr *kvError
	switch rt.op {
	case "create":
		s.awaitHold(r)
		out, kerr = s.create(rt.name, body)
	case "list":
		out, kerr = s.list(rt.name, r.URL.Query())
	case "get":
		out, kerr = s.get(rt.name, rt.version)
	case "update":
		out, kerr = s.update(rt.name, rt.version, body)
	case "sign":
		out, kerr = s.sign(rt.name, rt.version, body)
	case "delete":
		out, kerr = s.deleteKey(rt.name)
	case "recover":
		out, kerr = s.recoverKey(rt.name)
	case "purge":
		out, kerr = s.purgeKey(rt.name)
	}
	if kerr != nil {
		kerr.write(w)
		return
	}
	s.mu.Lock()
	lose := s.lose[rt.op]
	if lose {
		s.lose = nil
	}
	s.mu.Unlock()
	if lose {
		s.mu.Lock()
		s.lost++
		s.mu.Unlock()
		// Ends the exchange without an answer: HTTP/1.1 closes the
		// connection, HTTP/2 resets the stream.
		panic(http.ErrAbortHandler)
	}
	if out == nil {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_ = json.NewEncoder(w).Encode(out)
}

func (s *Server) awaitHold(r *http.Request) {
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
		case <-r.Context().Done():
		}
	}
}

// jsonAttributes are a key version's attributes as Key Vault writes them.
type jsonAttributes struct {
	Enabled         *bool  `json:"enabled,omitempty"`
	Exportable      *bool  `json:"exportable,omitempty"`
	Created         int64  `json:"created,omitempty"`
	Updated         int64  `json:"updated,omitempty"`
	RecoveryLevel   string `json:"recoveryLevel,omitempty"`
	RecoverableDays int    `json:"recoverableDays,omitempty"`
}

var b64 = base64.RawURLEncoding

func (s *Server) kid(name, ver string) string { return s.URL + "/keys/" + name + "/" + ver }

func (s *Server) attributes(v *version) jsonAttributes {
	en, ex := v.enabled, v.export
	return jsonAttributes{Enabled: &en, Exportable: &ex, Created: v.created, Updated: v.updated,
		RecoveryLevel: "Recoverable+Purgeable", RecoverableDays: 90}
}

// bundle is a KeyBundle: the public JWK, attributes and tags.
func (s *Server) bundle(name string, v *version) map[string]any {
	jwk := map[string]any{"kid": s.kid(name, v.id), "kty": v.kty, "key_ops": v.ops}
	switch k := v.priv.Public().(type) {
	case *ecdsa.PublicKey:
		point, _ := k.Bytes() // 0x04 || X || Y, each as long as the curve's size
		size := (len(point) - 1) / 2
		jwk["crv"], jwk["x"], jwk["y"] = v.crv, b64.EncodeToString(point[1:1+size]), b64.EncodeToString(point[1+size:])
	case *rsa.PublicKey:
		jwk["n"], jwk["e"] = b64.EncodeToString(k.N.Bytes()), b64.EncodeToString(big.NewInt(int64(k.E)).Bytes())
	}
	out := map[string]any{"key": jwk, "attributes": s.attributes(v)}
	if len(v.tags) > 0 {
		out["tags"] = v.tags // absent from Key Vault's answers for a key without tags
	}
	return out
}

var curves = map[string]elliptic.Curve{"P-256": elliptic.P256(), "P-384": elliptic.P384(), "P-521": elliptic.P521()}

// rsaOps are the key_ops Key Vault gives an RSA key created without any,
// as its answers in the SDK's recorded exchanges show.
var rsaOps = []string{"encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"}

func checkTags(tags map[string]string) *kvError {
	if len(tags) > 15 {
		return badParameter("A key may have at most 15 tags, not %d.", len(tags))
	}
	for k, v := range tags {
		if len(k) > 512 || len(v) > 256 {
			return badParameter("Tag %q is too long: names at most 512 and values at most 256 characters.", k)
		}
	}
	return nil
}

func (s *Server) create(name string, body []byte) (any, *kvError) {
	var in struct {
		Kty     string            `json:"kty"`
		Crv     string            `json:"crv"`
		KeySize int               `json:"key_size"`
		KeyOps  []string          `json:"key_ops"`
		Attrs   *jsonAttributes   `json:"attributes"`
		Tags    map[string]string `json:"tags"`
		Release json.RawMessage   `json:"release_policy"`
	}
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, badParameter("The request body is not valid JSON: %v", err)
	}
	v := &version{kty: in.Kty, enabled: true, tags: in.Tags}
	var err error
	switch in.Kty {
	case "EC", "EC-HSM":
		c, ok := curves[in.Crv]
		if !ok {
			return nil, badParameter("Invalid curve name %q for this test server (P-256, P-384, P-521).", in.Crv)
		}
		v.crv = in.Crv
		v.priv, err = ecdsa.GenerateKey(c, rand.Reader)
	case "RSA", "RSA-HSM":
		if in.KeySize == 0 {
			in.KeySize = 2048
		}
		if in.KeySize != 2048 && in.KeySize != 3072 && in.KeySize != 4096 {
			return nil, badParameter("Invalid key size %d: RSA keys are 2048, 3072 or 4096 bits.", in.KeySize)
		}
		v.priv, err = rsa.GenerateKey(rand.Reader, in.KeySize)
	default:
		return nil, badParameter("Invalid key type %q: Key Vault creates EC, EC-HSM, RSA, RSA-HSM, oct-HSM keys.", in.Kty)
	}
	if err != nil {
		return nil, &kvError{status: http.StatusInternalServerError, code: "InternalError", message: err.Error()}
	}
	v.ops = in.KeyOps
	if len(v.ops) == 0 {
		v.ops = rsaOps // Key Vault's default: every operation the key type allows
		if strings.HasPrefix(in.Kty, "EC") {
			v.ops = []string{"sign", "verify"}
		}
	}
	if in.Attrs != nil {
		if in.Attrs.Enabled != nil {
			v.enabled = *in.Attrs.Enabled
		}
		if in.Attrs.Exportable != nil {
			v.export = *in.Attrs.Exportable
		}
	}
	if v.export && len(in.Release) == 0 {
		return nil, badParameter("Exportable keys must have a release policy.")
	}
	if kerr := checkTags(v.tags); kerr != nil {
		return nil, kerr
	}
	id := make([]byte, 16)
	_, _ = rand.Read(id)
	v.id = hex.EncodeToString(id)
	v.created = time.Now().Unix()
	v.updated = v.created
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, gone := s.deleted[name]; gone {
		return nil, &kvError{status: http.StatusConflict, code: "Conflict", inner: "ObjectIsDeletedButRecoverable",
			message: fmt.Sprintf("Key %s is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the key can be recovered or purged.", name)}
	}
	v.sequence = len(s.keys[name]) + 1
	s.keys[name] = append(s.keys[name], v)
	return s.bundle(name, v), nil
}

func (s *Server) find(name, ver string) (*version, *kvError) {
	vs := s.keys[name]
	if len(vs) == 0 {
		return nil, keyNotFound(name)
	}
	if ver == "" {
		return vs[len(vs)-1], nil
	}
	if !versionPattern.MatchString(ver) {
		return nil, badParameter("The key version %q is not valid.", ver)
	}
	for _, v := range vs {
		if v.id == ver {
			return v, nil
		}
	}
	return nil, keyNotFound(name + "/" + ver)
}

func (s *Server) list(name string, q url.Values) (any, *kvError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	vs := s.keys[name]
	if len(vs) == 0 {
		return nil, keyNotFound(name)
	}
	limit := 25
	if m := q.Get("maxresults"); m != "" {
		n, err := strconv.Atoi(m)
		if err != nil || n < 1 || n > 25 {
			return nil, badParameter("maxresults must be between 1 and 25.")
		}
		limit = n
	}
	start := 0
	if t := q.Get("$skiptoken"); t != "" {
		n, err := strconv.Atoi(t)
		if err != nil || n < 0 || n > len(vs) {
			return nil, badParameter("Invalid $skiptoken.")
		}
		start = n
	}
	// Key Vault lists versions in no documented order: this server sorts
	// them by version id, so callers cannot rely on creation order.
	sorted := append([]*version(nil), vs...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].id < sorted[j].id })
	end := min(start+limit, len(sorted))
	items := []map[string]any{}
	for _, v := range sorted[start:end] {
		item := map[string]any{"kid": s.kid(name, v.id), "attributes": s.attributes(v)}
		if len(v.tags) > 0 {
			item["tags"] = v.tags
		}
		items = append(items, item)
	}
	out := map[string]any{"value": items}
	if end < len(sorted) {
		out["nextLink"] = fmt.Sprintf("%s/keys/%s/versions?api-version=%s&maxresults=%d&$skiptoken=%d", s.URL, name, APIVersion, limit, end)
	}
	return out, nil
}

func (s *Server) get(name, ver string) (any, *kvError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, kerr := s.find(name, ver)
	if kerr != nil {
		return nil, kerr
	}
	if !v.enabled {
		return nil, disabled("get")
	}
	return s.bundle(name, v), nil
}

func (s *Server) update(name, ver string, body []byte) (any, *kvError) {
	var in struct {
		KeyOps []string           `json:"key_ops"`
		Attrs  *jsonAttributes    `json:"attributes"`
		Tags   *map[string]string `json:"tags"`
	}
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, badParameter("The request body is not valid JSON: %v", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if ver == "" {
		return nil, badParameter("A key version is required.")
	}
	v, kerr := s.find(name, ver)
	if kerr != nil {
		return nil, kerr
	}
	if in.Tags != nil {
		if kerr := checkTags(*in.Tags); kerr != nil {
			return nil, kerr
		}
		v.tags = *in.Tags
	}
	if in.KeyOps != nil {
		v.ops = in.KeyOps
	}
	if in.Attrs != nil && in.Attrs.Enabled != nil {
		v.enabled = *in.Attrs.Enabled
	}
	v.updated = time.Now().Unix()
	return s.bundle(name, v), nil
}

// signAlgs is what each sign algorithm needs: the key family, curve and
// digest length.
var signAlgs = map[string]struct {
	ec     bool
	crv    string
	digest crypto.Hash
	pss    bool
}{
	"ES256": {true, "P-256", crypto.SHA256, false}, "ES384": {true, "P-384", crypto.SHA384, false}, "ES512": {true, "P-521", crypto.SHA512, false},
	"RS256": {false, "", crypto.SHA256, false}, "RS384": {false, "", crypto.SHA384, false}, "RS512": {false, "", crypto.SHA512, false},
	"PS256": {false, "", crypto.SHA256, true}, "PS384": {false, "", crypto.SHA384, true}, "PS512": {false, "", crypto.SHA512, true},
}

func (s *Server) sign(name, ver string, body []byte) (any, *kvError) {
	var in struct {
		Alg   string `json:"alg"`
		Value string `json:"value"`
	}
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, badParameter("The request body is not valid JSON: %v", err)
	}
	s.mu.Lock()
	v, kerr := s.find(name, ver)
	var st version
	if kerr == nil {
		st = *v
	}
	s.mu.Unlock()
	if kerr != nil {
		return nil, kerr
	}
	if !st.enabled {
		return nil, disabled("sign")
	}
	if !contains(st.ops, "sign") {
		return nil, &kvError{status: http.StatusForbidden, code: "Forbidden", inner: "KeyOperationForbidden", message: "Operation sign is not permitted on this key."}
	}
	spec, ok := signAlgs[in.Alg]
	if !ok || spec.ec != strings.HasPrefix(st.kty, "EC") || spec.crv != st.crv {
		return nil, badParameter("Invalid algorithm %q for a %s %s key.", in.Alg, st.kty, st.crv)
	}
	digest, err := b64.DecodeString(strings.TrimRight(in.Value, "="))
	if err != nil || len(digest) != spec.digest.Size() {
		return nil, badParameter("The digest is not a base64url value of %d bytes for %s.", spec.digest.Size(), in.Alg)
	}
	var sig []byte
	switch k := st.priv.(type) {
	case *ecdsa.PrivateKey:
		r, s2, err := ecdsa.Sign(rand.Reader, k, digest)
		if err == nil {
			size := (k.Curve.Params().BitSize + 7) / 8
			sig = append(r.FillBytes(make([]byte, size)), s2.FillBytes(make([]byte, size))...)
		}
	case *rsa.PrivateKey:
		if spec.pss {
			sig, err = rsa.SignPSS(rand.Reader, k, spec.digest, digest, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		} else {
			sig, err = rsa.SignPKCS1v15(rand.Reader, k, spec.digest, digest)
		}
	}
	if err != nil {
		return nil, &kvError{status: http.StatusInternalServerError, code: "InternalError", message: err.Error()}
	}
	return map[string]string{"kid": s.kid(name, st.id), "value": b64.EncodeToString(sig)}, nil
}

func contains(ops []string, op string) bool {
	for _, o := range ops {
		if o == op {
			return true
		}
	}
	return false
}
