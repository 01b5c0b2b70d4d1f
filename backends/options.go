package backends

import (
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The timeouts backends use where no caller sets one, in one place: the
// recovery grace (DefaultRecoveryGrace) and the detached clean-up context
// (OpenOptions.Detached) derive from DefaultTimeout.
const (
	// DefaultTimeout bounds one backend call: the server's default
	// backend_timeout.
	DefaultTimeout = 5 * time.Second
	// BackgroundTimeout bounds a call a backend makes on no caller's
	// behalf or for callers without a deadline (a re-login, a batch of
	// such signatures): nothing waits for a frozen backend forever.
	BackgroundTimeout = 30 * time.Second
)

// Options are a backend URI's query options, read once for every backend:
// each option given at most once, every one known to the backend.
type Options struct {
	backend string
	values  map[string]string
}

// ParseOptions reads the query of a backend URI. It refuses, naming the
// option, one the backend does not know (known lists the names; a name
// ending in "." admits every option that starts with it, such as Vault's
// key.RING) and one given more than once, which would otherwise be read
// as its first value without a word.
func ParseOptions(backend string, u *url.URL, known ...string) (Options, error) {
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return Options{}, Errorf(KindInvalidArgument, backend, "URI options: %v", err)
	}
	names := make([]string, 0, len(q))
	for k := range q {
		names = append(names, k)
	}
	sort.Strings(names) // the same error for the same URI
	o := Options{backend: backend, values: map[string]string{}}
	for _, k := range names {
		if !knownOption(k, known) {
			return Options{}, Errorf(KindInvalidArgument, backend, "unknown URI option %q (known: %s)", k, strings.Join(known, ", "))
		}
		if n := len(q[k]); n != 1 {
			return Options{}, Errorf(KindInvalidArgument, backend, "URI option %q given %d times", k, n)
		}
		o.values[k] = q[k][0]
	}
	return o, nil
}

func knownOption(k string, known []string) bool {
	for _, name := range known {
		if k == name || strings.HasSuffix(name, ".") && strings.HasPrefix(k, name) && len(k) > len(name) {
			return true
		}
	}
	return false
}

// Get is the option's value; "" when it is not given.
func (o Options) Get(name string) string { return o.values[name] }

// Lookup is the option's value and whether it is given.
func (o Options) Lookup(name string) (string, bool) {
	v, ok := o.values[name]
	return v, ok
}

// Prefixed returns the options whose names start with prefix, by the rest
// of their names.
func (o Options) Prefixed(prefix string) map[string]string {
	out := map[string]string{}
	for k, v := range o.values {
		if rest, ok := strings.CutPrefix(k, prefix); ok {
			out[rest] = v
		}
	}
	return out
}

// Bool reads a true/false option; def when it is not given.
func (o Options) Bool(name string, def bool) (bool, error) {
	s, ok := o.values[name]
	if !ok {
		return def, nil
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		return false, Errorf(KindInvalidArgument, o.backend, "%s=%q: want true or false", name, s)
	}
	return b, nil
}

// Int reads a whole-number option from lo to hi; def when it is not given.
func (o Options) Int(name string, def, lo, hi int) (int, error) {
	s, ok := o.values[name]
	if !ok {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		return 0, Errorf(KindInvalidArgument, o.backend, "%s=%q: want a whole number from %d to %d", name, s, lo, hi)
	}
	return n, nil
}

// Rate reads a positive number of calls per second, at most hi; def when
// it is not given.
func (o Options) Rate(name string, def, hi float64) (float64, error) {
	s, ok := o.values[name]
	if !ok {
		return def, nil
	}
	r, err := strconv.ParseFloat(s, 64)
	if err != nil || !(r > 0) || r > hi {
		return 0, Errorf(KindInvalidArgument, o.backend, "%s=%q: want a positive number of calls per second, at most %g", name, s, hi)
	}
	return r, nil
}

// Duration reads a duration option from lo to hi; def when it is not given.
func (o Options) Duration(name string, def, lo, hi time.Duration) (time.Duration, error) {
	s, ok := o.values[name]
	if !ok {
		return def, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < lo || d > hi {
		return 0, Errorf(KindInvalidArgument, o.backend, "%s=%q: want a duration from %v to %v, such as 500us", name, s, lo, hi)
	}
	return d, nil
}
