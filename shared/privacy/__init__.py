"""Differential-privacy accounting shared by clients (budget checks) and the server (reports)."""
