"""Small environments with the gymnasium API (no gymnasium import needed)."""
