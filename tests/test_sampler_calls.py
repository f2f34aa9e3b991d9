"""The one table of sampler calls (samplers/calls.py) and its JS mirror (js/cost.js samplerEvals) agree.

The host test tests/host/test_composition_host.py counts real calls of every ComfyUI sampler against
samplers/calls.py; this test holds the frontend's cost lines to the same numbers, without ComfyUI."""

import json
import pathlib
import shutil
import subprocess

import pytest

from tools.reflect_pack import module
calls = module("samplers.calls")

ROOT = pathlib.Path(__file__).resolve().parents[1]
SAMPLERS = sorted(calls.CALLS_PER_STEP) + ["euler", "ddim", "dpmpp_2m", "lcm", "uni_pc", "euler_ancestral"]
STEPS = range(0, 9)


def test_run_calls_by_hand():
    assert calls.run_calls("euler", 20) == 20
    assert calls.run_calls("heun", 5) == 9 and calls.run_calls("heun", 5, ends_at_zero=False) == 10
    assert calls.run_calls("heunpp2", 5) == 3 * 3 + 2 + 1
    assert calls.run_calls("heunpp2", 5, ends_at_zero=False) == 3 * 3 + 2 + 1  # its last sigma, not 0
    assert calls.run_calls("heunpp2", 1) == 1
    assert calls.run_calls("seeds_3", 5) == 4 * 3 + 1
    assert calls.run_calls("sa_solver_pece", 5) == 1 + 4 * 2


@pytest.mark.skipif(shutil.which("node") is None, reason="node (Node.js) is not installed")
def test_js_cost_mirrors_the_python_table():
    script = (
        "import { samplerEvals } from './js/cost.js';"
        f"const names = {json.dumps(SAMPLERS)};"
        "const out = {};"
        f"for (const s of names) for (const n of {json.dumps(list(STEPS))}) for (const z of [true, false])"
        " out[`${s}|${n}|${z}`] = samplerEvals(s, n, z);"
        "console.log(JSON.stringify(out));")
    res = subprocess.run(["node", "--input-type=module", "-e", script], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    got = json.loads(res.stdout)
    want = {f"{s}|{n}|{str(z).lower()}": calls.run_calls(s, n, z) for s in SAMPLERS for n in STEPS for z in (True, False)}
    assert got == want
