#!/usr/bin/env node
// Verify Signet tokens with node's `jose` (panva), a verifier Signet did not
// write.
//
// Usage: JOSE_PREFIX=DIR node verify_jose.mjs JWKS_URL ISSUER AUDIENCE < tokens
//
// DIR is where `npm install --prefix DIR jose` put it (make test-deps uses
// bin/npm). For each token, prints one JSON line: {"ok": true, "kid": ...,
// "alg": ..., "claims": {...}} or {"ok": false, "error": "..."}. The key comes
// from the live JWKS through createRemoteJWKSet, fetched afresh for every
// token, as verify_pyjwt.py does.
import { createRequire } from "node:module";
import { createInterface } from "node:readline";
import { pathToFileURL } from "node:url";

const [jwksURL, issuer, audience] = process.argv.slice(2);
if (!audience || !process.env.JOSE_PREFIX) {
  console.error("usage: JOSE_PREFIX=DIR node verify_jose.mjs JWKS_URL ISSUER AUDIENCE < tokens");
  process.exit(2);
}
const require = createRequire(process.env.JOSE_PREFIX + "/package.json");
const jose = await import(pathToFileURL(require.resolve("jose")).href);

for await (const line of createInterface({ input: process.stdin })) {
  const token = line.trim();
  if (!token) continue;
  let out;
  try {
    const keys = jose.createRemoteJWKSet(new URL(jwksURL));
    const { payload, protectedHeader } = await jose.jwtVerify(token, keys, {
      issuer,
      audience,
      requiredClaims: ["exp", "iat", "nbf", "iss", "aud", "jti"],
    });
    out = { ok: true, kid: protectedHeader.kid, alg: protectedHeader.alg, claims: payload };
  } catch (e) {
    out = { ok: false, error: `${e.name}: ${e.message}` };
  }
  console.log(JSON.stringify(out));
}
