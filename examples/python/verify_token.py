"""Verifies a shop access token the way a service written in Python would: PyJWT + the JWK Set.

    python verify_token.py --jwks-url http://localhost:9091/.well-known/jwks.json TOKEN
    echo "$TOKEN" | python verify_token.py --jwks-url http://localhost:9091/.well-known/jwks.json

Prints one JSON line, {"valid": true, "sub": ..., "roles": [...], "kid": ..., "exp": ...} with exit
code 0, or {"valid": false, "error": ...} with exit code 1. A long-running service makes one
PyJWKClient and reuses it: it caches the set and fetches it again for a `kid` it does not know
(after a key rotation). The token itself is never printed.
"""

import argparse
import json
import sys

import jwt


def verify(token: str, jwks_url: str) -> dict:
    """The token's claims if the user service signed it and it is valid now, else why not."""
    try:
        key = jwt.PyJWKClient(jwks_url).get_signing_key_from_jwt(token)  # the JWK named by the header's kid
        claims = jwt.decode(
            token, key.key, algorithms=["ES256"], audience="shop", issuer="shop",
            options={"require": ["exp", "iss", "aud", "sub"]},
        )
    except jwt.PyJWTError as e:  # bad signature, expired, wrong iss/aud, unknown kid, JWKS unreachable, ...
        return {"valid": False, "error": str(e)}
    return {"valid": True, "sub": claims["sub"], "roles": claims.get("roles", []),
            "kid": key.key_id, "exp": claims["exp"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--jwks-url",
        required=True,
        metavar="URL",
        help="the JWK Set, http://USER_HOST:9091/.well-known/jwks.json (required: no default)",
    )
    p.add_argument(
        "token", nargs="?", help="the access token; prefer stdin, arguments show in `ps` (default: read from stdin)"
    )
    args = p.parse_args()
    result = verify((args.token or sys.stdin.read()).strip(), args.jwks_url)
    print(json.dumps(result))
    return 0 if result["valid"] else 1


if __name__ == "__main__":
    sys.exit(main())
