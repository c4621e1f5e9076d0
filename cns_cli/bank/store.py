"""The bank on disk: open, read revisions and objects, and commit new revisions atomically.

Commit protocol (format/SPEC.md, "Writing"): take the writer lock, write every new object, create the new
revision file (numbered one past the highest revision on disk, never replacing a file), then replace HEAD.
HEAD is the commit point: a crash before it leaves the previous revision as HEAD and intact; leftovers
(objects nobody references, a revision outside HEAD's history) are harmless and are reported by verify.
History is the chain of `parent` links from HEAD, so numbers may skip the revisions HEAD does not descend from.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from ..about import __version__
from ..errors import (
    BankExistsError, BankFormatError, BankNotFoundError, BankVersionError, CommitError, IntegrityError,
)
from .atomic import atomic_write, create_exclusive, fsync_dir
from .lock import WriterLock, lock_is_held
from .models import FORMAT_MAJOR, FORMAT_MINOR, FORMAT_VERSION, ObjectRef, Operation, Revision
from .revision_io import HEAD_NAME, RECOVER_HINT, dump_revision, parse_head, parse_revision, revision_name

if TYPE_CHECKING:  # numpy is imported where tensors are handled, so `cns inspect`/`log` start faster
    import numpy as np

WRITER = f"cns {__version__}"


def now_utc() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def object_ref(data: bytes) -> ObjectRef:
    digest = hashlib.sha256(data).hexdigest()
    return ObjectRef(path=f"objects/{digest}.safetensors", sha256=digest, size=len(data))


def encode_object(tensors: dict[str, np.ndarray], kind: str, metadata: dict[str, str] | None = None) -> bytes:
    """safetensors bytes of an object, identical for identical content.

    safetensors sorts tensors by name but writes a multi-entry `__metadata__` map in a random order, so all
    of cns's metadata goes into ONE entry, "cns": canonical JSON of {"kind": kind, **metadata}.
    """
    import numpy as np
    from safetensors.numpy import save

    meta = {"kind": kind, **(metadata or {})}
    blob = json.dumps(meta, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    # reshape: np.ascontiguousarray turns a 0-d array into shape [1]; keep the shape we were given
    return save({k: np.ascontiguousarray(v).reshape(np.shape(v)) for k, v in tensors.items()}, metadata={"cns": blob})


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class LostRevision:
    """A revision of HEAD's history whose file is missing or invalid (`why`), as `history_with_gaps` shows it."""

    number: int
    why: str


class BrokenHeadError(BankFormatError):
    """HEAD cannot be used. `why` says what is wrong with it; the message adds the restore that recovers."""

    def __init__(self, why: str, hint: str):
        super().__init__(f"{why}; {hint}")
        self.why = why


def is_bank_folder(root: Path) -> bool:
    """A bank folder: `revisions/` holding at least one revision file. HEAD is not required, so a bank whose HEAD
    was lost is still recognised (and `cns restore N` can bring it back); a folder of other things is not."""
    revisions = root / "revisions"
    if not root.is_dir() or not revisions.is_dir():
        return False
    if (root / HEAD_NAME).is_file():
        return True
    return any(re.fullmatch(r"[0-9]{6,}\.json", p.name) for p in revisions.iterdir())


def created_meanwhile(root: Path) -> str:
    """The message for a bank that another cns command created (and is still writing) while this one prepared."""
    return (f"another cns command has just created a bank at {root} and is working on it (it holds the bank's "
            "lock); wait for it to finish, then run this command again: it will use that bank")


class Bank:
    """A `.cnsbank` directory. Reading needs no lock; writing goes through `transaction()`.

    `open` checks only that the folder is a bank; HEAD and revisions are read (and checked, with messages
    that name the file) when used, so `cns verify` and `cns restore` work on a bank whose HEAD is damaged."""

    def __init__(self, root: Path):
        self.root = root

    # -- opening ------------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike) -> Bank:
        """The bank at `path`. A folder is a bank when it has `revisions/` with at least one revision file: HEAD
        may be missing or damaged (commands that read it then say how `cns restore` recovers it)."""
        root = Path(path)
        if not root.exists():
            raise BankNotFoundError(f"no bank at {root}; create one with `cns init --base MODEL` or pass --bank PATH")
        if not is_bank_folder(root):
            raise BankNotFoundError(
                f"{root} is not a cns bank (no HEAD or revisions/); pass the bank folder with --bank PATH"
            )
        return cls(root)

    @staticmethod
    def check_creatable(root: Path) -> None:
        """Raise BankExistsError unless a new bank may be made at `root` (absent or an empty folder). Never
        advises deleting anything: the folder may hold the user's data."""
        if root.exists() and not root.is_dir():
            raise BankExistsError(f"--bank {root} is a file, not a folder; pass a new folder for the bank")
        if root.exists() and any(root.iterdir()):
            if is_bank_folder(root):
                raise BankExistsError(f"{root} already holds a bank; use it, or pass another --bank path for a new one")
            raise BankExistsError(f"{root} already holds other files and is not a cns bank; pass a new or empty "
                                  "folder with --bank PATH")

    @classmethod
    def create(cls, path: str | os.PathLike, base, argv: list[str] | None = None, annotations=None) -> Bank:
        """Create a bank holding revision 0 (no concepts). Built in a sibling temp folder and renamed into
        place, so a crash never leaves a half-made bank behind."""
        root = Path(path)
        try:
            cls.check_creatable(root)
        except BankExistsError:
            if is_bank_folder(root) and lock_is_held(root):
                raise BankExistsError(created_meanwhile(root)) from None
            raise
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = root.parent / f".{root.name}.tmp-{secrets.token_hex(4)}"
        try:
            (tmp / "revisions").mkdir(parents=True)
            (tmp / "objects").mkdir()
            rev = Revision(
                format_version=FORMAT_VERSION, writer=WRITER, number=0, parent=None, created=now_utc(),
                operation=Operation(kind="init", argv=argv or []), base=base, basis=None, concepts={},
                annotations=annotations or {},
            )
            atomic_write(tmp / revision_name(0), dump_revision(rev))
            atomic_write(tmp / HEAD_NAME, b"0\n")
            if root.exists():
                root.rmdir()  # empty (checked above); rename needs the name free on every platform
            os.rename(tmp, root)
            fsync_dir(root.parent)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if is_bank_folder(root):  # another process made a bank there after check_creatable
                raise BankExistsError(created_meanwhile(root)) from None
            raise CommitError(f"could not create the bank at {root}: {e.strerror or e}") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return cls(root)

    # -- reading ------------------------------------------------------------------------------------

    def head_number(self) -> int:
        """HEAD's revision number, or BrokenHeadError (missing, unreadable, malformed, naming a lost file) whose
        message ends with the restore that recovers the bank."""
        path = self.root / HEAD_NAME
        if not path.exists():
            raise BrokenHeadError("HEAD is missing", self.recover_hint())
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise BrokenHeadError(f"cannot read {path}: {e.strerror}", self.recover_hint()) from None
        try:
            n = parse_head(raw)
        except BankFormatError as e:
            raise BrokenHeadError(str(e).replace(f"; {RECOVER_HINT}", ""), self.recover_hint()) from None
        if not (self.root / revision_name(n)).is_file():
            raise BrokenHeadError(f"HEAD names revision {n} but {revision_name(n)} is missing", self.recover_hint())
        return n

    def recover_hint(self) -> str:
        """What brings a bank with a broken HEAD back: a restore of its newest intact revision."""
        latest = self.latest_intact()
        if latest is None:
            return "no revision is intact; restore the damaged files from a backup (`cns verify` lists them)"
        return f"`cns restore N` makes a new HEAD from revision N (latest intact: {latest}; `cns verify` lists all)"

    def latest_intact(self, below: int | None = None, unlike: Revision | None = None) -> int | None:
        """The newest revision (numbered below `below`, and holding other concepts or basis than `unlike`, if
        given) whose file is valid and whose basis and concept objects are intact (what a restore needs; a
        damaged cache is dropped by the restore). Newest first, so usually only one revision is hashed."""
        for n in reversed([n for n in self.revision_numbers() if below is None or n < below]):
            try:
                rev = self.revision(n)
            except BankFormatError:
                continue
            if unlike is not None and (rev.concepts, rev.basis) == (unlike.concepts, unlike.basis):
                continue
            needed = [ref for ref in rev.objects() if ref != rev.caches.general_neurons]
            if all(self.object_problem(ref) is None for ref in needed):
                return n
        return None

    def highest_number_used(self) -> int:
        """The highest revision number the bank has used: its revision files and HEAD, even a HEAD whose file
        was lost. (Every number a revision records, its parent, what it undid or restored, where its concepts
        were learned, is at most its own, so the files cover those.) A new revision is numbered past it, so no
        number ever names two states: images named `r2-…` and exports stamped with revision 2 keep pointing
        at what revision 2 was. -1 when there is no number at all."""
        used = self.revision_numbers()
        try:
            used.append(parse_head((self.root / HEAD_NAME).read_bytes()))
        except (OSError, BankFormatError):
            pass  # no readable HEAD number to respect
        return max(used, default=-1)

    def revision_numbers(self) -> list[int]:
        """The numbers of every revision file on disk (in or out of HEAD's history), ascending."""
        numbers = []
        for path in (self.root / "revisions").iterdir():
            m = re.fullmatch(r"([0-9]{6,})\.json", path.name)
            if m and revision_name(int(m.group(1))) == f"revisions/{path.name}":  # canonical names only
                numbers.append(int(m.group(1)))
        return sorted(numbers)

    def revision(self, number: int) -> Revision:
        name = revision_name(number)
        try:
            raw = (self.root / name).read_bytes()
        except FileNotFoundError:
            raise BankFormatError(f"{name} is missing from the bank at {self.root}; run `cns verify`") from None
        rev = parse_revision(raw, name)
        if rev.number != number:
            raise BankFormatError(f"{name} says it is revision {rev.number}; the file was renamed or copied")
        return rev

    def head(self) -> Revision:
        return self.revision(self.head_number())

    def history_with_gaps(self) -> Iterator[Revision | LostRevision]:
        """HEAD's history like `history`, for showing it: a revision file of the chain that is missing or invalid
        is yielded as a LostRevision, and the listing goes on with the newest valid revision file below it (the
        lost file held the next link; numbers only decrease along the chain, and the nearest file below is the
        usual parent). A broken HEAD still raises: then no revision is the current one."""
        rev = self.head()
        yield rev
        number = rev.parent
        while number is not None:
            try:
                rev = self.revision(number)
            except BankVersionError:
                raise
            except BankFormatError as e:
                yield LostRevision(number, str(e).split("; ")[0])  # the message without its advice
                number = max((n for n in self.revision_numbers() if n < number), default=None)
                continue
            yield rev
            number = rev.parent

    def history(self) -> Iterator[Revision]:
        """HEAD's history, newest first: HEAD, its parent, that one's parent ... down to revision 0. Revision
        files not on this chain (an interrupted write, HEAD moved by hand) are not part of it."""
        rev = self.head()
        yield rev
        while rev.parent is not None:
            rev = self.revision(rev.parent)  # parent < number (validated), so this ends at 0
            yield rev

    def object_path(self, ref: ObjectRef) -> Path:
        return self.root / ref.path  # ref.path is validated to be objects/<sha256>.safetensors

    def object_problem(self, ref: ObjectRef) -> str | None:
        """Why the object's file is unusable ("missing", a size or sha256 mismatch), or None if its bytes
        are exactly the ones `ref` names. Streams the file: objects can be large."""
        path = self.object_path(ref)
        if not path.is_file():
            return "missing"
        h, size = hashlib.sha256(), 0
        try:
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
                    size += len(chunk)
        except OSError as e:
            return f"unreadable ({e.strerror or e})"
        if size != ref.size:
            return f"size {size} bytes, the revision says {ref.size}"
        if h.hexdigest() != ref.sha256:
            return f"sha256 mismatch (content is {h.hexdigest()[:12]}…): the file is corrupt"
        return None

    def object_quick_problem(self, ref: ObjectRef) -> str | None:
        """The cheap part of `object_problem`: "missing" or a size mismatch, from one stat (no hashing), for
        commands that only show a bank (inspect, log) and should still not call a damaged one healthy."""
        try:
            size = self.object_path(ref).stat().st_size
        except FileNotFoundError:
            return "missing"
        except OSError as e:
            return f"unreadable ({e.strerror or e})"
        return None if size == ref.size else f"size {size} bytes, the revision says {ref.size}"

    def read_object_bytes(self, ref: ObjectRef) -> bytes:
        try:
            data = self.object_path(ref).read_bytes()
        except FileNotFoundError:
            raise IntegrityError(
                f"object {ref.path} is missing; restore the file from a backup (`cns verify` lists every damaged file)"
            ) from None
        if len(data) != ref.size or hashlib.sha256(data).hexdigest() != ref.sha256:
            raise IntegrityError(
                f"object {ref.path} is corrupt (its bytes do not match its sha256); restore the file from a backup "
                "(`cns verify` lists every damaged file)"
            )
        return data

    def read_object(self, ref: ObjectRef) -> dict[str, np.ndarray]:
        """The tensors of a verified object (never unpickles: safetensors only)."""
        from safetensors.numpy import load

        data = self.read_object_bytes(ref)
        try:
            return load(data)
        except Exception as e:  # safetensors raises its own error type for malformed headers
            raise IntegrityError(f"object {ref.path} is not a valid safetensors file ({e})") from None

    def read_object_metadata(self, ref: ObjectRef) -> dict[str, str]:
        """The cns metadata of a verified object: the JSON map stored in its safetensors `__metadata__`
        entry "cns" (parsed from the header with the standard library)."""
        import struct

        data = self.read_object_bytes(ref)
        try:
            (n,) = struct.unpack("<Q", data[:8])
            meta = json.loads(json.loads(data[8 : 8 + n])["__metadata__"]["cns"])
            if not isinstance(meta, dict):
                raise ValueError
        except (struct.error, ValueError, KeyError, TypeError):
            raise IntegrityError(f"object {ref.path} has no valid cns metadata in its safetensors header") from None
        return {str(k): str(v) for k, v in meta.items()}

    # -- writing ------------------------------------------------------------------------------------

    @contextmanager
    def transaction(self, allow_broken_head: bool = False) -> Iterator[Transaction]:
        """Take the writer lock. With allow_broken_head (only `restore` uses it), an unreadable HEAD gives
        `tx.parent` None and `tx.head_error` its message instead of failing; the caller then sets `tx.parent`."""
        with WriterLock(self.root) as lock:
            yield Transaction(self, lock.stale_pid, allow_broken_head)


def check_writable(rev: Revision) -> None:
    """A writer MUST NOT add to a bank whose parent revision has a newer format than its own."""
    major, minor = (int(p) for p in rev.format_version.split("."))
    if (major, minor) > (FORMAT_MAJOR, FORMAT_MINOR):
        raise BankFormatError(
            f"this bank was written by a newer cns (format {rev.format_version}); "
            "upgrade cns (pip install -U cns-cli) to change it"
        )


class Transaction:
    """Holds the writer lock. `put` objects, then `commit` exactly once; leaving without commit writes
    nothing that a reader would see. `number` is the number the commit will get: one past the highest
    revision file on disk, so no revision file is ever replaced (SPEC "Writing")."""

    def __init__(self, bank: Bank, stale_pid: int | None, allow_broken_head: bool = False):
        self.bank = bank
        self.stale_pid = stale_pid
        self.head_error: str | None = None
        self.parent: Revision | None
        try:
            self.parent = bank.head()  # re-read under the lock: another writer may have committed meanwhile
        except BankVersionError:
            raise
        except BankFormatError as e:  # HEAD, or the revision file it names, is broken
            if not allow_broken_head:
                raise
            self.parent, self.head_error = None, e.why if isinstance(e, BrokenHeadError) else str(e)
        if self.parent is not None:
            check_writable(self.parent)
        self.number = max(bank.highest_number_used(), self.parent.number if self.parent else -1) + 1
        self.committed: Revision | None = None

    def put(self, tensors: dict[str, np.ndarray], kind: str, metadata: dict[str, str] | None = None) -> ObjectRef:
        data = encode_object(tensors, kind, metadata)
        ref = object_ref(data)
        path = self.bank.object_path(ref)
        # Content-addressed: an existing file is kept only if its bytes really hash to its name; a corrupt
        # one is replaced (atomically, so readers never see it half-written).
        if not (path.is_file() and path.stat().st_size == ref.size and _sha256_file(path) == ref.sha256):
            (self.bank.root / "objects").mkdir(exist_ok=True)
            atomic_write(path, data)
        return ref

    def commit(self, operation: Operation, **changes) -> Revision:
        """Create revision `self.number` = the parent with `changes` (concepts=, basis=, caches=), its
        `parent` the parent's number, and move HEAD to it."""
        if self.committed is not None:
            raise RuntimeError("a transaction commits once")
        if self.parent is None:
            raise RuntimeError("a transaction on a broken HEAD needs tx.parent set before commit")
        check_writable(self.parent)
        number = self.number
        fields = self.parent.model_dump() | {
            "format_version": FORMAT_VERSION, "writer": WRITER, "number": number, "parent": self.parent.number,
            "created": now_utc(), "operation": operation,
        }
        fields.update(changes)
        try:
            rev = Revision.model_validate(fields)
        except ValidationError as e:  # a bug in the caller, but never a half-written bank
            raise CommitError(f"internal: refusing to commit an invalid revision ({e.errors()[0]['msg']})") from None
        carried = {ref.path for ref in self.parent.objects()}
        for ref in rev.objects():
            if not self.bank.object_path(ref).is_file():
                if ref.path in carried:  # damage on disk, not a bug: say which file and how to find the rest
                    raise CommitError(f"object {ref.path} of revision {self.parent.number} is missing, so nothing was "
                                      "committed; restore the file from a backup (`cns verify` lists every damaged file)")
                raise CommitError(f"internal: object {ref.path} was not written before the commit")
        # Created exclusively: an existing revision file (history, or a leftover of an interrupted writer
        # that `cns restore` may still want) is never replaced.
        create_exclusive(self.bank.root / revision_name(number), dump_revision(rev))
        atomic_write(self.bank.root / HEAD_NAME, f"{number}\n".encode())
        self.committed = rev
        return rev
