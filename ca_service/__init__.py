"""Employer PKI and certificate authority service."""

from ca_service.app import create_app

__all__ = ["create_app"]
