#!/usr/bin/env python3
"""Verify Signet tokens with the key of the certificate in the JWKS's x5c,
after verifying that certificate chain with Python's `cryptography` (Debian
bookworm's 38, which predates its path validation: the checks below use its
certificate parser and signature primitives), and the token with PyJWT:
libraries Signet did not write.

Usage: verify_x5c.py JWKS_URL TRUST_ANCHORS_PEM ISSUER AUDIENCE < tokens

TRUST_ANCHORS_PEM holds the certificates to trust: the CA ring's CA
certificate(s) (`signet x5c --key-ring CA`), or for a self-signed ring the
version's own certificate. For each token, prints one JSON line:
{"ok": true, "kid": ..., "alg": ..., "subject": ..., "claims": {...}} or
{"ok": false, "error": "..."}.
"""
import base64
import datetime
import hashlib
import json
import sys
import urllib.request

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding
from cryptography.x509.oid import SignatureAlgorithmOID


def spki(key):
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


# DER of the hash OIDs (2.16.840.1.101.3.4.2.1-3) that RSASSA-PSS parameters name.
PSS_HASHES = {b"\x06\x09\x60\x86\x48\x01\x65\x03\x04\x02" + bytes([n]): h
              for n, h in ((1, hashes.SHA256()), (2, hashes.SHA384()), (3, hashes.SHA512()))}


def pss_hash(cert):
    """The hash of an RSASSA-PSS certificate signature. cryptography 38
    cannot tell it (no signature_algorithm_parameters yet), so it is read
    from the signatureAlgorithm that follows the TBSCertificate in the DER.
    A wrong answer cannot pass: the signature would not verify with it."""
    der, tbs = cert.public_bytes(serialization.Encoding.DER), cert.tbs_certificate_bytes
    alg_id = der[der.index(tbs) + len(tbs):][:64]
    found = [h for oid, h in PSS_HASHES.items() if oid in alg_id]
    if len(found) != 1:
        raise ValueError("cannot read the RSASSA-PSS hash of the certificate's signature")
    return found[0]


def check_signature(cert, issuer):
    """Checks that issuer's key made cert's signature, with the algorithm
    cert names (cryptography's own primitives)."""
    key = issuer.public_key()
    oid = cert.signature_algorithm_oid
    if isinstance(key, ed25519.Ed25519PublicKey):
        key.verify(cert.signature, cert.tbs_certificate_bytes)
    elif isinstance(key, ec.EllipticCurvePublicKey):
        key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
    elif oid == SignatureAlgorithmOID.RSASSA_PSS:
        h = pss_hash(cert)
        key.verify(cert.signature, cert.tbs_certificate_bytes,
                   padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size), h)
    else:
        key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), cert.signature_hash_algorithm)


def ext(cert, cls):
    try:
        return cert.extensions.get_extension_for_class(cls).value
    except x509.ExtensionNotFound:
        return None


def verify_chain(jwk, anchors, now):
    """Returns the leaf certificate of jwk's x5c once its chain verifies:
    each certificate signed by the next, the last by a trust anchor (or
    being one), names chained, every one valid now, every issuer a CA
    allowed to sign certificates, within its path length."""
    ders = [base64.b64decode(c, validate=True) for c in jwk["x5c"]]  # base64, not base64url
    certs = [x509.load_der_x509_certificate(d) for d in ders]
    leaf = certs[0]
    want = base64.urlsafe_b64encode(hashlib.sha256(ders[0]).digest()).rstrip(b"=").decode()
    if jwk.get("x5t#S256") != want:
        raise ValueError(f"x5t#S256 {jwk.get('x5t#S256')!r} is not the leaf's SHA-256 {want!r}")
    if spki(jwt.PyJWK(jwk).key) != spki(leaf.public_key()):
        raise ValueError("the JWK's key is not the leaf certificate's")
    anchor = next((a for a in anchors if a.subject == certs[-1].issuer), None)
    if anchor is None:
        raise ValueError(f"no trust anchor named {certs[-1].issuer.rfc4514_string()}")
    path = certs + ([] if certs[-1] == anchor else [anchor])
    for i, cert in enumerate(path):
        if not cert.not_valid_before <= now <= cert.not_valid_after:
            raise ValueError(f"certificate {i} ({cert.subject.rfc4514_string()}) is not valid now")
        issuer = path[i + 1] if i + 1 < len(path) else cert
        if cert.issuer != issuer.subject:
            raise ValueError(f"certificate {i} is issued by {cert.issuer.rfc4514_string()}, not {issuer.subject.rfc4514_string()}")
        check_signature(cert, issuer)
        if i + 1 < len(path):  # issuer is a CA: it must be one, allowed to sign certificates this deep
            bc, ku = ext(issuer, x509.BasicConstraints), ext(issuer, x509.KeyUsage)
            if bc is None or not bc.ca or ku is None or not ku.key_cert_sign:
                raise ValueError(f"{issuer.subject.rfc4514_string()} is not a CA that may sign certificates")
            if bc.path_length is not None and bc.path_length < i:
                raise ValueError(f"{issuer.subject.rfc4514_string()} allows a path length of {bc.path_length}")
    if any(a == path[-1] for a in anchors):
        return leaf
    raise ValueError("the chain does not end at a trust anchor")


def main() -> int:
    if len(sys.argv) != 5:
        print(__doc__, file=sys.stderr)
        return 2
    jwks_url, anchors_file, issuer, audience = sys.argv[1:]
    with open(anchors_file, "rb") as f:
        pems = f.read().split(b"-----END CERTIFICATE-----")
    anchors = [x509.load_pem_x509_certificate(p + b"-----END CERTIFICATE-----\n") for p in pems if b"BEGIN" in p]
    now = datetime.datetime.utcnow()  # naive UTC, as cryptography 38 reports validity
    for line in sys.stdin:
        token = line.strip()
        if not token:
            continue
        try:
            with urllib.request.urlopen(jwks_url, timeout=10) as r:
                jwks = json.load(r)
            header = jwt.get_unverified_header(token)
            jwk = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
            leaf = verify_chain(jwk, anchors, now)
            claims = jwt.decode(token, leaf.public_key(), algorithms=[header["alg"]], audience=audience, issuer=issuer)
            out = {"ok": True, "kid": header["kid"], "alg": header["alg"], "subject": leaf.subject.rfc4514_string(),
                   "claims": claims}
        except Exception as e:  # report every failure as data, one line per token
            out = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
