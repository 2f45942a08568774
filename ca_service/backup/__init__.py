"""Backup and restore of the database, the document store and the secret key (the HSM is
backed up with its own tools)."""
