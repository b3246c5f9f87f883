"""Errors of the deploy layer: each message says what happened and what to do next."""

from flows.errors import MotionControlError


class ChartError(MotionControlError):
    """A chart does not render or lint with the given values."""


class ClusterError(MotionControlError):
    """The Kubernetes API refused an operation or cannot be reached."""


class TrainingJobFailed(MotionControlError):
    """The distributed training job failed (a failed condition, an evicted pod, …)."""


class PodEvicted(TrainingJobFailed):
    """A training pod was evicted by its node (memory or disk pressure, preemption)."""


class ImagePullFailed(TrainingJobFailed):
    """A training pod cannot pull its image."""


class TrainingJobTimeout(TrainingJobFailed):
    """The training job did not finish in MC_KUBE__JOB_TIMEOUT_S."""


class CanaryError(MotionControlError):
    """The canary rollout could not run (missing builder, Prometheus down, …)."""
