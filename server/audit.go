package server

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// auditLog writes one JSON line per Sign, Rotate and denied request. It
// never records a token or a claim value: custom claims appear as the
// SHA-256 of their JSON.
type auditLog struct {
	mu sync.Mutex
	w  io.Writer
}

// openAudit opens the audit sink: "-" is standard output, anything else a
// file opened for appending (created 0600).
func openAudit(path string) (*auditLog, io.Closer, error) {
	if path == "-" {
		return &auditLog{w: os.Stdout}, io.NopCloser(nil), nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("audit.path: %w", err)
	}
	return &auditLog{w: f}, f, nil
}

type auditRecord struct {
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
}

func claimsDigest(custom []byte) string {
	if len(custom) == 0 {
		return ""
	}
	sum := sha256.Sum256(custom)
	return hex.EncodeToString(sum[:])
}

// write appends a record; an error means the record is not on record.
func (a *auditLog) write(r auditRecord) error {
	if a == nil {
		return nil
	}
	line, err := json.Marshal(r)
	if err != nil {
		return err
	}
	line = append(line, '\n')
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, err := a.w.Write(line); err != nil {
		return fmt.Errorf("audit log cannot be written: %w", err)
	}
	return nil
}
