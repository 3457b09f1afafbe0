"""Residents domain of the platform server."""
