"""Curation on Ray Data: face crop, dedup, cleaning, balance, split, augment, validation."""
