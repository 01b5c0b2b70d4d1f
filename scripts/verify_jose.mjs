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
// token, as verify_pyjwt.py does; with JOSE_KEY_FROM=x5c, from the
// certificate of the key's x5c (importX509).
import { createHash, X509Certificate } from "node:crypto";
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

// With JOSE_KEY_FROM=x5c the key is not the JWK's own members but the one
// in the certificate its x5c starts with (jose's importX509), after
// checking that x5t#S256 is that certificate's SHA-256 and that each
// certificate of x5c is issued and signed by the next (node's X509Certificate).
async function keyFromX5C(token) {
  const { kid, alg } = jose.decodeProtectedHeader(token);
  const jwks = await (await fetch(jwksURL)).json();
  const jwk = jwks.keys.find((k) => k.kid === kid);
  if (!jwk || !jwk.x5c || jwk.x5c.length === 0) throw new Error(`kid ${kid} has no x5c in the JWKS`);
  const ders = jwk.x5c.map((c) => Buffer.from(c, "base64"));
  const thumb = createHash("sha256").update(ders[0]).digest("base64url");
  if (jwk["x5t#S256"] !== thumb) throw new Error(`x5t#S256 ${jwk["x5t#S256"]} is not the certificate's ${thumb}`);
  const certs = ders.map((d) => new X509Certificate(d));
  for (let i = 0; i + 1 < certs.length; i++) {
    if (!certs[i].checkIssued(certs[i + 1]) || !certs[i].verify(certs[i + 1].publicKey)) {
      throw new Error(`x5c[${i}] is not issued and signed by x5c[${i + 1}]`);
    }
  }
  const pem = `-----BEGIN CERTIFICATE-----\n${jwk.x5c[0].match(/.{1,64}/g).join("\n")}\n-----END CERTIFICATE-----\n`;
  return jose.importX509(pem, alg);
}

for await (const line of createInterface({ input: process.stdin })) {
  const token = line.trim();
  if (!token) continue;
  let out;
  try {
    const keys = process.env.JOSE_KEY_FROM === "x5c" ? await keyFromX5C(token) : jose.createRemoteJWKSet(new URL(jwksURL));
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
