// Package kmstest is an AWS KMS look-alike for tests: an HTTP server that
// speaks KMS's JSON 1.1 protocol (X-Amz-Target: TrentService.<Action>),
// requires a SigV4 Authorization header, does real cryptography and answers
// with KMS's error shapes ({"__type": ..., "message": ...}). The real AWS SDK
// client talks to it through an endpoint override. NOT FOR PRODUCTION: keys
// live in process memory.
package kmstest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// MaxMessage is KMS's limit on Sign and Verify messages.
const MaxMessage = 4096

// Server is a running fake KMS.
type Server struct {
	URL    string
	Region string
	// PageSize is the most aliases ListAliases returns at once (KMS: 50-100).
	PageSize int
	// Throttle makes the next N requests fail with ThrottlingException.
	Throttle atomic.Int64

	srv          *httptest.Server
	mu           sync.Mutex
	keys         map[string]*Key // by key id
	aliases      map[string]string
	aliasCreated map[string]time.Time
	order        []string // alias names in creation order
	calls        map[string]int
	after        []afterHook
	failIf       map[string]func(in map[string]any) bool
	lose         map[string]int
	lost         int
	denied       map[string]bool
	throttled    map[string]int
	frozen       atomic.Pointer[chan struct{}] // non-nil: requests wait for it to close (Freeze)
}

// afterHook runs once an action has been carried out, before its answer is
// sent; it stays armed while it returns false.
type afterHook struct {
	action string
	fn     func(accessKeyID string) (done bool)
}

// Key is a KMS key held by the fake.
type Key struct {
	ID, ARN, Spec, Usage, State, Description string
	Created                                  time.Time
	Tags                                     map[string]string
	priv                                     crypto.Signer
}

// Env points the AWS SDK at test credentials and a region, and keeps it
// away from this machine's AWS configuration and from instance metadata.
var Env = map[string]string{ // #nosec G101 -- made-up credentials the test server accepts from anyone
	"AWS_ACCESS_KEY_ID":           "AKIDSIGNETTEST",
	"AWS_SECRET_ACCESS_KEY":       "signet-test-secret",
	"AWS_REGION":                  "us-east-1",
	"AWS_EC2_METADATA_DISABLED":   "true",
	"AWS_CONFIG_FILE":             "/nonexistent",
	"AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
}

// SetEnv sets Env in the process environment, where the AWS SDK reads it.
// Call it from TestMain, before any test runs: unlike t.Setenv it leaves the
// tests free to run in parallel.
func SetEnv() {
	for k, v := range Env {
		if err := os.Setenv(k, v); err != nil {
			panic(err) // only a key or value with a NUL byte fails, and Env has none
		}
	}
}

// Start starts a fake KMS on a loopback port; call Close when done.
func Start() *Server {
	s := &Server{Region: "us-east-1", PageSize: 50, keys: map[string]*Key{}, aliases: map[string]string{},
		aliasCreated: map[string]time.Time{}, calls: map[string]int{}}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = s.srv.URL
	return s
}

// Close stops the server; clients then get connection errors.
func (s *Server) Close() {
	s.Thaw() // httptest's Close waits for the requests a freeze holds
	s.srv.CloseClientConnections()
	s.srv.Close()
}

// Freeze makes the server hold every request, unanswered, until Thaw or
// until the client gives up: a KMS endpoint that stopped answering (the
// connection is accepted, nothing comes back), as vaulttest's SIGSTOP.
func (s *Server) Freeze() {
	ch := make(chan struct{})
	s.frozen.Store(&ch)
}

// Thaw answers the held requests and every one after them again.
func (s *Server) Thaw() {
	if ch := s.frozen.Swap(nil); ch != nil {
		close(*ch)
	}
}

// Calls reports how many times an action was called.
func (s *Server) Calls(action string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[action]
}

// Keys returns a copy of every key.
func (s *Server) Keys() []Key {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Key
	for _, k := range s.keys {
		out = append(out, *k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out
}

// Aliases returns every alias and the id of the key it targets.
func (s *Server) Aliases() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]string, len(s.aliases))
	for k, v := range s.aliases {
		out[k] = v
	}
	return out
}

// ReplaceKeyMaterial gives the key keyID (a key id or ARN) new key material
// of the same spec, keeping its id, ARN, state, description and tags: what
// a faulty or compromised KMS would do. Real KMS never does (a key's
// material is fixed), which is why Signet's tests need it: Sign then signs
// with a key other than the one the version published.
func (s *Server) ReplaceKeyMaterial(keyID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, e := s.find(map[string]any{"KeyId": keyID})
	if e != nil {
		return fmt.Errorf("%s: %s", e.typ, e.msg)
	}
	priv, err := generate(k.Spec)
	if err != nil {
		return err
	}
	k.priv = priv
	return nil
}

// After arms fn to run each time action has been carried out successfully,
// before the answer is sent, with the access key id of the request's
// signature (which tells apart the processes of a test that gives each its
// own credentials), until fn returns true. fn runs with the server's lock
// held: it must not call the server.
func (s *Server) After(action string, fn func(accessKeyID string) (done bool)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.after = append(s.after, afterHook{action: action, fn: fn})
}

// FailIf makes action fail with KMSInternalException, without effect,
// whenever fn says so of its input; nil disarms it. fn runs with the
// server's lock held.
func (s *Server) FailIf(action string, fn func(in map[string]any) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failIf == nil {
		s.failIf = map[string]func(map[string]any) bool{}
	}
	s.failIf[action] = fn
}

// Deny makes every call of action fail with AccessDeniedException, without
// effect, as KMS answers a caller whose IAM policy lacks kms:<action>;
// deny=false allows it again.
func (s *Server) Deny(action string, deny bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.denied == nil {
		s.denied = map[string]bool{}
	}
	s.denied[action] = deny
}

// ThrottleAction makes the next n calls of action fail with
// ThrottlingException, without effect (Throttle does it to every action).
func (s *Server) ThrottleAction(action string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.throttled == nil {
		s.throttled = map[string]int{}
	}
	s.throttled[action] = n
}

// LoseAnswer makes the next n calls of action take effect and then close
// the connection without an answer, as a network failure after the fact
// would.
func (s *Server) LoseAnswer(action string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lose == nil {
		s.lose = map[string]int{}
	}
	s.lose[action] = n
}

// Lost is how many answers LoseAnswer has lost.
func (s *Server) Lost() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lost
}

// KillAfter arms a crash: once action has been carried out for a request
// signed with accessKeyID ("" for any), the process pid is sent SIGKILL
// before the answer leaves, so it never learns the outcome. It fires once.
func (s *Server) KillAfter(action, accessKeyID string, pid int) {
	s.After(action, func(ak string) bool {
		if accessKeyID != "" && ak != accessKeyID {
			return false
		}
		_ = syscall.Kill(pid, syscall.SIGKILL) // a process already gone is what the test wants anyway
		return true
	})
}

// accessKeyID is the access key id in a SigV4 Authorization header.
func accessKeyID(r *http.Request) string {
	_, cred, _ := strings.Cut(r.Header.Get("Authorization"), "Credential=")
	ak, _, _ := strings.Cut(cred, "/")
	return ak
}

type apiError struct {
	status int
	typ    string
	msg    string
}

func fail(typ, format string, args ...any) *apiError {
	return &apiError{http.StatusBadRequest, typ, fmt.Sprintf(format, args...)}
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if ch := s.frozen.Load(); ch != nil {
		select {
		case <-*ch:
		case <-r.Context().Done():
			return
		}
	}
	reply := func(v any, e *apiError) {
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		w.Header().Set("x-amzn-RequestId", newID())
		if e != nil {
			w.WriteHeader(e.status)
			_ = json.NewEncoder(w).Encode(map[string]string{"__type": e.typ, "message": e.msg}) // the client hung up: nothing to tell it
			return
		}
		_ = json.NewEncoder(w).Encode(v) // the client hung up: nothing to tell it
	}
	target := r.Header.Get("X-Amz-Target")
	action, ok := strings.CutPrefix(target, "TrentService.")
	switch {
	case r.Method != http.MethodPost || !ok:
		reply(nil, fail("UnknownOperationException", "unknown operation %q", target))
		return
	case !strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-amz-json-1.1"):
		reply(nil, fail("SerializationException", "Content-Type must be application/x-amz-json-1.1"))
		return
	case !strings.HasPrefix(r.Header.Get("Authorization"), "AWS4-HMAC-SHA256 Credential=") || r.Header.Get("X-Amz-Date") == "":
		reply(nil, &apiError{http.StatusBadRequest, "MissingAuthenticationTokenException", "Request is missing Authentication Token"})
		return
	}
	if n := s.Throttle.Load(); n > 0 && s.Throttle.CompareAndSwap(n, n-1) {
		reply(nil, fail("ThrottlingException", "Rate exceeded"))
		return
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	var in map[string]any
	if err := json.Unmarshal(body, &in); err != nil {
		reply(nil, fail("SerializationException", "body is not JSON"))
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls[action]++
	h, ok := actions[action]
	if !ok {
		reply(nil, fail("UnknownOperationException", "unknown operation %q", action))
		return
	}
	if s.throttled[action] > 0 {
		s.throttled[action]--
		reply(nil, fail("ThrottlingException", "Rate exceeded"))
		return
	}
	if s.denied[action] {
		reply(nil, fail("AccessDeniedException",
			"User: arn:aws:iam::111122223333:user/%s is not authorized to perform: kms:%s because no identity-based policy allows the kms:%s action",
			accessKeyID(r), action, action))
		return
	}
	if f := s.failIf[action]; f != nil && f(in) {
		reply(nil, &apiError{http.StatusInternalServerError, "KMSInternalException", "injected failure"})
		return
	}
	out, e := h(s, in)
	if e == nil {
		ak := accessKeyID(r)
		kept := s.after[:0]
		for _, a := range s.after {
			if a.action != action || !a.fn(ak) {
				kept = append(kept, a)
			}
		}
		s.after = kept
		if s.lose[action] > 0 {
			s.lose[action]--
			if hj, ok := w.(http.Hijacker); ok {
				if conn, _, err := hj.Hijack(); err == nil {
					_ = conn.Close() // dropping the connection is the point
					s.lost++
					return
				}
			}
		}
	}
	reply(out, e)
}

var actions = map[string]func(*Server, map[string]any) (any, *apiError){
	"CreateKey": (*Server).createKey, "DescribeKey": (*Server).describeKey, "GetPublicKey": (*Server).getPublicKey,
	"Sign": (*Server).sign, "Verify": (*Server).verify, "ListAliases": (*Server).listAliases,
	"CreateAlias": (*Server).createAlias, "DeleteAlias": (*Server).deleteAlias, "DisableKey": (*Server).disableKey,
	"ScheduleKeyDeletion": (*Server).scheduleKeyDeletion, "TagResource": (*Server).tagResource,
	"ListResourceTags": (*Server).listResourceTags, "UpdateKeyDescription": (*Server).updateKeyDescription,
	"ListKeys": (*Server).listKeys, "UpdateAlias": (*Server).updateAlias,
}

func newID() string {
	b := make([]byte, 16)
	rand.Read(b)
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func str(in map[string]any, k string) string { v, _ := in[k].(string); return v }

var signingAlgorithms = map[string][]string{
	"ECC_NIST_P256": {"ECDSA_SHA_256"}, "ECC_NIST_P384": {"ECDSA_SHA_384"}, "ECC_NIST_P521": {"ECDSA_SHA_512"},
	"ECC_NIST_EDWARDS25519": {"ED25519_SHA_512", "ED25519_PH_SHA_512"},
	"RSA_2048":              rsaAlgs, "RSA_3072": rsaAlgs, "RSA_4096": rsaAlgs,
}

var rsaAlgs = []string{"RSASSA_PSS_SHA_256", "RSASSA_PSS_SHA_384", "RSASSA_PSS_SHA_512",
	"RSASSA_PKCS1_V1_5_SHA_256", "RSASSA_PKCS1_V1_5_SHA_384", "RSASSA_PKCS1_V1_5_SHA_512"}

func generate(spec string) (crypto.Signer, error) {
	switch spec {
	case "ECC_NIST_P256":
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "ECC_NIST_P384":
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "ECC_NIST_P521":
		return ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	case "ECC_NIST_EDWARDS25519":
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	case "RSA_2048", "RSA_3072", "RSA_4096":
		bits, _ := strconv.Atoi(strings.TrimPrefix(spec, "RSA_"))
		return rsa.GenerateKey(rand.Reader, bits)
	}
	return nil, fmt.Errorf("unsupported")
}

func (s *Server) createKey(in map[string]any) (any, *apiError) {
	spec, usage := str(in, "KeySpec"), str(in, "KeyUsage")
	if spec == "" {
		spec = "SYMMETRIC_DEFAULT"
	}
	switch {
	case usage == "SIGN_VERIFY":
	case usage == "ENCRYPT_DECRYPT" && strings.HasPrefix(spec, "RSA_"):
		// Tests make one by hand to point a version alias at; this fake
		// neither encrypts nor decrypts with it, and refuses to sign.
	default:
		return nil, fail("ValidationException", "this fake KMS only creates SIGN_VERIFY keys and RSA ENCRYPT_DECRYPT keys, not KeyUsage %q for %s", usage, spec)
	}
	priv, err := generate(spec)
	if err != nil {
		return nil, fail("ValidationException", "1 validation error detected: Value '%s' at 'keySpec' failed to satisfy constraint", spec)
	}
	id := newID()
	k := &Key{ID: id, ARN: fmt.Sprintf("arn:aws:kms:%s:111122223333:key/%s", s.Region, id), Spec: spec, Usage: usage,
		State: "Enabled", Description: str(in, "Description"), Created: time.Now(), Tags: map[string]string{}, priv: priv}
	if tags, ok := in["Tags"].([]any); ok {
		for _, t := range tags {
			m, _ := t.(map[string]any)
			k.Tags[str(m, "TagKey")] = str(m, "TagValue")
		}
	}
	s.keys[id] = k
	return map[string]any{"KeyMetadata": s.metadata(k)}, nil
}

func (s *Server) metadata(k *Key) map[string]any {
	return map[string]any{"KeyId": k.ID, "Arn": k.ARN, "AWSAccountId": "111122223333", "CreationDate": float64(k.Created.UnixNano()) / 1e9,
		"Enabled": k.State == "Enabled", "KeyState": k.State, "KeyUsage": k.Usage, "KeySpec": k.Spec, "CustomerMasterKeySpec": k.Spec,
		"Description": k.Description, "KeyManager": "CUSTOMER", "Origin": "AWS_KMS", "SigningAlgorithms": signingAlgorithms[k.Spec]}
}

// find resolves a KeyId: key id, key ARN, alias name or alias ARN.
func (s *Server) find(in map[string]any) (*Key, *apiError) {
	ref := str(in, "KeyId")
	if ref == "" {
		return nil, fail("ValidationException", "KeyId is required")
	}
	if i := strings.Index(ref, ":alias/"); i >= 0 {
		ref = ref[i+1:]
	}
	if strings.HasPrefix(ref, "alias/") {
		id, ok := s.aliases[ref]
		if !ok {
			return nil, fail("NotFoundException", "Alias %s is not found.", ref)
		}
		ref = id
	}
	if i := strings.Index(ref, ":key/"); i >= 0 {
		ref = ref[i+5:]
	}
	k, ok := s.keys[ref]
	if !ok {
		return nil, fail("NotFoundException", "Key '%s' does not exist", str(in, "KeyId"))
	}
	return k, nil
}

func (s *Server) usable(k *Key) *apiError {
	switch k.State {
	case "Enabled":
		return nil
	case "Disabled":
		return fail("DisabledException", "%s is disabled.", k.ARN)
	}
	return fail("KMSInvalidStateException", "%s is pending deletion.", k.ARN)
}

func (s *Server) describeKey(in map[string]any) (any, *apiError) {
	k, e := s.find(in)
	if e != nil {
		return nil, e
	}
	return map[string]any{"KeyMetadata": s.metadata(k)}, nil
}

func (s *Server) getPublicKey(in map[string]any) (any, *apiError) {
	k, e := s.find(in)
	if e != nil {
		return nil, e
	}
	if e := s.usable(k); e != nil {
		return nil, e
	}
	der, _ := x509.MarshalPKIXPublicKey(k.priv.Public())
	return map[string]any{"KeyId": k.ARN, "PublicKey": der, "KeySpec": k.Spec, "KeyUsage": k.Usage,
		"SigningAlgorithms": signingAlgorithms[k.Spec]}, nil
}

// signingInput finds the key of a Sign or Verify, checks Message,
// MessageType and SigningAlgorithm as KMS does, and returns what the key
// signs: the digest (computed here for RAW), or for ED25519_SHA_512 the
// message itself.
func (s *Server) signingInput(in map[string]any) (*Key, []byte, string, *apiError) {
	k, e := s.find(in)
	if e != nil {
		return nil, nil, "", e
	}
	if e := s.usable(k); e != nil {
		return nil, nil, "", e
	}
	msg, alg, digest, e := s.message(k, in)
	if e != nil {
		return nil, nil, "", e
	}
	if alg != "ED25519_SHA_512" && !digest {
		h := hashOf(alg).New()
		h.Write(msg)
		msg = h.Sum(nil)
	}
	return k, msg, alg, nil
}

// message checks Message, MessageType and SigningAlgorithm as KMS does.
func (s *Server) message(k *Key, in map[string]any) (msg []byte, alg string, digest bool, e *apiError) {
	if k.Usage != "SIGN_VERIFY" {
		return nil, "", false, fail("InvalidKeyUsageException", "%s key usage is %s which is not valid for Sign.", k.ARN, k.Usage)
	}
	alg = str(in, "SigningAlgorithm")
	ok := false
	for _, a := range signingAlgorithms[k.Spec] {
		ok = ok || a == alg
	}
	if !ok {
		return nil, "", false, fail("InvalidKeyUsageException", "Algorithm %s is incompatible with key spec %s.", alg, k.Spec)
	}
	b64, _ := in["Message"].(string)
	msg, err := decodeBlob(b64)
	if err != nil || len(msg) == 0 {
		return nil, "", false, fail("ValidationException", "Message must be base64 and not empty")
	}
	if len(msg) > MaxMessage {
		return nil, "", false, fail("ValidationException", "1 validation error detected: Value at 'message' failed to satisfy constraint: Member must have length less than or equal to %d", MaxMessage)
	}
	switch mt := str(in, "MessageType"); mt {
	case "", "RAW":
		if alg == "ED25519_PH_SHA_512" {
			return nil, "", false, fail("ValidationException", "ED25519_PH_SHA_512 requires MessageType DIGEST")
		}
	case "DIGEST":
		digest = true
		if alg == "ED25519_SHA_512" {
			return nil, "", false, fail("ValidationException", "ED25519_SHA_512 requires MessageType RAW")
		}
		if n := hashOf(alg).Size(); len(msg) != n {
			return nil, "", false, fail("ValidationException", "Digest is invalid length for algorithm %s.", alg)
		}
	default:
		return nil, "", false, fail("ValidationException", "1 validation error detected: Value '%s' at 'messageType' failed to satisfy constraint", mt)
	}
	return msg, alg, digest, nil
}

func hashOf(alg string) crypto.Hash {
	switch {
	case strings.HasSuffix(alg, "_256"):
		return crypto.SHA256
	case strings.HasSuffix(alg, "_384"):
		return crypto.SHA384
	}
	return crypto.SHA512
}

func (s *Server) sign(in map[string]any) (any, *apiError) {
	k, msg, alg, e := s.signingInput(in)
	if e != nil {
		return nil, e
	}
	var sig []byte
	var err error
	if alg == "ED25519_SHA_512" {
		sig = ed25519.Sign(k.priv.(ed25519.PrivateKey), msg)
	} else {
		h := hashOf(alg)
		var opts crypto.SignerOpts = h
		if strings.HasPrefix(alg, "RSASSA_PSS") {
			opts = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: h}
		}
		sig, err = k.priv.Sign(rand.Reader, msg, opts) // ECDSA: ASN.1 DER, as KMS returns it
	}
	if err != nil {
		return nil, &apiError{http.StatusInternalServerError, "KMSInternalException", err.Error()}
	}
	return map[string]any{"KeyId": k.ARN, "Signature": sig, "SigningAlgorithm": alg}, nil
}

func (s *Server) verify(in map[string]any) (any, *apiError) {
	k, msg, alg, e := s.signingInput(in)
	if e != nil {
		return nil, e
	}
	b64, _ := in["Signature"].(string)
	sig, _ := decodeBlob(b64)
	ok := false
	switch pub := k.priv.Public().(type) {
	case ed25519.PublicKey:
		ok = ed25519.Verify(pub, msg, sig)
	default:
		h := hashOf(alg)
		switch pub := pub.(type) {
		case *ecdsa.PublicKey:
			ok = ecdsa.VerifyASN1(pub, msg, sig)
		case *rsa.PublicKey:
			if strings.HasPrefix(alg, "RSASSA_PSS") {
				ok = rsa.VerifyPSS(pub, h, msg, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash}) == nil
			} else {
				ok = rsa.VerifyPKCS1v15(pub, h, msg, sig) == nil
			}
		}
	}
	if !ok {
		return nil, fail("KMSInvalidSignatureException", "")
	}
	return map[string]any{"KeyId": k.ARN, "SignatureValid": true, "SigningAlgorithm": alg}, nil
}

func (s *Server) listAliases(in map[string]any) (any, *apiError) {
	limit := s.PageSize
	if l, ok := in["Limit"].(float64); ok {
		if l < 1 || l > 100 {
			return nil, fail("ValidationException", "Limit must be between 1 and 100")
		}
		limit = min(limit, int(l))
	}
	start := 0
	if m := str(in, "Marker"); m != "" {
		n, err := strconv.Atoi(m)
		if err != nil || n < 0 || n > len(s.order) {
			return nil, fail("InvalidMarkerException", "Invalid marker")
		}
		start = n
	}
	var page []map[string]any
	i := start
	for ; i < len(s.order) && len(page) < limit; i++ {
		name := s.order[i]
		id, ok := s.aliases[name]
		if !ok {
			continue // deleted
		}
		if filter := str(in, "KeyId"); filter != "" && filter != id && filter != s.keys[id].ARN {
			continue
		}
		created := float64(s.aliasCreated[name].UnixNano()) / 1e9
		page = append(page, map[string]any{"AliasName": name, "TargetKeyId": id,
			"AliasArn":     fmt.Sprintf("arn:aws:kms:%s:111122223333:%s", s.Region, name),
			"CreationDate": created, "LastUpdatedDate": created})
	}
	out := map[string]any{"Aliases": page, "Truncated": i < len(s.order)}
	if i < len(s.order) {
		out["NextMarker"] = strconv.Itoa(i)
	}
	return out, nil
}

func (s *Server) createAlias(in map[string]any) (any, *apiError) {
	name := str(in, "AliasName")
	if !strings.HasPrefix(name, "alias/") || strings.HasPrefix(name, "alias/aws/") || len(name) > 256 {
		return nil, fail("ValidationException", "Alias must start with the prefix \"alias/\" and not \"alias/aws/\"")
	}
	k, e := s.find(map[string]any{"KeyId": str(in, "TargetKeyId")})
	if e != nil {
		return nil, e
	}
	if _, exists := s.aliases[name]; exists {
		return nil, fail("AlreadyExistsException", "An alias with the name arn:aws:kms:%s:111122223333:%s already exists", s.Region, name)
	}
	s.aliases[name] = k.ID
	s.aliasCreated[name] = time.Now()
	s.order = append(s.order, name)
	return map[string]any{}, nil
}

// updateAlias points an existing alias at another key.
func (s *Server) updateAlias(in map[string]any) (any, *apiError) {
	name := str(in, "AliasName")
	if _, ok := s.aliases[name]; !ok {
		return nil, fail("NotFoundException", "Alias %s is not found.", name)
	}
	k, e := s.find(map[string]any{"KeyId": str(in, "TargetKeyId")})
	if e != nil {
		return nil, e
	}
	s.aliases[name] = k.ID
	return map[string]any{}, nil
}

// listKeys pages through every key, in creation order.
func (s *Server) listKeys(in map[string]any) (any, *apiError) {
	limit := 100
	if l, ok := in["Limit"].(float64); ok {
		if l < 1 || l > 1000 {
			return nil, fail("ValidationException", "Limit must be between 1 and 1000")
		}
		limit = int(l)
	}
	all := make([]*Key, 0, len(s.keys))
	for _, k := range s.keys {
		all = append(all, k)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Created.Before(all[j].Created) })
	start := 0
	if m := str(in, "Marker"); m != "" {
		n, err := strconv.Atoi(m)
		if err != nil || n < 0 || n > len(all) {
			return nil, fail("InvalidMarkerException", "Invalid marker")
		}
		start = n
	}
	end := min(start+limit, len(all))
	page := []map[string]any{}
	for _, k := range all[start:end] {
		page = append(page, map[string]any{"KeyId": k.ID, "KeyArn": k.ARN})
	}
	out := map[string]any{"Keys": page, "Truncated": end < len(all)}
	if end < len(all) {
		out["NextMarker"] = strconv.Itoa(end)
	}
	return out, nil
}

func (s *Server) deleteAlias(in map[string]any) (any, *apiError) {
	name := str(in, "AliasName")
	if _, ok := s.aliases[name]; !ok {
		return nil, fail("NotFoundException", "Alias %s is not found.", name)
	}
	delete(s.aliases, name)
	delete(s.aliasCreated, name)
	return map[string]any{}, nil
}

func (s *Server) disableKey(in map[string]any) (any, *apiError) {
	k, e := s.find(in)
	if e != nil {
		return nil, e
	}
	if k.State == "PendingDeletion" {
		return nil, fail("KMSInvalidStateException", "%s is pending deletion.", k.ARN)
	}
	k.State = "Disabled"
	return map[string]any{}, nil
}

func (s *Server) scheduleKeyDeletion(in map[string]any) (any, *apiError) {
	k, e := s.find(in)
	if e != nil {
		return nil, e
	}
	days := 30.0
	if d, ok := in["PendingWindowInDays"].(float64); ok {
		days = d
	}
	if days < 7 || days > 30 {
		return nil, fail("ValidationException", "PendingWindowInDays must be between 7 and 30")
	}
	if k.State == "PendingDeletion" {
		return nil, fail("KMSInvalidStateException", "%s is pending deletion.", k.ARN)
	}
	k.State = "PendingDeletion"
	return map[string]any{"KeyId": k.ARN, "KeyState": k.State, "PendingWindowInDays": days,
		"DeletionDate": float64(time.Now().Add(time.Duration(days) * 24 * time.Hour).Unix())}, nil
}

func (s *Server) tagResource(in map[string]any) (any, *apiError) {
	k, e := s.find(in)
	if e != nil {
		return nil, e
	}
	tags, _ := in["Tags"].([]any)
	for _, t := range tags {
		m, _ := t.(map[string]any)
		k.Tags[str(m, "TagKey")] = str(m, "TagValue")
	}
	return map[string]any{}, nil
}

func (s *Server) listResourceTags(in map[string]any) (any, *apiError) {
	k, e := s.find(in)
	if e != nil {
		return nil, e
	}
	var tags []map[string]string
	for key, v := range k.Tags {
		tags = append(tags, map[string]string{"TagKey": key, "TagValue": v})
	}
	sort.Slice(tags, func(i, j int) bool { return tags[i]["TagKey"] < tags[j]["TagKey"] })
	return map[string]any{"Tags": tags, "Truncated": false}, nil
}

func decodeBlob(s string) ([]byte, error) { return base64Std.DecodeString(s) }

var base64Std = base64.StdEncoding

func (s *Server) updateKeyDescription(in map[string]any) (any, *apiError) {
	k, e := s.find(in)
	if e != nil {
		return nil, e
	}
	if d := str(in, "Description"); len(d) > 8192 {
		return nil, fail("ValidationException", "Description must be at most 8192 characters")
	} else {
		k.Description = d
	}
	return map[string]any{}, nil
}
