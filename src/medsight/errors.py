"""Errors that carry a message a user can act on (what failed, where, what to do)."""


class MedsightError(Exception):
    """Base class: the CLI prints these as one clear line instead of a traceback."""


class DataError(MedsightError):
    """The data given cannot be used as it is (missing folder, bad CSV, unknown class...)."""


class UnreadableImageError(DataError):
    """One image file cannot be decoded; the caller skips it and reports the path."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason

    def __reduce__(self):  # picklable, so worker processes can report it
        return type(self), (self.path, self.reason)


class LeakageError(DataError):
    """A patient or an identical image appears in more than one split."""


class DownloadError(MedsightError):
    """A public dataset could not be fetched or failed its checksum."""


class ConfigError(MedsightError):
    """A recipe or an override is invalid."""


class TrainingError(MedsightError):
    """A training ran but gave no usable model (its outputs became NaN, say)."""
