"""Employer portal: the dashboard an employer administrator lands on after signing in."""
