"""Child side of auditor.load.torch_module.export_onnx / trace_target: resolves the model factory,
takes torch's ground truth and exports, then prints one JSON result line.

Started as ``python <path>/_export_child.py`` with the request as JSON on stdin; writes
``{"ok": true, ...}`` or ``{"ok": false, "slug", "message"}`` as the last stdout line. The parent
kills its process group when the time limit passes.
"""

from __future__ import annotations

import os
import sys

# Run as a script, this file's folder (auditor/load/) comes first on sys.path: drop it, so that
# its modules (shapes.py...) never shadow a module torch imports, and put the folder holding the
# auditor package first, so that the child imports the same auditor as its parent.
if __name__ == "__main__":
    _here = os.path.dirname(os.path.abspath(__file__))
    if sys.path and os.path.abspath(sys.path[0] or os.curdir) == _here:
        del sys.path[0]
    _root = os.path.dirname(os.path.dirname(_here))
    if _root not in sys.path:
        sys.path.insert(0, _root)

import json  # noqa: E402
from typing import Any  # noqa: E402


def main() -> int:
    """Read the request, do the work, print the result line; exit 0 once a result is printed."""
    # The factory, torch and the exporters may print to fd 1: keep the real stdout for the result
    # line alone and send everything else to stderr.
    result_fd = os.dup(1)
    os.dup2(2, 1)
    result: dict[str, Any]
    try:
        from auditor.errors import AuditError
        from auditor.load.torch_module import run_request

        try:
            result = run_request(json.loads(sys.stdin.read()))
        except AuditError as exc:
            result = {"ok": False, "slug": exc.slug, "message": exc.message}
    except Exception as exc:  # noqa: BLE001 - every other failure is reported as one line
        result = {"ok": False, "slug": "export-failed", "message": f"{type(exc).__name__}: {exc}".splitlines()[0]}
    with os.fdopen(result_fd, "w", encoding="utf-8") as out:
        out.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
