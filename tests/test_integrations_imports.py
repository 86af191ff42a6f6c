"""The framework adapters cost nothing until named: importing the package (or its integrations
package) imports no framework, and an adapter whose framework is missing says which extra to install."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

#: adapter module -> (the framework's top-level module, the extra that installs it)
ADAPTERS = {
    "langchain": ("langchain_core", "langchain"),
    "llama_index": ("llama_index", "llama-index"),
    "haystack": ("haystack", "haystack"),
    "chroma": ("chromadb", "chroma"),
    "lancedb": ("lancedb", "lancedb"),
    "qdrant": ("qdrant_client", "qdrant"),
}


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )


def test_the_package_imports_no_framework():
    frameworks = sorted(module for module, _ in ADAPTERS.values())
    done = run(
        f"""
        import sys
        import fastembed_native, fastembed_native.integrations
        loaded = [m for m in {frameworks!r} if m in sys.modules]
        assert loaded == [], loaded
        """
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("adapter", sorted(ADAPTERS))
def test_a_missing_framework_names_its_extra(adapter: str):
    framework, extra = ADAPTERS[adapter]
    done = run(
        f"""
        import sys
        sys.modules[{framework!r}] = None  # as if it were not installed
        try:
            import fastembed_native.integrations.{adapter}
        except ImportError as exc:
            print(exc)
        else:
            raise SystemExit("imported without its framework")
        """
    )
    assert done.returncode == 0, done.stderr
    assert f"pip install 'fastembed-native[{extra}]'" in done.stdout
