"""Helpers shared by the server's domain services."""
