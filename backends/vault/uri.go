package vault

import (
	"net/url"
	"strconv"
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
}

var knownOptions = map[string]bool{"scheme": true, "namespace": true, "ca_file": true, "client_cert": true, "client_key": true,
	"tls_server_name": true, "auth": true, "token_file": true, "role_id": true, "secret_id_file": true, "role": true,
	"jwt_file": true, "auth_mount": true, "key_prefix": true, "batch_size": true, "batch_wait": true}

// parseURI reads a vault: URI's mount, address and options. The auth
// options are read by newAuthenticator, which needs the environment.
func parseURI(u *url.URL) (uriOptions, error) {
	q := u.Query()
	o := uriOptions{mount: strings.Trim(u.Path, "/"), namespace: q.Get("namespace"), keyPrefix: q.Get("key_prefix"),
		keyNames: map[string]string{}, batchSize: 32, batchWait: defaultBatchWait}
	for k, v := range q {
		if ring, ok := strings.CutPrefix(k, "key."); ok && len(v) == 1 && v[0] != "" {
			o.keyNames[ring] = v[0]
			continue
		}
		if !knownOptions[k] {
			return uriOptions{}, errorf(backends.KindInvalidArgument, "unknown URI option %q", k)
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
	if s := q.Get("batch_size"); s != "" {
		var err error
		if o.batchSize, err = strconv.Atoi(s); err != nil || o.batchSize < 1 || o.batchSize > 1000 {
			return uriOptions{}, errorf(backends.KindInvalidArgument, "batch_size=%q: want 1 to 1000", s)
		}
	}
	if s := q.Get("batch_wait"); s != "" {
		var err error
		if o.batchWait, err = time.ParseDuration(s); err != nil || o.batchWait < 0 || o.batchWait > time.Second {
			return uriOptions{}, errorf(backends.KindInvalidArgument, "batch_wait=%q: want a duration from 0s to 1s, such as 500us", s)
		}
	}
	return o, nil
}
