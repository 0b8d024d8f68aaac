"""Interpreted functions (node, python3, php) in child processes the platform confines."""
