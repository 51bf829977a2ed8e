# host.py - Your main application logic
"""The demo host: loads every extension under extensions/ (each with its own
dependencies from its manifest.json), lets them share one SharedAPI
singleton, and prints what each extension saw.

    python examples/app/main.py [--venv-root DIR] [--verbose]
"""

import argparse
import asyncio
import json
import logging
from pathlib import Path

from shared import SharedAPI

import pyisolate
from pyisolate import ExtensionBase

HERE = Path(__file__).resolve().parent


def discover_extensions():
    """Every folder under extensions/ that has an __init__.py."""
    return sorted(p for p in (HERE / "extensions").iterdir() if (p / "__init__.py").exists())


def load_manifest(extension_path):
    manifest = extension_path / "manifest.json"
    return json.loads(manifest.read_text()) if manifest.exists() else {}


def load_dependencies(extension_path):
    return load_manifest(extension_path).get("dependencies", [])


async def async_main(venv_root):
    # Create extension manager
    config = pyisolate.ExtensionManagerConfig(venv_root_path=venv_root)
    manager = pyisolate.ExtensionManager(ExtensionBase, config)

    # Load extensions (e.g., from a directory or configuration file)
    extensions = []
    for extension_path in discover_extensions():
        extension_name = extension_path.name
        extension_config = pyisolate.ExtensionConfig(
            name=extension_name,
            module_path=str(extension_path),
            isolated=True,
            dependencies=load_dependencies(extension_path),
            apis=[SharedAPI],  # Optional shared singletons
            share_torch=load_manifest(extension_path).get("share_torch", False),
        )
        extension = manager.load_extension(extension_config)
        extensions.append(extension)

    # Use extensions
    for extension in extensions:
        result = await extension.process()
        print(f"Result: {result}")

    print(f"shared counter: {SharedAPI().count()} (bumped by {', '.join(SharedAPI().seen)})")

    # Clean shutdown
    for extension in extensions:
        await extension.stop()
    await manager.stop_all()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--venv-root",
        default=str(HERE / "extension-venvs"),
        help="where the extensions' venvs go (default: %(default)s)",
    )
    parser.add_argument("--verbose", action="store_true", help="show pyisolate's log")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s"
    )
    asyncio.run(async_main(args.venv_root))
