package server

import (
	"math"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	signetclient "github.com/signet-dev/signet/client"
	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
)

// deepClaims is a claims object nested depth levels deep.
func deepClaims(depth int) map[string]any {
	m := map[string]any{"leaf": true}
	for range depth {
		m = map[string]any{"n": m}
	}
	return m
}

// TestBadInput sends malformed Sign, Rotate and ListKeys requests over real
// gRPC. Each gets a clear InvalidArgument or NotFound, nothing changes, and
// the server keeps serving.
func TestBadInput(t *testing.T) {
	t.Parallel()
	ts := startServer(t, testConfig(t), Options{})
	good := func() *signetv1.SignRequest {
		return &signetv1.SignRequest{KeyRing: "default", Subject: "svc-a", Audience: []string{"svc-b"}}
	}
	with := func(f func(r *signetv1.SignRequest)) *signetv1.SignRequest {
		r := good()
		f(r)
		return r
	}
	big := strings.Repeat("x", 9000)
	tests := []struct {
		name string
		req  *signetv1.SignRequest
		code codes.Code
		want string
	}{
		{"reserved iss", with(func(r *signetv1.SignRequest) { r.Claims = mustStruct(map[string]any{"iss": "evil"}) }), codes.InvalidArgument, "claims.iss is reserved"},
		{"reserved iat", with(func(r *signetv1.SignRequest) { r.Claims = mustStruct(map[string]any{"iat": 1}) }), codes.InvalidArgument, "claims.iat is reserved"},
		{"reserved nbf", with(func(r *signetv1.SignRequest) { r.Claims = mustStruct(map[string]any{"nbf": 1}) }), codes.InvalidArgument, "claims.nbf is reserved"},
		{"reserved exp", with(func(r *signetv1.SignRequest) { r.Claims = mustStruct(map[string]any{"exp": 9999999999}) }), codes.InvalidArgument, "claims.exp is reserved"},
		{"reserved jti", with(func(r *signetv1.SignRequest) { r.Claims = mustStruct(map[string]any{"jti": "x"}) }), codes.InvalidArgument, "claims.jti is reserved"},
		{"reserved kid", with(func(r *signetv1.SignRequest) { r.Claims = mustStruct(map[string]any{"kid": "x"}) }), codes.InvalidArgument, "claims.kid is reserved"},
		{"reserved alg", with(func(r *signetv1.SignRequest) { r.Claims = mustStruct(map[string]any{"alg": "none"}) }), codes.InvalidArgument, "claims.alg is reserved"},
		{"sub in claims", with(func(r *signetv1.SignRequest) { r.Claims = mustStruct(map[string]any{"sub": "root"}) }), codes.InvalidArgument, "use the subject field"},
		{"aud in claims", with(func(r *signetv1.SignRequest) { r.Claims = mustStruct(map[string]any{"aud": "x"}) }), codes.InvalidArgument, "use the audience field"},
		{"huge claims", with(func(r *signetv1.SignRequest) { r.Claims = mustStruct(map[string]any{"blob": big}) }), codes.InvalidArgument, "exceed 8192 bytes"},
		{"many claims adding up", with(func(r *signetv1.SignRequest) {
			m := map[string]any{}
			for i := range 200 {
				m[strings.Repeat("k", 10)+string(rune('a'+i%26))+strings.Repeat("z", i/26)] = strings.Repeat("v", 40)
			}
			r.Claims = mustStruct(m)
		}), codes.InvalidArgument, "exceed 8192 bytes"},
		{"deeply nested claims", with(func(r *signetv1.SignRequest) {
			r.Claims = mustStruct(deepClaims(40))
		}), codes.InvalidArgument, "nest deeper than 16"},
		{"NaN claim", with(func(r *signetv1.SignRequest) {
			r.Claims = &structpb.Struct{Fields: map[string]*structpb.Value{"n": structpb.NewNumberValue(math.NaN())}}
		}), codes.InvalidArgument, "claims.n: NaN is not a JSON number"},
		{"infinite claim", with(func(r *signetv1.SignRequest) {
			r.Claims = &structpb.Struct{Fields: map[string]*structpb.Value{"n": structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{structpb.NewNumberValue(math.Inf(1))}})}}
		}), codes.InvalidArgument, "claims.n[0]: +Inf is not a JSON number"},
		{"claim without a value", with(func(r *signetv1.SignRequest) {
			r.Claims = &structpb.Struct{Fields: map[string]*structpb.Value{"empty": {}}}
		}), codes.InvalidArgument, "claims.empty has no value"},
		{"negative ttl", with(func(r *signetv1.SignRequest) { r.Ttl = &durationpb.Duration{Seconds: -60} }), codes.InvalidArgument, "ttl must be positive"},
		{"zero ttl", with(func(r *signetv1.SignRequest) { r.Ttl = &durationpb.Duration{} }), codes.InvalidArgument, "ttl must be positive"},
		{"sub-second ttl", with(func(r *signetv1.SignRequest) { r.Ttl = &durationpb.Duration{Nanos: 5e8} }), codes.InvalidArgument, "one-second resolution"},
		{"ttl above token_max_ttl", with(func(r *signetv1.SignRequest) { r.Ttl = &durationpb.Duration{Seconds: 7200} }), codes.InvalidArgument, `exceeds key ring "default" token_max_ttl of 1h0m0s`},
		{"huge ttl", with(func(r *signetv1.SignRequest) { r.Ttl = &durationpb.Duration{Seconds: math.MaxInt64} }), codes.InvalidArgument, "ttl"},
		{"malformed ttl", with(func(r *signetv1.SignRequest) { r.Ttl = &durationpb.Duration{Seconds: 1, Nanos: -1} }), codes.InvalidArgument, "ttl"},
		{"empty audience", with(func(r *signetv1.SignRequest) { r.Audience = nil }), codes.InvalidArgument, "audience is empty"},
		{"blank audience", with(func(r *signetv1.SignRequest) { r.Audience = []string{"a", ""} }), codes.InvalidArgument, "audience[1] is empty"},
		{"repeated audience", with(func(r *signetv1.SignRequest) { r.Audience = []string{"a", "b", "a"} }), codes.InvalidArgument, `audience[2] repeats "a"`},
		{"too many audiences", with(func(r *signetv1.SignRequest) { r.Audience = strings.Split(strings.Repeat("a,", 40)+"z", ",") }), codes.InvalidArgument, "audiences; the limit is 32"},
		{"invalid UTF-8 subject", with(func(r *signetv1.SignRequest) { r.Subject = "bad\xff\xfe" }), codes.InvalidArgument, "subject is not valid UTF-8"},
		{"invalid UTF-8 audience", with(func(r *signetv1.SignRequest) { r.Audience = []string{"ok", "\xc3\x28"} }), codes.InvalidArgument, "audience[1] is not valid UTF-8"},
		{"invalid UTF-8 key ring", with(func(r *signetv1.SignRequest) { r.KeyRing = "def\xffault" }), codes.InvalidArgument, "key_ring is not valid UTF-8"},
		{"huge subject", with(func(r *signetv1.SignRequest) { r.Subject = big }), codes.InvalidArgument, "subject is 9000 bytes"},
		{"typ with a quote", with(func(r *signetv1.SignRequest) { r.Typ = `JWT"` }), codes.InvalidArgument, "is not a media type"},
		{"typ with spaces", with(func(r *signetv1.SignRequest) { r.Typ = "at jwt" }), codes.InvalidArgument, "is not a media type"},
		{"no key ring", with(func(r *signetv1.SignRequest) { r.KeyRing = "" }), codes.InvalidArgument, "key_ring is required"},
		{"unknown key ring", with(func(r *signetv1.SignRequest) { r.KeyRing = "nope" }), codes.NotFound, `key ring "nope" is not configured`},
	}
	before := snapshotState(t, ts)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := ts.client.Sign(ctxT(t), proto.Clone(tt.req).(*signetv1.SignRequest))
			st := status.Convert(err)
			if err == nil || st.Code() != tt.code || !strings.Contains(st.Message(), tt.want) {
				t.Fatalf("got %v (token %q), want %v containing %q", err, resp.GetToken(), tt.code, tt.want)
			}
		})
	}
	t.Run("Rotate and ListKeys", func(t *testing.T) {
		for _, c := range []struct {
			err  error
			code codes.Code
		}{
			{second(ts.client.Rotate(ctxT(t), &signetv1.RotateRequest{})), codes.InvalidArgument},
			{second(ts.client.Rotate(ctxT(t), &signetv1.RotateRequest{KeyRing: "nope", RevokePrevious: true})), codes.NotFound},
			{second(ts.client.ListKeys(ctxT(t), &signetv1.ListKeysRequest{KeyRing: "nope"})), codes.NotFound},
		} {
			if status.Code(c.err) != c.code {
				t.Errorf("got %v, want %v", c.err, c.code)
			}
		}
	})
	if after := snapshotState(t, ts); after != before {
		t.Errorf("bad requests changed the key set:\nbefore %s\nafter  %s", before, after)
	}
	// Still serving.
	resp := sign(t, ts, "default")
	_, body := ts.get(t, JWKSPath)
	if _, err := verify(t, body, resp.GetToken()); err != nil {
		t.Errorf("after the bad requests a good token does not verify: %v", err)
	}
}

func second[T any](_ T, err error) error { return err }

// snapshotState is everything a request could change: versions and the JWKS.
func snapshotState(t *testing.T, ts *testServer) string {
	t.Helper()
	var b strings.Builder
	for _, v := range listKeys(t, ts) {
		b.WriteString(v.GetKid() + ":" + v.GetState().String() + " ")
	}
	r, _ := ts.get(t, JWKSPath)
	return b.String() + r.Header.Get("ETag")
}

// rawCodec sends bytes as they are, to put on the wire what no protobuf
// library would marshal.
type rawCodec struct{}

type rawRequest []byte

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.(rawRequest))}, nil
}
func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return proto.Unmarshal(data.Materialize(), v.(proto.Message))
}
func (rawCodec) Name() string { return "proto" }

func TestMalformedProtobuf(t *testing.T) {
	t.Parallel()
	ts := startServer(t, testConfig(t), Options{})
	str := func(num protowire.Number, s string) []byte {
		return protowire.AppendString(protowire.AppendTag(nil, num, protowire.BytesType), s)
	}
	msg := func(num protowire.Number, b []byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), b)
	}
	base := append(str(1, "default"), str(3, "aud")...)
	// claims = {"k": "\xff"}: Struct.fields entry {key, Value{string_value}}.
	badClaim := msg(5, msg(1, append(str(1, "k"), msg(2, str(3, "\xff"))...)))
	tests := []struct {
		name string
		req  []byte
		want string
	}{
		{"invalid UTF-8 in a claim", append(base, badClaim...), "invalid UTF-8"},
		// claims_json is a plain string (utf8_validation = NONE): the
		// service checks it and names the field, with no codec involved.
		{"invalid UTF-8 in claims_json", append(base, str(7, "{\"k\": \"\xff\"}")...), "claims_json is not valid UTF-8"},
		{"truncated message", base[:len(base)-2], "malformed request"},
		{"garbage", []byte{0xff, 0xff, 0xff, 0xff}, "malformed request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out signetv1.SignResponse
			err := ts.conn.Invoke(ctxT(t), "/signet.v1.SignerService/Sign", rawRequest(tt.req), &out, grpc.ForceCodecV2(rawCodec{}))
			if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), tt.want) {
				t.Errorf("got %v, want InvalidArgument containing %q", err, tt.want)
			}
			wantReason := signetv1.ErrorReason_MALFORMED_REQUEST
			if strings.Contains(tt.name, "claims_json") {
				wantReason = signetv1.ErrorReason_CLAIMS_INVALID
			}
			if got := signetclient.ReasonOf(err); got != wantReason {
				t.Errorf("reason %v, want %v", got, wantReason)
			}
		})
	}
	// The raw path itself works: the same bytes with a valid claim sign.
	good := append(base, msg(5, msg(1, append(str(1, "k"), msg(2, str(3, "ok"))...)))...)
	var out signetv1.SignResponse
	if err := ts.conn.Invoke(ctxT(t), "/signet.v1.SignerService/Sign", rawRequest(good), &out, grpc.ForceCodecV2(rawCodec{})); err != nil || out.GetToken() == "" {
		t.Fatalf("valid raw request: %v", err)
	}
	if n := countMalformed(); n != 0 {
		t.Errorf("%d malformed requests are still remembered", n)
	}
}

func countMalformed() int {
	n := 0
	malformedRequests.Range(func(any, any) bool { n++; return true })
	return n
}
