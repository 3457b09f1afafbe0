"""Admin domain of the platform server."""
