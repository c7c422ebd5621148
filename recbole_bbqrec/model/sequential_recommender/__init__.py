"""Generative sequential recommenders: BBQRec and TIGER (same generator, other IDs)."""
