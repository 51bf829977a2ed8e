"""Names and dependency strings: refused before anything runs."""

from __future__ import annotations

import pytest

import pyisolate
from conftest import EXTENSIONS, manager, run
from pyisolate.config import validate_dependencies, validate_name


@pytest.mark.parametrize(
    "name", ["../x", "..", "/abs/path", "a/b", "a\\b", "a\x00b", "", ".hidden", "x" * 200, "a..b"]
)
def test_bad_names_refused(name: str) -> None:
    with pytest.raises(ValueError):
        validate_name(name)


def test_good_names() -> None:
    for name in ["ext", "my_ext-2", "a.b"]:
        assert validate_name(name) == name


@pytest.mark.parametrize(
    "dep",
    [
        "--index-url=https://example.invalid/simple",
        "-r requirements.txt",
        "--extra-index-url",
        "-e numpy",
        "numpy; rm -rf /",
        "$(id)",
        "numpy`id`",
        "numpy|cat",
        "a && b",
        "x\ny",
        "numpy >= 1 junk",
    ],
)
def test_bad_dependency_strings_refused(dep: str) -> None:
    with pytest.raises(ValueError, match=r"refused|non-empty"):
        validate_dependencies([dep])


def test_documented_dependency_forms(tmp_path) -> None:
    out = validate_dependencies(
        [
            "numpy>=2.0.0",
            "requests[socks]>=2,<3; python_version >= '3.8'",
            "pkg @ https://example.org/pkg-1.0-py3-none-any.whl",
            "git+https://github.com/org/repo.git",
            f"-e {tmp_path}",
            "./local/pkg",
        ]
    )
    assert out[:4] == [
        "numpy>=2.0.0",
        "requests[socks]>=2,<3; python_version >= '3.8'",
        "pkg @ https://example.org/pkg-1.0-py3-none-any.whl",
        "git+https://github.com/org/repo.git",
    ]
    assert out[4:6] == ["-e", str(tmp_path)]
    assert out[6].endswith("/local/pkg")


def test_load_extension_refuses_bad_name_and_dependency(venv_root) -> None:
    async def main() -> None:
        async with manager(venv_root) as mgr:
            with pytest.raises(ValueError, match="separator"):
                mgr.load_extension(
                    pyisolate.ExtensionConfig(
                        name="../escape", module_path=str(EXTENSIONS / "basic")
                    )
                )
            with pytest.raises(ValueError, match="refused"):
                mgr.load_extension(
                    pyisolate.ExtensionConfig(
                        name="ok",
                        module_path=str(EXTENSIONS / "basic"),
                        dependencies=["--index-url=http://evil.invalid"],
                    )
                )
            # plain dicts work as configs too
            with pytest.raises(ValueError, match="NUL"):
                mgr.load_extension({"name": "a\x00b", "module_path": "x"})

    run(main())
    assert not (venv_root.parent / "escape").exists()


def test_configs_accept_dicts_and_keywords() -> None:
    a = pyisolate.ExtensionConfig(name="x", module_path="p", dependencies=["numpy"])
    b = pyisolate.ExtensionConfig.from_any(
        {"name": "x", "module_path": "p", "dependencies": ["numpy"]}
    )
    assert a == b and a["name"] == "x"
    m = pyisolate.ExtensionManagerConfig.from_any({"venv_root_path": "/tmp/v"})
    assert m.venv_root_path == "/tmp/v"
