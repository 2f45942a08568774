"""Command-line client for employers: keys on a PKCS#11 token or in a file, CSRs, login."""
