package server

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding/gzip"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
	"github.com/signet-dev/signet/server/config"
	"github.com/signet-dev/signet/server/jose"
)

// readyz checks that the public /readyz says ready and whether the replica
// signs, and nothing else: no ring name, no reason, no error text.
func (ts *testServer) readyz(t *testing.T, signing bool) {
	t.Helper()
	r, body := ts.get(t, "/readyz")
	want := `{"ready":true,"signing":false}`
	if signing {
		want = `{"ready":true,"signing":true}`
	}
	if r.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != want {
		t.Errorf("/readyz: %d %s, want 200 %s", r.StatusCode, body, want)
	}
}

// statusz returns the admin listener's /statusz document.
func (ts *testServer) statusz(t *testing.T) string {
	t.Helper()
	resp, err := http.Get(ts.adminURL + StatusPath)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// largestSign is the largest Sign request that is valid: subject and 32
// audiences at their limits, and claims whose JSON is just under
// MaxClaimsBytes in the shape that is largest as a protobuf Struct (a
// list of small numbers).
func largestSign(t *testing.T) *signetv1.SignRequest {
	t.Helper()
	long := strings.Repeat("a", jose.MaxStringClaim)
	req := &signetv1.SignRequest{KeyRing: "default", Subject: long}
	for i := range jose.MaxAudiences {
		req.Audience = append(req.Audience, long[:len(long)-2]+string(rune('a'+i/26))+string(rune('a'+i%26)))
	}
	// {"n":[0,0,...]}: 8 bytes of frame, 2 per number.
	zeros := make([]any, (jose.MaxClaimsBytes-8)/2)
	for i := range zeros {
		zeros[i] = 0
	}
	claims, err := structpb.NewStruct(map[string]any{"n": zeros})
	if err != nil {
		t.Fatal(err)
	}
	req.Claims = claims
	return req
}

// The minimum max_request_bytes holds the largest valid request, and the
// limit is enforced on the wire and after gzip decompression alike, with
// ResourceExhausted and a reason.
func TestRequestSizeLimit(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.GRPC.Limits.MaxRequestBytes = config.MinRequestBytes
	ts := startServer(t, cfg, Options{})
	req := largestSign(t)
	t.Logf("largest valid Sign request: %d bytes; minimum max_request_bytes %d", proto.Size(req), config.MinRequestBytes)
	if proto.Size(req) > config.MinRequestBytes {
		t.Fatalf("the largest valid Sign request is %d bytes, over config.MinRequestBytes (%d)", proto.Size(req), config.MinRequestBytes)
	}
	if _, err := ts.client.Sign(ctxT(t), req); err != nil {
		t.Fatalf("the largest valid Sign request: %v", err)
	}
	if _, err := ts.client.Sign(ctxT(t), req, grpc.UseCompressor(gzip.Name)); err != nil {
		t.Fatalf("the largest valid Sign request, gzip: %v", err)
	}

	// A list of a million nulls: 4 MB as protobuf (under grpc-go's default
	// limit of 4 MiB), ~4 KB gzipped.
	nulls := make([]any, 1_000_000)
	big, err := structpb.NewStruct(map[string]any{"n": nulls})
	if err != nil {
		t.Fatal(err)
	}
	// Encoded once: marshalling a million Values per call is slow under
	// the race detector.
	over, err := proto.Marshal(&signetv1.SignRequest{KeyRing: "default", Audience: []string{"a"}, Claims: big})
	if err != nil {
		t.Fatal(err)
	}
	for _, opts := range [][]grpc.CallOption{nil, {grpc.UseCompressor(gzip.Name)}} {
		err := ts.conn.Invoke(ctxT(t), "/signet.v1.SignerService/Sign", rawRequest(over), &signetv1.SignResponse{},
			append(opts, grpc.ForceCodecV2(rawCodec{}))...)
		if codeOf(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "larger than max") {
			t.Errorf("an oversized Sign request (%d call options): %v, want ResourceExhausted saying it is larger than the maximum", len(opts), err)
		}
	}
	if _, err := ts.client.Sign(ctxT(t), &signetv1.SignRequest{KeyRing: "default", Audience: []string{"a"}}); err != nil {
		t.Errorf("Sign after the oversized requests: %v", err)
	}
}

// pprof's seconds= is capped on every handler that sleeps for it.
func TestPprofSecondsCapped(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.Admin.Pprof = true
	ts := startServer(t, cfg, Options{})
	// 75 is under the admin listener's write timeout, which pprof checks
	// itself: only the cap refuses it.
	for _, path := range []string{"/debug/pprof/profile?seconds=75", "/debug/pprof/profile?seconds=3600", "/debug/pprof/trace?seconds=61", "/debug/pprof/heap?seconds=1e9",
		"/debug/pprof/trace?seconds=NaN", "/debug/pprof/profile?seconds=x"} {
		if code := getCode(t, ts.adminURL+path); code != http.StatusBadRequest {
			t.Errorf("GET %s: %d, want 400", path, code)
		}
	}
	if code := getCode(t, ts.adminURL+"/debug/pprof/trace?seconds=0.1"); code != http.StatusOK {
		t.Errorf("a short trace: %d", code)
	}
}

func getCode(t *testing.T, url string) int {
	t.Helper()
	r, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, r.Body)
	r.Body.Close()
	return r.StatusCode
}
