"""The CA hierarchy (root, issuing CA, OCSP responder) and the public repository."""
