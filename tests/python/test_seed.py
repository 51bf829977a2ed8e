"""The seed document's samples, as written, run as real programs.

Each sample's files are copied verbatim from the seed (the extension
fragments of the singleton sample only gain the imports they need, and the
torch sample's host fragment is wrapped in a main()), then run with
``python main.py`` in a fresh directory, like a user would.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import REPO, requires_numpy1, subprocess_env

QUICK_EXTENSION = """\
# extensions/my_extension/__init__.py
from pyisolate import ExtensionBase

class MyExtension(ExtensionBase):
    def on_module_loaded(self, module):
        self.module = module

    async def process_data(self, data):
        # This runs in an isolated process with its own dependencies
        import numpy as np  # This could be numpy 2.x
        return np.array(data).mean()
"""

QUICK_MAIN = """\
# main.py
import pyisolate
import asyncio

async def main():
    # Configure the extension manager
    config = pyisolate.ExtensionManagerConfig(
        venv_root_path="./venvs"
    )
    manager = pyisolate.ExtensionManager(pyisolate.ExtensionBase, config)

    # Load an extension with specific dependencies
    extension = await manager.load_extension(
        pyisolate.ExtensionConfig(
            name="data_processor",
            module_path="./extensions/my_extension",
            isolated=True,
            dependencies=["numpy>=2.0.0"]
        )
    )

    # Use the extension
    result = await extension.process_data([1, 2, 3, 4, 5])
    print(f"Mean: {result}")  # Mean: 3.0

    # Cleanup
    await extension.stop()

asyncio.run(main())
"""

ML_EXTENSION = """\
# extensions/ml_extension/__init__.py
from pyisolate import ExtensionBase
import torch

class MLExtension(ExtensionBase):
    async def process_tensor(self, tensor: torch.Tensor):
        # Tensor is shared, not copied!
        return tensor.mean()
"""

ML_MAIN_FRAGMENT = """\
# main.py
extension = await manager.load_extension(
    pyisolate.ExtensionConfig(
        name="ml_processor",
        module_path="./extensions/ml_extension",
        share_torch=True  # Enable zero-copy tensor sharing
    )
)

# Large tensor is shared, not serialized
large_tensor = torch.randn(1000, 1000)
mean = await extension.process_tensor(large_tensor)
"""

SHARED = """\
# shared.py
from pyisolate import ProxiedSingleton

class DatabaseAPI(ProxiedSingleton):
    def __init__(self):
        self.data = {}

    def get(self, key):
        return self.data.get(key)

    def set(self, key, value):
        self.data[key] = value
"""

EXT_A = """\
# extensions/extension_a/__init__.py
class ExtensionA(ExtensionBase):
    async def save_result(self, result):
        db = DatabaseAPI()  # Returns proxy to host's instance
        await db.set("result", result)
"""

EXT_B = """\
# extensions/extension_b/__init__.py
class ExtensionB(ExtensionBase):
    async def get_result(self):
        db = DatabaseAPI()  # Returns proxy to host's instance
        return await db.get("result")
"""

IMPORTS = "from pyisolate import ExtensionBase\nfrom shared import DatabaseAPI\n\n"

SINGLETON_MAIN = """\
import asyncio
import pyisolate
from shared import DatabaseAPI

async def main():
    manager = pyisolate.ExtensionManager(
        pyisolate.ExtensionBase, pyisolate.ExtensionManagerConfig(venv_root_path="./venvs"))
    a = manager.load_extension(pyisolate.ExtensionConfig(
        name="extension_a", module_path="./extensions/extension_a", apis=[DatabaseAPI]))
    b = manager.load_extension(pyisolate.ExtensionConfig(
        name="extension_b", module_path="./extensions/extension_b", apis=[DatabaseAPI]))
    await a.save_result({"answer": 42})
    print("B sees:", await b.get_result())
    print("host sees:", DatabaseAPI().get("result"))
    await manager.stop_all()

asyncio.run(main())
"""


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _run(cwd: Path, *args: str, timeout: float = 240) -> str:
    proc = subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_seed_quick_start(tmp_path, venv_root) -> None:
    _write(
        tmp_path, {"extensions/my_extension/__init__.py": QUICK_EXTENSION, "main.py": QUICK_MAIN}
    )
    out = _run(tmp_path, "main.py")
    assert "Mean: 3.0" in out.splitlines()
    # The same program on a host without numpy (as on a fresh machine).
    out = _run(
        tmp_path,
        "-c",
        "import sys; sys.modules['numpy'] = None; "
        "sys.argv = ['main.py']; exec(open('main.py').read())",
    )
    assert "Mean: 3.0" in out.splitlines()


def test_seed_torch_sharing(tmp_path, venv_root) -> None:
    pytest.importorskip("torch")
    body = textwrap.indent(ML_MAIN_FRAGMENT, "    ")
    main = (
        "import asyncio\nimport torch\nimport pyisolate\n\n"
        "async def main():\n"
        "    manager = pyisolate.ExtensionManager(pyisolate.ExtensionBase,\n"
        "        pyisolate.ExtensionManagerConfig(venv_root_path='./venvs'))\n"
        f"{body}"
        "    print('mean', float(mean), 'expected', float(large_tensor.mean()))\n"
        "    await manager.stop_all()\n\n"
        "asyncio.run(main())\n"
    )
    _write(tmp_path, {"extensions/ml_extension/__init__.py": ML_EXTENSION, "main.py": main})
    out = _run(tmp_path, "main.py")
    line = next(ln for ln in out.splitlines() if ln.startswith("mean "))
    _, got, _, expected = line.split()
    assert abs(float(got) - float(expected)) < 1e-6


def test_seed_singletons(tmp_path, venv_root) -> None:
    _write(
        tmp_path,
        {
            "shared.py": SHARED,
            "extensions/extension_a/__init__.py": IMPORTS + EXT_A,
            "extensions/extension_b/__init__.py": IMPORTS + EXT_B,
            "main.py": SINGLETON_MAIN,
        },
    )
    out = _run(tmp_path, "main.py")
    assert "B sees: {'answer': 42}" in out
    assert "host sees: {'answer': 42}" in out


@requires_numpy1
def test_example_application(tmp_path, venv_root) -> None:
    """examples/app: the seed's Complete Application Structure."""
    pytest.importorskip("torch")
    app = REPO / "examples" / "app"
    out = _run(app, "main.py", "--venv-root", str(tmp_path / "venvs"))
    assert "numpy_legacy saw numpy 1." in out
    assert "numpy_modern saw numpy 2." in out
    assert "tensor_tools saw a torch.Tensor" in out
    assert "shared counter: 3" in out
