"""Durable e-mail and SMS notifications (the outbox pattern)."""
