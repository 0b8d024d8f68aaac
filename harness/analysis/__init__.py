"""Figures from samples: statistics and the versioned result files."""
