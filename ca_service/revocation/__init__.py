"""Revocation, CRL publication and the OCSP responder; revocation by officers and employers
from the web (``portal_views``) and the JSON API (``ca_service.api.revocation``)."""
