"""Errors a user can fix. `shared.cli.cli_main` turns them into one line on stderr and exit 2."""


class UserError(Exception):
    """A problem with the user's input, flags, files or data, explained in one line."""


class CheckpointError(UserError):
    """A checkpoint is missing, truncated, corrupt, or does not fit the model."""


class DataError(UserError):
    """A dataset is missing or unreadable; the message says what to place where."""
