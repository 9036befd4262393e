"""Back-to-back `credit-risk run`s in one long-lived process, with the peak memory of each.

Run as `python -m credit_risk_assets_tests.load_runs '<json>'` with CREDIT_RISK_HOME and
DAGSTER_HOME set; it writes the JSON report to the path given. One process for all runs, as a
long-lived Dagster process would be: memory that a run leaks stays, so later runs show it.

The peak of each run is the process's high-water mark (VmHWM) after resetting it at the start
of the run (writing 5 to /proc/self/clear_refs, Linux 4.0 and later). Where that cannot be
done, a thread samples the resident size every 10 ms instead.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import threading
import time
from datetime import date
from pathlib import Path

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")
SAMPLE_SECONDS = 0.01


def _status_kib(field: str) -> int:
    for line in STATUS.read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise LookupError(f"{STATUS} has no {field}")


class PeakMeter:
    """The peak resident memory of this process over a stretch of work, in MiB."""

    def __init__(self) -> None:
        self._sampled = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            CLEAR_REFS.write_text("5")
            self.method = "VmHWM"
        except OSError:
            self.method = "sampled VmRSS"

    def start(self) -> None:
        """Begin a stretch: reset the high-water mark, or start sampling."""
        if self.method == "VmHWM":
            CLEAR_REFS.write_text("5")
            return
        self._sampled = _status_kib("VmRSS")
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def stop(self) -> float:
        """End the stretch; its peak in MiB."""
        if self.method == "VmHWM":
            return _status_kib("VmHWM") / 1024
        self._stop.set()
        self._thread.join()
        return self._sampled / 1024

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._sampled = max(self._sampled, _status_kib("VmRSS"))
            time.sleep(SAMPLE_SECONDS)


def _run(meter: PeakMeter, arguments: list[str]) -> dict[str, object]:
    """One `credit-risk` command in this process: its status, seconds, peak and final RSS."""
    from credit_risk_assets.cli import main

    output = io.StringIO()
    meter.start()
    began = time.perf_counter()
    with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
        status = main(arguments)
    seconds = time.perf_counter() - began
    peak = meter.stop()
    return {
        "status": status,
        "seconds": round(seconds, 2),
        "peak_mib": round(peak, 1),
        "rss_after_mib": round(_status_kib("VmRSS") / 1024, 1),
        "output": output.getvalue()[-2000:] if status else "",
    }


def main(arguments: dict[str, object]) -> int:
    """Write sample data, run the pipeline `runs` times, then a backfill; write the report."""
    from credit_risk_assets.cli import main as cli_main

    months = int(arguments["backfill_months"])
    end = date.today().replace(day=1)
    meter = PeakMeter()
    cli_main(["sample-data"])
    runs = [_run(meter, ["run"]) for _ in range(int(arguments["runs"]))]

    # The backfill: a source of `months` months, every month materialised in one command.
    cli_main(["sample-data", "--months", str(months), "--end", f"{end:%Y-%m}"])
    backfill = _run(meter, ["run"])

    report = {"method": meter.method, "runs": runs, "backfill": backfill}
    Path(str(arguments["report"])).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
