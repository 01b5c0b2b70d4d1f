package vault

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/api/auth/approle"
	"github.com/hashicorp/vault/api/auth/kubernetes"

	"github.com/signet-dev/signet/backends"
)

// SecretIDEnv holds the AppRole secret id when no secret_id_file is given.
const SecretIDEnv = "SIGNET_VAULT_SECRET_ID" // #nosec G101 -- the name of a variable, not a secret

const serviceAccountToken = "/var/run/secrets/kubernetes.io/serviceaccount/token" // #nosec G101 -- where the pod's token is, not a token

// authenticator holds Signet's Vault token: it logs in, keeps the token
// renewed, and logs in again when renewal ends or Vault rejects the token.
type authenticator struct {
	client *api.Client
	method string
	log    *slog.Logger
	// ctx ends when the backend closes; wg counts the goroutines started
	// here (the backend's Close waits for them).
	ctx context.Context
	wg  *sync.WaitGroup
	// obtain gets a token (static methods) or logs in (the others).
	obtain func(ctx context.Context) (*api.Secret, error)

	mu        sync.Mutex
	lastLogin time.Time
	watching  chan struct{} // closed to stop the current renewal watcher
}

func newAuthenticator(client *api.Client, q backends.Options, getenv func(string) string, log *slog.Logger,
	ctx context.Context, wg *sync.WaitGroup) (*authenticator, error) {
	a := &authenticator{client: client, method: q.Get("auth"), log: log, ctx: ctx, wg: wg}
	if a.method == "" {
		a.method = "token"
	}
	mount := q.Get("auth_mount")
	switch a.method {
	case "token":
		file := q.Get("token_file")
		a.obtain = func(ctx context.Context) (*api.Secret, error) {
			token := getenv("VAULT_TOKEN")
			if file != "" {
				b, err := os.ReadFile(file) // #nosec G304 G703 -- token_file names the file to read: the operator's configuration
				if err != nil {
					return nil, errorf(backends.KindInvalidArgument, "reading token_file: %v", err)
				}
				token = strings.TrimSpace(string(b))
			}
			if token == "" {
				return nil, errorf(backends.KindInvalidArgument, "auth=token needs VAULT_TOKEN or token_file")
			}
			client.SetToken(token)
			// Look the token up: it proves it works now, and its TTL tells
			// whether it needs renewing.
			s, err := client.Auth().Token().LookupSelfWithContext(ctx)
			if err != nil {
				return nil, err
			}
			return tokenSecret(token, s), nil
		}
	case "approle":
		roleID := q.Get("role_id")
		if roleID == "" {
			return nil, errorf(backends.KindInvalidArgument, "auth=approle needs role_id")
		}
		secretID := &approle.SecretID{FromEnv: SecretIDEnv}
		if f := q.Get("secret_id_file"); f != "" {
			secretID = &approle.SecretID{FromFile: f}
		} else if getenv(SecretIDEnv) == "" {
			return nil, errorf(backends.KindInvalidArgument, "auth=approle needs secret_id_file or %s", SecretIDEnv)
		}
		var opts []approle.LoginOption
		if mount != "" {
			opts = append(opts, approle.WithMountPath(mount))
		}
		method, err := approle.NewAppRoleAuth(roleID, secretID, opts...)
		if err != nil {
			return nil, errorf(backends.KindInvalidArgument, "auth=approle: %v", err)
		}
		a.obtain = func(ctx context.Context) (*api.Secret, error) { return client.Auth().Login(ctx, method) }
	case "kubernetes":
		role := q.Get("role")
		if role == "" {
			return nil, errorf(backends.KindInvalidArgument, "auth=kubernetes needs role")
		}
		jwtFile := q.Get("jwt_file")
		if jwtFile == "" {
			jwtFile = serviceAccountToken
		}
		a.obtain = func(ctx context.Context) (*api.Secret, error) {
			// Projected service account tokens rotate: read the file at every login.
			opts := []kubernetes.LoginOption{kubernetes.WithServiceAccountTokenPath(jwtFile)}
			if mount != "" {
				opts = append(opts, kubernetes.WithMountPath(mount))
			}
			method, err := kubernetes.NewKubernetesAuth(role, opts...)
			if err != nil {
				return nil, errorf(backends.KindInvalidArgument, "auth=kubernetes: %v", err)
			}
			return client.Auth().Login(ctx, method)
		}
	default:
		return nil, errorf(backends.KindInvalidArgument, "auth=%q: want token, approle or kubernetes", a.method)
	}
	return a, nil
}

// tokenSecret shapes a lookup-self answer as a login answer, so that the
// lifetime watcher can renew a static token like a login token.
func tokenSecret(token string, lookup *api.Secret) *api.Secret {
	ttl, _ := lookup.TokenTTL()
	renewable, _ := lookup.TokenIsRenewable()
	return &api.Secret{Auth: &api.SecretAuth{ClientToken: token, Renewable: renewable, LeaseDuration: int(ttl.Seconds())}}
}

// login obtains a token and starts keeping it renewed.
func (a *authenticator) login(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.loginLocked(ctx)
}

func (a *authenticator) loginLocked(ctx context.Context) error {
	secret, err := a.obtain(ctx)
	a.lastLogin = time.Now()
	if err != nil {
		return classify(err, "logging in to Vault with auth="+a.method)
	}
	if a.watching != nil {
		close(a.watching)
		a.watching = nil
	}
	// Start no watcher once the backend is closed (see stop).
	if a.ctx.Err() == nil && secret != nil && secret.Auth != nil && secret.Auth.Renewable && secret.Auth.LeaseDuration > 0 {
		stop := make(chan struct{})
		a.watching = stop
		a.wg.Go(func() { a.watch(secret, stop) })
	}
	a.log.Info("Vault token obtained", "auth", a.method, "ttl", time.Duration(secretTTL(secret))*time.Second)
	return nil
}

func secretTTL(s *api.Secret) int {
	if s == nil || s.Auth == nil {
		return 0
	}
	return s.Auth.LeaseDuration
}

// watch renews the token until renewal ends (max TTL, or Vault refuses),
// then logs in again, retrying with backoff until it works or the backend
// closes.
func (a *authenticator) watch(secret *api.Secret, stop chan struct{}) {
	w, err := a.client.NewLifetimeWatcher(&api.LifetimeWatcherInput{Secret: secret})
	if err != nil {
		a.log.Warn("cannot renew the Vault token; will log in again when it is rejected", "err", err)
		return
	}
	a.wg.Go(w.Start) // returns once stopped; Close ends a renewal in flight
	defer w.Stop()
	for {
		select {
		case <-a.ctx.Done():
			return
		case <-stop:
			return
		case <-w.RenewCh():
		case err := <-w.DoneCh():
			if err != nil {
				a.log.Warn("Vault token renewal failed; logging in again", "err", err)
			}
			a.wg.Go(func() { a.relogin(stop) })
			return
		}
	}
}

func (a *authenticator) relogin(stop chan struct{}) {
	for delay := 100 * time.Millisecond; ; delay = min(2*delay, 30*time.Second) {
		ctx, cancel := context.WithTimeout(a.ctx, backends.BackgroundTimeout)
		a.mu.Lock()
		var err error
		if a.watching == stop { // nobody logged in since this watcher started
			err = a.loginLocked(ctx)
		}
		a.mu.Unlock()
		cancel()
		if err == nil {
			return
		}
		a.log.Warn("Vault login failed; retrying", "auth", a.method, "retry_in", delay, "err", err)
		select {
		case <-a.ctx.Done():
			return
		case <-time.After(delay):
		}
	}
}

// stop is called by Close after it has ended the backend's context and
// before it waits: it stops the current watcher, and since loginLocked starts
// one under a.mu only after seeing the context alive, once stop has held
// a.mu no watcher starts again.
func (a *authenticator) stop() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.watching != nil {
		close(a.watching)
		a.watching = nil
	}
}

// call runs a Vault request; if Vault rejects the token, it logs in again
// once (unless someone just did) and retries.
func (a *authenticator) call(ctx context.Context, fn func(context.Context) (*api.Secret, error)) (*api.Secret, error) {
	token := a.client.Token()
	s, err := fn(ctx)
	if !isPermissionDenied(err) {
		return s, err
	}
	a.mu.Lock()
	relogged := a.client.Token() != token
	if !relogged && time.Since(a.lastLogin) > time.Second {
		relogged = a.loginLocked(ctx) == nil
	}
	a.mu.Unlock()
	if !relogged {
		return s, err
	}
	return fn(ctx)
}

func (b *Backend) call(ctx context.Context, fn func(context.Context) (*api.Secret, error)) (*api.Secret, error) {
	return b.auth.call(ctx, fn)
}

func isPermissionDenied(err error) bool {
	var re *api.ResponseError
	return errors.As(err, &re) && re.StatusCode == http.StatusForbidden
}

// classify maps a Vault client error to the shared kinds. what says what
// Signet was doing; the message never holds a token.
func classify(err error, what string) error {
	var re *api.ResponseError
	switch {
	case err == nil:
		return nil
	case errors.As(err, new(*backends.Error)):
		return err
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return &backends.Error{Kind: backends.KindUnavailable, Backend: Scheme, Msg: what + ": Vault did not answer in time", Err: err}
	case errors.As(err, &re):
		msg := strings.Join(re.Errors, "; ")
		switch {
		case re.StatusCode == http.StatusForbidden:
			return errorf(backends.KindPermissionDenied, "%s: Vault answered permission denied: the token's policy must allow this path (or the token expired and logging in again failed)", what)
		case re.StatusCode == http.StatusNotFound:
			return errorf(backends.KindNotFound, "%s: not found in Vault", what)
		case re.StatusCode == http.StatusTooManyRequests || re.StatusCode >= 502:
			return errorf(backends.KindUnavailable, "%s: Vault is unavailable (%d %s)", what, re.StatusCode, msg)
		case re.StatusCode >= 500:
			return classifyMessage(msg, what, backends.KindUnavailable)
		default:
			return classifyMessage(msg, what, backends.KindInvalidArgument)
		}
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return errorf(backends.KindUnavailable, "%s: cannot reach Vault: %w", what, ue.Err)
	}
	return errorf(backends.KindUnknown, "%s: %v", what, err)
}

func (b *Backend) classify(err error, format string, args ...any) error {
	return classify(err, fmt.Sprintf(format, args...))
}

// classifyMessage classifies Transit's own error texts, which also come back
// per item of a batch.
func classifyMessage(msg, what string, otherwise backends.Kind) error {
	m := strings.ToLower(msg)
	kind := otherwise
	switch {
	case strings.Contains(m, "less than the minimum encryption key version"):
		kind, msg = backends.KindFailedPrecondition, "the version is revoked (below min_encryption_version)"
	case strings.Contains(m, "no such key version"), strings.Contains(m, "higher than the latest key version"),
		strings.Contains(m, "key not found"):
		kind = backends.KindNotFound
	case strings.Contains(m, "permission denied"):
		kind = backends.KindPermissionDenied
	case strings.Contains(m, "sealed"):
		kind = backends.KindUnavailable
	}
	return errorf(kind, "%s: %s", what, strings.TrimSpace(strings.ReplaceAll(msg, "\n\t", " ")))
}
