package authz

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/signet-dev/signet/server/jose"
)

// auditLog writes one JSON line per Sign, Rotate and denied request. It
// never records a token or a claim value: custom claims appear as the
// SHA-256 of their JSON.
//
// A file sink follows log rotation. A record counts as written only if the
// file it went to still has a name afterwards (one fstat per record): a
// record written to a file that log rotation removed is written again to a
// new file at the path, and if that fails too the action is refused like
// any other audit failure. A file renamed away (rotation without
// copytruncate) keeps its name and its records; the path is compared with
// the open file every second (reopenIfMoved, from Authorizer.Run) and on
// SIGHUP (reopen), and a new file is opened there.
//
// While records cannot be written the log is in an outage: every action
// is refused (no token leaves without its audit line), and the server
// reports SignerService NOT_SERVING so that callers go to other replicas.
// Such a replica gets no Sign to find out that writing works again, so
// tryEndOutage (from Authorizer.Run, every second) tries to write the record
// that ends the outage: when it began and how many records, and Sign
// requests among them, were refused meanwhile. The outage ends when that
// record is written, by tryEndOutage or before the next record of a request.
type auditLog struct {
	mu     sync.Mutex
	path   string    // "" for standard output, which is never reopened
	w      io.Writer // f, or standard output
	f      *os.File
	log    *slog.Logger
	now    func() time.Time
	outage *auditOutage // nil while records are written
	// onHealth is told, without mu held, when an outage starts or ends.
	onHealth func()
}

// auditOutage is a time during which no record could be written.
type auditOutage struct {
	since     time.Time
	err       error // the last failure
	unwritten int64 // records not written: each an action refused, or a refusal not on record
	signs     int64 // of which Sign requests
}

// openAudit opens the audit sink: "-" is standard output, anything else a
// file opened for appending (created 0600).
func openAudit(path string, log *slog.Logger) (*auditLog, error) {
	a := &auditLog{w: os.Stdout, log: log, now: time.Now, onHealth: func() {}}
	if path == "-" {
		return a, nil
	}
	f, err := openAuditFile(path)
	if err != nil {
		return nil, err
	}
	a.path, a.w, a.f = path, f, f
	return a, nil
}

func openAuditFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600) // #nosec G304 -- audit.path: the operator's configuration
	if err != nil {
		return nil, fmt.Errorf("audit.path: %w", err)
	}
	return f, nil
}

// Record is one audit line. Time, Caller and Peer are filled in by
// Authorizer.Audit from its clock and the call's identity.
type Record struct {
	Time    time.Time `json:"time"`
	Caller  string    `json:"caller"`
	Peer    string    `json:"peer,omitempty"`
	RPC     string    `json:"rpc"`
	KeyRing string    `json:"key_ring,omitempty"`
	Kid     string    `json:"kid,omitempty"`
	JTI     string    `json:"jti,omitempty"`
	Sub     string    `json:"sub,omitempty"`
	Aud     []string  `json:"aud,omitempty"`
	Exp     int64     `json:"exp,omitempty"`
	// CnfX5tS256 is the certificate thumbprint a token is bound to (its
	// cnf x5t#S256); empty for a token not bound.
	CnfX5tS256   string `json:"cnf_x5t_s256,omitempty"`
	Outcome      string `json:"outcome"` // ok, denied, error, authorized
	Reason       string `json:"reason,omitempty"`
	ClaimsSHA256 string `json:"claims_sha256,omitempty"`
	// TraceID ties the record to the request's trace, when tracing is on.
	// Only an authenticated caller's trace id is recorded: an
	// unauthenticated caller's traceparent is its own say-so.
	TraceID string `json:"trace_id,omitempty"`
	// Summarized, on a summary line, counts the refusals of
	// unauthenticated callers since the last summary that the per-peer
	// rate kept from a line of their own.
	Summarized int64 `json:"summarized,omitempty"`
	// OutageSince, Unwritten and RefusedSigns are on the record that ends
	// an audit outage: when records stopped being written (RFC 3339), how
	// many were not, and how many of those were Sign requests (each
	// refused: no token leaves without its audit line).
	OutageSince  string `json:"outage_since,omitempty"`
	Unwritten    int64  `json:"unwritten,omitempty"`
	RefusedSigns int64  `json:"refused_signs,omitempty"`
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
	ended, err := a.endOutageLocked()
	if err == nil {
		err = a.writeLocked(line)
	}
	started := err != nil && a.outage == nil
	if err != nil {
		a.failedLocked(err, r)
	}
	a.mu.Unlock()
	if ended || started {
		a.onHealth()
	}
	return err
}

// failedLocked counts record r, which could not be written, in the
// outage, starting one if there is none.
func (a *auditLog) failedLocked(err error, r Record) {
	if a.outage == nil {
		a.outage = &auditOutage{since: a.now()}
		a.log.Error("audit log cannot be written: refusing every action until it can; SignerService is NOT_SERVING", "path", a.path, "err", err)
	}
	a.outage.err = err
	a.outage.unwritten++
	if r.RPC == "Sign" || strings.HasSuffix(r.RPC, "/Sign") {
		a.outage.signs++
	}
}

// endOutageLocked writes the record that ends the outage, if there is
// one, and reports whether it did. The outage goes on if it cannot.
func (a *auditLog) endOutageLocked() (ended bool, err error) {
	o := a.outage
	if o == nil {
		return false, nil
	}
	rec := Record{Time: a.now().UTC(), Caller: "signet", RPC: "audit", Outcome: "recovered",
		Reason:      "the audit log could not be written: every action meanwhile was refused",
		OutageSince: o.since.UTC().Format(time.RFC3339Nano), Unwritten: o.unwritten, RefusedSigns: o.signs}
	line, err := rec.appendJSON(make([]byte, 0, 512))
	if err != nil {
		return false, err
	}
	if err := a.writeLocked(append(line, '\n')); err != nil {
		o.err = err
		return false, err
	}
	a.outage = nil
	a.log.Warn("audit log can be written again; the outage is on record", "path", a.path, "since", o.since.UTC(),
		"unwritten", o.unwritten, "refused_signs", o.signs)
	return true, nil
}

// tryEndOutage tries to end an outage (endOutageLocked): Authorizer.Run's call
// every interval, so that the outage ends without a request arriving.
func (a *auditLog) tryEndOutage() {
	if a == nil {
		return
	}
	a.mu.Lock()
	ended, _ := a.endOutageLocked() // the outage goes on; it says why
	a.mu.Unlock()
	if ended {
		a.onHealth()
	}
}

// problem says why records cannot be written now; "" while they can.
func (a *auditLog) problem() string {
	if a == nil {
		return ""
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	o := a.outage
	if o == nil {
		return ""
	}
	return fmt.Sprintf("audit log cannot be written since %s (%d records, %d of them Sign requests, refused): %v",
		o.since.UTC().Format(time.RFC3339), o.unwritten, o.signs, o.err)
}

func (a *auditLog) writeLocked(line []byte) error {
	_, err := a.w.Write(line)
	if a.f == nil {
		if err != nil {
			return errorf(AuditFailed, "audit log cannot be written: %v: refusing to act unaudited", err)
		}
		return nil
	}
	if err == nil && hasName(a.f) {
		return nil
	}
	// The record went nowhere anyone can read: the write failed, or the
	// file was removed (log rotation without copytruncate or a postrotate
	// SIGHUP, or by hand). Write it again to a new file at the path.
	why := "the audit file was removed"
	if err != nil {
		why = err.Error()
	}
	if err := a.reopenLocked(why); err != nil {
		return errorf(AuditFailed, "audit log cannot be written: %v: refusing to act unaudited", err)
	}
	if _, err := a.f.Write(line); err != nil {
		return errorf(AuditFailed, "audit log cannot be written: %v: refusing to act unaudited", err)
	}
	if !hasName(a.f) {
		return errorf(AuditFailed, "audit log cannot be written: %s is removed as soon as it is created: refusing to act unaudited", a.path)
	}
	return nil
}

// reopenLocked opens the path afresh and closes the file in use; on error
// the file in use stays.
func (a *auditLog) reopenLocked(why string) error {
	f, err := openAuditFile(a.path)
	if err != nil {
		a.log.Error("audit log cannot be reopened", "path", a.path, "why", why, "err", err)
		return err
	}
	_ = a.f.Close() // every record in it was written with write(2): nothing is buffered
	a.f, a.w = f, f
	a.log.Info("audit log reopened", "path", a.path, "why", why)
	return nil
}

// reopen opens the path afresh (SIGHUP); standard output stays.
func (a *auditLog) reopen() error {
	if a == nil || a.path == "" {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.reopenLocked("reopen requested (SIGHUP)")
}

// reopenIfMoved reopens the path when it no longer names the open file:
// log rotation renamed or removed it.
func (a *auditLog) reopenIfMoved() {
	if a == nil || a.path == "" {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	atPath, err := os.Stat(a.path)
	if err == nil {
		if open, ferr := a.f.Stat(); ferr == nil && os.SameFile(atPath, open) {
			return
		}
	}
	_ = a.reopenLocked("the audit file was renamed or removed") // logged; the next record tries again
}

func (a *auditLog) close() error {
	if a == nil || a.path == "" {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.f.Close()
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
	str("cnf_x5t_s256", r.CnfX5tS256, true)
	str("outcome", r.Outcome, false)
	str("reason", r.Reason, true)
	str("claims_sha256", r.ClaimsSHA256, true)
	str("trace_id", r.TraceID, true)
	count := func(name string, n int64) {
		if n != 0 {
			b = append(b, ',', '"')
			b = append(b, name...)
			b = append(b, '"', ':')
			b = strconv.AppendInt(b, n, 10)
		}
	}
	count("summarized", r.Summarized)
	str("outage_since", r.OutageSince, true)
	count("unwritten", r.Unwritten)
	count("refused_signs", r.RefusedSigns)
	return append(b, '}'), nil
}
