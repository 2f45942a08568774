"""Hash-chained audit log with HSM-signed checkpoints."""
