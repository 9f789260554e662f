"""Nothing in the package unpickles data or loads a checkpoint without weights_only=True."""

from __future__ import annotations

import re

from conftest import REPO

PACKAGES = ("builder", "loaders", "schemas", "tools", "pvtt")
UNSAFE = re.compile(
    r"pickle\.loads?\(|allow_pickle\s*=\s*True|yaml\.unsafe_load|"
    r"Loader\s*=\s*yaml\.(Loader|FullLoader|UnsafeLoader)|yaml\.load\((?!.*Loader=)"
)


def test_no_pickle_or_unsafe_yaml_or_torch_load() -> None:
    found = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if UNSAFE.search(line):
                    found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
                if "torch.load(" in line and "weights_only=True" not in line:
                    found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not found, "unsafe loading:\n" + "\n".join(found)
