package authz

import (
	"fmt"
	"time"
)

// Reason classifies an authorization failure. The server maps each to one
// gRPC code; the message of an *Error is safe to return to the caller.
type Reason int

const (
	// Unauthenticated: no client certificate, or one that does not verify.
	Unauthenticated Reason = iota + 1
	// Denied: no grant allows what was asked.
	Denied
	// RateLimited: the caller's rate for the grant is used up.
	RateLimited
	// AuditFailed: the audit log cannot be written, so Signet refuses to act.
	AuditFailed
	// Unbindable: the token must be bound to the caller's client
	// certificate and the call has none.
	Unbindable
)

// Error is an authorization failure.
type Error struct {
	Reason Reason
	Msg    string
	// RetryAfter, for RateLimited, is when the caller's next request would
	// be allowed; Grant is the identity pattern of the grant whose rate it
	// was (a bounded label, unlike the caller's identity).
	RetryAfter time.Duration
	Grant      string
	// Rule, for Denied, is what refused: no grant at all, or which part of
	// the closest sign grant.
	Rule Rule
}

// Rule is what part of the policy refused a request.
type Rule int

const (
	// NoGrant: no grant covers the caller, the action and the key ring.
	NoGrant Rule = iota
	// AudienceRule: a sign grant covers the ring but not an audience.
	AudienceRule
	// SubjectRule: ... not the subject.
	SubjectRule
	// ClaimRule: ... not a custom claim's name.
	ClaimRule
	// TypRule: ... not the header typ.
	TypRule
	// TTLRule: the ttl asked for exceeds the grant's max_ttl.
	TTLRule
	// BindRule: a certificate-bound token asked of a grant with bind: never.
	BindRule
)

func (e *Error) Error() string { return e.Msg }

func errorf(reason Reason, format string, args ...any) *Error {
	return &Error{Reason: reason, Msg: fmt.Sprintf(format, args...)}
}
