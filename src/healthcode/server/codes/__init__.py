"""Codes domain of the platform server."""
