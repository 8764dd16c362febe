"""Execute one notebook with papermill (run by ``rlbook.runner`` in a subprocess).

Argument: a JSON job ``{input, output, parameters, cwd, result, cell_timeout}``. Writes
``result`` as JSON: ``seconds``, ``peak_mb`` (the kernel's peak resident memory) and
``error`` (``None``, or the failing cell and its exception).
"""

from __future__ import annotations

import json
import resource
import sys
import time


def main(arg: str) -> int:
    job = json.loads(arg)
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    t0 = time.perf_counter()
    error = None
    try:
        pm.execute_notebook(
            job["input"], job["output"], parameters=job["parameters"], cwd=job["cwd"],
            kernel_name="python3", execution_timeout=job["cell_timeout"], progress_bar=False,
            log_output=False,
        )
    except PapermillExecutionError as e:
        error = f"cell {e.exec_count} (index {e.cell_index}): {e.ename}: {e.evalue}"
    except Exception as e:  # a time-out inside a cell, a kernel death, a bad notebook
        error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    seconds = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    with open(job["result"], "w") as f:
        json.dump({"seconds": seconds, "peak_mb": peak_kb / 1024.0, "error": error}, f)
    return 0 if error is None else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
