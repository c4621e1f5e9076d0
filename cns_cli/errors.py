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


class EnvironmentProblem(CnsError):
    """The operating system refused a file operation for a reason outside cns (read-only disk, disk full, no
    permission, a path too long): the fix is the user's, so exit 2, not an internal error."""


# errno name -> (what happened, what to do). Names, not numbers: EDQUOT is missing on some platforms.
_OS_FIXES = {
    "EROFS": ("the file system is read-only", "write to a folder on a writable disk (another --out, --bank or "
              "working folder)"),
    "EACCES": ("permission denied", "use a folder you may write to, or fix its permissions"),
    "EPERM": ("operation not permitted", "use a folder you may write to, or fix its permissions"),
    "ENOSPC": ("no space left on the disk", "free some space and run the command again"),
    "EDQUOT": ("disk quota exceeded", "free some space within your quota and run the command again"),
    "ENAMETOOLONG": ("the name is too long", "choose a shorter path"),
    "ENOTDIR": ("a part of the path is a file, not a folder", "choose another path"),
    "EISDIR": ("it is a folder where a file was expected", "choose another path"),
    "ELOOP": ("too many symbolic links (a link loop?)", "fix the link or choose another path"),
    "EXDEV": ("it would move a file across disks", "keep the output on the same disk as its parent folder"),
}


def from_os_error(e: BaseException | None) -> EnvironmentProblem | None:
    """The one-line error of an OSError the environment caused (`_OS_FIXES`), found on `e` or on the exceptions it
    was raised from (`raise ... from e` in a library); None for anything else, which stays an internal error."""
    import errno
    import os

    fixes = {getattr(errno, name): fix for name, fix in _OS_FIXES.items() if hasattr(errno, name)}
    while e is not None:
        code = e.errno if isinstance(e, OSError) else _rust_os_error(e)
        if code in fixes:
            what, fix = fixes[code]
            paths = [os.fsdecode(p) for p in (getattr(e, "filename", None), getattr(e, "filename2", None)) if p]
            where = " -> ".join(paths) if paths else "a file it was writing (the library did not say which)"
            return EnvironmentProblem(f"cannot use {where}: {what}; {fix}")
        e = e.__cause__
    return None


def _rust_os_error(e: BaseException) -> int | None:
    """The errno of an I/O error that a Rust extension reports in its own exception type, such as safetensors'
    SafetensorError from diffusers' save_pretrained on a full disk: Rust's io::Error ends its text with
    "(os error N)"."""
    import re

    m = re.search(r"\(os error (\d+)\)", str(e))
    return int(m.group(1)) if m else None
