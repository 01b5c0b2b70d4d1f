package main

import (
	"bufio"
	"context"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/lestrrat-go/httprc/v3"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jwt"
)

// The verifiers, each with its own JWKS cache, as different services that
// trust Signet's tokens would have:
//   - two lestrrat-go/jwx jwk.Caches, which refetch when Cache-Control's
//     max-age runs out (their floor set to 1 s: jwx's default floor is 15
//     minutes, and a service that wants a short max-age honoured lowers it),
//     and, as their callers must do themselves, once on an unknown kid;
//   - go-oidc's IDTokenVerifier on a RemoteKeySet, which keeps the keys until
//     a token names a kid it does not have, then refetches;
//   - PyJWT's PyJWKClient with its defaults (JWKS cached 300 s, refetched on
//     an unknown kid), in a sidecar process.
//
// All fetch through the front, a random live replica per fetch.
const (
	vJWXA = iota
	vJWXB
	vOIDC
	vPyJWT
	numVerifiers
)

var verifierNames = [numVerifiers]string{"jwx-a", "jwx-b", "go-oidc", "pyjwt"}

const audience = "soak"

type goVerifiers struct {
	url, issuer string
	jwx         [2]*jwk.Cache
	jwxRefresh  [2]atomic.Int64
	oidc        *oidc.IDTokenVerifier
}

func newGoVerifiers(ctx context.Context, url, issuer string) (*goVerifiers, error) {
	g := &goVerifiers{url: url, issuer: issuer}
	client := &http.Client{Timeout: 5 * time.Second}
	for i := range g.jwx {
		c, err := jwk.NewCache(ctx, httprc.NewClient())
		if err != nil {
			return nil, err
		}
		if err := c.Register(ctx, url, jwk.WithMinInterval(time.Second), jwk.WithHTTPClient(client)); err != nil {
			return nil, fmt.Errorf("jwx cache: %w", err)
		}
		g.jwx[i] = c
	}
	ks := oidc.NewRemoteKeySet(oidc.ClientContext(context.Background(), client), url)
	g.oidc = oidc.NewVerifier(issuer, ks, &oidc.Config{ClientID: audience, SupportedSigningAlgs: []string{"ES256"}})
	return g, nil
}

// verifyJWX is what a service using jwx's cache does: look the kid up in
// the cached set, refresh once if it is not there, verify and validate.
func (g *goVerifiers) verifyJWX(ctx context.Context, i int, token string) error {
	set, err := g.jwx[i].Lookup(ctx, g.url)
	if err != nil {
		return fmt.Errorf("jwks: %w", err)
	}
	kid, err := tokenKid(token)
	if err != nil {
		return err
	}
	if _, ok := set.LookupKeyID(kid); !ok {
		g.jwxRefresh[i].Add(1)
		if set, err = g.jwx[i].Refresh(ctx, g.url); err != nil {
			return fmt.Errorf("jwks refresh on unknown kid: %w", err)
		}
	}
	_, err = jwt.Parse([]byte(token), jwt.WithKeySet(set), jwt.WithValidate(true),
		jwt.WithIssuer(g.issuer), jwt.WithAudience(audience))
	return err
}

func (g *goVerifiers) verifyOIDC(ctx context.Context, token string) error {
	_, err := g.oidc.Verify(ctx, token)
	return err
}

// tokenKid reads the kid from a compact JWS's header, unverified.
func tokenKid(token string) (string, error) {
	h, _, ok := strings.Cut(token, ".")
	if !ok {
		return "", errors.New("not a compact JWS")
	}
	b, err := base64.RawURLEncoding.DecodeString(h)
	if err != nil {
		return "", err
	}
	var hdr struct {
		Kid string `json:"kid"`
	}
	if err := json.Unmarshal(b, &hdr); err != nil {
		return "", err
	}
	return hdr.Kid, nil
}

// tokenTimes reads iat and exp from a token's payload, unverified.
func tokenTimes(token string) (iat, exp int64, err error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return 0, 0, errors.New("not a compact JWS")
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return 0, 0, err
	}
	var c struct {
		Iat int64 `json:"iat"`
		Exp int64 `json:"exp"`
	}
	err = json.Unmarshal(b, &c)
	return c.Iat, c.Exp, err
}

//go:embed pyjwt_sidecar.py
var pyjwtSidecar []byte

// pyjwt is the PyJWT sidecar: tokens go in on stdin as "N<TAB>token"
// lines, verdicts come back as "N<TAB>ok" or "N<TAB>fail<TAB>reason".
type pyjwt struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	inMu sync.Mutex
	done chan struct{}
	errs *os.File
}

func startPyJWT(python, dir, url, issuer string, rec *recorder) (*pyjwt, error) {
	script := filepath.Join(dir, "pyjwt_sidecar.py")
	if err := os.WriteFile(script, pyjwtSidecar, 0o600); err != nil {
		return nil, err
	}
	errs, err := os.Create(filepath.Join(dir, "pyjwt.log")) // #nosec G304 -- the run's own directory
	if err != nil {
		return nil, err
	}
	p := &pyjwt{done: make(chan struct{}), errs: errs}
	p.cmd = exec.Command(python, script, url, issuer, audience) // #nosec G204 -- the developer's python and the soak's own script
	p.cmd.Stderr = errs
	if p.in, err = p.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the PyJWT sidecar (%s): %w", python, err)
	}
	// The sidecar answers "ready" once PyJWT is imported, so that a missing
	// package is an error at the start rather than every verdict failing.
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	if !sc.Scan() || sc.Text() != "ready" {
		_ = p.cmd.Process.Kill()
		_ = p.cmd.Wait()
		b, _ := os.ReadFile(errs.Name())
		return nil, fmt.Errorf("the PyJWT sidecar did not start (%s; python3-jwt installed? `make test-deps` installs it):\n%s", python, b)
	}
	go func() {
		defer close(p.done)
		for sc.Scan() {
			f := strings.SplitN(sc.Text(), "\t", 3)
			n, err := strconv.Atoi(f[0])
			if err != nil || len(f) < 2 {
				rec.note("pyjwt sidecar said: " + sc.Text())
				continue
			}
			why := ""
			if len(f) == 3 {
				why = f[2]
			}
			rec.verdict(n, vPyJWT, f[1] == "ok", why)
		}
	}()
	return p, nil
}

func (p *pyjwt) send(n int, token string) error {
	p.inMu.Lock()
	defer p.inMu.Unlock()
	_, err := fmt.Fprintf(p.in, "%d\t%s\n", n, token)
	return err
}

// close ends the sidecar's input and waits for its last verdicts.
func (p *pyjwt) close() {
	p.inMu.Lock()
	_ = p.in.Close()
	p.inMu.Unlock()
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
	}
	_ = p.cmd.Wait()
	_ = p.errs.Close()
}
