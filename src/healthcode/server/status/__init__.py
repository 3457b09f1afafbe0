"""Status domain of the platform server."""
