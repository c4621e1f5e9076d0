"""The revision file of a `.cnsbank`, as pydantic models (format/SPEC.md is the normative text).

A revision is a complete snapshot: the base-model pointer, the bank-wide basis, caches and every concept
with references to its immutable, content-addressed objects. The JSON Schema in
format/schema/revision.schema.json is generated from these models (`python -m cns_cli.bank.schema`) and a
test keeps the two identical.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .names import CLASS_WORD_PATTERN, NAME_PATTERN

FORMAT_MAJOR = 1
# 1.1: history is the parent chain from HEAD (numbers may skip), and `restore`.
# 1.2: the base's model family, prediction type, single-file config folder and per-encoder embedding widths.
# 1.3: a concept may have its own basis (slice.start null; the delta object holds the tensor `basis`).
# 1.4: operation kind `relocate` (the base pointer re-pointed at the same model, found elsewhere).
FORMAT_MINOR = 4
FORMAT_VERSION = f"{FORMAT_MAJOR}.{FORMAT_MINOR}"

SHA256_PATTERN = r"^[0-9a-f]{64}$"
OBJECT_PATH_PATTERN = r"^objects/[0-9a-f]{64}\.safetensors$"
# Module path of a cross-attention K/V projection inside the UNet, e.g.
# "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k".
LAYER_PATTERN = r"^[A-Za-z0-9_.]+\.attn2\.to_[kv]$"

Layer = Annotated[str, Field(pattern=LAYER_PATTERN)]
# Model families (format 1.2): SD 1.x, SD 2.x (epsilon or v-prediction) and SDXL. A base without one is SD 1.x.
FAMILIES = ("sd1", "sd2", "sdxl")
Family = Literal["sd1", "sd2", "sdxl"]
# Base-pointer fields added in 1.2: written only when set, so that a 1.0 / 1.1 revision round-trips byte for byte.
BASE_FIELDS_1_2 = ("family", "prediction_type", "embedding_dims", "config")
Count = Annotated[int, Field(ge=0)]


class _Strict(BaseModel):
    # Unknown fields are errors (a typo must not be ignored silently). Files of a newer *minor* version are
    # pruned of unknown fields before validation instead; see revision_io.parse_revision.
    model_config = ConfigDict(extra="forbid", frozen=True)


class ObjectRef(_Strict):
    """A content-addressed object: objects/<sha256>.safetensors of exactly `size` bytes."""

    path: str = Field(pattern=OBJECT_PATH_PATTERN, description="Relative POSIX path inside the bank.")
    sha256: str = Field(pattern=SHA256_PATTERN, description="Lower-case hex sha256 of the file's bytes.")
    size: Count = Field(description="File size in bytes.")

    @model_validator(mode="after")
    def _path_matches_digest(self) -> ObjectRef:
        if self.path != f"objects/{self.sha256}.safetensors":
            raise ValueError(f"object path {self.path!r} does not match its sha256 {self.sha256}")
        return self


class Fingerprint(_Strict):
    """Digest of the base-model tensors the bank depends on (every attn2.to_k/to_v weight)."""

    scheme: Literal["kv-sha256-v1"] = "kv-sha256-v1"
    digest: str = Field(pattern=SHA256_PATTERN)


class BaseModelPointer(_Strict):
    """Where the untouched base model lives. The bank never writes to it."""

    kind: Literal["hub", "local-dir", "single-file", "builtin"]
    location: str = Field(min_length=1, description="Hub id, a path on the user's machine, or a builtin name.")
    revision: str | None = Field(default=None, description="Hub revision (commit or branch); null for paths.")
    fingerprint: Fingerprint
    text_dim: int = Field(ge=1, description="Width of the text states fed to to_k/to_v (768 for SD 1.5).")
    # Output rows of every cross-attention K/V projection, keyed by module path; neuron indices of a
    # concept MUST be < the layer's row count.
    kv_layers: dict[Layer, Annotated[int, Field(ge=1)]] = Field(min_length=1)
    vocab_size: int = Field(ge=1, description="Tokenizer size of the base, before any concept token.")
    # Format 1.2 (all optional; absent = the 1.1 meaning: SD 1.x, epsilon, one text encoder of width text_dim).
    family: Family | None = Field(default=None, description="Model family (1.2): sd1, sd2 or sdxl; absent = sd1.")
    prediction_type: Literal["epsilon", "v_prediction"] | None = Field(
        default=None, description="What the UNet predicts (1.2), from the scheduler config; absent = epsilon.")
    embedding_dims: list[Annotated[int, Field(ge=1)]] | None = Field(
        default=None, min_length=1, max_length=2,
        description="Input-embedding width of each text encoder in pipeline order (1.2); absent = [text_dim].")
    config: str | None = Field(default=None, min_length=1, description=(
        "single-file bases (1.2): the diffusers folder whose configs and tokenizers load the checkpoint offline."))

    @model_validator(mode="after")
    def _family_fits(self) -> BaseModelPointer:
        if self.config is not None and self.kind != "single-file":
            raise ValueError("config is set only for single-file bases")
        if self.embedding_dims is not None and len(self.embedding_dims) != (2 if self.family == "sdxl" else 1):
            raise ValueError(f"embedding_dims has {len(self.embedding_dims)} widths; family "
                             f"{self.family or 'sd1'} has {2 if self.family == 'sdxl' else 1} text encoder(s)")
        return self

    @property
    def family_name(self) -> str:
        """The family, with the 1.1 default: sd1."""
        return self.family or "sd1"

    @property
    def embedding_widths(self) -> list[int]:
        """Width of the token embedding in each text encoder (one row per encoder per concept vector)."""
        return list(self.embedding_dims) if self.embedding_dims else [self.text_dim]


class Basis(_Strict):
    """The bank-wide orthogonal basis Q (text_dim x text_dim) that concept slices are cut from."""

    object: ObjectRef
    dim: int = Field(ge=1)
    seed: int = Field(ge=0)
    method: Literal["qr-gaussian-v1"] = "qr-gaussian-v1"


class Slice(_Strict):
    """Columns [start, start + rank) of the basis: B_t = Q[:, start:start+rank]. Format 1.3: `start` null means
    the concept has its own basis, the tensor `basis` [dim, rank] of its delta object (a concept-aware slice)."""

    start: Count | None
    rank: int = Field(ge=1)

    @property
    def own(self) -> bool:
        return self.start is None


class Neurons(_Strict):
    """How many rows the concept owns per layer; the indices themselves are in the delta object."""

    total: Count
    per_layer: dict[Layer, Count]

    @model_validator(mode="after")
    def _total_is_sum(self) -> Neurons:
        if sum(self.per_layer.values()) != self.total:
            raise ValueError(f"neurons.total {self.total} != sum of per_layer {sum(self.per_layer.values())}")
        return self


Scalar = str | int | float | bool | None


class Concept(_Strict):
    token: str = Field(pattern=r"^<[^<>\s]+>$", description="The placeholder token added to the tokenizer.")
    class_word: str = Field(pattern=CLASS_WORD_PATTERN)
    learned_in: Count = Field(description="Revision number whose operation learned this concept.")
    slice: Slice
    neurons: Neurons
    delta: ObjectRef
    embedding: ObjectRef
    training: dict[str, Scalar] = Field(description="Every knob the concept was trained with.")
    stats: dict[str, Scalar] = Field(description="Measured outcomes: final loss, seconds, steps run.")


class Operation(_Strict):
    """What made this revision. `undo` restores the state of `restores`, reverting `undone`; `restore`
    (format 1.1) copies the state of revision `restores`; `relocate` (format 1.4) re-points `base` at the same model
    in another place (a moved folder or file, another config folder), checked by its fingerprint."""

    kind: Literal["init", "learn", "forget", "undo", "restore", "relocate"]
    concept: str | None = Field(default=None, pattern=NAME_PATTERN)
    undone: Count | None = None
    restores: Count | None = None
    argv: list[str] = Field(default_factory=list, description="The command line, for the log.")

    @model_validator(mode="after")
    def _fields_fit_kind(self) -> Operation:
        if (self.kind in ("learn", "forget")) != (self.concept is not None):
            raise ValueError(f"operation {self.kind!r} {'needs' if self.concept is None else 'takes no'} concept")
        if (self.kind in ("undo", "restore")) != (self.restores is not None):
            raise ValueError("restores is set exactly on undo and restore operations")
        if (self.kind == "undo") != (self.undone is not None):
            raise ValueError("undone is set exactly on undo operations")
        return self


class Caches(_Strict):
    """Derived data kept to save time; a reader MAY recompute and MUST NOT trust it over the base."""

    general_neurons: ObjectRef | None = None


class Revision(_Strict):
    format_version: str = Field(pattern=r"^[0-9]+\.[0-9]+$")
    writer: str = Field(min_length=1, description='The writing program and version, e.g. "cns 0.1.0".')
    number: Count
    parent: Count | None
    created: str = Field(
        pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?Z$", description="UTC time, RFC 3339 with Z."
    )
    operation: Operation
    base: BaseModelPointer
    basis: Basis | None = Field(description="null until the first concept is learned.")
    caches: Caches = Field(default_factory=Caches)
    concepts: dict[Annotated[str, Field(pattern=NAME_PATTERN)], Concept]
    annotations: dict[str, str] = Field(default_factory=dict, description="Free text; readers ignore it.")

    @field_validator("format_version")
    @classmethod
    def _known_major(cls, v: str) -> str:
        # BankVersionError is raised by the loader before validation; this guards hand-built objects.
        if int(v.split(".")[0]) != FORMAT_MAJOR:
            raise ValueError(f"format major version {v} is not {FORMAT_MAJOR}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Revision:
        if (self.number == 0) != (self.operation.kind == "init"):
            raise ValueError("revision 0, and only revision 0, is the init revision")
        if self.number == 0 and (self.parent is not None or self.concepts or self.basis is not None):
            raise ValueError("revision 0 has parent null, no basis and no concepts")
        if self.number > 0 and (self.parent is None or self.parent >= self.number):
            raise ValueError(f"revision {self.number} must have a parent numbered below {self.number}, not {self.parent}")
        if int(self.format_version.split(".")[1]) == 0:  # every revision is read by its own format_version
            if self.number > 0 and self.parent != self.number - 1:
                raise ValueError(f"revision {self.number} (format 1.0) must have parent {self.number - 1}, not {self.parent}")
            if self.operation.kind == "restore":
                raise ValueError("restore operations need format 1.1 or later")
        if self.operation.kind == "relocate" and int(self.format_version.split(".")[1]) < 4:
            raise ValueError("relocate operations need format 1.4 or later")
        if int(self.format_version.split(".")[1]) < 2:
            for name in BASE_FIELDS_1_2:
                if getattr(self.base, name) is not None:
                    raise ValueError(f"base.{name} needs format 1.2 or later")
        if self.operation.kind == "undo" and not (self.operation.restores < self.operation.undone < self.number):
            raise ValueError("an undo must restore an older revision than the one it undoes, both before itself")
        if self.operation.kind == "restore" and not self.operation.restores < self.number:
            raise ValueError(f"a restore must copy a revision numbered below its own ({self.number})")
        if self.basis is not None and self.basis.dim != self.base.text_dim:
            raise ValueError(f"basis.dim {self.basis.dim} differs from base.text_dim {self.base.text_dim}")
        tokens = [c.token for c in self.concepts.values()]
        if len(set(tokens)) != len(tokens):
            raise ValueError("two concepts share a token")
        for name, c in self.concepts.items():
            if c.learned_in > self.number or c.learned_in == 0:
                raise ValueError(f"concept {name!r} says it was learned in revision {c.learned_in}, not before {self.number}")
            for layer in c.neurons.per_layer:
                if layer not in self.base.kv_layers:
                    raise ValueError(f"concept {name!r} names layer {layer!r} that the base does not have")
            if self.basis is None:
                raise ValueError("concepts need a basis")
            if c.slice.own and int(self.format_version.split(".")[1]) < 3:
                raise ValueError(f"concept {name!r} has its own basis (slice.start null), which needs format 1.3 or later")
            if c.slice.rank > self.basis.dim or (not c.slice.own and c.slice.start + c.slice.rank > self.basis.dim):
                raise ValueError(f"concept {name!r} slice ends past the basis dimension {self.basis.dim}")
        return self

    def objects(self) -> list[ObjectRef]:
        """Every object this revision references, basis first, in a stable order."""
        refs: list[ObjectRef] = []
        if self.basis is not None:
            refs.append(self.basis.object)
        if self.caches.general_neurons is not None:
            refs.append(self.caches.general_neurons)
        for name in sorted(self.concepts):
            refs += [self.concepts[name].delta, self.concepts[name].embedding]
        return refs




def trained_parameters(neurons: int, rank: int, token_dims: int) -> dict[str, int]:
    """What learning a concept trains, counted one way everywhere (learn's report, inspect): the coefficients
    A (neurons x rank) and the token's embedding vectors (token_dims = the sum of the encoders' widths:
    text_dim on SD 1.x / 2.x, 768 + 1280 on SDXL)."""
    return {"coefficients": neurons * rank, "token": token_dims, "total": neurons * rank + token_dims}
