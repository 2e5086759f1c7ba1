"""Experiments that measure the papers' claims on this package's models (`python -m avfast.experiments.claims`)."""
