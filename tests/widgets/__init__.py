"""Widget tests (Python side, no browser)."""
