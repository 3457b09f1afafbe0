"""Pieces shared by the server, the vault and the edge agent."""
