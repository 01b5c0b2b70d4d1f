package main

// Adversarial end-to-end tests of the transport: a peer on the network,
// with or without a client certificate, against the real binary. Each test
// names the attack it makes and what the replica must still do.

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
)

// hostile is a replica with mTLS from dev-certs, an audit file and pprof.
type hostile struct {
	*process
	certs, audit string
}

// startHostile starts signet with dev-certs' certificates and policy. The
// config uses no option newer than the base commit's, so that the memory
// test can run against an older binary (SIGNET_E2E_BINARY); extra is
// appended to the grpc block's limits for the tests that need them.
func startHostile(t *testing.T, limits string, env ...string) *hostile {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "certs")
	runCLI(t, "dev-certs", "--dir", dir)
	h := &hostile{certs: dir, audit: filepath.Join(t.TempDir(), "audit.log")}
	if limits != "" {
		limits = "\n  limits: " + limits
	}
	h.process = startSignetWith(t, fmt.Sprintf(`issuer: %[1]s
grpc:
  listen: 127.0.0.1:0
  tls: {cert_file: %[2]s/server.pem, key_file: %[2]s/server-key.pem, client_ca_file: %[2]s/ca.pem}%[5]s
http: {listen: 127.0.0.1:0}
admin: {listen: 127.0.0.1:0, pprof: true}
policy_file: %[2]s/policy.yaml
audit: {path: %[3]s}
key_rings:
  - {name: default, backend: 'local://%[4]s'}
`, testIssuer, dir, h.audit, t.TempDir(), limits), env...)
	return h
}

// dial connects over TLS as who ("service", "security"), or with no client
// certificate at all when who is "".
func (h *hostile) dial(t *testing.T, who string) *grpc.ClientConn {
	t.Helper()
	pem, err := os.ReadFile(filepath.Join(h.certs, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	tc := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}
	if who != "" {
		cert, err := tls.LoadX509KeyPair(filepath.Join(h.certs, who+".pem"), filepath.Join(h.certs, who+"-key.pem"))
		if err != nil {
			t.Fatal(err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	conn, err := grpc.NewClient(h.grpcAddr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// goodSign is a Sign the policy grants the service.
func goodSign() *signetv1.SignRequest {
	return &signetv1.SignRequest{KeyRing: "default", Audience: []string{"demo-api"}, Subject: devServiceID}
}

// procStatus reads a field of /proc/PID/status in KiB (VmHWM: peak
// resident memory; VmRSS: now).
func procStatus(t *testing.T, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// hostileMemoryBound is what the replica may reach at its peak while the
// oversized requests arrive: it idles around 40 MiB; the base commit went
// past 1 GiB under the same 16 gzip requests.
const hostileMemoryBound = 200 << 10 // KiB

// oversizedSign is a Sign whose claims are a list of a million nulls: 4 MB
// of protobuf (under grpc-go's default limit), about 4 KB gzipped. It is
// encoded once: marshalling a million Values per call is slow under the
// race detector, and the attacker need not do it either.
func oversizedSign(t *testing.T) rawMessage {
	t.Helper()
	claims, err := structpb.NewStruct(map[string]any{"n": make([]any, 1_000_000)})
	if err != nil {
		t.Fatal(err)
	}
	req := goodSign()
	req.Claims = claims
	b, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rawMessage is a message already encoded; rawCodec sends it as it is.
type rawMessage []byte

type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(*v.(*rawMessage))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*rawMessage) = data.Materialize()
	return nil
}

func (rawCodec) Name() string { return "proto" }

// signRaw calls Sign with an encoded request.
func signRaw(ctx context.Context, conn *grpc.ClientConn, req rawMessage, opts ...grpc.CallOption) error {
	var resp rawMessage
	return conn.Invoke(ctx, "/signet.v1.SignerService/Sign", &req, &resp, append(opts, grpc.ForceCodecV2(rawCodec{}))...)
}

// attack sends n concurrent copies of req over conn, each with a 90 s
// deadline, and returns the codes they got. The attacker gave each
// 20 s; gzip-compressing 16 copies of 4 MB at once in a test process under
// the race detector on a busy machine can take longer than that, and the
// client's slowness is not what is tested.
func attack(conn *grpc.ClientConn, req rawMessage, n int, opts ...grpc.CallOption) map[codes.Code]int {
	var mu sync.Mutex
	got := map[codes.Code]int{}
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			err := signRaw(ctx, conn, req, opts...)
			mu.Lock()
			got[status.Code(err)]++
			mu.Unlock()
		})
	}
	wg.Wait()
	return got
}

// Attack: 16 concurrent Signs of a million nulls, gzip-compressed (~4 KB
// each on the wire) and then uncompressed, from a peer without a client
// certificate, then the same from a certified caller. The replica refuses
// the first before reading them (Unauthenticated) and the second at the
// size limit (ResourceExhausted), stays under hostileMemoryBound, and
// serves the JWKS and a certified caller's Sign throughout.
func TestHostileOversizedRequests(t *testing.T) {
	t.Parallel()
	h := startHostile(t, "")
	pid := h.cmd.Process.Pid
	idle := procStatus(t, pid, "VmHWM")
	anon, service := h.dial(t, ""), h.dial(t, "service")
	big := oversizedSign(t)

	gz := attack(anon, big, 16, grpc.UseCompressor(gzip.Name))
	afterGzip := procStatus(t, pid, "VmHWM")
	t.Logf("peak RSS: %d KiB idle, %d KiB after 16 gzip-compressed oversized Signs without a certificate (codes %v)", idle, afterGzip, gz)
	plain := attack(anon, big, 16)
	certGz := attack(service, big, 16, grpc.UseCompressor(gzip.Name))
	certPlain := attack(service, big, 16)
	peak := procStatus(t, pid, "VmHWM")
	t.Logf("peak RSS after all four attacks: %d KiB (bound %d KiB); codes: uncompressed %v, certified gzip %v, certified uncompressed %v",
		peak, hostileMemoryBound, plain, certGz, certPlain)

	for _, c := range []struct {
		what string
		got  map[codes.Code]int
		want codes.Code
	}{
		{"gzip, no certificate", gz, codes.Unauthenticated},
		{"uncompressed, no certificate", plain, codes.Unauthenticated},
		{"gzip, certified", certGz, codes.ResourceExhausted},
		{"uncompressed, certified", certPlain, codes.ResourceExhausted},
	} {
		if c.got[c.want] != 16 {
			t.Errorf("16 oversized Signs (%s): %v, want all %v", c.what, c.got, c.want)
		}
	}
	if peak > hostileMemoryBound {
		t.Errorf("peak RSS %d KiB is over the bound of %d KiB", peak, hostileMemoryBound)
	}
	// The reason says what was too large.
	err := signRaw(ctxT(t), service, big, grpc.UseCompressor(gzip.Name))
	if !strings.Contains(status.Convert(err).Message(), "larger than max") {
		t.Errorf("certified oversized Sign: %v, want a reason naming the limit", err)
	}
	select {
	case <-h.exited:
		t.Fatalf("signet exited: %v", h.waitErr)
	default:
	}
	if _, err := signetv1.NewSignerServiceClient(service).Sign(ctxT(t), goodSign()); err != nil {
		t.Errorf("a certified caller's Sign after the attacks: %v", err)
	}
	if !strings.Contains(string(h.jwks(t)), `"kid"`) {
		t.Error("no JWKS after the attacks")
	}
}

// auditRecords reads the audit file(s) at path as JSON objects.
func auditRecords(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var recs []map[string]any
	for sc := bufio.NewScanner(f); sc.Scan(); {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("audit line is not JSON: %s", sc.Text())
		}
		recs = append(recs, m)
	}
	return recs
}

// Attack: a flood of Signs from a peer without a certificate, each with
// its own traceparent. Every refusal is counted in the metrics; the audit
// log gets a burst and then a line a second from that peer, and the rest
// as a summary count; no caller-supplied trace id is recorded. An
// authenticated caller's trace id is (tracing on, to a collector in the
// test).
func TestHostileUnauthenticatedFlood(t *testing.T) {
	t.Parallel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(gs, &traceReceiver{})
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	h := startHostile(t, "", "OTEL_EXPORTER_OTLP_ENDPOINT=http://"+lis.Addr().String(), "OTEL_EXPORTER_OTLP_PROTOCOL=grpc",
		"OTEL_EXPORTER_OTLP_INSECURE=true")
	anon, service := h.dial(t, ""), h.dial(t, "service")

	const n = 600
	const attackerTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	start := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	refused := 0
	for w := range 6 {
		wg.Go(func() {
			for i := range n / 6 {
				ctx := metadata.AppendToOutgoingContext(ctxT(t), "traceparent", fmt.Sprintf("00-%s-%016x-01", attackerTrace, w*1000+i+1))
				_, err := signetv1.NewSignerServiceClient(anon).Sign(ctx, goodSign())
				if status.Code(err) == codes.Unauthenticated {
					mu.Lock()
					refused++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if refused != n {
		t.Errorf("%d of %d unauthenticated Signs refused Unauthenticated", refused, n)
	}
	const ownTrace = "0af7651916cd43dd8448eb211c80319c"
	ctx := metadata.AppendToOutgoingContext(ctxT(t), "traceparent", "00-"+ownTrace+"-b7ad6b7169203331-01")
	if _, err := signetv1.NewSignerServiceClient(service).Sign(ctx, goodSign()); err != nil {
		t.Fatalf("the certified caller during the flood: %v", err)
	}
	m := h.metrics(t)
	if got := m.Value(t, "signet_denials_total", "reason", "unauthenticated"); got != n {
		t.Errorf("signet_denials_total{reason=unauthenticated} = %v, want %d", got, n)
	}
	summarized := m.Value(t, "signet_audit_refusals_summarized_total")
	h.stop(t) // writes the last summary

	lines, summed, own := 0, 0.0, 0
	for _, r := range auditRecords(t, h.audit) {
		if r["trace_id"] == attackerTrace || strings.Contains(fmt.Sprint(r), attackerTrace) {
			t.Errorf("an unauthenticated caller's trace id is on record: %v", r)
		}
		switch {
		case r["caller"] == "unauthenticated" && r["summarized"] != nil:
			summed += r["summarized"].(float64)
		case r["caller"] == "unauthenticated":
			lines++
		case r["caller"] == devServiceID && r["trace_id"] == ownTrace:
			own++
		}
	}
	// Per peer: a burst of 10, then one a second.
	bound := 10 + int(elapsed/time.Second) + 1
	t.Logf("%d refusals in %v: %d audit lines of their own (bound %d), %v in summaries, %v counted as summarised", n, elapsed.Round(time.Millisecond), lines, bound, summed, summarized)
	if lines > bound {
		t.Errorf("%d audit lines for one flooding peer, want at most %d", lines, bound)
	}
	if lines+int(summed) != n || summed != summarized {
		t.Errorf("audit: %d lines + %v summarised = %v, want %d (metric: %v summarised)", lines, summed, float64(lines)+summed, n, summarized)
	}
	if own != 1 {
		t.Errorf("the authenticated caller's Sign is on record with its trace id %d times, want 1", own)
	}
}

// jtiIn reports whether the audit file at path holds a record of jti.
func jtiIn(t *testing.T, path, jti string) bool {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		return false
	}
	for _, r := range auditRecords(t, path) {
		if r["jti"] == jti {
			return true
		}
	}
	return false
}

// Attack (or accident): log rotation removes or renames the audit file.
// A Sign after a removal is on record in a new file at the configured
// path; after a rename, in the renamed file or the new one, and in the new
// one once the replica has noticed; SIGHUP reopens the path.
func TestHostileAuditRotation(t *testing.T) {
	t.Parallel()
	h := startHostile(t, "")
	client := signetv1.NewSignerServiceClient(h.dial(t, "service"))
	sign := func() string {
		t.Helper()
		resp, err := client.Sign(ctxT(t), goodSign())
		if err != nil {
			t.Fatalf("Sign: %v", err)
		}
		return resp.GetJti()
	}
	sign()
	if err := os.Remove(h.audit); err != nil {
		t.Fatal(err)
	}
	if jti := sign(); !jtiIn(t, h.audit, jti) {
		t.Errorf("after the audit file was removed, a Sign is not on record at %s", h.audit)
	}

	if err := os.Rename(h.audit, h.audit+".1"); err != nil {
		t.Fatal(err)
	}
	if jti := sign(); !jtiIn(t, h.audit+".1", jti) && !jtiIn(t, h.audit, jti) {
		t.Error("after a rename, a Sign is in neither file")
	}
	if !waitFor(30*time.Second, func() bool { _, err := os.Stat(h.audit); return err == nil }) {
		t.Fatal("the audit file was never reopened at its path after a rename")
	}
	if jti := sign(); !jtiIn(t, h.audit, jti) {
		t.Error("after the rename was noticed, a Sign is not on record at the path")
	}

	// logrotate's postrotate: rename, then SIGHUP.
	if err := os.Rename(h.audit, h.audit+".2"); err != nil {
		t.Fatal(err)
	}
	if err := h.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !waitFor(30*time.Second, func() bool { return strings.Contains(h.stderr.String(), "reopen requested (SIGHUP)") }) {
		t.Fatalf("no reopen after SIGHUP:\n%s", h.stderr.String())
	}
	if jti := sign(); !jtiIn(t, h.audit, jti) {
		t.Error("after SIGHUP, a Sign is not on record at the path")
	}
	if m := h.metrics(t); m.Value(t, "signet_audit_write_failures_total") != 0 {
		t.Error("audit write failures counted")
	}
}

// Attack: the public /readyz, while a ring cannot sign (an emergency
// rotation's new version waits for the replicas), tells no ring name and
// no reason; the admin listener's /statusz does.
func TestHostileReadyzRevealsNothing(t *testing.T) {
	t.Parallel()
	p := startSignetWith(t, fmt.Sprintf(`%s
key_rings:
  - {name: internal-secret, backend: 'local://%s', refresh_interval: 1m}
`, configHead, t.TempDir()))
	runCLI(t, "rotate", "--server", p.grpcAddr, "--key-ring", "internal-secret", "--revoke-previous")
	get := func(url string) string {
		t.Helper()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if body := strings.TrimSpace(get(p.httpURL + "/readyz")); body != `{"ready":true,"signing":false}` {
		t.Errorf("/readyz: %s, want only ready and signing", body)
	}
	if body := get(p.adminURL + "/statusz"); !strings.Contains(body, "internal-secret") || !strings.Contains(body, "signing_problems") {
		t.Errorf("/statusz does not say why: %s", body)
	}
}

// Attack: slowloris. A client that sends its request headers a byte at a
// time is cut off by the server (ReadHeaderTimeout), on the public and the
// admin listener, before it could finish; so is a gRPC connection that
// never completes its TLS handshake (grpc.limits.handshake_timeout), and
// connections past grpc.limits.max_connections are closed on accept.
func TestHostileSlowClients(t *testing.T) {
	t.Parallel()
	h := startHostile(t, "{max_connections: 4, handshake_timeout: 2s}")
	request := "GET /readyz HTTP/1.1\r\nHost: x\r\nUser-Agent: a-very-slow-client-that-takes-its-time\r\nAccept: */*\r\n\r\n"
	for _, url := range []string{h.httpURL, h.adminURL} {
		t.Run(strings.TrimPrefix(url, "http://"), func(t *testing.T) {
			t.Parallel()
			c, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			// A byte every 500ms: the whole request would take a minute.
			for i := range len(request) {
				if _, err := c.Write([]byte{request[i]}); err != nil {
					t.Logf("cut off after %d of %d bytes: %v", i, len(request), err)
					return
				}
				_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
				buf := make([]byte, 512)
				if n, err := c.Read(buf); n > 0 || (err != nil && !isTimeout(err)) {
					t.Logf("cut off after %d of %d bytes: answered %q, %v", i+1, len(request), buf[:n], err)
					if strings.HasPrefix(string(buf[:n]), "HTTP/1.1 200") {
						t.Error("the slow request was answered 200")
					}
					return
				}
			}
			t.Error("the server read the whole slow request")
		})
	}
	t.Run("grpc", func(t *testing.T) {
		t.Parallel()
		var held []net.Conn
		for range 4 {
			c, err := net.Dial("tcp", h.grpcAddr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			held = append(held, c)
		}
		time.Sleep(200 * time.Millisecond) // let the server accept them
		// A fifth is closed at once: max_connections.
		extra, err := net.Dial("tcp", h.grpcAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer extra.Close()
		_ = extra.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := extra.Read(make([]byte, 1)); err == nil || isTimeout(err) {
			t.Errorf("a connection past max_connections was kept: %v", err)
		}
		// The four that never handshake are closed by handshake_timeout.
		for _, c := range held {
			_ = c.SetReadDeadline(time.Now().Add(time.Minute))
			if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
				t.Errorf("a connection that never sent a TLS handshake was kept: %v", err)
			}
		}
		// Then a certified caller gets in.
		if !waitFor(30*time.Second, func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_, err := signetv1.NewSignerServiceClient(h.dial(t, "service")).Sign(ctx, goodSign())
			return err == nil
		}) {
			t.Error("no Sign after the held connections went")
		}
		if got := h.metrics(t).Value(t, "signet_grpc_connections_refused_total"); got < 1 {
			t.Errorf("signet_grpc_connections_refused_total = %v", got)
		}
	})
}

func isTimeout(err error) bool {
	var ne net.Error
	return err != nil && errors.As(err, &ne) && ne.Timeout()
}

// Attack: a pprof CPU profile or trace for an hour on the admin listener.
func TestHostilePprofSeconds(t *testing.T) {
	t.Parallel()
	h := startHostile(t, "")
	for _, path := range []string{"/debug/pprof/profile?seconds=3600", "/debug/pprof/trace?seconds=3600", "/debug/pprof/allocs?seconds=3600"} {
		resp, err := http.Get(h.adminURL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("GET %s: %d %s, want 400", path, resp.StatusCode, body)
		}
	}
}
