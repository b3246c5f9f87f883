"""Serving: Triton model repository builder, Python-backend models, local server, gRPC client."""
