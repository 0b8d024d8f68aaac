"""Warm interpreters: fork servers and spares that start a call without starting an interpreter."""
