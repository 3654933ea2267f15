"""Aggregation of member fingerprints into album, artist and playlist aggregates."""
