"""healthcode.common.runtime: the start-up heap is frozen in a serving process (run in a child
process, so that this test session's own collector is left alone)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_freeze_startup_heap_excludes_startup_objects_from_collection() -> None:
    script = textwrap.dedent(
        """
        import gc
        import healthcode.server.app  # a serving process's start-up imports
        from healthcode.common.runtime import freeze_startup_heap

        assert gc.get_freeze_count() == 0
        frozen = freeze_startup_heap()
        assert frozen == gc.get_freeze_count() > 10_000, frozen
        # A full collection no longer visits them: generation 2 starts empty.
        gc.collect()
        assert len(gc.get_objects(generation=2)) < frozen // 10
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"
