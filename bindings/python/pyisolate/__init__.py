"""pyisolate: run Python extensions in their own venvs and processes, and call
them as local async Python.

The host runs a ZeroMQ broker (C, in a thread); every extension is a process
started by it in its own uv-made venv. See ExtensionManager.
"""

from __future__ import annotations

from ._base import ExtensionBase, ProxiedSingleton, local_execution, singleton_scope
from ._codes import BrokerError
from ._errors import (
    CallTimeout,
    DependencyInstallError,
    ExtensionCrashed,
    ExtensionLoadError,
    ExtensionStopped,
    PyisolateError,
    RemoteError,
)
from ._handle import Extension
from ._launch import LifecycleEvent
from ._manager import ExtensionManager
from ._rpc import RemoteCallable, RemoteObject
from ._sync import SyncExtension, SyncExtensionManager
from ._tensors import TensorDescriptorError, empty, region_name, share
from ._version import __version__
from .config import ExtensionConfig, ExtensionManagerConfig, Limits, SandboxConfig, SandboxMode
from .launchers import Ended, RayLauncher, RemoteJob, RemoteLauncher

__all__ = [
    "__version__",
    "ExtensionManager",
    "ExtensionManagerConfig",
    "ExtensionConfig",
    "SandboxConfig",
    "SandboxMode",
    "Limits",
    "RemoteLauncher",
    "RayLauncher",
    "RemoteJob",
    "Ended",
    "ExtensionBase",
    "Extension",
    "LifecycleEvent",
    "ProxiedSingleton",
    "local_execution",
    "singleton_scope",
    "SyncExtensionManager",
    "SyncExtension",
    "PyisolateError",
    "ExtensionLoadError",
    "DependencyInstallError",
    "ExtensionCrashed",
    "ExtensionStopped",
    "CallTimeout",
    "RemoteError",
    "BrokerError",
    "RemoteCallable",
    "RemoteObject",
    "empty",
    "share",
    "region_name",
    "TensorDescriptorError",
]
