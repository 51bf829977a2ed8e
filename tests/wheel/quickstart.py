"""Writes the README's quick start, as written there, into a folder.

    python3 tests/wheel/quickstart.py README.md DEST

The quick start's Python blocks each open with a comment naming their file
(``# main.py``, ``# extensions/my_extension/__init__.py``); each is written
to that path under DEST. The expected output is the comment on main.py's
``print`` line (``# Mean: 3.0``); it is printed on stdout for the caller to
compare with what main.py prints.
"""

import re
import sys
from pathlib import Path


def main() -> int:
    readme, dest = Path(sys.argv[1]), Path(sys.argv[2])
    text = readme.read_text()
    section = re.search(r"^## Quick start\n(.*?)(?=^## )", text, re.S | re.M)
    if section is None:
        sys.exit(f"{readme}: no '## Quick start' section")
    files = {}
    for block in re.findall(r"^```python\n(.*?)^```", section.group(1), re.S | re.M):
        first = block.splitlines()[0]
        name = re.fullmatch(r"#\s*(\S+\.py)\s*", first)
        if name:
            files[name.group(1)] = block
    if "main.py" not in files or len(files) < 2:
        sys.exit(f"{readme}: the quick start should hold main.py and the extension, found {sorted(files)}")
    expected = re.search(r"^\s*print\(.*\)\s*#\s*(.+?)\s*$", files["main.py"], re.M)
    if expected is None:
        sys.exit(f"{readme}: main.py's print line has no '# expected output' comment")
    for name, block in files.items():
        path = dest / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(block)
    print(expected.group(1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
