"""How many uploads the service holds at once (MAX_ACTIVE_UPLOADS): the next one is shed."""

from __future__ import annotations

# What a shed upload is told to wait before it tries again (the Retry-After header).
UPLOAD_RETRY_AFTER_S = 1


class UploadSlots:
    """A counter of uploads in progress; one event loop, so no lock is needed."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.in_use = 0

    def acquire(self) -> bool:
        """Take a slot; False (take nothing) when all are in use."""
        if self.in_use >= self.capacity:
            return False
        self.in_use += 1
        return True

    def release(self) -> None:
        self.in_use -= 1
