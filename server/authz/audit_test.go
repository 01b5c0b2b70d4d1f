package authz

import (
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"
)

// The audit line is byte for byte what encoding/json wrote for a Record.
func TestAuditLineIsMarshal(t *testing.T) {
	records := []Record{
		{},
		{Time: time.Date(2026, 11, 27, 15, 4, 5, 123456789, time.UTC), Caller: "spiffe://signet.dev/service/demo", Peer: "127.0.0.1:54321",
			RPC: "Sign", KeyRing: "default", Kid: "kid-1", JTI: "jti", Sub: "svc-a", Aud: []string{"svc-b", "<&>"}, Exp: 1700000000,
			Outcome: "ok", ClaimsSHA256: "abc", TraceID: "0af7651916cd43dd8448eb211c80319c"},
		{Time: time.Unix(0, 0).UTC(), Caller: "unauthenticated", RPC: "/signet.v1.SignerService/Sign", Outcome: "denied",
			Reason: "audience \"hr\" is not allowed\n\u2028\xff", Aud: []string{}},
		{Time: time.Date(1999, 1, 2, 3, 4, 5, 0, time.FixedZone("x", 3600)), Caller: "c", RPC: "Rotate", Outcome: "authorized", Exp: -5},
		{Time: time.Unix(5, 0).UTC(), Caller: "signet", RPC: "audit", Outcome: "recovered", Reason: "r", Summarized: 2,
			OutageSince: "2026-12-08T00:00:00Z", Unwritten: 7, RefusedSigns: 3},
	}
	chars := []rune{'a', '"', '\\', '<', '\n', 0, 'é', '\u2028', 0x7f}
	str := func(r *rand.Rand) string {
		s := make([]rune, r.IntN(6))
		for i := range s {
			s[i] = chars[r.IntN(len(chars))]
		}
		return string(s)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 500 {
		rec := Record{Time: time.Unix(r.Int64N(4e9), r.Int64N(1e9)).UTC(), Caller: str(r), Peer: str(r), RPC: str(r), KeyRing: str(r),
			Kid: str(r), JTI: str(r), Sub: str(r), Exp: r.Int64N(3) - 1, CnfX5tS256: str(r), Outcome: str(r), Reason: str(r),
			ClaimsSHA256: str(r), TraceID: str(r)}
		for range r.IntN(3) {
			rec.Aud = append(rec.Aud, str(r))
		}
		records = append(records, rec)
	}
	for _, rec := range records {
		want, err := json.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		got, err := rec.appendJSON(nil)
		if err != nil || string(got) != string(want) {
			t.Errorf("audit line\n got %s (%v)\nwant %s", got, err, want)
		}
	}
}
