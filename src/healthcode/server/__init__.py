"""The platform gRPC server: auth, residents, codes, verification, checkpoints, admin."""
