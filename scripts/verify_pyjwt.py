#!/usr/bin/env python3
"""Verify Signet tokens with PyJWT, a verifier Signet did not write.

Usage: verify_pyjwt.py JWKS_URL ISSUER AUDIENCE < tokens (one per line)

For each token, prints one JSON line: {"ok": true, "kid": ..., "alg": ...,
"claims": {...}} or {"ok": false, "error": "..."}. The key comes from the live
JWKS through PyJWKClient, fetched afresh for every token.
"""
import json
import sys

import jwt
from jwt import PyJWKClient


def main() -> int:
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    jwks_url, issuer, audience = sys.argv[1:]
    for line in sys.stdin:
        token = line.strip()
        if not token:
            continue
        try:
            client = PyJWKClient(jwks_url, cache_jwk_set=False)
            key = client.get_signing_key_from_jwt(token)
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[header["alg"]],
                audience=audience,
                issuer=issuer,
                options={"require": ["exp", "iat", "nbf", "iss", "aud", "jti"]},
            )
            out = {"ok": True, "kid": header.get("kid"), "alg": header["alg"], "claims": claims}
        except Exception as e:  # report every failure as data, one line per token
            out = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
