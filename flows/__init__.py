"""Prefect flows and the helpers every upper layer shares: settings, object store, MLflow."""
