"""Errors with messages a user can act on. Defined here, at the bottom layer, so model code
can raise them; `flows.errors` builds the orchestration errors on the same base, and the CLI
prints any of them as one line instead of a traceback."""


class MotionControlError(Exception):
    """Base of every error whose message tells the user what is wrong and what to do."""


class InvalidInput(MotionControlError, ValueError):
    """Input data (a video, an image, keypoints, a prompt) that cannot be used as given."""
