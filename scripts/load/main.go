// Command load is Signet's load harness (`make load`): it starts the real
// signet binary on loopback and prints, side by side and from one run, the
// gRPC floor, the bare signature rate, Sign at several concurrencies on the
// local backend (plaintext, and mTLS with a policy and an audit file), Sign
// efficiency, the JWKS against a static file server serving the same bytes,
// Vault's CPU per 1000 tokens (through Signet, direct, batched, and Vault's
// own identity tokens), and the server's resident memory after each phase.
// It ends with one `load: NAME=VALUE` line per figure.
//
// gRPC load is ghz's runner package; HTTP load is wrk for the JWKS (when
// installed; else vegeta) and vegeta's library for the direct Vault calls.
// It lives in its own module so that none of them is a dependency of Signet.
package main

import (
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	externaljwtv1 "k8s.io/externaljwt/apis/v1"

	"github.com/signet-dev/signet/backends"
	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
)

// kek is the local backend's key-encryption key for the harness's
// throwaway key directories.
const kek = "bG9hZC1oYXJuZXNzLWtlay0wMTIzNDU2Nzg5YWJjZGU="

const (
	healthCall = "grpc.health.v1.Health.Check"
	signCall   = "signet.v1.SignerService.Sign"
	kubeCall   = "v1.ExternalJWTSigner.Sign"
)

// kubeRing is the ring the plaintext Signet also serves as kube-apiserver's
// ExternalJWTSigner (kube-apiserver takes no EdDSA), and kubeIssuer the
// issuer its claims name.
const (
	kubeRing   = "es256"
	kubeIssuer = "https://kubernetes.default.svc.cluster.local"
)

type options struct {
	signet, vault   string
	duration, bareD time.Duration
	concurrency     []int
	algs            []backends.Algorithm
	modes           []string
	skip            map[string]bool
	profileDir      string
	profileMatch    *regexp.Regexp
	keep            bool
	vaultOptions    string
	vaultSizes      []int
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-serve-static" {
		fs := flag.NewFlagSet("serve-static", flag.ExitOnError)
		root := fs.String("serve-static", "", "")
		addr := fs.String("serve-addr", "", "")
		mode := fs.String("serve-mode", "file", "")
		fs.Parse(os.Args[1:])
		if err := serveStatic(*root, *addr, *mode); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	var o options
	var conc, algs, modes, skip, match string
	flag.StringVar(&o.signet, "signet", "bin/signet", "the signet binary to load")
	flag.StringVar(&o.vault, "vault", os.Getenv("SIGNET_VAULT_BIN"), "the Vault server binary (make bin/vault); empty: no Vault figures")
	flag.DurationVar(&o.duration, "duration", 2*time.Second, "length of each measured phase (each has a short warm-up before it)")
	flag.DurationVar(&o.bareD, "bare-duration", time.Second, "length of each in-process bare signature measurement")
	flag.StringVar(&conc, "concurrency", "1,16,64,256", "Sign and health concurrencies")
	flag.StringVar(&algs, "algs", "ES256,EdDSA", "algorithms of the local rings")
	flag.StringVar(&modes, "modes", "plaintext,mtls", "plaintext and/or mtls (mTLS + policy + audit to a file)")
	flag.StringVar(&skip, "skip", "", "sections to leave out: sign, jwks, vault")
	flag.StringVar(&o.profileDir, "profile", "", "write the server's CPU profile of each phase matching -profile-match into this directory")
	flag.StringVar(&match, "profile-match", "plaintext Sign ES256 c=64", "regexp of the phase names to profile")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary directory (configs, logs, audit file)")
	flag.StringVar(&o.vaultOptions, "vault-options", "", "more vault:// URI options for Signet's Vault ring, e.g. batch_wait=1ms")
	var sizes string
	flag.StringVar(&sizes, "vault-batch-sizes", "", "direct batch_input sizes to measure besides 32, e.g. 4,8,16")
	flag.Parse()
	for _, s := range strings.Split(conc, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			fatalf("-concurrency %q: want numbers like 1,16,64", conc)
		}
		o.concurrency = append(o.concurrency, n)
	}
	for _, s := range strings.Split(algs, ",") {
		a, err := backends.ParseAlgorithm(strings.TrimSpace(s))
		if err != nil {
			fatalf("-algs: %v", err)
		}
		o.algs = append(o.algs, a)
	}
	for _, m := range strings.Split(modes, ",") {
		if m = strings.TrimSpace(m); m != "plaintext" && m != "mtls" {
			fatalf("-modes %q: want plaintext and/or mtls", modes)
		}
		o.modes = append(o.modes, strings.TrimSpace(m))
	}
	o.skip = map[string]bool{}
	for _, s := range strings.Split(skip, ",") {
		if s = strings.TrimSpace(s); s != "" {
			o.skip[s] = true
		}
	}
	o.profileMatch = regexp.MustCompile(match)
	for _, f := range strings.FieldsFunc(sizes, func(r rune) bool { return r == ',' }) {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			fatalf("-vault-batch-sizes %q: want numbers like 4,8,16", sizes)
		}
		o.vaultSizes = append(o.vaultSizes, n)
	}
	if _, err := os.Stat(o.signet); err != nil {
		fatalf("-signet: %v (build it with make build)", err)
	}
	if err := run(o); err != nil {
		fatalf("%v", err)
	}
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "load: "+format+"\n", args...)
	os.Exit(1)
}

// harness is one run's state.
type harness struct {
	o    options
	dir  string
	sum  summary
	bare map[backends.Algorithm]bareResult
	rss  []string
}

func run(o options) error {
	began := time.Now()
	dir, err := os.MkdirTemp("", "signet-load-")
	if err != nil {
		return err
	}
	if o.keep {
		fmt.Printf("keeping %s\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	h := &harness{o: o, dir: dir, bare: map[backends.Algorithm]bareResult{}}
	load1, _ := os.ReadFile("/proc/loadavg")
	fmt.Printf("signet load harness: %s, GOMAXPROCS %d, %s; load average %s", runtime.Version(), runtime.GOMAXPROCS(0),
		cpuModel(), strings.Join(strings.Fields(string(load1))[:3], " "))
	fmt.Printf("; phases %v each after a short warm-up; gRPC load: ghz runner (one connection); HTTP load: wrk for the JWKS"+
		" when installed, vegeta for Vault\n\n", o.duration)
	if o.profileDir != "" {
		if err := os.MkdirAll(o.profileDir, 0o755); err != nil {
			return err
		}
	}

	fmt.Println("== bare signature, in process (local backend's Sign) ==")
	fmt.Printf("%-6s %12s %14s %12s\n", "alg", "1 goroutine", fmt.Sprintf("%d goroutines", runtime.GOMAXPROCS(0)), "CPU/sign")
	// The bare signature runs under the GC settings that signet serve uses
	// by default, so that the ideal Sign is charged the same garbage
	// collection as the server: at Go's default, ECDSA's garbage alone made
	// a bare ES256 signature ~12% dearer on 2 cores. (Only here: ghz keeps
	// every call's result, and the client would collect all the time within
	// the server's memory limit.)
	gcPercent, memLimit := debug.SetGCPercent(400), debug.SetMemoryLimit(32<<20)
	defer func() { debug.SetGCPercent(gcPercent); debug.SetMemoryLimit(memLimit) }()
	for _, alg := range o.algs {
		b, err := measureBare(filepath.Join(dir, "bare"), alg, o.bareD)
		if err != nil {
			return fmt.Errorf("bare %s: %w", alg, err)
		}
		h.bare[alg] = b
		fmt.Printf("%-6s %10.1fµs %12.0f/s %10.1fµs\n", alg, us(b.Single), b.Rate, us(b.CPUPerSign))
		a := strings.ToLower(string(alg))
		h.sum.set("bare_"+a+"_us", us(b.Single), "%.1f")
		h.sum.set("bare_"+a+"_rate", b.Rate, "%.0f")
	}
	debug.SetGCPercent(gcPercent)
	debug.SetMemoryLimit(memLimit)
	fmt.Println()

	var plain *signetProc
	if !o.skip["sign"] || !o.skip["jwks"] {
		for _, mode := range o.modes {
			if mode == "plaintext" && o.skip["sign"] {
				continue
			}
			if mode == "mtls" && o.skip["sign"] {
				continue
			}
			s, err := h.signSection(mode)
			if err != nil {
				return err
			}
			if mode == "plaintext" {
				plain = s
				defer s.stop()
			} else {
				s.stop()
			}
		}
		if !o.skip["jwks"] {
			if plain == nil {
				if plain, err = h.startLocal("plaintext"); err != nil {
					return err
				}
				defer plain.stop()
			}
			if err := h.jwksSection(plain); err != nil {
				return err
			}
		}
		if plain != nil {
			plain.stop()
		}
	}
	if !o.skip["vault"] {
		if o.vault == "" {
			fmt.Println("== Vault: skipped: no -vault binary (SIGNET_VAULT_BIN; make bin/vault builds one) ==")
		} else if err := h.vaultSection(); err != nil {
			return err
		}
	}

	fmt.Println("== resident memory of the server after each phase ==")
	for _, l := range h.rss {
		fmt.Println(l)
	}
	fmt.Printf("\nharness ran %.0fs\n\n", time.Since(began).Seconds())
	h.sum.write(os.Stdout)
	return nil
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func (h *harness) noteRSS(s *signetProc, label string) float64 {
	rss, err := processRSS(s.pid())
	if err != nil {
		return math.NaN()
	}
	mib := float64(rss) / (1 << 20)
	h.rss = append(h.rss, fmt.Sprintf("  %-40s %6.1f MiB", label, mib))
	return mib
}

// ringConfig is the key_rings part of a config for the local rings.
func (h *harness) localRings(keys string) string {
	var b strings.Builder
	for _, alg := range h.o.algs {
		fmt.Fprintf(&b, "  - name: %s\n    backend: local://%s\n    algorithm: %s\n", strings.ToLower(string(alg)), keys, alg)
	}
	return b.String()
}

// startLocal writes the config of a local-backend Signet in mode and
// starts it.
func (h *harness) startLocal(mode string) (*signetProc, error) {
	d := filepath.Join(h.dir, mode)
	if err := os.MkdirAll(d, 0o700); err != nil {
		return nil, err
	}
	cfg := "issuer: http://127.0.0.1:8080\n" +
		"grpc:\n  listen: 127.0.0.1:0\n"
	if mode == "mtls" {
		certs := filepath.Join(d, "certs")
		if out, err := exec.Command(h.o.signet, "dev-certs", "--dir", certs).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("signet dev-certs: %v\n%s", err, out)
		}
		var rings []string
		for _, a := range h.o.algs {
			rings = append(rings, strings.ToLower(string(a)))
		}
		// A realistic grant: patterns to match, claims to check and a
		// rate limit that is never reached.
		policy := fmt.Sprintf(`grants:
  - identity: "spiffe://signet.dev/service/**"
    sign:
      - key_rings: [%s]
        audiences: ["svc-*"]
        subjects: ["svc-*"]
        claims: [scope, tenant]
        max_ttl: 15m
        rate: {per_second: 1000000, burst: 1000000}
`, strings.Join(rings, ", "))
		if err := os.WriteFile(filepath.Join(d, "policy.yaml"), []byte(policy), 0o600); err != nil {
			return nil, err
		}
		cfg += fmt.Sprintf("  tls:\n    cert_file: %[1]s/server.pem\n    key_file: %[1]s/server-key.pem\n    client_ca_file: %[1]s/ca.pem\n"+
			"policy_file: %[2]s/policy.yaml\naudit:\n  path: %[2]s/audit.log\n", certs, d)
	}
	if mode == "plaintext" && h.kubeSigner() {
		// The socket's directory is the harness's own (0700); the
		// harness's uid is the one admitted.
		cfg += fmt.Sprintf("kubernetes_signer:\n  socket: %s\n  key_ring: %s\n  issuer: %s\n  allowed_uids: [%d]\n",
			filepath.Join(d, "kube.sock"), kubeRing, kubeIssuer, os.Getuid())
	}
	cfg += "http:\n  listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\n  pprof: true\nlog:\n  level: warn\nkey_rings:\n" +
		h.localRings(filepath.Join(d, "keys"))
	path := filepath.Join(d, "signet.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	return startSignet(h.o.signet, d, "signet-"+mode, path, []string{"SIGNET_LOCAL_KEK=" + kek})
}

func (h *harness) grpcTarget(mode string, s *signetProc) grpcTarget {
	t := grpcTarget{addr: s.GRPC, serverPID: s.pid()}
	if mode == "mtls" {
		certs := filepath.Join(h.dir, mode, "certs")
		t.ca, t.cert, t.key = filepath.Join(certs, "ca.pem"), filepath.Join(certs, "service.pem"), filepath.Join(certs, "service-key.pem")
	}
	return t
}

// kubeSigner reports whether the plaintext Signet serves the
// ExternalJWTSigner too: when one of the local rings is ES256.
func (h *harness) kubeSigner() bool {
	return slices.Contains(h.o.algs, backends.ES256)
}

// kubeSignRequest is a SignJWTRequest as kube-apiserver sends it for a
// pod's projected token: its claims issued now and valid for 10 minutes
// (under the ring's token_max_ttl), so a phase must start within them.
func kubeSignRequest() *externaljwtv1.SignJWTRequest {
	now := time.Now()
	claims, _ := json.Marshal(map[string]any{
		"aud": []string{"https://kubernetes.default.svc.cluster.local"},
		"exp": now.Add(10 * time.Minute).Unix(), "iat": now.Unix(), "nbf": now.Unix(),
		"iss": kubeIssuer, "jti": "5f1c7e1a-1111-4d2e-9c3b-6a7b8c9d0e1f",
		"kubernetes.io": map[string]any{"namespace": "default", "serviceaccount": map[string]any{"name": "app", "uid": "9b1e"},
			"pod": map[string]any{"name": "app-1", "uid": "7c2d"}},
		"sub": "system:serviceaccount:default:app",
	})
	return &externaljwtv1.SignJWTRequest{Claims: base64.RawURLEncoding.EncodeToString(claims)}
}

func kubeSignResponse() proto.Message { return &externaljwtv1.SignJWTResponse{} }

func signRequest(ring string) *signetv1.SignRequest {
	claims, _ := structpb.NewStruct(map[string]any{"scope": "read write", "tenant": "t-42"})
	return &signetv1.SignRequest{KeyRing: ring, Subject: "svc-a", Audience: []string{"svc-b"}, Claims: claims}
}

func signResponse() proto.Message   { return &signetv1.SignResponse{} }
func healthResponse() proto.Message { return &healthpb.HealthCheckResponse{} }

// delimited is a message as ghz's binary data takes it unambiguously:
// length-prefixed (a bare message could be misread as a sequence of them).
// ghz wants its own copy of the request; fixedCodec sends the bytes.
func delimited(m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		panic(err)
	}
	return append(protowire.AppendVarint(nil, uint64(len(b))), b...)
}

// profiled runs f, with the server's CPU profile recorded while it runs if
// the phase's name matches -profile-match.
func (h *harness) profiled(s *signetProc, name string, f func() (phase, error)) (phase, error) {
	if h.o.profileDir == "" || !h.o.profileMatch.MatchString(name) {
		return f()
	}
	secs := max(int(h.o.duration.Seconds()), 1)
	file := filepath.Join(h.o.profileDir, regexp.MustCompile(`[^A-Za-z0-9=.-]+`).ReplaceAllString(name, "_")+".pprof")
	wait := cpuProfile(s.Admin, file, secs)
	p, err := f()
	if perr := wait(); perr != nil {
		fmt.Fprintf(os.Stderr, "profile of %s: %v\n", name, perr)
	} else {
		fmt.Printf("   (CPU profile of the server: %s)\n", file)
	}
	return p, err
}

// signSection measures health and Sign at each concurrency on a
// local-backend Signet in mode and returns the server, still running.
func (h *harness) signSection(mode string) (*signetProc, error) {
	s, err := h.startLocal(mode)
	if err != nil {
		return nil, err
	}
	prefix := ""
	if mode == "mtls" {
		prefix = "mtls_"
	}
	title := "local backend, plaintext"
	if mode == "mtls" {
		title = "local backend, mTLS + policy + audit to a file"
	}
	fmt.Printf("== %s (start-up to ready %.0f ms; first start, creating the keys) ==\n", title, ms(s.Startup))
	h.sum.set(prefix+"startup_ms", ms(s.Startup), "%.0f")
	h.noteRSS(s, mode+" after start-up")
	fmt.Printf("%-14s %5s %10s %9s %9s %9s %9s %6s %6s %7s\n", "phase", "c", "rate/s", "p50 ms", "p99 ms", "CPU/op µs", "server µs", "eff", "effsrv", "effwall")
	t := h.grpcTarget(mode, s)
	health := &healthpb.HealthCheckRequest{}
	for _, c := range h.o.concurrency {
		hp, err := h.profiled(s, fmt.Sprintf("%s health c=%d", mode, c), func() (phase, error) {
			return runGRPC(t, "health", healthCall, health, healthResponse, c, h.o.duration)
		})
		if err != nil {
			return s, err
		}
		fmt.Printf("%-14s %5d %10.0f %9.3f %9.3f %9.1f %9.1f\n", "health", c, hp.Rate(), ms(hp.P50), ms(hp.P99), us(hp.CPUPerOp()), us(hp.ServerCPUPerOp()))
		h.sum.set(fmt.Sprintf("%shealth_rps_c%d", prefix, c), hp.Rate(), "%.0f")
		for _, alg := range h.o.algs {
			a := strings.ToLower(string(alg))
			name := fmt.Sprintf("%s Sign %s c=%d", mode, alg, c)
			sp, err := h.profiled(s, name, func() (phase, error) {
				return runGRPC(t, "Sign "+string(alg), signCall, signRequest(a), signResponse, c, h.o.duration)
			})
			if err != nil {
				return s, err
			}
			b := h.bare[alg]
			eff := efficiency(hp.CPUPerOp(), b.CPUPerSign, sp.CPUPerOp())
			effSrv := efficiency(hp.ServerCPUPerOp(), b.CPUPerSign, sp.ServerCPUPerOp())
			effWall := wallEfficiency(sp.Rate(), hp.Rate(), b.Rate)
			fmt.Printf("%-14s %5d %10.0f %9.3f %9.3f %9.1f %9.1f %6.2f %6.2f %7.2f\n", "Sign "+string(alg), c, sp.Rate(), ms(sp.P50), ms(sp.P99),
				us(sp.CPUPerOp()), us(sp.ServerCPUPerOp()), eff, effSrv, effWall)
			key := fmt.Sprintf("%s%s_c%d", prefix, a, c)
			h.sum.set("sign_rps_"+key, sp.Rate(), "%.0f")
			h.sum.set("sign_p99_ms_"+key, ms(sp.P99), "%.3f")
			h.sum.set("sign_efficiency_"+key, eff, "%.2f")
			h.sum.set("sign_efficiency_server_"+key, effSrv, "%.2f")
			h.sum.set("sign_efficiency_wall_"+key, effWall, "%.2f")
			if c == 1 {
				added := addedLatency(sp.P50, hp.P50, b.Single)
				h.sum.set("added_latency_us_"+key, us(added), "%.0f")
				fmt.Printf("%-14s %5s  added latency at c=1: Sign p50 %.0fµs − health p50 %.0fµs − bare %.0fµs = %.0fµs\n", "", "",
					us(sp.P50), us(hp.P50), us(b.Single), us(added))
			}
			rss := h.noteRSS(s, name)
			if c == h.o.concurrency[len(h.o.concurrency)-1] {
				h.sum.set(fmt.Sprintf("%srss_mib_%s_c%d", prefix, a, c), rss, "%.1f")
			}
		}
		if mode == "plaintext" && h.kubeSigner() {
			if err := h.kubePhase(s, hp, c); err != nil {
				return s, err
			}
		}
	}
	if mode == "plaintext" && h.kubeSigner() {
		fmt.Println("   kube Sign: the ExternalJWTSigner Sign on the Unix socket (ES256 ring), as kube-apiserver calls it;")
		fmt.Println("   its eff/effsrv/effwall against the same floor as Sign: TCP health + bare ES256")
	}
	fmt.Println("   CPU/op: server (/proc/PID/stat) + client (getrusage); server µs: the server's part")
	fmt.Println("   eff = (health + bare CPU per op) / Sign CPU per op, server and client; effsrv: the server's CPU only;")
	fmt.Println("   effwall = Sign rate × (1/health rate + 1/bare rate), right only when no other job shares the machine")
	fmt.Println()
	return s, nil
}

// kubePhase measures the ExternalJWTSigner Sign on the Unix socket at
// concurrency c, against the same floor as the gRPC Sign of its ring: the
// health check on TCP (hp) plus the bare signature.
func (h *harness) kubePhase(s *signetProc, hp phase, c int) error {
	t := grpcTarget{addr: "unix://" + filepath.Join(h.dir, "plaintext", "kube.sock"), serverPID: s.pid()}
	name := fmt.Sprintf("plaintext kube Sign ES256 c=%d", c)
	sp, err := h.profiled(s, name, func() (phase, error) {
		return runGRPC(t, "kube Sign ES256", kubeCall, kubeSignRequest(), kubeSignResponse, c, h.o.duration)
	})
	if err != nil {
		return err
	}
	b := h.bare[backends.ES256]
	eff := efficiency(hp.CPUPerOp(), b.CPUPerSign, sp.CPUPerOp())
	effSrv := efficiency(hp.ServerCPUPerOp(), b.CPUPerSign, sp.ServerCPUPerOp())
	effWall := wallEfficiency(sp.Rate(), hp.Rate(), b.Rate)
	fmt.Printf("%-14s %5d %10.0f %9.3f %9.3f %9.1f %9.1f %6.2f %6.2f %7.2f\n", "kube Sign", c, sp.Rate(), ms(sp.P50), ms(sp.P99),
		us(sp.CPUPerOp()), us(sp.ServerCPUPerOp()), eff, effSrv, effWall)
	key := fmt.Sprintf("es256_c%d", c)
	h.sum.set("kube_sign_rps_"+key, sp.Rate(), "%.0f")
	h.sum.set("kube_sign_p99_ms_"+key, ms(sp.P99), "%.3f")
	h.sum.set("kube_sign_efficiency_"+key, eff, "%.2f")
	h.sum.set("kube_sign_efficiency_server_"+key, effSrv, "%.2f")
	h.sum.set("kube_sign_efficiency_wall_"+key, effWall, "%.2f")
	h.noteRSS(s, name)
	return nil
}

// jwksSection compares the JWKS through Signet's gateway with a static
// file server serving the same bytes.
func (h *harness) jwksSection(s *signetProc) error {
	url := "http://" + s.HTTP + "/.well-known/jwks.json"
	body, err := fetch(http.DefaultClient, url)
	if err != nil {
		return err
	}
	root := filepath.Join(h.dir, "static")
	os.MkdirAll(root, 0o755)
	if err := os.WriteFile(filepath.Join(root, "jwks.json"), body, 0o644); err != nil {
		return err
	}
	const conns = 64
	// wrk when installed (make load-deps): a client in C costs a few µs a
	// request, so the servers, not the client, set the pace. vegeta's
	// ~50 µs a request would make every server look alike on 2 cores.
	client := "vegeta (wrk is not installed: the client's cost flattens the ratio)"
	get := func(name, url string, pid int) (phase, error) {
		return runHTTP(name, vegeta.Target{Method: "GET", URL: url}, conns, conns, h.o.duration, pid, 1, 200)
	}
	if wrk, err := exec.LookPath("wrk"); err == nil {
		client = "wrk, 2 threads"
		get = func(name, url string, pid int) (phase, error) {
			return runWrk(name, wrk, url, conns, h.o.duration, pid)
		}
	}
	fmt.Printf("== JWKS, %d connections, %d bytes; client: %s ==\n", conns, len(body), client)
	sp, err := h.profiled(s, "plaintext JWKS", func() (phase, error) { return get("jwks signet", url, s.pid()) })
	if err != nil {
		return err
	}
	h.noteRSS(s, "JWKS")
	fmt.Printf("%-44s %10.0f req/s  p50 %.3f ms  p99 %.3f ms  CPU/req server %5.1f µs, client %.1f µs\n", "signet (grpc-gateway)", sp.Rate(),
		ms(sp.P50), ms(sp.P99), us(sp.ServerCPUPerOp()), us(sp.ClientCPU/time.Duration(max(sp.Ops, 1))))
	h.sum.set("jwks_rps", sp.Rate(), "%.0f")
	// nginx when installed, then Go's file server and a bare Go handler.
	kinds := []string{"file", "bytes"}
	if _, err := exec.LookPath("nginx"); err == nil {
		kinds = append([]string{"nginx"}, kinds...)
	}
	for i, kind := range kinds {
		p, addr, which, err := startStatic(h.dir, root, kind)
		if err != nil {
			return err
		}
		pid := p.pid() // nginx's workers are its children, metered with it
		st, err := get("jwks static", "http://"+addr+"/jwks.json", pid)
		p.stop()
		if err != nil {
			return err
		}
		r := ratio(sp.Rate(), st.Rate())
		fmt.Printf("%-44s %10.0f req/s  p50 %.3f ms  p99 %.3f ms  CPU/req server %5.1f µs  signet/this = %.2f\n", "static: "+which, st.Rate(),
			ms(st.P50), ms(st.P99), us(st.ServerCPUPerOp()), r)
		if i == 0 {
			cpuRatio := ratio(float64(st.CPUPerOp()), float64(sp.CPUPerOp()))
			h.sum.set("jwks_static_rps", st.Rate(), "%.0f")
			h.sum.set("jwks_ratio", r, "%.2f")
			h.sum.set("jwks_cpu_ratio", cpuRatio, "%.2f")
			defer fmt.Printf("   jwks_ratio is against %s; jwks_cpu_ratio = its CPU per request (server + client) ÷ Signet's = %.2f,\n"+
				"   the throughput ratio the two would have on a machine of their own\n", which, cpuRatio)
		}
		switch kind {
		case "file":
			h.sum.set("jwks_ratio_go_fileserver", r, "%.2f")
		case "bytes":
			h.sum.set("jwks_ratio_go_bare_handler", r, "%.2f")
		}
	}
	fmt.Println()
	return nil
}

// vaultSection measures Vault's own CPU per 1000 tokens: Sign through Signet
// at c=64 (and the batch sizes Signet sent), direct single Transit signs,
// direct batch_input of 32, and Vault's identity-token issuer.
func (h *harness) vaultSection() error {
	d := filepath.Join(h.dir, "vault")
	os.MkdirAll(d, 0o700)
	v, err := startVault(h.o.vault, d)
	if err != nil {
		return err
	}
	defer v.stop()
	cfg := fmt.Sprintf("issuer: http://127.0.0.1:8080\ngrpc:\n  listen: 127.0.0.1:0\nhttp:\n  listen: 127.0.0.1:0\n"+
		"admin:\n  listen: 127.0.0.1:0\n  pprof: true\nlog:\n  level: warn\nkey_rings:\n"+
		"  - name: es256\n    backend: vault://%s/transit?scheme=http&key_prefix=load-%s\n    algorithm: ES256\n",
		strings.TrimPrefix(v.Addr, "http://"), map[bool]string{true: "&" + h.o.vaultOptions}[h.o.vaultOptions != ""])
	path := filepath.Join(d, "signet.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return err
	}
	s, err := startSignet(h.o.signet, d, "signet-vault", path, []string{"VAULT_TOKEN=" + vaultRootToken})
	if err != nil {
		return err
	}
	defer s.stop()
	const c = 64
	fmt.Printf("== Vault Transit (real server, dev mode), ES256; Vault's CPU from /proc/%d/stat ==\n", v.pid())
	fmt.Printf("%-40s %10s %9s %9s %14s\n", "phase", "tokens/s", "p50 ms", "p99 ms", "Vault ms/1000")
	show := func(label string, p phase) float64 {
		per := cpuPer1000(p.ServerCPU, p.Ops)
		fmt.Printf("%-40s %10.0f %9.3f %9.3f %14.1f\n", label, p.Rate(), ms(p.P50), ms(p.P99), per)
		return per
	}
	t := grpcTarget{addr: s.GRPC, serverPID: v.pid()}
	lone, err := runGRPC(t, "Sign vault c=1", signCall, signRequest("es256"), signResponse, 1, h.o.duration)
	if err != nil {
		return err
	}
	show("Sign through Signet, c=1", lone)
	h.sum.set("vault_sign_p50_ms_c1", ms(lone.P50), "%.3f")
	before, err := scrapeHistogram(s.Admin, "signet_vault_batch_size")
	if err != nil {
		return err
	}
	sp, err := h.profiled(s, "vault Sign ES256 c=64", func() (phase, error) {
		return runGRPC(t, "Sign vault c=64", signCall, signRequest("es256"), signResponse, c, h.o.duration)
	})
	if err != nil {
		return err
	}
	after, err := scrapeHistogram(s.Admin, "signet_vault_batch_size")
	if err != nil {
		return err
	}
	h.noteRSS(s, "vault Sign c=64")
	viaSignet := show(fmt.Sprintf("Sign through Signet, c=%d", c), sp)
	h.sum.set("vault_sign_rps_c64", sp.Rate(), "%.0f")
	h.sum.set("vault_sign_p50_ms_c64", ms(sp.P50), "%.3f")

	// Direct Transit calls with the parameters Signet sends.
	input := base64.StdEncoding.EncodeToString(make([]byte, 300))
	params := func(extra map[string]any) []byte {
		m := map[string]any{"key_version": 1, "marshaling_algorithm": "jws", "hash_algorithm": "sha2-256"}
		for k, x := range extra {
			m[k] = x
		}
		b, _ := json.Marshal(m)
		return b
	}
	hdr := http.Header{"X-Vault-Token": {vaultRootToken}, "Content-Type": {"application/json"}}
	signURL := v.Addr + "/v1/transit/sign/load-es256"
	single, err := runHTTP("vault single", vegeta.Target{Method: "POST", URL: signURL, Header: hdr, Body: params(map[string]any{"input": input})},
		c, c, h.o.duration, v.pid(), 1, 200)
	if err != nil {
		return err
	}
	direct := show(fmt.Sprintf("direct transit/sign, single, c=%d", c), single)
	items := make([]map[string]string, 32)
	for i := range items {
		items[i] = map[string]string{"input": input}
	}
	batch, err := runHTTP("vault batch", vegeta.Target{Method: "POST", URL: signURL, Header: hdr, Body: params(map[string]any{"batch_input": items})},
		c/32, c/32, h.o.duration, v.pid(), 32, 200)
	if err != nil {
		return err
	}
	batched := show(fmt.Sprintf("direct transit/sign, batch_input 32, %d in flight", c/32), batch)
	for _, n := range h.o.vaultSizes {
		items := make([]map[string]string, n)
		for i := range items {
			items[i] = map[string]string{"input": input}
		}
		p, err := runHTTP("vault batch", vegeta.Target{Method: "POST", URL: signURL, Header: hdr, Body: params(map[string]any{"batch_input": items})},
			max(c/n, 1), max(c/n, 1), h.o.duration, v.pid(), int64(n), 200)
		if err != nil {
			return err
		}
		per := show(fmt.Sprintf("direct transit/sign, batch_input %d, %d in flight", n, max(c/n, 1)), p)
		h.sum.set(fmt.Sprintf("vault_cpu_ms_per_1000_direct_batch%d", n), per, "%.1f")
	}
	token, err := v.oidcToken("load")
	if err != nil {
		return err
	}
	idt, err := runHTTP("vault identity", vegeta.Target{Method: "GET", URL: v.Addr + "/v1/identity/oidc/token/load",
		Header: http.Header{"X-Vault-Token": {token}}}, c, c, h.o.duration, v.pid(), 1, 200)
	if err != nil {
		return err
	}
	identity := show(fmt.Sprintf("Vault identity/oidc/token/ROLE, c=%d", c), idt)
	h.sum.set("vault_cpu_ms_per_1000_signet", viaSignet, "%.1f")
	h.sum.set("vault_cpu_ms_per_1000_direct_single", direct, "%.1f")
	h.sum.set("vault_cpu_ms_per_1000_direct_batch32", batched, "%.1f")
	h.sum.set("vault_cpu_ms_per_1000_identity_tokens", identity, "%.1f")
	h.sum.set("vault_cpu_ratio", ratio(viaSignet, batched), "%.2f")
	fmt.Printf("   Signet / direct batch of 32 = %.2f\n", ratio(viaSignet, batched))

	hist := after.sub(before)
	fmt.Printf("batch sizes Signet sent during Sign c=%d (signet_vault_batch_size): %.0f batches, mean %.1f\n", c, hist.Count, hist.mean())
	for _, b := range hist.counts() {
		label := fmt.Sprintf("≤%g", b.High)
		if math.IsInf(b.High, 1) {
			label = fmt.Sprintf(">%g", b.Low)
		}
		share := 0.0
		if hist.Count > 0 {
			share = b.N / hist.Count
		}
		fmt.Printf("  %6s %8.0f %s\n", label, b.N, strings.Repeat("#", int(math.Round(share*50))))
	}
	h.sum.set("vault_batch_mean", hist.mean(), "%.1f")
	fmt.Println()
	return nil
}
