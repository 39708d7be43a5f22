# Checks a token response (on stdin) against the JWKS with PyJWT, an independent validator.
# pip install "pyjwt[crypto]"; then: curl ... | python3 examples/quickstart/verify_token.py
import json, sys, jwt
token = json.load(sys.stdin)["access_token"]
jwks = jwt.PyJWKClient("http://localhost:8080/.well-known/jwks.json")
key = jwks.get_signing_key_from_jwt(token)
claims = jwt.decode(token, key, algorithms=["ES256", "RS256", "EdDSA"],
                    audience="https://api.example.com/orders", issuer="http://localhost:8080")
print(json.dumps(claims, indent=2))
