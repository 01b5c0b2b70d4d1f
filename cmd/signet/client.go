package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	signetclient "github.com/signet-dev/signet/client"
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

// client connects to the server the flags name, with the client package's
// mTLS (or plaintext, with no certificate flags, for a development server).
func (c clientFlags) client() (*signetclient.Client, error) {
	cfg := signetclient.Config{Target: *c.server, CertFile: *c.cert, KeyFile: *c.key, CAFile: *c.ca}
	if *c.cert == "" && *c.key == "" && *c.ca == "" {
		cfg.Plaintext = true
	} else if *c.cert == "" || *c.key == "" || *c.ca == "" {
		return nil, fmt.Errorf("mTLS needs --cert, --key and --ca together")
	}
	return signetclient.New(cfg)
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// call runs fn with a client of the server the flags name, within their
// --timeout.
func call[T any](ctx context.Context, c clientFlags, fn func(context.Context, *signetclient.Client) (T, error)) (T, error) {
	var none T
	cl, err := c.client()
	if err != nil {
		return none, err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, *c.timeout)
	defer cancel()
	return fn(ctx, cl)
}

type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

func runSign(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("sign", "--audience AUD [--subject SUB] [--claims JSON] [--ttl 10m] [--bind]",
		"Asks Signet for a token and prints it. Signet sets iss, iat, nbf, exp and jti itself.", stderr)
	cf := addClientFlags(fs)
	ring := fs.String("key-ring", "default", "key ring to sign with")
	subject := fs.String("subject", "", "the sub claim")
	var audience stringList
	fs.Var(&audience, "audience", "the aud claim (repeat for several audiences; at least one)")
	ttl := fs.Duration("ttl", 0, "token lifetime (default: the ring's token_default_ttl)")
	claims := fs.String("claims", "", `custom claims as a JSON object, e.g. '{"scope":"read"}' (numbers are kept exactly)`)
	typ := fs.String("typ", "", `header typ (default "JWT"), e.g. at+jwt`)
	asJSON := fs.Bool("json", false, "print the whole response as JSON instead of the bare token")
	bind := fs.Bool("bind", false, "bind the token to the client certificate (--cert): RFC 8705 cnf x5t#S256")
	if err := fs.Parse(args); err != nil {
		return err
	}
	opts := []signetclient.SignOption{signetclient.Audience(audience...), signetclient.Subject(*subject), signetclient.Typ(*typ)}
	if *bind {
		opts = append(opts, signetclient.BindToCertificate())
	}
	if *ttl != 0 {
		opts = append(opts, signetclient.TTL(*ttl))
	}
	if *claims != "" {
		opts = append(opts, signetclient.ClaimsJSON(*claims)) // sent as written: numbers keep every digit
	}
	tok, err := call(ctx, cf, func(ctx context.Context, c *signetclient.Client) (*signetclient.Token, error) {
		return c.Sign(ctx, *ring, opts...)
	})
	if err != nil {
		return err
	}
	resp := &signetv1.SignResponse{Token: tok.Token, Kid: tok.Kid, Jti: tok.JTI, ExpiresAt: timestamppb.New(tok.ExpiresAt),
		CertificateThumbprint: tok.CertificateThumbprint}
	if *asJSON {
		return printJSON(stdout, resp)
	}
	fmt.Fprintln(stdout, resp.GetToken())
	return nil
}

func runRotate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("rotate", "[--key-ring default] [--revoke-previous] [--request-id UUID]",
		"Creates a new key version. It is published in the JWKS at once and signs after the\n"+
			"ring's publish_ahead. With --revoke-previous (emergency) every older version is disabled\n"+
			"in the backend: the old kids leave the JWKS at once, and the new one signs once every\n"+
			"replica publishes it (2 x refresh_interval; Sign answers Unavailable until then).\n"+
			"Every rotate sends a request id (a fresh one unless --request-id names one) and prints it:\n"+
			"running it again with the same --request-id returns the version the first run created\n"+
			"instead of creating another, so a rotate that timed out can be retried safely.", stderr)
	cf := addClientFlags(fs)
	ring := fs.String("key-ring", "default", "key ring to rotate")
	revoke := fs.Bool("revoke-previous", false, "disable every older version now (tokens they signed stop verifying)")
	requestID := fs.String("request-id", "", "the rotation's id (a UUID); default: a new one")
	if err := fs.Parse(args); err != nil {
		return err
	}
	id := *requestID
	if id == "" {
		id = signetclient.NewRequestID()
	}
	opts := []signetclient.RotateOption{signetclient.RequestID(id)}
	if *revoke {
		opts = append(opts, signetclient.RevokePrevious())
	}
	resp, err := call(ctx, cf, func(ctx context.Context, c *signetclient.Client) (*signetclient.Rotated, error) {
		return c.Rotate(ctx, *ring, opts...)
	})
	if err != nil {
		// The server may have created the new version (and, with
		// --revoke-previous, not disabled every older one yet): the same
		// request id finishes the job without creating another version.
		return fmt.Errorf("%w\nthe rotation may have happened: run the same rotate again with --request-id %s to finish it "+
			"without creating another version (check with signet keys)", err, id)
	}
	v := resp.Version
	fmt.Fprintf(stdout, "created %s version %s (kid %s), %s, signs from %s (request id %s)\n", v.GetKeyRing(), v.GetBackendId(), v.GetKid(),
		stateName(v.GetState()), formatTime(v.GetActivatesAt()), resp.RequestID)
	for _, r := range resp.Revoked {
		fmt.Fprintf(stdout, "revoked %s version %s (kid %s)\n", r.GetKeyRing(), r.GetBackendId(), orDash(r.GetKid()))
	}
	return nil
}

func runKeys(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("keys", "[--key-ring NAME] [--state STATE] [--leftovers]", "Lists every key version with its derived lifecycle state.\n\n"+
		"With --leftovers it lists instead what each ring's backend holds that is not a version: what an\n"+
		"interrupted rotation left and a live replica has not cleaned up yet, and what waits for the\n"+
		"backend to delete it. This asks the backend (AWS KMS: a scan of the account's keys).", stderr)
	cf := addClientFlags(fs)
	ring := fs.String("key-ring", "", "only this key ring (default: all)")
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	leftovers := fs.Bool("leftovers", false, "list the backend objects of the rings that are not versions")
	var states stringList
	fs.Var(&states, "state", "only versions in this state: pending, active, retiring, retired or revoked (repeat for several)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	req := &signetv1.ListKeysRequest{KeyRing: *ring, Leftovers: *leftovers}
	for _, st := range states {
		v, ok := signetv1.KeyState_value["KEY_STATE_"+strings.ToUpper(st)]
		if !ok || v == 0 {
			return fmt.Errorf("--state %q: want pending, active, retiring, retired or revoked", st)
		}
		req.States = append(req.States, signetv1.KeyState(v))
	}
	// Every page, gathered into one response.
	resp, err := call(ctx, cf, func(ctx context.Context, c *signetclient.Client) (*signetv1.ListKeysResponse, error) {
		all := &signetv1.ListKeysResponse{}
		for {
			page, err := c.ListKeysPage(ctx, req)
			if err != nil {
				return nil, err
			}
			all.Versions = append(all.Versions, page.GetVersions()...)
			all.Leftovers = append(all.Leftovers, page.GetLeftovers()...)
			if page.GetNextPageToken() == "" {
				return all, nil
			}
			req.PageToken = page.GetNextPageToken()
		}
	})
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
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", v.GetKeyRing(), orDash(v.GetKid()), v.GetBackendId(), v.GetAlgorithm(),
			stateName(v.GetState()), formatTime(v.GetCreatedAt()), formatTime(v.GetActivatesAt()), formatTime(v.GetRetiresAt()))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return printCertificates(stdout, resp.GetVersions())
}

// printCertificates adds, below the versions, a table of the certificates
// of the versions of rings with x5c (nothing when no ring has any).
func printCertificates(w io.Writer, vs []*signetv1.KeyVersion) error {
	var rows []*signetv1.KeyVersion
	for _, v := range vs {
		if v.GetCertificateSerial() != "" || v.GetCertificateProblem() != "" {
			rows = append(rows, v)
		}
	}
	if len(rows) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "RING\tKID\tSUBJECT\tISSUER\tSERIAL\tNOT AFTER\tPROBLEM")
	for _, v := range rows {
		dash := func(s string) string {
			if s == "" {
				return "-"
			}
			return s
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", v.GetKeyRing(), v.GetKid(), dash(v.GetCertificateSubject()),
			dash(v.GetCertificateIssuer()), dash(v.GetCertificateSerial()), formatTime(v.GetCertificateNotAfter()),
			dash(v.GetCertificateProblem()))
	}
	return tw.Flush()
}

func runX5C(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("x5c", "--key-ring NAME [--kid KID]", "Prints a version's X.509 certificate chain as PEM, its own certificate\n"+
		"first: by default the active version's (on a CA ring, its CA certificate: the trust anchor to give verifiers).", stderr)
	cf := addClientFlags(fs)
	ring := fs.String("key-ring", "", "the key ring (required)")
	kid := fs.String("kid", "", "the version with this kid (default: the active version)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *ring == "" {
		return errors.New("--key-ring is required")
	}
	versions, err := call(ctx, cf, func(ctx context.Context, c *signetclient.Client) ([]*signetv1.KeyVersion, error) {
		var vs []*signetv1.KeyVersion
		for v, err := range c.Keys(ctx, *ring) {
			if err != nil {
				return nil, err
			}
			vs = append(vs, v)
		}
		return vs, nil
	})
	if err != nil {
		return err
	}
	for _, v := range versions {
		if *kid != "" && v.GetKid() != *kid || *kid == "" && v.GetState() != signetv1.KeyState_KEY_STATE_ACTIVE {
			continue
		}
		if len(v.GetCertificateChain()) == 0 {
			why := v.GetCertificateProblem()
			if why == "" {
				why = "the ring has no x5c block"
			}
			return fmt.Errorf("version %s (kid %s) of key ring %q has no certificate chain: %s", v.GetBackendId(), v.GetKid(), *ring, why)
		}
		for _, der := range v.GetCertificateChain() {
			if err := pem.Encode(stdout, &pem.Block{Type: "CERTIFICATE", Bytes: der}); err != nil {
				return err
			}
		}
		return nil
	}
	if *kid != "" {
		return fmt.Errorf("key ring %q has no version with kid %s", *ring, *kid)
	}
	return fmt.Errorf("key ring %q has no active version", *ring)
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

func runVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("verify", "[--jwks URL] [--audience AUD] [--issuer ISS] [--typ TYP] TOKEN|-",
		"Fetches the JWKS, verifies the token's signature with the key its kid names, checks exp,\n"+
			"nbf (and aud, iss and typ when given), and prints the header and claims. '-' reads the token from stdin.", stderr)
	jwksURL := fs.String("jwks", envOr("SIGNET_JWKS", defaultJWKS), "JWKS URL (env SIGNET_JWKS)")
	audience := fs.String("audience", "", "require this audience")
	issuer := fs.String("issuer", "", "require this issuer")
	typ := fs.String("typ", "", "require this header typ (for example JWT or at+jwt)")
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

	var header struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
		Typ string `json:"typ"`
	}
	if hdr, err := base64.RawURLEncoding.DecodeString(strings.Split(raw, ".")[0]); err != nil || json.Unmarshal(hdr, &header) != nil {
		return fmt.Errorf("not a signed JWT: its header does not decode")
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	v, err := signetclient.NewVerifier(ctx, signetclient.VerifierConfig{JWKSURL: *jwksURL, Issuer: *issuer, Audience: *audience,
		Typ: *typ, AnyIssuer: *issuer == "", AnyAudience: *audience == "", AnyTyp: *typ == "",
		AnyCertificate: true}) // no certificate was presented here: say whom a bound token is bound to instead
	if err != nil {
		return err
	}
	defer v.Close()
	claims, err := v.Verify(ctx, raw)
	if err != nil {
		return err
	}
	out, _ := json.MarshalIndent(map[string]any{"header": header, "claims": claims.All}, "", "  ")
	fmt.Fprintf(stdout, "valid: signed by kid %s (%s)\n", header.Kid, header.Alg)
	if claims.CertificateThumbprint != "" {
		fmt.Fprintf(stdout, "bound to the client certificate with x5t#S256 %s (not checked: only its holder may present the token)\n",
			claims.CertificateThumbprint)
	}
	fmt.Fprintf(stdout, "%s\n", out)
	return nil
}
