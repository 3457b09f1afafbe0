"""Verification domain of the platform server."""
