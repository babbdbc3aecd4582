"""TensorFlow imported without its C++ start-up lines on stderr, unless they are asked for.

Importing TensorFlow 2.21 writes straight to file descriptor 2, from C++ and before any
Python logging exists: absl's "All log messages before absl::InitializeLog()" warning, the
oneDNN notice (``port.cc``) and the CPU-feature notice (``cpu_feature_guard.cc``).
``TF_CPP_MIN_LOG_LEVEL`` hides only the last of them, so the import runs with descriptor 2
pointed at ``/dev/null``; ``TF_CPP_MIN_LOG_LEVEL=2`` (unless set already) keeps TensorFlow's
later INFO and WARNING lines away as well. Python exceptions raised by the import are not
affected: they propagate after stderr is restored.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


def import_tensorflow(*, show_logs: bool = False) -> None:
    """Import TensorFlow once, quietly unless ``show_logs`` (the CLI's ``-vv``).

    Args:
        show_logs: leave TensorFlow's own start-up output and log level as they are.
    """
    if "tensorflow" in sys.modules:
        return
    if show_logs:
        import tensorflow
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _stderr_silenced():
        import tensorflow  # noqa: F401


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null for the block (C++ writes included)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
