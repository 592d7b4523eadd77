"""Synthetic market generator."""
