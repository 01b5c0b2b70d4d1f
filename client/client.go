package signetclient

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/durationpb"

	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
)

// Config says how to reach Signet.
type Config struct {
	// Target is the gRPC address, host:port (or any gRPC target).
	Target string
	// CertFile, KeyFile and CAFile are the client certificate and key that
	// identify this service to Signet and the CA that signed Signet's
	// certificate. They are read again at each new connection whenever
	// they changed on disk.
	CertFile, KeyFile, CAFile string
	// ServerName is the name Signet's certificate must carry; empty: the
	// host of Target.
	ServerName string
	// Plaintext dials without TLS: only for Signet's development mode,
	// which listens on loopback only. It may not be set with the files.
	Plaintext bool
	// TransportCredentials, if set, replaces the files and Plaintext (for
	// example TLS that pins a certificate and sends none of its own).
	TransportCredentials credentials.TransportCredentials
	// Retry is how calls retry; the zero value is a sane default.
	Retry Retry
	// DialOptions are passed to grpc.NewClient after the client's own.
	DialOptions []grpc.DialOption
}

// Client calls Signet's SignerService. It is safe for concurrent use; make
// one per process and Close it when done.
type Client struct {
	conn   *grpc.ClientConn
	signer signetv1.SignerServiceClient
}

// New dials Signet (lazily: the first call connects).
func New(cfg Config) (*Client, error) {
	creds := cfg.TransportCredentials
	files := cfg.CertFile != "" || cfg.KeyFile != "" || cfg.CAFile != ""
	switch {
	case cfg.Target == "":
		return nil, errors.New("signetclient: Config.Target is empty")
	case creds != nil:
	case cfg.Plaintext && files:
		return nil, errors.New("signetclient: Config.Plaintext is set with certificate files")
	case cfg.Plaintext:
		creds = insecure.NewCredentials()
	case cfg.CertFile == "" || cfg.KeyFile == "" || cfg.CAFile == "":
		return nil, errors.New("signetclient: mTLS needs CertFile, KeyFile and CAFile (or Plaintext for a development server)")
	default:
		var err error
		if creds, err = newFileCredentials(cfg.CertFile, cfg.KeyFile, cfg.CAFile, cfg.ServerName); err != nil {
			return nil, fmt.Errorf("signetclient: %w", err)
		}
	}
	opts := append([]grpc.DialOption{grpc.WithTransportCredentials(creds),
		grpc.WithChainUnaryInterceptor(cfg.Retry.withDefaults().interceptor())}, cfg.DialOptions...)
	conn, err := grpc.NewClient(cfg.Target, opts...)
	if err != nil {
		return nil, fmt.Errorf("signetclient: %w", err)
	}
	return &Client{conn: conn, signer: signetv1.NewSignerServiceClient(conn)}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Conn is the underlying connection, for the generated clients of other
// services on it (KeySetService, grpc.health.v1).
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// Token is a token Signet issued.
type Token struct {
	Token     string // the compact JWS
	Kid       string
	JTI       string
	ExpiresAt time.Time
	// CertificateThumbprint is the x5t#S256 of the token's cnf claim: the
	// client certificate it is bound to (BindToCertificate, or a grant
	// that requires binding). Empty for a token not bound.
	CertificateThumbprint string
}

// SignOption sets a part of a Sign request.
type SignOption func(*signetv1.SignRequest) error

// Audience sets the aud claim (at least one is required).
func Audience(aud ...string) SignOption {
	return func(r *signetv1.SignRequest) error { r.Audience = append(r.Audience, aud...); return nil }
}

// Subject sets the sub claim.
func Subject(sub string) SignOption {
	return func(r *signetv1.SignRequest) error { r.Subject = sub; return nil }
}

// TTL sets the token's lifetime (default: the key ring's).
func TTL(d time.Duration) SignOption {
	return func(r *signetv1.SignRequest) error { r.Ttl = durationpb.New(d); return nil }
}

// Typ sets the header typ, for example "at+jwt" (default "JWT").
func Typ(typ string) SignOption {
	return func(r *signetv1.SignRequest) error { r.Typ = typ; return nil }
}

// Claims sets the custom claims, encoded with encoding/json and sent as
// claims_json: integers (int64, uint64, *big.Int, json.Number) keep every
// digit, unlike a protobuf Struct's doubles.
func Claims(claims map[string]any) SignOption {
	return func(r *signetv1.SignRequest) error {
		b, err := json.Marshal(claims)
		if err != nil {
			return fmt.Errorf("signetclient: encoding claims: %w", err)
		}
		r.ClaimsJson = string(b)
		return nil
	}
}

// ClaimsJSON sets the custom claims as one JSON object, sent as written.
func ClaimsJSON(object string) SignOption {
	return func(r *signetv1.SignRequest) error { r.ClaimsJson = object; return nil }
}

// BindToCertificate asks for a token bound to this client's certificate
// (RFC 8705): Signet puts the certificate's SHA-256 thumbprint in the cnf
// claim, and a Verifier accepts the token only from a caller that presents
// the same certificate over mutual TLS (VerifyPresented, the middleware and
// interceptors). A token stolen from a log or a proxy is then worthless
// without the certificate's private key. The certificate is the one the
// connection to Signet presents, so a service calling others with the
// token must present that certificate to them too.
func BindToCertificate() SignOption {
	return func(r *signetv1.SignRequest) error { r.BindToCertificate = true; return nil }
}

// Sign asks Signet for a token signed by keyRing's active version.
func (c *Client) Sign(ctx context.Context, keyRing string, opts ...SignOption) (*Token, error) {
	req := &signetv1.SignRequest{KeyRing: keyRing}
	for _, o := range opts {
		if err := o(req); err != nil {
			return nil, err
		}
	}
	resp, err := c.signer.Sign(ctx, req)
	if err != nil {
		return nil, asError(err)
	}
	return &Token{Token: resp.GetToken(), Kid: resp.GetKid(), JTI: resp.GetJti(), ExpiresAt: resp.GetExpiresAt().AsTime(),
		CertificateThumbprint: resp.GetCertificateThumbprint()}, nil
}

// RotateOption sets a part of a Rotate request.
type RotateOption func(*signetv1.RotateRequest)

// RevokePrevious disables every older version at once (emergency rotation).
func RevokePrevious() RotateOption {
	return func(r *signetv1.RotateRequest) { r.RevokePrevious = true }
}

// RequestID sets the Rotate's request_id (a UUID): a Rotate with an id
// already used returns what that one created. Without it, Rotate makes a
// fresh id per call, which its own retries reuse; set it to make retries
// across calls or processes (say, a job that may run twice) safe too.
func RequestID(id string) RotateOption {
	return func(r *signetv1.RotateRequest) { r.RequestId = id }
}

// Rotated is what a Rotate did.
type Rotated struct {
	Version   *signetv1.KeyVersion   // the version created (or created by the first call with the request id)
	Revoked   []*signetv1.KeyVersion // with RevokePrevious
	RequestID string
}

// Rotate creates a new version of keyRing.
func (c *Client) Rotate(ctx context.Context, keyRing string, opts ...RotateOption) (*Rotated, error) {
	req := &signetv1.RotateRequest{KeyRing: keyRing}
	for _, o := range opts {
		o(req)
	}
	if req.RequestId == "" {
		req.RequestId = NewRequestID()
	}
	resp, err := c.signer.Rotate(ctx, req)
	if err != nil {
		return nil, asError(err)
	}
	return &Rotated{Version: resp.GetVersion(), Revoked: resp.GetRevoked(), RequestID: req.RequestId}, nil
}

// NewRequestID returns a random (version 4) UUID for RequestID.
func NewRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// ListKeysPage is one ListKeys call: one page of versions (and, on the
// first page with Leftovers, the leftovers).
func (c *Client) ListKeysPage(ctx context.Context, req *signetv1.ListKeysRequest) (*signetv1.ListKeysResponse, error) {
	resp, err := c.signer.ListKeys(ctx, req)
	return resp, asError(err)
}

// Keys iterates over the versions of keyRing (empty: every ring the caller
// may list), in the given states (none: all), page by page. It stops at
// the first error, which it yields.
func (c *Client) Keys(ctx context.Context, keyRing string, states ...signetv1.KeyState) iter.Seq2[*signetv1.KeyVersion, error] {
	return func(yield func(*signetv1.KeyVersion, error) bool) {
		req := &signetv1.ListKeysRequest{KeyRing: keyRing, States: states}
		for {
			resp, err := c.ListKeysPage(ctx, req)
			if err != nil {
				yield(nil, err)
				return
			}
			for _, v := range resp.GetVersions() {
				if !yield(v, nil) {
					return
				}
			}
			if resp.GetNextPageToken() == "" {
				return
			}
			req.PageToken = resp.GetNextPageToken()
		}
	}
}

// Health asks Signet's grpc.health.v1 service for service's status
// ("signet.v1.SignerService/RING": can that key ring sign;
// "signet.v1.SignerService": can at least one; "": the server).
func (c *Client) Health(ctx context.Context, service string) (healthpb.HealthCheckResponse_ServingStatus, error) {
	resp, err := healthpb.NewHealthClient(c.conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		return healthpb.HealthCheckResponse_UNKNOWN, asError(err)
	}
	return resp.GetStatus(), nil
}
