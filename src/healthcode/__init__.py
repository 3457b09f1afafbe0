"""Health code (健康码) platform: gRPC server, privacy vault and checkpoint edge agent."""

__version__ = "0.1.0"

__all__ = ["__version__"]
