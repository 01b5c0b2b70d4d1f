package jose

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/structpb"
)

// Limits on what a caller may put in a token.
const (
	MaxClaimsBytes   = 8 << 10 // JSON of the custom claims
	MaxClaimsDepth   = 16      // nesting of objects and arrays
	MaxAudiences     = 32
	MaxStringClaim   = 1024        // bytes in sub and each aud
	MinTokenLifetime = time.Second // token times have one-second resolution
)

// reservedClaims are set by Signet (or are header members) and may not
// appear in a request's custom claims; the value says what to do instead.
var reservedClaims = map[string]string{
	"iss": "Signet sets the issuer from its configuration",
	"sub": "use the subject field",
	"aud": "use the audience field",
	"exp": "use the ttl field",
	"nbf": "Signet sets it to the issue time",
	"iat": "Signet sets it to the issue time",
	"jti": "Signet sets a unique id",
	"kid": "Signet sets the key id in the header",
	"alg": "Signet sets the algorithm in the header",
	// A binding the caller wrote could name another party's certificate:
	// only Signet, from the verified mTLS peer, says whom a token is bound to.
	"cnf": "ask for a certificate-bound token with bind_to_certificate; Signet computes cnf from the client certificate",
}

// Claims is what Signet puts in a token besides the caller's custom claims.
type Claims struct {
	Issuer   string
	Subject  string
	Audience []string
	TTL      time.Duration // already checked against the ring's schedule
	// CertThumbprint, if set, binds the token to a client certificate
	// (RFC 8705 section 3.1): cnf {"x5t#S256": CertThumbprint}.
	CertThumbprint string
}

// CertThumbprint is a certificate's x5t#S256 (RFC 8705 section 3.1): the
// base64url SHA-256 of its DER, what a resource server recomputes from the
// certificate its caller presents.
func CertThumbprint(der []byte) string {
	sum := sha256.Sum256(der)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// DefaultTyp is the header typ of a Sign request that names none.
const DefaultTyp = "JWT"

var typRE = regexp.MustCompile(`^[A-Za-z0-9!#$&^_.+-]+(/[A-Za-z0-9!#$&^_.+-]+)?$`)

// CheckTyp checks a requested header typ: a media type or its short form
// (RFC 7515 4.1.9), e.g. "at+jwt". Empty means DefaultTyp. What it accepts
// holds no character that JSON would escape, so it cannot break out of the
// header.
func CheckTyp(typ string) (string, error) {
	switch {
	case typ == "":
		return DefaultTyp, nil
	case len(typ) > 64 || !typRE.MatchString(typ):
		return "", Invalid("typ", "typ %q is not a media type such as \"JWT\" or \"at+jwt\"", Truncate(typ, 64))
	}
	return typ, nil
}

// InvalidError is a request error whose message is safe and useful to
// return to the caller (as InvalidArgument). Field names the request field
// at fault, in the API's terms; Problem classifies it for programs.
type InvalidError struct {
	Field   string
	Msg     string
	Problem Problem
}

func (e *InvalidError) Error() string { return e.Msg }

// Problem classifies an *InvalidError; the server turns each into a stable
// error reason.
type Problem int

const (
	// FieldInvalid: a field is missing or invalid (the default).
	FieldInvalid Problem = iota
	// ReservedClaim: a custom claim uses a name Signet sets.
	ReservedClaim
	// ClaimsInvalid: the custom claims are not a valid JSON object.
	ClaimsInvalid
	// ClaimsTooLarge: the custom claims are too big or too deep.
	ClaimsTooLarge
	// TTLOutOfRange: the token lifetime is out of bounds.
	TTLOutOfRange
)

// Invalid returns an *InvalidError about field.
func Invalid(field, format string, args ...any) error {
	return &InvalidError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// invalid returns an *InvalidError of a given problem about field.
func invalid(p Problem, field, format string, args ...any) error {
	return &InvalidError{Field: field, Msg: fmt.Sprintf(format, args...), Problem: p}
}

// Truncate shortens s to n bytes for an error message.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// CheckIdentity checks subject and audience.
func CheckIdentity(subject string, audience []string) error {
	if !utf8.ValidString(subject) {
		return Invalid("subject", "subject is not valid UTF-8")
	}
	if len(subject) > MaxStringClaim {
		return Invalid("subject", "subject is %d bytes; the limit is %d", len(subject), MaxStringClaim)
	}
	if len(audience) == 0 {
		return Invalid("audience", "audience is empty: name at least one audience the token is for")
	}
	if len(audience) > MaxAudiences {
		return Invalid("audience", "%d audiences; the limit is %d", len(audience), MaxAudiences)
	}
	for i, a := range audience {
		switch {
		case a == "":
			return Invalid(fmt.Sprintf("audience[%d]", i), "audience[%d] is empty", i)
		case !utf8.ValidString(a):
			return Invalid(fmt.Sprintf("audience[%d]", i), "audience[%d] is not valid UTF-8", i)
		case len(a) > MaxStringClaim:
			return Invalid(fmt.Sprintf("audience[%d]", i), "audience[%d] is %d bytes; the limit is %d", i, len(a), MaxStringClaim)
		case slices.Index(audience, a) < i:
			return Invalid(fmt.Sprintf("audience[%d]", i), "audience[%d] repeats %q", i, a)
		}
	}
	return nil
}

// EncodeClaims validates custom claims and renders them as the members of a
// JSON object, without braces, keys sorted. It refuses reserved names, NaN and
// infinities (not JSON), deep nesting, invalid UTF-8 and more than
// MaxClaimsBytes.
func EncodeClaims(claims *structpb.Struct) ([]byte, error) {
	if claims == nil || len(claims.Fields) == 0 {
		return nil, nil
	}
	keys := make([]string, 0, len(claims.Fields))
	for k := range claims.Fields {
		if why, ok := reservedClaims[k]; ok {
			return nil, invalid(ReservedClaim, "claims."+k, "claims.%s is reserved: %s", k, why)
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	buf := make([]byte, 0, 128)
	for i, k := range keys {
		if i > 0 {
			buf = append(buf, ',')
		}
		var err error
		if buf, err = appendString(buf, k, "claims"); err != nil {
			return nil, err
		}
		buf = append(buf, ':')
		if buf, err = appendValue(buf, claims.Fields[k], "claims."+k, 1); err != nil {
			return nil, err
		}
		if len(buf) > MaxClaimsBytes {
			return nil, invalid(ClaimsTooLarge, "claims", "claims exceed %d bytes of JSON", MaxClaimsBytes)
		}
	}
	return buf, nil
}

func appendValue(buf []byte, v *structpb.Value, path string, depth int) ([]byte, error) {
	if depth > MaxClaimsDepth {
		return nil, invalid(ClaimsTooLarge, path, "%s: claims nest deeper than %d levels", path, MaxClaimsDepth)
	}
	if len(buf) > MaxClaimsBytes {
		return nil, invalid(ClaimsTooLarge, "claims", "claims exceed %d bytes of JSON", MaxClaimsBytes)
	}
	switch k := v.GetKind().(type) {
	case *structpb.Value_NullValue:
		return append(buf, "null"...), nil
	case *structpb.Value_BoolValue:
		return strconv.AppendBool(buf, k.BoolValue), nil
	case *structpb.Value_NumberValue:
		f := k.NumberValue
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, invalid(ClaimsInvalid, path, "%s: %v is not a JSON number", path, f)
		}
		return appendNumber(buf, f), nil
	case *structpb.Value_StringValue:
		return appendString(buf, k.StringValue, path)
	case *structpb.Value_ListValue:
		buf = append(buf, '[')
		for i, e := range k.ListValue.GetValues() {
			if i > 0 {
				buf = append(buf, ',')
			}
			var err error
			if buf, err = appendValue(buf, e, fmt.Sprintf("%s[%d]", path, i), depth+1); err != nil {
				return nil, err
			}
		}
		return append(buf, ']'), nil
	case *structpb.Value_StructValue:
		fields := k.StructValue.GetFields()
		keys := make([]string, 0, len(fields))
		for key := range fields {
			keys = append(keys, key)
		}
		slices.Sort(keys)
		buf = append(buf, '{')
		for i, key := range keys {
			if i > 0 {
				buf = append(buf, ',')
			}
			var err error
			if buf, err = appendString(buf, key, path); err != nil {
				return nil, err
			}
			buf = append(buf, ':')
			if buf, err = appendValue(buf, fields[key], path+"."+key, depth+1); err != nil {
				return nil, err
			}
		}
		return append(buf, '}'), nil
	}
	return nil, invalid(ClaimsInvalid, path, "%s has no value (set one of null, bool, number, string, list or struct)", path)
}

func appendString(buf []byte, s, path string) ([]byte, error) {
	if !utf8.ValidString(s) {
		return nil, invalid(ClaimsInvalid, path, "%s: string is not valid UTF-8", path)
	}
	return appendQuoted(buf, s), nil
}

// Payload renders the JWT claims set: the registered claims Signet sets,
// then the caller's custom claims (as EncodeClaims returned them).
func Payload(c Claims, custom []byte, now time.Time) (body []byte, jti string, exp time.Time) {
	jti = newJTI()
	iat := now.Unix()
	exp = time.Unix(now.Add(c.TTL).Unix(), 0)
	buf := make([]byte, 0, 160+len(custom)+len(c.Subject)+len(c.Issuer))
	buf = append(buf, `{"iss":`...)
	buf = appendQuoted(buf, c.Issuer)
	if c.Subject != "" {
		buf = append(buf, `,"sub":`...)
		buf = appendQuoted(buf, c.Subject)
	}
	buf = append(buf, `,"aud":`...)
	if len(c.Audience) == 1 {
		buf = appendQuoted(buf, c.Audience[0])
	} else {
		buf = appendQuotedList(buf, c.Audience)
	}
	buf = append(buf, `,"exp":`...)
	buf = strconv.AppendInt(buf, exp.Unix(), 10)
	buf = append(buf, `,"nbf":`...)
	buf = strconv.AppendInt(buf, iat, 10)
	buf = append(buf, `,"iat":`...)
	buf = strconv.AppendInt(buf, iat, 10)
	buf = append(buf, `,"jti":"`...)
	buf = append(buf, jti...)
	buf = append(buf, '"')
	if c.CertThumbprint != "" {
		buf = append(buf, `,"cnf":{"x5t#S256":`...)
		buf = appendQuoted(buf, c.CertThumbprint)
		buf = append(buf, '}')
	}
	if len(custom) > 0 {
		buf = append(buf, ',')
		buf = append(buf, custom...)
	}
	return append(buf, '}'), jti, exp
}

// newJTI returns 128 random bits, base64url: unique without coordination.
func newJTI() string {
	var b [16]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// Header is the encoded JOSE header of a token: exactly alg, kid and typ,
// as encoding/json writes that object.
func Header(alg, kid, typ string) string {
	h := make([]byte, 0, 32+len(alg)+len(kid)+len(typ))
	h = append(h, `{"alg":`...)
	h = appendQuoted(h, alg)
	h = append(h, `,"kid":`...)
	h = appendQuoted(h, kid)
	h = append(h, `,"typ":`...)
	h = appendQuoted(h, typ)
	h = append(h, '}')
	return base64.RawURLEncoding.EncodeToString(h)
}

// CheckTTL checks a requested token lifetime against the ring's
// token_max_ttl. A longer one is refused, never cut.
func CheckTTL(ttl, maxTTL time.Duration, ring string) error {
	switch {
	case ttl <= 0:
		return invalid(TTLOutOfRange, "ttl", "ttl must be positive, got %v", ttl)
	case ttl < MinTokenLifetime:
		return invalid(TTLOutOfRange, "ttl", "ttl %v is shorter than %v: token times have one-second resolution", ttl, MinTokenLifetime)
	case ttl > maxTTL:
		return invalid(TTLOutOfRange, "ttl", "ttl %v exceeds key ring %q token_max_ttl of %v", ttl, ring, maxTTL)
	}
	return nil
}
