"""One small exception tree for everything `cns` reports to a user.

Every error carries a one-line message that says what happened and what to do about it. The CLI maps
classes to exit codes in one table (`EXIT_CODES`, subclass first); anything that is not a `CnsError` is
an internal error (exit 101). This module imports nothing heavy so that `cns --help` stays instant.
"""

from __future__ import annotations


class CnsError(Exception):
    """A failure we expected and can explain. `str(e)` is the whole user-facing message."""

    exit_code = 2


class UsageError(CnsError):
    """Bad command-line input: a flag value out of range, a malformed name, a missing file."""


class BankError(CnsError):
    """The bank directory cannot be used as asked."""


class BankNotFoundError(BankError):
    """There is no bank at the given path (or the directory is not a bank)."""


class BankExistsError(BankError):
    """`cns init` on a path that already holds a bank or other files."""


class BankFormatError(BankError):
    """HEAD, a revision or an object does not follow format/SPEC.md."""


class BankVersionError(BankFormatError):
    """The bank was written with a format major version this reader does not know."""


class IntegrityError(BankFormatError):
    """An object is missing or its bytes do not match its sha256 / size."""


class BankLockedError(BankError):
    """Another process holds the writer lock."""


class CommitError(BankError):
    """A write failed (disk full, permissions); the bank is unchanged at its previous revision."""


class ConceptError(CnsError):
    """A concept name that is unknown, already taken or malformed."""


class ModelError(CnsError):
    """The base model cannot be loaded (offline, wrong path, unsupported checkpoint)."""


class ModelMismatchError(ModelError):
    """The loaded base model is not the one the bank was built on (fingerprint differs)."""


class TrainingError(CnsError):
    """Training failed in a way the user can fix (diverged: lower the learning rate)."""


# Exit codes (the CLI applies them in one place, cli.main): 0 ok; 1 a check ran and found problems
# (cns verify); 2 any CnsError above (bad usage, bad input, bad bank); 101 anything unexpected.
CHECK_FAILED_EXIT = 1
INTERNAL_ERROR_EXIT = 101
