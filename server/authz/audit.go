package authz

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/signet-dev/signet/server/jose"
)

// auditLog writes one JSON line per Sign, Rotate and denied request. It
// never records a token or a claim value: custom claims appear as the
// SHA-256 of their JSON.
type auditLog struct {
	mu sync.Mutex
	w  io.Writer
	c  io.Closer
}

// openAudit opens the audit sink: "-" is standard output, anything else a
// file opened for appending (created 0600).
func openAudit(path string) (*auditLog, error) {
	if path == "-" {
		return &auditLog{w: os.Stdout}, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600) // #nosec G304 -- audit.path: the operator's configuration
	if err != nil {
		return nil, fmt.Errorf("audit.path: %w", err)
	}
	return &auditLog{w: f, c: f}, nil
}

// Record is one audit line. Time, Caller and Peer are filled in by
// Authorizer.Audit from its clock and the call's identity.
type Record struct {
	Time         time.Time `json:"time"`
	Caller       string    `json:"caller"`
	Peer         string    `json:"peer,omitempty"`
	RPC          string    `json:"rpc"`
	KeyRing      string    `json:"key_ring,omitempty"`
	Kid          string    `json:"kid,omitempty"`
	JTI          string    `json:"jti,omitempty"`
	Sub          string    `json:"sub,omitempty"`
	Aud          []string  `json:"aud,omitempty"`
	Exp          int64     `json:"exp,omitempty"`
	Outcome      string    `json:"outcome"` // ok, denied, error, authorized
	Reason       string    `json:"reason,omitempty"`
	ClaimsSHA256 string    `json:"claims_sha256,omitempty"`
	// TraceID ties the record to the request's trace, when tracing is on.
	TraceID string `json:"trace_id,omitempty"`
}

// ClaimsDigest is what the audit log keeps of a token's custom claims.
func ClaimsDigest(custom []byte) string {
	if len(custom) == 0 {
		return ""
	}
	sum := sha256.Sum256(custom)
	return hex.EncodeToString(sum[:])
}

// write appends a record; an error means the record is not on record.
func (a *auditLog) write(r Record) error {
	if a == nil {
		return nil
	}
	line, err := r.appendJSON(make([]byte, 0, 512))
	if err != nil {
		return err
	}
	line = append(line, '\n')
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, err := a.w.Write(line); err != nil {
		return errorf(AuditFailed, "audit log cannot be written: %v: refusing to act unaudited", err)
	}
	return nil
}

func (a *auditLog) close() error {
	if a == nil || a.c == nil {
		return nil
	}
	return a.c.Close()
}

// appendJSON appends the record as encoding/json's Marshal writes it (the
// fields in order, omitempty as tagged), without Marshal's reflection: a
// line is written for every Sign.
func (r *Record) appendJSON(b []byte) ([]byte, error) {
	str := func(name, v string, omitEmpty bool) {
		if omitEmpty && v == "" {
			return
		}
		b = append(b, ',', '"')
		b = append(b, name...)
		b = append(b, '"', ':')
		b = jose.AppendJSONString(b, v)
	}
	t, err := r.Time.MarshalJSON()
	if err != nil {
		return nil, err
	}
	b = append(b, `{"time":`...)
	b = append(b, t...)
	str("caller", r.Caller, false)
	str("peer", r.Peer, true)
	str("rpc", r.RPC, false)
	str("key_ring", r.KeyRing, true)
	str("kid", r.Kid, true)
	str("jti", r.JTI, true)
	str("sub", r.Sub, true)
	if len(r.Aud) > 0 {
		b = append(b, `,"aud":[`...)
		for i, a := range r.Aud {
			if i > 0 {
				b = append(b, ',')
			}
			b = jose.AppendJSONString(b, a)
		}
		b = append(b, ']')
	}
	if r.Exp != 0 {
		b = append(b, `,"exp":`...)
		b = strconv.AppendInt(b, r.Exp, 10)
	}
	str("outcome", r.Outcome, false)
	str("reason", r.Reason, true)
	str("claims_sha256", r.ClaimsSHA256, true)
	str("trace_id", r.TraceID, true)
	return append(b, '}'), nil
}
