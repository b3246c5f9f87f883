"""Errors a user can act on. The CLI prints their message as one line, never a traceback."""

from models.errors import InvalidInput, MotionControlError

__all__ = ["MotionControlError", "InvalidInput", "InvalidSettings", "ServiceUnavailable",
           "StoreError", "ObjectNotFound", "ChecksumMismatch"]


class InvalidSettings(MotionControlError):
    """A setting has a value the platform cannot use; the message names the MC_* variable."""


class ServiceUnavailable(MotionControlError):
    """A service (MLflow, Prefect, S3, Triton) is down or unreachable."""


class StoreError(MotionControlError):
    """The object store could not complete an operation."""


class ObjectNotFound(StoreError, KeyError):
    """No object under the key."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "object not found"


class ChecksumMismatch(StoreError):
    """The bytes read do not match the checksum recorded when the object was written."""
