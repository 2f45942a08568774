"""Employers: registration of a company and its administrator, mobile confirmation."""
