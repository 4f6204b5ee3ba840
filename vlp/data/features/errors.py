"""What can go wrong with region features, as errors that name the file and image id."""

from __future__ import annotations

from vlp.errors import VLPError


class StoreError(VLPError):
    """A store or source file that cannot be used: missing, truncated, corrupt, wrong kind."""


class RecordError(VLPError, ValueError):
    """One image's record is malformed: wrong dims, NaN/inf, boxes outside the image."""


class MissingImageError(VLPError, KeyError):
    """An image id that the store does not hold."""

    def __init__(self, image_id, path, detail: str = ""):
        self.image_id = image_id
        self.path = str(path)
        extra = f" ({detail})" if detail else ""
        super().__init__(f"image id {image_id!r} is not in the feature store {self.path}{extra}")

    # KeyError's own __str__ quotes its argument; show the sentence as written.
    def __str__(self) -> str:
        return self.args[0]
