"""Deployed functions: where they are stored, the languages, and the toolchains that compile them."""
