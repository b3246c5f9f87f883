"""Model math of MotionControl: pure PyTorch/numpy, no Prefect, MLflow, MinIO or Triton."""
