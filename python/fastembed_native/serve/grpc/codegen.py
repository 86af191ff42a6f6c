"""Regenerates the committed Python stubs from the ``.proto`` files next to this module.

The stubs (``*_pb2.py``, ``*_pb2.pyi``, ``*_pb2_grpc.py``) are committed, so an install needs no
protoc; ``tests/test_serve_grpc.py`` regenerates them into a temporary folder and compares them byte
for byte. After editing a ``.proto``: ``python -m fastembed_native.serve.grpc.codegen`` (needs
grpcio-tools, in the ``[test]`` extra).

The protos are compiled with the folder holding the ``fastembed_native`` package as the include root,
so each generated module imports its sibling by its full package path.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: The folder that holds the ``fastembed_native`` package (``python/`` in the repository).
PACKAGE_ROOT = HERE.parents[2]
PROTOS = ("fastembed.proto", "tei.proto")


def generated_names() -> list[str]:
    """File names of the generated stubs, for every proto."""
    stems = [Path(p).stem for p in PROTOS]
    return [f"{s}{suffix}" for s in stems for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")]


def generate(out_root: Path = PACKAGE_ROOT) -> Path:
    """Run protoc (grpcio-tools) on the protos; the stubs go to ``out_root``/fastembed_native/serve/grpc.

    Returns:
        The folder the stubs were written to.

    Raises:
        ModuleNotFoundError: grpcio-tools is not installed.
        RuntimeError: protoc failed (its messages are on stderr).
    """
    from grpc_tools import protoc

    relative = HERE.relative_to(PACKAGE_ROOT)
    out = out_root / relative
    out.mkdir(parents=True, exist_ok=True)
    # protoc's own include folder holds the well-known types (descriptor.proto, ...).
    well_known = Path(protoc.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PACKAGE_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        # Absolute paths under an include root: protoc names each file by its path below that root.
        *(str(HERE / p) for p in PROTOS),
    ]
    code = protoc.main(args)
    if code != 0:
        raise RuntimeError(f"protoc failed with status {code} on {', '.join(PROTOS)}")
    return out


if __name__ == "__main__":
    written = generate()
    print(f"stubs written to {written}: {', '.join(generated_names())}", file=sys.stderr)
