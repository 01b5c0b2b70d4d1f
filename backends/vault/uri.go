package vault

import (
	"net/url"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/signet-dev/signet/backends"
)

// uriOptions is what a vault: URI says, read without opening anything.
type uriOptions struct {
	// address is scheme://host:port, or "" to take VAULT_ADDR as the
	// vault CLI does.
	address   string
	mount     string
	namespace string
	// tls is the TLS to Vault the URI asks for; nil: none (VAULT_CACERT,
	// ... still apply).
	tls       *api.TLSConfig
	keyPrefix string
	keyNames  map[string]string // ring -> Transit key name
	batchSize int
	batchWait time.Duration // how long a queue may wait to fill while a batch is in flight
	query     backends.Options
}

var knownOptions = []string{"scheme", "namespace", "ca_file", "client_cert", "client_key", "tls_server_name", "auth",
	"token_file", "role_id", "secret_id_file", "role", "jwt_file", "auth_mount", "key_prefix", "key.", "batch_size", "batch_wait"}

// parseURI reads a vault: URI's mount, address and options. The auth
// options are read by newAuthenticator, which needs the environment.
func parseURI(u *url.URL) (uriOptions, error) {
	q, err := backends.ParseOptions(Scheme, u, knownOptions...)
	if err != nil {
		return uriOptions{}, err
	}
	o := uriOptions{mount: strings.Trim(u.Path, "/"), namespace: q.Get("namespace"), keyPrefix: q.Get("key_prefix"),
		keyNames: q.Prefixed("key."), query: q}
	for ring, name := range o.keyNames {
		if name == "" {
			return uriOptions{}, errorf(backends.KindInvalidArgument, "key.%s= needs a Transit key name", ring)
		}
	}
	if o.mount == "" {
		o.mount = "transit"
	}
	if u.Host != "" {
		scheme := q.Get("scheme")
		if scheme == "" {
			scheme = "https"
		}
		if scheme != "https" && scheme != "http" {
			return uriOptions{}, errorf(backends.KindInvalidArgument, "scheme=%q: want https or http", scheme)
		}
		o.address = scheme + "://" + u.Host
	}
	if q.Get("ca_file") != "" || q.Get("client_cert") != "" || q.Get("client_key") != "" || q.Get("tls_server_name") != "" {
		o.tls = &api.TLSConfig{CACert: q.Get("ca_file"), ClientCert: q.Get("client_cert"),
			ClientKey: q.Get("client_key"), TLSServerName: q.Get("tls_server_name")}
	}
	if o.batchSize, err = q.Int("batch_size", 32, 1, 1000); err != nil {
		return uriOptions{}, err
	}
	if o.batchWait, err = q.Duration("batch_wait", defaultBatchWait, 0, time.Second); err != nil {
		return uriOptions{}, err
	}
	return o, nil
}
