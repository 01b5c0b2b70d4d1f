package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
)

const (
	defaultServer = "127.0.0.1:9090"
	defaultJWKS   = "http://127.0.0.1:8080/.well-known/jwks.json"
)

// clientFlags are the flags every gRPC client command shares.
type clientFlags struct {
	server        *string
	timeout       *time.Duration
	cert, key, ca *string
}

func addClientFlags(fs *flag.FlagSet) clientFlags {
	return clientFlags{
		server:  fs.String("server", envOr("SIGNET_SERVER", defaultServer), "Signet gRPC address (env SIGNET_SERVER)"),
		timeout: fs.Duration("timeout", 10*time.Second, "deadline for the call"),
		cert:    fs.String("cert", os.Getenv("SIGNET_CERT"), "client certificate for mTLS (env SIGNET_CERT); without it, plaintext"),
		key:     fs.String("key", os.Getenv("SIGNET_KEY"), "client private key for mTLS (env SIGNET_KEY)"),
		ca:      fs.String("ca", os.Getenv("SIGNET_CA"), "CA that signed the server's certificate (env SIGNET_CA)"),
	}
}

func (c clientFlags) credentials() (credentials.TransportCredentials, error) {
	if *c.cert == "" && *c.key == "" && *c.ca == "" {
		return insecure.NewCredentials(), nil
	}
	if *c.cert == "" || *c.key == "" || *c.ca == "" {
		return nil, fmt.Errorf("mTLS needs --cert, --key and --ca together")
	}
	pair, err := tls.LoadX509KeyPair(*c.cert, *c.key)
	if err != nil {
		return nil, fmt.Errorf("--cert/--key: %w", err)
	}
	pem, err := os.ReadFile(*c.ca)
	if err != nil {
		return nil, fmt.Errorf("--ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--ca %s holds no PEM certificate", *c.ca)
	}
	return credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{pair}, RootCAs: pool}), nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// call runs one RPC on the server the flags name, within their --timeout,
// e.g. call(ctx, cf, signetv1.SignerServiceClient.Rotate, req).
func call[Req, Resp any](ctx context.Context, c clientFlags,
	rpc func(signetv1.SignerServiceClient, context.Context, Req, ...grpc.CallOption) (Resp, error), req Req) (Resp, error) {
	var none Resp
	creds, err := c.credentials()
	if err != nil {
		return none, err
	}
	conn, err := grpc.NewClient(*c.server, grpc.WithTransportCredentials(creds))
	if err != nil {
		return none, fmt.Errorf("connecting to %s: %w", *c.server, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, *c.timeout)
	defer cancel()
	return rpc(signetv1.NewSignerServiceClient(conn), ctx, req)
}

type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

func runSign(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("sign", "--audience AUD [--subject SUB] [--claims JSON] [--ttl 10m]",
		"Asks Signet for a token and prints it. Signet sets iss, iat, nbf, exp and jti itself.", stderr)
	cf := addClientFlags(fs)
	ring := fs.String("key-ring", "default", "key ring to sign with")
	subject := fs.String("subject", "", "the sub claim")
	var audience stringList
	fs.Var(&audience, "audience", "the aud claim (repeat for several audiences; at least one)")
	ttl := fs.Duration("ttl", 0, "token lifetime (default: the ring's token_default_ttl)")
	claims := fs.String("claims", "", `custom claims as a JSON object, e.g. '{"scope":"read"}'`)
	typ := fs.String("typ", "", `header typ (default "JWT"), e.g. at+jwt`)
	asJSON := fs.Bool("json", false, "print the whole response as JSON instead of the bare token")
	if err := fs.Parse(args); err != nil {
		return err
	}
	req := &signetv1.SignRequest{KeyRing: *ring, Subject: *subject, Audience: audience, Typ: *typ}
	if *ttl != 0 {
		req.Ttl = durationpb.New(*ttl)
	}
	if *claims != "" {
		req.Claims = &structpb.Struct{}
		if err := protojson.Unmarshal([]byte(*claims), req.Claims); err != nil {
			return fmt.Errorf("--claims must be a JSON object: %v", err)
		}
	}
	resp, err := call(ctx, cf, signetv1.SignerServiceClient.Sign, req)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, resp)
	}
	fmt.Fprintln(stdout, resp.GetToken())
	return nil
}

func runRotate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("rotate", "[--key-ring default] [--revoke-previous]",
		"Creates a new key version. It is published in the JWKS at once and signs after the\n"+
			"ring's publish_ahead. With --revoke-previous (emergency) every older version is disabled\n"+
			"in the backend: the old kids leave the JWKS at once, and the new one signs once every\n"+
			"replica publishes it (2 x refresh_interval; Sign answers Unavailable until then).", stderr)
	cf := addClientFlags(fs)
	ring := fs.String("key-ring", "default", "key ring to rotate")
	revoke := fs.Bool("revoke-previous", false, "disable every older version now (tokens they signed stop verifying)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	resp, err := call(ctx, cf, signetv1.SignerServiceClient.Rotate, &signetv1.RotateRequest{KeyRing: *ring, RevokePrevious: *revoke})
	if err != nil && *revoke {
		// The server may have created the new version and died before
		// disabling every older one: nothing disables them later but a retry.
		return fmt.Errorf("%w\nthe older versions may still be enabled: run the same rotate --revoke-previous again, which disables every version but the one it creates (check with signet keys)", err)
	}
	if err != nil {
		return err
	}
	v := resp.GetVersion()
	fmt.Fprintf(stdout, "created %s version %s (kid %s), %s, signs from %s\n", v.GetKeyRing(), v.GetBackendId(), v.GetKid(),
		stateName(v.GetState()), formatTime(v.GetActivatesAt()))
	for _, r := range resp.GetRevoked() {
		fmt.Fprintf(stdout, "revoked %s version %s (kid %s)\n", r.GetKeyRing(), r.GetBackendId(), r.GetKid())
	}
	return nil
}

func runKeys(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("keys", "[--key-ring NAME] [--leftovers]", "Lists every key version with its derived lifecycle state.\n\n"+
		"With --leftovers it lists instead what each ring's backend holds that is not a version: what an\n"+
		"interrupted rotation left and a live replica has not cleaned up yet, and what waits for the\n"+
		"backend to delete it. This asks the backend (AWS KMS: a scan of the account's keys).", stderr)
	cf := addClientFlags(fs)
	ring := fs.String("key-ring", "", "only this key ring (default: all)")
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	leftovers := fs.Bool("leftovers", false, "list the backend objects of the rings that are not versions")
	if err := fs.Parse(args); err != nil {
		return err
	}
	resp, err := call(ctx, cf, signetv1.SignerServiceClient.ListKeys, &signetv1.ListKeysRequest{KeyRing: *ring, Leftovers: *leftovers})
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, resp)
	}
	if *leftovers {
		if len(resp.GetLeftovers()) == 0 {
			fmt.Fprintln(stdout, "no leftovers: every backend object of these key rings is a version")
			return nil
		}
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "RING\tBACKEND ID\tSTATE\tCREATED\tWHAT")
		for _, l := range resp.GetLeftovers() {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", l.GetKeyRing(), l.GetBackendId(), l.GetState(), formatTime(l.GetCreatedAt()), l.GetKind())
		}
		return tw.Flush()
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "RING\tKID\tBACKEND ID\tALG\tSTATE\tCREATED\tSIGNS FROM\tLEAVES JWKS")
	for _, v := range resp.GetVersions() {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", v.GetKeyRing(), v.GetKid(), v.GetBackendId(), v.GetAlgorithm(),
			stateName(v.GetState()), formatTime(v.GetCreatedAt()), formatTime(v.GetActivatesAt()), formatTime(v.GetRetiresAt()))
	}
	return tw.Flush()
}

func stateName(s signetv1.KeyState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "KEY_STATE_"))
}

func formatTime(t *timestamppb.Timestamp) string {
	if t == nil {
		return "-"
	}
	return t.AsTime().UTC().Format("2006-01-02 15:04:05Z")
}

func printJSON(w io.Writer, m proto.Message) error {
	b, err := protojson.MarshalOptions{Multiline: true, UseProtoNames: true}.Marshal(m)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, string(b))
	return err
}

// verifyAlgorithms are the algorithms verify accepts: every one Signet signs with.
var verifyAlgorithms = []jose.SignatureAlgorithm{jose.ES256, jose.ES384, jose.ES512,
	jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512, jose.EdDSA}

func runVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("verify", "[--jwks URL] [--audience AUD] [--issuer ISS] TOKEN|-",
		"Fetches the JWKS, verifies the token's signature with the key its kid names, checks exp,\n"+
			"nbf (and aud and iss when given), and prints the header and claims. '-' reads the token from stdin.", stderr)
	jwksURL := fs.String("jwks", envOr("SIGNET_JWKS", defaultJWKS), "JWKS URL (env SIGNET_JWKS)")
	audience := fs.String("audience", "", "require this audience")
	issuer := fs.String("issuer", "", "require this issuer")
	timeout := fs.Duration("timeout", 10*time.Second, "deadline for fetching the JWKS")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errUsage
	}
	raw := fs.Arg(0)
	if raw == "-" {
		b, err := io.ReadAll(os.Stdin)
		if err != nil {
			return err
		}
		raw = string(b)
	}
	raw = strings.TrimSpace(raw)

	tok, err := jwt.ParseSigned(raw, verifyAlgorithms)
	if err != nil {
		return fmt.Errorf("not a signed JWT: %w", err)
	}
	if len(tok.Headers) != 1 || tok.Headers[0].KeyID == "" {
		return fmt.Errorf("the token header names no kid")
	}
	hdr := tok.Headers[0]
	set, err := fetchJWKS(ctx, *jwksURL, *timeout)
	if err != nil {
		return err
	}
	keys := set.Key(hdr.KeyID)
	if len(keys) == 0 {
		return fmt.Errorf("kid %s is not in %s (retired, revoked, or from another issuer)", hdr.KeyID, *jwksURL)
	}
	var claims jwt.Claims
	var all map[string]any
	if err := tok.Claims(keys[0].Key, &claims, &all); err != nil {
		return fmt.Errorf("signature does not verify with kid %s: %w", hdr.KeyID, err)
	}
	expected := jwt.Expected{Issuer: *issuer, Time: time.Now()}
	if *audience != "" {
		expected.AnyAudience = jwt.Audience{*audience}
	}
	if err := claims.ValidateWithLeeway(expected, 0); err != nil {
		return fmt.Errorf("signature is valid but the claims are not: %w", err)
	}
	out, _ := json.MarshalIndent(map[string]any{"header": map[string]any{"alg": hdr.Algorithm, "kid": hdr.KeyID,
		"typ": hdr.ExtraHeaders["typ"]}, "claims": all}, "", "  ")
	fmt.Fprintf(stdout, "valid: signed by kid %s (%s)\n%s\n", hdr.KeyID, hdr.Algorithm, out)
	return nil
}

func fetchJWKS(ctx context.Context, url string, timeout time.Duration) (*jose.JSONWebKeySet, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetching JWKS: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetching JWKS from %s: %s", url, resp.Status)
	}
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&set); err != nil {
		return nil, fmt.Errorf("JWKS from %s: %w", url, err)
	}
	return &set, nil
}
