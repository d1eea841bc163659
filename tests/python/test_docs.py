"""The ```python blocks of docs/python.md run, in order, in one namespace, in a temporary folder
(blocks fenced ```py are illustrations and are not run)."""

import os
import re

import pytest


def blocks(root):
    text = open(os.path.join(root, "docs", "python.md")).read()
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_docs_python_blocks_run(root, fmnist, tmp_path, monkeypatch):
    found = blocks(root)
    assert len(found) >= 6
    monkeypatch.chdir(tmp_path)
    ns = {}
    for i, code in enumerate(found):
        if "dpsgd.torch" in code and os.environ.get("DPSGD_SKIP_TORCH") == "1":
            continue
        try:
            exec(compile(code, "docs/python.md block %d" % (i + 1), "exec"), ns)
        except Exception as e:
            pytest.fail("docs/python.md block %d: %s: %s\n%s" % (i + 1, type(e).__name__, e, code))
