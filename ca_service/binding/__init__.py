"""External trust anchors (seal CA, tax CA), the tax CAs' CRLs, and tax-certificate binding."""
