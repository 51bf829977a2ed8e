"""Build-time generator of the cffi module ``pyisolate._native``.

Run by bindings/python/CMakeLists.txt as

    python ffi_build.py OUT.c [--umbrella include/pyisolate/pyisolate.h]
                              [--bridge bindings/python/pyi_py.h]

it writes the C source of an out-of-line, API-mode cffi extension module,
which CMake compiles with the bridge's own C (pyi_py*.c) and links against
libpyisolate. No C is written here: the declarations are read from the
headers at build time (:func:`header_cdef`), so they cannot drift from them,
and in API mode the C compiler checks them once more against the real
headers.

What the reader does with a header (and what it cannot do):

- follows ``#include "..."`` lines in order, each header once (like include
  guards); ``#include <...>`` names system headers: the types they supply
  are declared here (``SYSTEM_TYPES``), each only when the headers use it,
  opaque or partial wherever cffi allows (the C compiler fills in sizes,
  layouts and values);
- evaluates ``#if``/``#ifdef``/``#ifndef``/``#elif``/``#else`` on what it
  knows: macros defined by the headers it read, ``__cplusplus`` and
  ``PYI_BUILDING`` undefined (it reads the headers as a user of the library
  does), ``defined``, ``!``, ``&&``, ``||``, comparisons and integer
  literals. A condition on anything else (a macro a system header may
  define, such as ``DLPACK_MAJOR_VERSION``) skips every branch of its
  block: such blocks may only hold fallbacks for system declarations, which
  ``SYSTEM_TYPES`` covers;
- keeps ``#define NAME <integer literal>`` as is (cffi checks the value at
  import) and ``#define NAME <integer constant expression>`` as
  ``#define NAME ...`` (the compiler supplies the value); drops every other
  macro, and removes from declarations the macros that expand to nothing or
  to attributes only (``PYI_EXPORT`` outside the library's own build);
- strips comments, ``extern "C"``, ``__attribute__ ((...))`` and function
  bodies (``static inline`` helpers); keeps enums, structs, unions,
  typedefs and the prototypes marked ``PYI_EXPORT`` (a prototype of a
  public header without it is internal to libpyisolate and not exported:
  cffi could not link it). The bridge's own header (``--bridge``) is not
  part of the library: all its prototypes are kept.

It does not expand function-like macros, nor macros used inside
declarations (other than the empty/attribute ones above), nor token
pasting; array sizes may use the integer macros it kept (cffi folds
``NAME + 1``). Anything cffi's parser then refuses fails the build with the
header's name in the message.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass, field

import cffi

HERE = os.path.dirname(os.path.abspath(__file__))
UMBRELLA = os.path.normpath(os.path.join(HERE, "..", "..", "include", "pyisolate", "pyisolate.h"))
BRIDGE = os.path.join(HERE, "pyi_py.h")
MODULE = "pyisolate._native"
EXPORT_MACRO = "PYI_EXPORT"
# Macros a library user's compiler does not define.
UNDEFINED = frozenset({"__cplusplus", "PYI_BUILDING"})

# Types the headers take from system headers, as cffi needs them: name ->
# (declaration, the names it uses). "int..." is an integer type of a size
# the compiler knows; "...;" ends a struct whose other fields and layout the
# compiler knows. cffi knows size_t, bool and <stdint.h> types itself.
SYSTEM_TYPES: dict[str, tuple[str, tuple[str, ...]]] = {
    "pid_t": ("typedef int... pid_t;", ()),
    "ssize_t": ("typedef int... ssize_t;", ()),
    "off_t": ("typedef int... off_t;", ()),
    "DLDeviceType": ("typedef int... DLDeviceType;", ()),
    "DLDevice": (
        "typedef struct { DLDeviceType device_type; int device_id; ...; } DLDevice;",
        ("DLDeviceType",),
    ),
    "DLDataType": (
        "typedef struct { uint8_t code; uint8_t bits; uint16_t lanes; ...; } DLDataType;",
        (),
    ),
    "DLTensor": (
        "typedef struct { void *data; DLDevice device; int ndim; DLDataType dtype; "
        "int64_t *shape; int64_t *strides; uint64_t byte_offset; ...; } DLTensor;",
        ("DLDevice", "DLDataType"),
    ),
    "DLManagedTensor": (
        "typedef struct DLManagedTensor { DLTensor dl_tensor; "
        "void *manager_ctx; "
        "void (*deleter) (struct DLManagedTensor *self); ...; } "
        "DLManagedTensor;",
        ("DLTensor",),
    ),
    "DLPackVersion": ("typedef ... DLPackVersion;", ()),
    "DLManagedTensorVersioned": (
        "typedef struct DLManagedTensorVersioned { "
        "void *manager_ctx; "
        "void (*deleter) (struct DLManagedTensorVersioned *self); "
        "uint64_t flags; DLTensor dl_tensor; ...; } "
        "DLManagedTensorVersioned;",
        ("DLTensor",),
    ),
}
# What Python calls besides the headers: strings the C API returns are the
# caller's to free (pyi_broker_bind, pyi_broker_allow).
EXTRA = "void free (void *ptr);"

_COMMENT_OR_STRING = re.compile(
    r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'', re.S
)
_DIRECTIVE = re.compile(r"^\s*#\s*(\w+)\s*(.*?)\s*$")
_INCLUDE_LOCAL = re.compile(r'^"([^"]+)"$')
_DEFINE = re.compile(r"^([A-Za-z_]\w*)(\(?)(.*)$", re.S)
_INT_LITERAL = re.compile(r"^[-+]?(?:0[xX][0-9a-fA-F]+|\d+)[uUlL]*$")
_CAST = re.compile(
    r"\(\s*(?:(?:unsigned|signed)\s+)?(?:size_t|u?int(?:8|16|32|64)_t|"
    r"char|short|int|long|long\s+long)\s*\)"
)
_INT_TOKEN = re.compile(r"\s*(?:0[xX][0-9a-fA-F]+[uUlL]*|\d+[uUlL]*|<<|>>|[()+\-*/%&|^~])")
_IDENT = re.compile(r"[A-Za-z_]\w*")
_ATTRIBUTE = re.compile(r"\b__attribute__\s*\(")


class HeaderError(Exception):
    """A header the reader cannot turn into declarations."""


def _is_int_expr(body: str) -> bool:
    """Whether body is an integer constant expression: literals, operators,
    parentheses and casts to integer types."""
    body = _CAST.sub(" ", body)
    pos = 0
    while pos < len(body.rstrip()):
        m = _INT_TOKEN.match(body, pos)
        if m is None:
            return False
        pos = m.end()
    return re.search(r"\d", body) is not None


def _strip_comments(text: str) -> str:
    def repl(m: re.Match[str]) -> str:
        s = m.group(0)
        if s.startswith("/*"):
            return " " + "\n" * s.count("\n")  # keep line numbers
        if s.startswith("//"):
            return " "
        return s

    return _COMMENT_OR_STRING.sub(repl, text)


def _drop_balanced(text: str, opener: re.Pattern[str]) -> str:
    """Remove each match of opener (ending in '(') with its balanced
    parenthesised argument."""
    while True:
        m = opener.search(text)
        if m is None:
            return text
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        text = text[: m.start()] + " " + text[i:]


@dataclass
class _Header:
    path: str
    exported_only: bool
    lines: list[str] = field(default_factory=list)  # active non-directive lines
    defines: list[str] = field(default_factory=list)  # cdef lines for its macros
    skipped: list[str] = field(default_factory=list)  # conditions not known


class _Reader:
    """Reads headers as a user's preprocessor would, to the extent above."""

    def __init__(self) -> None:
        self.macros: dict[str, str] = {}
        self.seen: set[str] = set()
        self.headers: list[_Header] = []
        self.guards: set[str] = set()  # include guards of the headers read

    # -- conditions -------------------------------------------------------
    def _condition(self, expr: str) -> bool | None:
        """Value of an #if expression, or None when it depends on anything
        unknown."""

        def defined(m: re.Match[str]) -> str:
            name = m.group(1) or m.group(2)
            if name in self.macros:
                return " 1 "
            if name in UNDEFINED or name in self.guards:
                return " 0 "
            return " UNKNOWN "

        expr = re.sub(r"\bdefined\s*(?:\(\s*(\w+)\s*\)|(\w+))", defined, expr)

        def ident(m: re.Match[str]) -> str:
            name = m.group(0)
            body = self.macros.get(name)
            if body is not None and _INT_LITERAL.match(body):
                return " " + body.rstrip("uUlL") + " "
            if name in UNDEFINED:
                return " 0 "
            return " UNKNOWN "

        expr = re.sub(
            r"\b[A-Za-z_]\w*\b",
            lambda m: m.group(0) if m.group(0) == "UNKNOWN" else ident(m),
            expr,
        )
        if "UNKNOWN" in expr:
            return None
        expr = re.sub(r"(\d)[uUlL]+\b", r"\1", expr).replace("/", "//")
        py = (
            expr.replace("&&", " and ")
            .replace("||", " or ")
            .replace("!=", " __NE__ ")
            .replace("!", " not ")
            .replace(" __NE__ ", " != ")
        )
        if re.search(r"[^\s0-9a-fA-FxX()<>=!+\-*/%notadr]", py):
            return None
        try:
            return bool(eval(py, {"__builtins__": {}}, {}))  # noqa: S307 - digits and operators
        except Exception:
            return None

    # -- reading ----------------------------------------------------------
    def read(self, path: str, exported_only: bool) -> None:
        path = os.path.realpath(path)
        if path in self.seen:
            return
        self.seen.add(path)
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            raise HeaderError(f"cannot read header {path}: {exc}") from None
        header = _Header(path, exported_only)
        text = _strip_comments(text).replace("\\\n", " ")
        # An include guard (#ifndef X, then #define X, before anything else)
        # names a macro of ours, not one a system header might define.
        directives = [m for m in map(_DIRECTIVE.match, text.split("\n")) if m]
        if (
            len(directives) >= 2
            and directives[0].group(1) == "ifndef"
            and directives[1].group(1) == "define"
            and directives[1].group(2).split()[:1] == [directives[0].group(2)]
        ):
            self.guards.add(directives[0].group(2))
        # Each entry: [this branch active, some branch taken, condition known]
        stack: list[list[bool]] = []

        def active() -> bool:
            return all(s[0] for s in stack)

        for number, line in enumerate(text.split("\n"), 1):
            where = f"{os.path.basename(path)}:{number}"
            m = _DIRECTIVE.match(line)
            if m is None:
                if active() and line.strip():
                    header.lines.append(line)
                continue
            word, rest = m.group(1), m.group(2)
            if word in ("if", "ifdef", "ifndef"):
                if word == "ifdef":
                    rest = f"defined({rest})"
                elif word == "ifndef":
                    rest = f"!defined({rest})"
                value = self._condition(rest) if active() else False
                if value is None:
                    header.skipped.append(f"{where}: #{word} {m.group(2)}")
                    stack.append([False, True, False])
                else:
                    stack.append([value, value, True])
            elif word == "elif":
                if not stack:
                    raise HeaderError(f"{where}: #elif without #if")
                top = stack[-1]
                if not top[2] or top[1]:
                    top[0] = False
                else:
                    value = self._condition(rest)
                    if value is None:
                        header.skipped.append(f"{where}: #elif {rest}")
                        top[:] = [False, True, False]
                    else:
                        top[:] = [value, value, True]
            elif word == "else":
                if not stack:
                    raise HeaderError(f"{where}: #else without #if")
                top = stack[-1]
                top[0] = top[2] and not top[1]
                top[1] = True
            elif word == "endif":
                if not stack:
                    raise HeaderError(f"{where}: #endif without #if")
                stack.pop()
            elif not active():
                continue
            elif word == "include":
                inc = _INCLUDE_LOCAL.match(rest)
                if inc is not None:
                    # The included header's declarations come first, as the
                    # preprocessor would put them.
                    self.read(os.path.join(os.path.dirname(path), inc.group(1)), exported_only)
            elif word == "define":
                d = _DEFINE.match(rest)
                if d is None:
                    raise HeaderError(f"{where}: cannot read #define {rest}")
                name, paren, body = d.group(1), d.group(2), d.group(3).strip()
                if paren:  # function-like: not for cffi
                    continue
                self.macros[name] = body
                if _INT_LITERAL.match(body):
                    header.defines.append(f"#define {name} {body}")
                elif _is_int_expr(body):
                    header.defines.append(f"#define {name} ...")
            elif word == "undef":
                self.macros.pop(rest, None)
            # #pragma, #error, #warning, #line: nothing to declare
        if stack:
            raise HeaderError(f"{path}: #if without #endif")
        self.headers.append(header)

    # -- declarations -----------------------------------------------------
    def _vanishing(self) -> set[str]:
        """Macros that expand to nothing or to attributes only."""
        out = set()
        for name, body in self.macros.items():
            if not _drop_balanced(body, _ATTRIBUTE).strip():
                out.add(name)
        return out

    def declarations(self, header: _Header) -> list[str]:
        text = "\n".join(header.lines)
        text = re.sub(r'\bextern\s*"C"\s*\{?', " ", text)
        text = _drop_balanced(text, _ATTRIBUTE)
        text = _drop_balanced(text, re.compile(r"\b__declspec\s*\("))
        out = []
        vanishing = self._vanishing()
        for decl in _split(text, header.path):
            exported = re.search(rf"\b{EXPORT_MACRO}\b", decl) is not None
            words = _IDENT.findall(decl)
            if any(w in vanishing for w in words):
                decl = re.sub(r"\b(" + "|".join(sorted(vanishing)) + r")\b", " ", decl)
            decl = " ".join(decl.split())
            if not decl:
                continue
            first = decl.split()[0]
            if first in ("typedef", "struct", "union", "enum") and (
                first == "typedef" or "{" in decl
            ):
                out.append(decl + ";")
            elif first == "static" or (header.exported_only and not exported):
                continue  # internal to libpyisolate, or a static helper
            else:
                out.append(decl + ";")
        return out


def _split(text: str, path: str) -> list[str]:
    """Top-level declarations of text (without their ';'); function bodies
    dropped along with their function."""
    decls, depth, start, i, body_from = [], 0, 0, 0, -1
    n = len(text)
    while i < n:
        c = text[i]
        if c == '"' or c == "'":  # skip a literal
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            i = j + 1
            continue
        if c in "({[":
            if c == "{" and depth == 0 and text[start:i].rstrip().endswith(")"):
                body_from = start  # a function definition: skip its body
            depth += 1
        elif c in ")}]":
            depth -= 1
            if depth < 0:
                raise HeaderError(f"{path}: unbalanced '{c}'")
            if c == "}" and depth == 0 and body_from >= 0:
                body_from = -1
                start = i + 1
        elif c == ";" and depth == 0:
            decls.append(text[start:i])
            start = i + 1
        i += 1
    if text[start:].strip():
        raise HeaderError(
            f"{path}: declaration without ';' at the end: {text[start:].strip()[:60]!r}"
        )
    return decls


def _system_types(used: set[str], defined: set[str]) -> list[str]:
    out: list[str] = []
    done: set[str] = set()

    def add(name: str) -> None:
        if name in done or name in defined:
            return
        done.add(name)
        decl, deps = SYSTEM_TYPES[name]
        for dep in deps:
            add(dep)
        out.append(decl)

    for name in SYSTEM_TYPES:
        if name in used:
            add(name)
    return out


def header_cdef(umbrella: str = UMBRELLA, bridge: str | None = BRIDGE) -> str:
    """The cdef of the library's public headers (umbrella and what it
    includes, in order) and of the bridge's own header."""
    reader = _Reader()
    reader.read(umbrella, exported_only=True)
    if bridge is not None:
        reader.read(bridge, exported_only=False)
    sections, used, defined = [], set(), set()
    for header in reader.headers:
        decls = reader.declarations(header)
        body = header.defines + decls
        if not body:
            continue
        note = "".join(f"\n   skipped (condition not known here): {s}" for s in header.skipped)
        sections.append(f"/* {os.path.basename(header.path)}{note} */\n" + "\n".join(body))
        for decl in decls:
            used.update(_IDENT.findall(decl))
            m = re.search(r"\}\s*(\w+)\s*;$", decl) or re.search(r"(\w+)\s*;$", decl)
            if decl.startswith("typedef") and m:
                defined.add(m.group(1))
    system = _system_types(used, defined)
    head = "/* system types, as cffi needs them */\n" + "\n".join([*system, EXTRA])
    return "\n\n".join([head, *sections]) + "\n"


def make_builder(umbrella: str = UMBRELLA, bridge: str = BRIDGE) -> cffi.FFI:
    cdef = header_cdef(umbrella, bridge)
    ffibuilder = cffi.FFI()
    try:
        ffibuilder.cdef(cdef)
    except Exception as exc:  # cffi.CDefError and pycparser's errors
        raise HeaderError(
            f"cffi cannot read the declarations made from the headers: {exc}\n--- cdef ---\n{cdef}"
        ) from None
    ffibuilder.set_source(
        MODULE,
        "#include <stdlib.h>\n"
        "#include <pyisolate/pyisolate.h>\n"
        f'#include "{os.path.basename(bridge)}"\n',
    )
    return ffibuilder


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description="Write the C source of pyisolate._native.")
    ap.add_argument("output", help="the .c file to write")
    ap.add_argument("--umbrella", default=UMBRELLA, help="the library's umbrella header")
    ap.add_argument("--bridge", default=BRIDGE, help="the bridge's own header")
    ap.add_argument("--cdef", action="store_true", help="print the cdef instead")
    args = ap.parse_args(argv[1:])
    try:
        if args.cdef:
            sys.stdout.write(header_cdef(args.umbrella, args.bridge))
            return 0
        make_builder(args.umbrella, args.bridge).emit_c_code(args.output)
    except HeaderError as exc:
        sys.stderr.write(f"ffi_build.py: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
