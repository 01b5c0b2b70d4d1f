package jose

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// maxClaimsInput bounds the claims_json text read at all: whitespace may
// make it longer than the MaxClaimsBytes it renders to, but not unboundedly.
const maxClaimsInput = 4 * MaxClaimsBytes

// EncodeClaimsJSON validates custom claims given as one JSON object (the
// claims_json field) and renders them as EncodeClaims does: the members of
// a JSON object without braces, keys sorted at every level, strings
// re-encoded as Signet encodes every string. Numbers are kept exactly as
// written, every digit of them: this is the field for integers above 2^53
// and long decimals, which a Struct's doubles cannot hold. It applies
// EncodeClaims's rules (reserved names, MaxClaimsBytes, MaxClaimsDepth,
// valid UTF-8, finite numbers) with the same messages, naming the field
// claims_json, and also refuses duplicate keys, which JSON parsers resolve
// differently. names are the top-level claim names, for the policy.
func EncodeClaimsJSON(text string) (members []byte, names []string, err error) {
	if text == "" {
		return nil, nil, nil
	}
	if len(text) > maxClaimsInput {
		return nil, nil, invalid(ClaimsTooLarge, "claims_json", "claims_json is %d bytes; claims may not exceed %d bytes of JSON", len(text), MaxClaimsBytes)
	}
	if !utf8.ValidString(text) {
		return nil, nil, invalid(ClaimsInvalid, "claims_json", "claims_json is not valid UTF-8")
	}
	d := &claimsDecoder{dec: json.NewDecoder(strings.NewReader(text)), text: text}
	d.dec.UseNumber()
	tok, err := d.token("claims_json")
	if err != nil {
		return nil, nil, err
	}
	if tok != json.Delim('{') {
		return nil, nil, invalid(ClaimsInvalid, "claims_json", "claims_json must be a JSON object, like {\"tenant\": \"acme\"}")
	}
	root, err := d.object("claims_json", 0)
	if err != nil {
		return nil, nil, err
	}
	if _, err := d.dec.Token(); !errors.Is(err, io.EOF) {
		return nil, nil, invalid(ClaimsInvalid, "claims_json", "claims_json has more after its object")
	}
	for _, k := range root.keys {
		if why, ok := reservedClaims[k]; ok {
			return nil, nil, invalid(ReservedClaim, "claims_json."+k, "claims_json.%s is reserved: %s", k, why)
		}
	}
	buf := make([]byte, 0, len(text))
	buf = root.appendMembers(buf)
	if len(buf) > MaxClaimsBytes {
		return nil, nil, invalid(ClaimsTooLarge, "claims_json", "claims exceed %d bytes of JSON", MaxClaimsBytes)
	}
	if len(root.keys) == 0 {
		return nil, nil, nil
	}
	return buf, root.keys, nil
}

// claimsDecoder walks claims_json token by token, so that it sees every
// key (a map would hide duplicates) and every number's text.
type claimsDecoder struct {
	dec  *json.Decoder
	text string // what dec reads, to see strings as written
}

// jsonValue is a parsed claim value: a scalar's JSON text (re-encoded for
// strings, as written for numbers), or an object's sorted members, or an
// array's elements.
type jsonValue struct {
	scalar []byte
	keys   []string // object: sorted
	values []*jsonValue
	array  bool
}

func (d *claimsDecoder) token(path string) (json.Token, error) {
	start := d.dec.InputOffset()
	tok, err := d.dec.Token()
	if err == nil {
		// encoding/json turns an unpaired surrogate escape into U+FFFD
		// without a word: the token would carry another string than the
		// caller wrote, so it is refused, as invalid UTF-8 is.
		if _, isString := tok.(string); isString && hasLoneSurrogate(d.text[start:d.dec.InputOffset()]) {
			return nil, invalid(ClaimsInvalid, path, "%s: a \\u escape of a UTF-16 surrogate (D800-DFFF) is not part of a pair: it encodes no character", path)
		}
	}
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, invalid(ClaimsInvalid, path, "%s: the JSON ends early", path)
		}
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return nil, invalid(ClaimsInvalid, path, "claims_json is not valid JSON at byte %d: %v", se.Offset, err)
		}
		return nil, invalid(ClaimsInvalid, path, "claims_json is not valid JSON: %v", err)
	}
	return tok, nil
}

// value reads the value that starts with tok, at depth (a top-level
// claim's value is at depth 1, as in EncodeClaims).
func (d *claimsDecoder) value(tok json.Token, path string, depth int) (*jsonValue, error) {
	if depth > MaxClaimsDepth {
		return nil, invalid(ClaimsTooLarge, path, "%s: claims nest deeper than %d levels", path, MaxClaimsDepth)
	}
	switch t := tok.(type) {
	case json.Delim:
		if t == '{' {
			return d.object(path, depth)
		}
		return d.array(path, depth)
	case string:
		return &jsonValue{scalar: appendQuoted(nil, t)}, nil
	case json.Number:
		// Beyond a double's range either way: too large (1e400, which
		// verifiers read as infinity or refuse) or too small (1e-400,
		// which they read as 0 although it is not).
		if f, err := strconv.ParseFloat(string(t), 64); err != nil || f == 0 && nonZeroMantissa(string(t)) {
			return nil, invalid(ClaimsInvalid, path, "%s: %s is beyond the range of a JSON number verifiers can read", path, Truncate(string(t), 32))
		}
		return &jsonValue{scalar: []byte(t)}, nil
	case bool:
		return &jsonValue{scalar: strconv.AppendBool(nil, t)}, nil
	case nil:
		return &jsonValue{scalar: []byte("null")}, nil
	}
	return nil, invalid(ClaimsInvalid, path, "%s: unexpected JSON token %v", path, tok)
}

// object reads an object's members after its '{'.
func (d *claimsDecoder) object(path string, depth int) (*jsonValue, error) {
	v := &jsonValue{}
	byKey := map[string]*jsonValue{}
	for d.dec.More() {
		tok, err := d.token(path)
		if err != nil {
			return nil, err
		}
		key, ok := tok.(string)
		if !ok {
			return nil, invalid(ClaimsInvalid, path, "%s: an object key must be a string", path)
		}
		child := path + "." + key
		if _, dup := byKey[key]; dup {
			return nil, invalid(ClaimsInvalid, child, "%s appears twice: JSON parsers disagree on which one counts", child)
		}
		tok, err = d.token(child)
		if err != nil {
			return nil, err
		}
		if byKey[key], err = d.value(tok, child, depth+1); err != nil {
			return nil, err
		}
		v.keys = append(v.keys, key)
	}
	if _, err := d.token(path); err != nil { // the '}'
		return nil, err
	}
	slices.Sort(v.keys)
	v.values = make([]*jsonValue, len(v.keys))
	for i, k := range v.keys {
		v.values[i] = byKey[k]
	}
	return v, nil
}

// array reads an array's elements after its '['.
func (d *claimsDecoder) array(path string, depth int) (*jsonValue, error) {
	v := &jsonValue{array: true}
	for i := 0; d.dec.More(); i++ {
		child := fmt.Sprintf("%s[%d]", path, i)
		tok, err := d.token(child)
		if err != nil {
			return nil, err
		}
		e, err := d.value(tok, child, depth+1)
		if err != nil {
			return nil, err
		}
		v.values = append(v.values, e)
	}
	if _, err := d.token(path); err != nil { // the ']'
		return nil, err
	}
	return v, nil
}

func (v *jsonValue) appendTo(buf []byte) []byte {
	switch {
	case v.scalar != nil:
		return append(buf, v.scalar...)
	case v.array:
		buf = append(buf, '[')
		for i, e := range v.values {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = e.appendTo(buf)
		}
		return append(buf, ']')
	}
	buf = append(buf, '{')
	buf = v.appendMembers(buf)
	return append(buf, '}')
}

// appendMembers appends an object's members without its braces.
func (v *jsonValue) appendMembers(buf []byte) []byte {
	for i, k := range v.keys {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = appendQuoted(buf, k)
		buf = append(buf, ':')
		buf = v.values[i].appendTo(buf)
	}
	return buf
}

// nonZeroMantissa reports whether a JSON number has a non-zero digit
// before its exponent.
func nonZeroMantissa(number string) bool {
	mantissa, _, _ := strings.Cut(strings.ToLower(number), "e")
	return strings.ContainsAny(mantissa, "123456789")
}

// hasLoneSurrogate reports whether raw, JSON text holding one string (and
// at most separators and whitespace before it), has a \u escape of a UTF-16
// surrogate that is not a high one followed at once by a low one.
func hasLoneSurrogate(raw string) bool {
	for i := 0; i < len(raw); i++ {
		if raw[i] != '\\' {
			continue
		}
		if i+1 < len(raw) && raw[i+1] != 'u' {
			i++ // a one-character escape, \\ included
			continue
		}
		r := hex4(raw, i+2)
		switch {
		case r >= 0xD800 && r < 0xDC00:
			if i+8 <= len(raw) && raw[i+6] == '\\' && raw[i+7] == 'u' {
				if lo := hex4(raw, i+8); lo >= 0xDC00 && lo < 0xE000 {
					i += 11
					continue
				}
			}
			return true
		case r >= 0xDC00 && r < 0xE000:
			return true
		}
		i += 5
	}
	return false
}

// hex4 is the value of the four hex digits at raw[i:], or -1.
func hex4(raw string, i int) int {
	if i+4 > len(raw) {
		return -1
	}
	n, err := strconv.ParseUint(raw[i:i+4], 16, 16)
	if err != nil {
		return -1
	}
	return int(n)
}
