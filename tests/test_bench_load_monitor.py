"""The benchmarks' load check counts other processes' CPU time, not its own."""
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # bench/ is not installed
from bench._load_monitor import LoadMonitor, idle_refusal  # noqa: E402

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/stat")


def test_a_busy_other_process_is_counted_as_load():
    busy = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\n"
                             "while time.time() - t < 1.5: pass"])
    try:
        time.sleep(0.2)   # the child is spinning
        with LoadMonitor() as mon:
            time.sleep(1.0)
    finally:
        busy.wait()
    assert 0.5 < mon.sample.other_cores, mon.sample


def test_idle_refusal_names_the_load_average():
    assert idle_refusal(1e9) is None
    message = idle_refusal(-1.0)
    assert message and "load average" in message
