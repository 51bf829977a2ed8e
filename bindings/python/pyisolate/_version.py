"""pyisolate's version: the package's ``__version__`` and the venv fingerprints."""

__version__ = "0.1.0"
