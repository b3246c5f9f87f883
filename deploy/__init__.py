"""Deploy: canary controller, release commands, Kubernetes job manifests."""
