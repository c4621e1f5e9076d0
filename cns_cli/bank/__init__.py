"""Read, write and verify `.cnsbank` directories (format/SPEC.md).

Imports only the standard library, numpy, pydantic and safetensors.numpy — never torch or diffusers — so
`cns inspect`, `cns log` and `cns verify` start in milliseconds; tests/bank enforce this.
"""

from .models import FORMAT_VERSION, BaseModelPointer, Basis, Concept, ObjectRef, Operation, Revision
from .store import Bank, Transaction

__all__ = ["FORMAT_VERSION", "Bank", "BaseModelPointer", "Basis", "Concept", "ObjectRef", "Operation", "Revision", "Transaction"]
