package authz

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/signet-dev/signet/server/jose"
)

// A grant's bind decides whether a token is bound to the caller's
// certificate: required binds every token and refuses a call that has no
// certificate, with a reason of its own (not a denial by rule); allowed
// (the default) binds what asks; never refuses what asks. Without a policy
// (development mode, never a certificate) a request that asks is refused.
func TestBind(t *testing.T) {
	p, err := parsePolicy([]byte(`grants:
  - identity: "spiffe://corp.test/required"
    sign: [{key_rings: [default], audiences: [a], subjects: ["*"], bind: required}]
  - identity: "spiffe://corp.test/allowed"
    sign: [{key_rings: [default], audiences: [a], subjects: ["*"]}]
  - identity: "spiffe://corp.test/never"
    sign: [{key_rings: [default], audiences: [a], subjects: ["*"], bind: never}]
  - identity: "spiffe://corp.test/layered"
    sign: [{key_rings: [default], audiences: [a, b], subjects: ["*"]}]
  - identity: "spiffe://corp.test/layered"
    sign: [{key_rings: [default], audiences: [a], subjects: ["*"], bind: required}]
`), map[string]time.Duration{"default": time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	a := &Authorizer{now: time.Now}
	a.policy.Store(p)
	dev := &Authorizer{now: time.Now} // no policy: development mode
	for _, c := range []struct {
		az            *Authorizer
		caller, aud   string
		ask, bindable bool
		bind          bool
		reason        Reason // 0: allowed
		rule          Rule
		msg           string
	}{
		{az: a, caller: "required", ask: false, bindable: true, bind: true},
		{az: a, caller: "required", ask: true, bindable: true, bind: true},
		{az: a, caller: "required", ask: false, bindable: false, reason: Unbindable, msg: "bind: required"},
		{az: a, caller: "required", ask: true, bindable: false, reason: Unbindable, msg: "no client certificate"},
		{az: a, caller: "allowed", ask: false, bindable: true, bind: false},
		{az: a, caller: "allowed", ask: true, bindable: true, bind: true},
		{az: a, caller: "allowed", ask: false, bindable: false, bind: false},
		{az: a, caller: "allowed", ask: true, bindable: false, reason: Unbindable, msg: "asks for a certificate-bound token"},
		{az: a, caller: "never", ask: false, bindable: true, bind: false},
		{az: a, caller: "never", ask: true, bindable: true, reason: Denied, rule: BindRule, msg: "bind: never"},
		// A grant listed first that allows the request unbound does not
		// undo a later one that requires binding for it.
		{az: a, caller: "layered", ask: false, bindable: true, bind: true},
		{az: a, caller: "layered", aud: "b", ask: false, bindable: true, bind: false},
		{az: a, caller: "layered", ask: false, bindable: false, reason: Unbindable, msg: "bind: required"},
		{az: dev, caller: DevelopmentCaller, ask: false, bind: false},
		{az: dev, caller: DevelopmentCaller, ask: true, reason: Unbindable, msg: "plaintext development mode"},
	} {
		caller := c.caller
		if c.az == a {
			caller = "spiffe://corp.test/" + caller
		}
		aud := "a"
		if c.aud != "" {
			aud = c.aud
		}
		d, err := c.az.AuthorizeSign(caller, SignRequest{Ring: "default", Audience: []string{aud}, Subject: "s",
			Typ: jose.DefaultTyp, TTL: time.Minute, Bind: c.ask, Bindable: c.bindable})
		name := c.caller + " (" + aud + ")" + map[bool]string{true: " asking", false: " not asking"}[c.ask] +
			map[bool]string{true: " with", false: " without"}[c.bindable] + " a certificate"
		var e *Error
		switch {
		case c.reason == 0 && err != nil:
			t.Errorf("%s: %v", name, err)
		case c.reason == 0 && d.Bind != c.bind:
			t.Errorf("%s: bind %v, want %v", name, d.Bind, c.bind)
		case c.reason != 0 && !errors.As(err, &e):
			t.Errorf("%s: %v, want an *Error", name, err)
		case c.reason != 0 && (e.Reason != c.reason || e.Rule != c.rule || !strings.Contains(e.Msg, c.msg)):
			t.Errorf("%s: %+v, want reason %d rule %d saying %q", name, e, c.reason, c.rule, c.msg)
		case c.reason == Unbindable && !IsDenial(err):
			t.Errorf("%s: an unbindable request is not a refusal (audited as an error)", name)
		}
	}
	if _, err := parsePolicy([]byte(`grants: [{identity: "spiffe://corp.test/x", sign: [{key_rings: [default], audiences: [a], bind: sometimes}]}]`),
		map[string]time.Duration{"default": time.Hour}); err == nil || !strings.Contains(err.Error(), "grants[0].sign[0].bind") {
		t.Errorf("bind: sometimes: %v", err)
	}
}
