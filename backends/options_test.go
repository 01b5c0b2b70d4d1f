package backends_test

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/signet-dev/signet/backends"
	_ "github.com/signet-dev/signet/backends/awskms"
	_ "github.com/signet-dev/signet/backends/azurekv"
	_ "github.com/signet-dev/signet/backends/gcpkms"
	_ "github.com/signet-dev/signet/backends/vault"
)

// Every backend that takes options refuses an unknown one and a repeated
// one, naming it, before it opens anything (three used to take the first
// of a repeated option without a word).
func TestBackendsRefuseUnknownAndRepeatedOptions(t *testing.T) {
	for _, c := range []struct{ uri, option string }{
		{"vault://127.0.0.1:1/transit?scheme=http&batch_size=4&batch_size=8", `"batch_size" given 2 times`},
		{"vault://127.0.0.1:1/transit?key.a=x&key.a=y", `"key.a" given 2 times`},
		{"vault://127.0.0.1:1/transit?tokn=x", `unknown URI option "tokn"`},
		{"awskms:?region=eu-west-1&region=us-east-1", `"region" given 2 times`},
		{"awskms:?alias=x", `unknown URI option "alias"`},
		{"gcpkms:projects/p/locations/l/keyRings/r?key_prefix=a&key_prefix=b", `"key_prefix" given 2 times`},
		{"azurekv://v.vault.azure.net/?hsm=true&hsm=false", `"hsm" given 2 times`},
		{"azurekv://v.vault.azure.net/?client_secret=x", `unknown URI option "client_secret"`},
	} {
		_, err := backends.Open(context.Background(), c.uri, backends.OpenOptions{Getenv: func(string) string { return "" }})
		if backends.KindOf(err) != backends.KindInvalidArgument || err == nil || !strings.Contains(err.Error(), c.option) {
			t.Errorf("%s: %v, want InvalidArgument naming %s", c.uri, err, c.option)
		}
	}
}

func TestParseOptions(t *testing.T) {
	u, _ := url.Parse("x:?n=3&d=2ms&b=true&key.r=k&r=1.5")
	o, err := backends.ParseOptions("x", u, "n", "d", "b", "key.", "r", "absent")
	if err != nil {
		t.Fatal(err)
	}
	n, err1 := o.Int("n", 0, 1, 5)
	d, err2 := o.Duration("d", 0, 0, time.Second)
	b, err3 := o.Bool("b", false)
	r, err4 := o.Rate("r", 1, 10)
	def, err5 := o.Int("absent", 7, 1, 5)
	if n != 3 || d != 2*time.Millisecond || !b || r != 1.5 || def != 7 || o.Prefixed("key.")["r"] != "k" ||
		err1 != nil || err2 != nil || err3 != nil || err4 != nil || err5 != nil {
		t.Errorf("read %d %v %v %v %d %v", n, d, b, r, def, o.Prefixed("key."))
	}
	for _, bad := range []struct{ name, q string }{{"n", "n=6"}, {"d", "d=2s"}, {"b", "b=yes"}, {"r", "r=0"}, {"r", "r=NaN"}} {
		u, _ := url.Parse("x:?" + bad.q)
		o, err := backends.ParseOptions("x", u, "n", "d", "b", "r")
		if err != nil {
			t.Fatal(err)
		}
		_, e1 := o.Int("n", 0, 1, 5)
		_, e2 := o.Duration("d", 0, 0, time.Second)
		_, e3 := o.Bool("b", false)
		_, e4 := o.Rate("r", 1, 10)
		var got error
		for _, e := range []error{e1, e2, e3, e4} {
			if e != nil {
				got = e
			}
		}
		if got == nil || !strings.Contains(got.Error(), bad.name+"=") {
			t.Errorf("%s: %v, want an error naming %s", bad.q, got, bad.name)
		}
	}
	if _, err := backends.ParseOptions("x", &url.URL{RawQuery: "a=%zz"}, "a"); err == nil {
		t.Error("a malformed query was accepted")
	}
}
