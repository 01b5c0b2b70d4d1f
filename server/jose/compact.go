package jose

import (
	"context"
	"encoding/base64"
)

// SignFunc signs a JWS signing input (ASCII(header) "." ASCII(payload)) and
// returns the JWS signature bytes.
type SignFunc func(ctx context.Context, signingInput []byte) ([]byte, error)

// Compact assembles a compact JWS: the encoded header, the payload encoded
// here, and the signature sign returns over them. sigSize is a hint for the
// buffer (the algorithm's signature size, or 0).
func Compact(ctx context.Context, header string, payload []byte, sigSize int, sign SignFunc) (string, error) {
	enc := base64.RawURLEncoding
	n := len(header) + 1 + enc.EncodedLen(len(payload))
	buf := make([]byte, n, n+1+enc.EncodedLen(max(sigSize, 512)))
	copy(buf, header)
	buf[len(header)] = '.'
	enc.Encode(buf[len(header)+1:], payload)
	sig, err := sign(ctx, buf)
	if err != nil {
		return "", err
	}
	buf = append(buf, '.')
	buf = enc.AppendEncode(buf, sig)
	return string(buf), nil
}
