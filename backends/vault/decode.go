package vault

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/signet-dev/signet/backends"
)

// decodeSignBatch reads Transit's answer to a sign request with n inputs in
// batch_input, signed with version of the key named: per input, either a
// JWS signature of alg's size or an error, never both. An answer that is
// not a batch of n results is an error for the whole batch. data is the
// answer's "data", as the Vault client decoded it (numbers as
// json.Number); nil when Vault answered nothing.
func decodeSignBatch(data map[string]any, alg backends.Algorithm, version, n int, name string) ([][]byte, []error, error) {
	var resp struct {
		BatchResults []struct {
			Signature  string `json:"signature"`
			KeyVersion int    `json:"key_version"`
			Error      string `json:"error"`
		} `json:"batch_results"`
	}
	if data != nil {
		raw, err := json.Marshal(data)
		if err == nil {
			err = json.Unmarshal(raw, &resp)
		}
		if err != nil {
			return nil, nil, errorf(backends.KindUnknown, "Transit's answer to a sign request is not a batch of results: %v", err)
		}
	}
	if len(resp.BatchResults) != n {
		return nil, nil, errorf(backends.KindUnknown, "Transit answered %d results for %d inputs", len(resp.BatchResults), n)
	}
	sigs := make([][]byte, n)
	errs := make([]error, n)
	prefix := "vault:v" + strconv.Itoa(version) + ":"
	for i, r := range resp.BatchResults {
		switch {
		case r.Error != "":
			errs[i] = classifyMessage(r.Error, fmt.Sprintf("signing with version %d of Transit key %q", version, name), backends.KindUnknown)
		case r.KeyVersion != version || !strings.HasPrefix(r.Signature, prefix):
			errs[i] = errorf(backends.KindUnknown, "Transit signed with version %d, not the requested %d", r.KeyVersion, version)
		default:
			sig, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(r.Signature, prefix))
			if err != nil || len(sig) == 0 {
				errs[i] = errorf(backends.KindUnknown, "Transit signature is empty or not base64url: %v", err)
			} else if want := alg.SignatureSize(); want != 0 && len(sig) != want {
				errs[i] = errorf(backends.KindUnknown, "Transit returned a %d-byte %s signature, want %d", len(sig), alg, want)
			} else {
				sigs[i] = sig
			}
		}
	}
	return sigs, errs, nil
}
