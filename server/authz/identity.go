package authz

import (
	"crypto/x509"
	"encoding/asn1"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/signet-dev/signet/server/jose"
)

// Caller identities live in two namespaces that nothing crosses:
//
//   - spiffe://TRUST-DOMAIN/PATH, from a certificate with exactly one URI
//     SAN (the X.509-SVID rule), parsed as a SPIFFE ID by go-spiffe: a
//     lowercase trust domain, a non-empty path of segments of
//     [A-Za-z0-9._-], no "." or ".." segment, no query, fragment,
//     percent-encoding, port, user or trailing slash;
//   - dns:NAME, from a certificate with no URI SAN: its first DNS SAN, in
//     lower case, whatever it spells.
//
// A policy pattern names its namespace the same way, so a DNS SAN that
// spells a SPIFFE ID is the identity "dns:spiffe://..." and can only ever
// match a dns: pattern.
const (
	spiffePrefix = "spiffe://"
	dnsPrefix    = "dns:"
)

// certIdentity is the identity a verified client certificate names, or an
// Unauthenticated error saying why it names none. uris are its URI SANs as
// the CA wrote them (uriSANs), parsed by go-spiffe as they are: never
// through url.URL, whose String lower-cases the scheme and drops an empty
// query or fragment, which would let "SPIFFE://td/a" or "spiffe://td/a#"
// (not SPIFFE IDs) pass as spiffe://td/a.
func certIdentity(uris []string, dns []string) (string, error) {
	switch {
	case len(uris) > 1:
		return "", errorf(Unauthenticated, "the client certificate has %d URI SANs: an X.509-SVID has exactly one, "+
			"so Signet cannot tell which SPIFFE ID it names", len(uris))
	case len(uris) == 1:
		id, err := spiffeid.FromString(uris[0])
		if err != nil {
			return "", errorf(Unauthenticated, "the client certificate's URI SAN %q is not a SPIFFE ID: %v",
				jose.Truncate(uris[0], 128), err)
		}
		if id.Path() == "" {
			return "", errorf(Unauthenticated, "the client certificate's SPIFFE ID %q names a trust domain, not a workload",
				jose.Truncate(id.String(), 128))
		}
		return id.String(), nil
	case len(dns) > 0 && dns[0] != "":
		return dnsPrefix + strings.ToLower(dns[0]), nil
	}
	return "", errorf(Unauthenticated, "the client certificate names no identity: it needs one spiffe:// URI SAN or a DNS SAN")
}

// oidSubjectAltName is the subjectAltName extension (RFC 5280 4.2.1.6).
var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

// uriSANs returns cert's URI SANs (GeneralName [6]) byte for byte as the CA
// signed them; crypto/x509 only keeps them parsed into url.URL.
func uriSANs(cert *x509.Certificate) ([]string, error) {
	var uris []string
	for _, ext := range cert.Extensions {
		if !ext.Id.Equal(oidSubjectAltName) {
			continue
		}
		var seq asn1.RawValue
		rest, err := asn1.Unmarshal(ext.Value, &seq)
		if err != nil || len(rest) > 0 || seq.Class != asn1.ClassUniversal || seq.Tag != asn1.TagSequence || !seq.IsCompound {
			return nil, errorf(Unauthenticated, "the client certificate's subjectAltName extension is malformed")
		}
		for b := seq.Bytes; len(b) > 0; {
			var name asn1.RawValue
			if b, err = asn1.Unmarshal(b, &name); err != nil {
				return nil, errorf(Unauthenticated, "the client certificate's subjectAltName extension is malformed")
			}
			if name.Class == asn1.ClassContextSpecific && name.Tag == 6 {
				uris = append(uris, string(name.Bytes))
			}
		}
	}
	if len(uris) != len(cert.URIs) { // crypto/x509 parsed the same extension
		return nil, errorf(Unauthenticated, "the client certificate's URI SANs cannot be read")
	}
	return uris, nil
}

// idPattern is a grant's identity, parsed: a SPIFFE ID pattern (an exact
// trust domain and path segment patterns) or a DNS name pattern (label
// patterns). In a segment or label, '*' matches any run of characters and
// '?' one, never crossing a '/' or '.'; a whole segment or label "**"
// (at most one per pattern) matches one or more of them.
type idPattern struct {
	dns  bool
	td   string   // SPIFFE: the trust domain, matched exactly
	segs []string // path segments (SPIFFE) or labels (DNS)
}

// parseIDPattern parses a grant's identity. Its errors say why the
// pattern could never match a caller (or which namespace to name).
func parseIDPattern(s string) (idPattern, error) {
	switch {
	case strings.HasPrefix(s, dnsPrefix):
		name := strings.ToLower(s[len(dnsPrefix):])
		segs, err := splitPattern(name, '.', isDNSChar, "label")
		if err != nil {
			return idPattern{}, fmt.Errorf("can never match a DNS name: %v", err)
		}
		return idPattern{dns: true, segs: segs}, nil
	case strings.HasPrefix(strings.ToLower(s), spiffePrefix):
		if !strings.HasPrefix(s, spiffePrefix) {
			return idPattern{}, fmt.Errorf("write the scheme as spiffe://, in lower case")
		}
		td, path, ok := strings.Cut(s[len(spiffePrefix):], "/")
		if strings.ContainsAny(td, "*?") {
			return idPattern{}, fmt.Errorf("the trust domain %q is matched exactly: it takes no wildcard", td)
		}
		if _, err := spiffeid.TrustDomainFromString(td); err != nil || td == "" {
			if err == nil {
				err = fmt.Errorf("it is empty")
			}
			return idPattern{}, fmt.Errorf("can never match a SPIFFE ID: trust domain %q: %v", td, err)
		}
		if !ok || path == "" {
			return idPattern{}, fmt.Errorf("can never match a client certificate: it names the trust domain only, and a workload's SPIFFE ID has a path (spiffe://%s/** matches every one)", td)
		}
		segs, err := splitPattern(path, '/', isPathChar, "segment")
		if err != nil {
			return idPattern{}, fmt.Errorf("can never match a SPIFFE ID: %v", err)
		}
		return idPattern{td: td, segs: segs}, nil
	}
	hint := ""
	if s == "*" {
		hint = `: every SPIFFE ID of a trust domain is "spiffe://TRUST-DOMAIN/**", every DNS name "dns:**"`
	} else if !strings.Contains(s, ":") {
		hint = fmt.Sprintf(`: a certificate's DNS SAN is the identity "dns:%s"`, strings.ToLower(s))
	}
	return idPattern{}, fmt.Errorf("is neither a SPIFFE ID pattern (spiffe://TRUST-DOMAIN/PATH) nor a DNS name pattern (dns:NAME)%s", hint)
}

// splitPattern splits a path or name pattern into its segment patterns and
// checks each: not empty, no "." or "..", only chars allowed by ok or the
// wildcards '*' and '?', at most one "**".
func splitPattern(s string, sep byte, ok func(byte) bool, what string) ([]string, error) {
	segs := strings.Split(s, string(sep))
	doubles := 0
	for _, seg := range segs {
		switch seg {
		case "":
			return nil, fmt.Errorf("an empty %s (a leading, doubled or trailing %q)", what, sep)
		case ".", "..":
			return nil, fmt.Errorf("a %q %s", seg, what)
		case "**":
			if doubles++; doubles > 1 {
				return nil, fmt.Errorf("more than one ** %s", what)
			}
			continue
		}
		for i := 0; i < len(seg); i++ {
			if c := seg[i]; !ok(c) && c != '*' && c != '?' {
				return nil, fmt.Errorf("%s %q holds %q, which no %s can", what, seg, c, what)
			}
		}
	}
	return segs, nil
}

// isPathChar: the characters of a SPIFFE ID path segment.
func isPathChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_'
}

// isDNSChar: the characters of a (lower-cased) DNS label, with '_' as some
// internal names have it.
func isDNSChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}

// wildcards reports whether a SPIFFE pattern has a '*' or '?' within a
// segment: Signet before the parsed rules read '*' across '/'. (dns: is
// new with them.)
func (p idPattern) wildcards() bool {
	if p.dns {
		return false
	}
	for _, s := range p.segs {
		if s != "**" && strings.ContainsAny(s, "*?") {
			return true
		}
	}
	return false
}

// match reports whether the caller identity id (as certIdentity returns
// it) matches the pattern. It allocates nothing: it runs for every grant on
// every Sign.
func (p idPattern) match(id string) bool {
	if p.dns {
		name, ok := strings.CutPrefix(id, dnsPrefix)
		return ok && matchSegments(p.segs, name, '.', isDNSChar)
	}
	rest, ok := strings.CutPrefix(id, spiffePrefix)
	if !ok {
		return false
	}
	td, path, ok := strings.Cut(rest, "/")
	return ok && td == p.td && matchSegments(p.segs, path, '/', isPathChar)
}

// matchSegments matches s, split at sep, against the segment patterns. A
// segment of s that is empty or holds a character ok refuses matches no
// pattern: a DNS SAN that spells a URL matches no dns: pattern at all.
func matchSegments(pats []string, s string, sep byte, ok func(byte) bool) bool {
	n := strings.Count(s, string(sep)) + 1
	double := -1
	for i, p := range pats {
		if p == "**" {
			double = i
		}
	}
	if double < 0 && n != len(pats) || double >= 0 && n < len(pats) {
		return false
	}
	after := len(pats) - double - 1 // segments matched after "**"
	for i := 0; i < n; i++ {
		seg := s
		if j := strings.IndexByte(s, sep); j >= 0 {
			seg, s = s[:j], s[j+1:]
		}
		if seg == "" {
			return false
		}
		for k := 0; k < len(seg); k++ {
			if !ok(seg[k]) {
				return false
			}
		}
		var p string
		switch {
		case double < 0 || i < double:
			p = pats[i]
		case i >= n-after:
			p = pats[len(pats)-(n-i)]
		default:
			continue // within "**"
		}
		if !globMatch(p, seg) {
			return false
		}
	}
	return true
}
