"""External trust anchors (seal CA, tax CA) and, next, tax-certificate binding."""
