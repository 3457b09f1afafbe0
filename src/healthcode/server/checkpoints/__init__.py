"""Checkpoints domain of the platform server."""
