"""JSON API v1 under ``/api/v1``, described by ``/api/v1/openapi.json``.

A thin layer over the same services as the web UI: handlers parse JSON, check the bearer
token's role and call one service. Errors are JSON (``ca_service.errors_views`` answers JSON for
every path under ``/api/``).
"""
