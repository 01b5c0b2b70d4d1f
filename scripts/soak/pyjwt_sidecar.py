"""The soak's PyJWT verifier: PyJWKClient with its default caching.

Usage: pyjwt_sidecar.py JWKS_URL ISSUER AUDIENCE
Reads "N<TAB>token" lines on stdin; writes "N<TAB>ok" or
"N<TAB>fail<TAB>reason" for each, after a first line "ready".
"""
import sys

import jwt
from jwt import PyJWKClient


def main() -> int:
    jwks_url, issuer, audience = sys.argv[1:4]
    # One client for the whole run, as a service keeps one: PyJWKClient's
    # defaults cache the JWKS for 300 s and refetch it on an unknown kid.
    client = PyJWKClient(jwks_url)
    print("ready", flush=True)
    for line in sys.stdin:
        n, _, token = line.rstrip("\n").partition("\t")
        try:
            key = client.get_signing_key_from_jwt(token)
            jwt.decode(
                token,
                key.key,
                algorithms=["ES256"],
                audience=audience,
                issuer=issuer,
                options={"require": ["exp", "iat", "nbf", "iss", "aud", "jti"]},
            )
            print(f"{n}\tok", flush=True)
        except Exception as e:  # every failure is a verdict, one line per token
            reason = f"{type(e).__name__}: {e}".replace("\t", " ").replace("\n", " ")
            print(f"{n}\tfail\t{reason}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
