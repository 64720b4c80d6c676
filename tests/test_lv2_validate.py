"""lv2lint-like checks (lv2lint is not packaged in Debian): both LV2 players' Turtle validated
against the LV2 specifications with lv2_validate (lv2-dev, with sord_validate from sordi), and
loaded by lilv (lv2info)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

LV2_DIR = Path(__file__).resolve().parent.parent / "plugin_host" / "lv2"
pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("lv2_validate", "sord_validate", "lv2info")),
    reason="needs lv2-dev, sordi and lilv-utils: apt-get install lv2-dev sordi lilv-utils")


def validation_errors(bundle: Path) -> list[str]:
    done = subprocess.run(["lv2_validate", *map(str, sorted(bundle.glob("*.ttl")))],
                          capture_output=True, text=True, timeout=300)
    text = done.stdout + done.stderr
    # each error: "error: what" and the offending triple's lines after it
    return [m.group(0) for m in re.finditer(r"^error: .*(?:\n {7}.*)*", text, re.M)]


def test_hand_written_player_turtle_is_valid(tmp_path):
    subprocess.run(["make", "-s", "-C", str(LV2_DIR), f"OUT={tmp_path}"], check=True)
    assert validation_errors(tmp_path / "barforge_player.lv2") == []


def test_dpf_player_turtle_is_valid_and_loads(dpf_bundles):
    bundle = dpf_bundles / "BarforgePlayer.lv2"
    errors = validation_errors(bundle)
    # DPF adds MOD's mod:brand and mod:label; MOD's vocabulary is not installed to check them
    others = [e for e in errors if "moddevices.com/ns/mod#" not in e]
    assert others == []
    info = subprocess.run(["lv2info", "http://barforge.dev/plugins/player"],
                          env=dict(os.environ, LV2_PATH=str(dpf_bundles)), capture_output=True,
                          text=True, check=True).stdout
    assert "Barforge Player" in info and "Has latency:       yes" in info
    for symbol in ("bars", "generate", "continue", "slot", "capture", "playing", "server_state",
                   "progress", "server_error"):
        assert f"Symbol:      {symbol}" in info
    ttl = (bundle / "BarforgePlayer_dsp.ttl").read_text()
    assert "patch:writable <http://barforge.dev/plugins/player#prompt>" in ttl
