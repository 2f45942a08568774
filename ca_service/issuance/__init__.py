"""Applications with sealed documents, officer review, issuance and delivery."""
