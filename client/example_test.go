package signetclient_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	signetclient "github.com/signet-dev/signet/client"
	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
)

// A service asks Signet for a token with an exact 64-bit claim, and another
// verifies it against Signet's JWKS. The example runs against a Signet on
// loopback that the package's tests start (exampleSignet, exampleJWKS); a
// real service sets CertFile, KeyFile and CAFile instead of Plaintext.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	c, err := signetclient.New(signetclient.Config{Target: exampleSignet, Plaintext: true})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	tok, err := c.Sign(ctx, "default",
		signetclient.Audience("ledger"),
		signetclient.Subject("spiffe://corp.example/payments"),
		signetclient.TTL(5*time.Minute),
		signetclient.ClaimsJSON(`{"account": 9007199254740993}`))
	if err != nil {
		log.Fatal(err)
	}

	v, err := signetclient.NewVerifier(ctx, signetclient.VerifierConfig{
		JWKSURL: exampleJWKS, Issuer: exampleIssuer, Audience: "ledger"})
	if err != nil {
		log.Fatal(err)
	}
	defer v.Close()
	claims, err := v.Verify(ctx, tok.Token)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(claims.Subject, claims.All["account"])

	// Refusals are typed: the reason says what to do.
	_, err = c.Sign(ctx, "default", signetclient.Audience("ledger"), signetclient.ClaimsJSON(`{"exp": 1}`))
	var serr *signetclient.Error
	if errors.As(err, &serr) && serr.Reason == signetv1.ErrorReason_RESERVED_CLAIM {
		fmt.Println("refused:", serr.Field)
	}
	// Output:
	// spiffe://corp.example/payments 9007199254740993
	// refused: claims_json.exp
}
