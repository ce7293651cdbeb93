#!/usr/bin/env python3
# Usage: python3 bench/compare/test_compare.py   (standard library only; no palm build, torch or jax needed)
"""compare.py against stand-ins: a fake `palm` that prints a `bench step --format json` line and a
fake interpreter that plays a peer, so the alternation, the medians, the ratio table and the
skipping of a missing framework are checked without running any benchmark."""
import io
import json
import os
import stat
import sys
import tempfile
import unittest
from contextlib import redirect_stderr, redirect_stdout

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402


def script(path, body):
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + body)
    os.chmod(path, os.stat(path).st_mode | stat.S_IEXEC)
    return path


class CompareTests(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.order = os.path.join(self.dir, "order")
        line = json.dumps({"tokensPerSecond": 2000.0, "mfu": 0.5, "config": "tiny"})
        self.palm = script(os.path.join(self.dir, "palm"), f"echo palm >> {self.order}\necho '{line}'\n")

    def run_compare(self, python, *extra):
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            rows = compare.main(["--palm", self.palm, "--python", python, "--configs", "tiny", "--remat", "none,full",
                                 "--threads", "2", "--rounds", "2", *extra])
        return rows, out.getvalue()

    def test_alternates_and_prints_ratios(self):
        peer_line = json.dumps({"tokens_per_second": 1000.0})
        fake = script(os.path.join(self.dir, "py"), f'echo "$(basename $1)" >> {self.order}\necho \'{peer_line}\'\n')
        rows, out = self.run_compare(fake, "--peers", "torch,jax")
        with open(self.order) as f:
            order = f.read().split()
        self.assertEqual(order, ["palm", "torch_step.py", "jax_step.py"] * 4)
        self.assertEqual(len(rows), 2)
        self.assertEqual(rows[0]["palm"], 2000.0)
        self.assertEqual(rows[0]["torch"], 1000.0)
        self.assertIn("| tiny | full | 2 | fp32 | 2,000 | 50.0% (fp32) | 1,000 | 2.00× | 1,000 | 2.00× |", out)

    def test_bf16_and_the_update_reach_every_side(self):
        # Each fake records its arguments; the compiled peer gets --compile, every side --precision.
        peer_line = json.dumps({"tokens_per_second": 1000.0})
        args_log = os.path.join(self.dir, "args")
        fake = script(os.path.join(self.dir, "py"), f'echo "$@" >> {args_log}\necho \'{peer_line}\'\n')
        line = json.dumps({"tokensPerSecond": 2000.0, "mfu": 0.5, "peakPrecision": "bf16"})
        self.palm = script(os.path.join(self.dir, "palm"), f'echo "palm $@" >> {args_log}\necho \'{line}\'\n')
        rows, out = self.run_compare(fake, "--peers", "torch,torch-compile", "--precision", "bf16", "--optimizer", "adamw")
        with open(args_log) as f:
            calls = f.read().splitlines()
        palm_calls = [c for c in calls if c.startswith("palm ")]
        peer_calls = [c for c in calls if not c.startswith("palm ")]
        self.assertTrue(all("--precision bf16" in c and "--optimizer adamw" in c for c in palm_calls + peer_calls), calls)
        self.assertEqual(sum("--compile" in c for c in peer_calls), len(peer_calls) // 2)
        self.assertIn("| tiny | full | 2 | bf16 | 2,000 | 50.0% (bf16) | 1,000 | 2.00× | 1,000 | 2.00× |", out)
        self.assertIn("forward + backward + AdamW update", out)

    def test_missing_framework_is_skipped_with_its_message(self):
        fake = script(os.path.join(self.dir, "py"), 'echo "torch is not installed (pip ...); skipping." >&2\nexit 3\n')
        rows, out = self.run_compare(fake, "--peers", "torch")
        self.assertNotIn("torch", rows[0])
        self.assertIn("torch: skipped (torch is not installed (pip ...))", out)
        with open(self.order) as f:
            self.assertEqual(f.read().split(), ["palm"] * 4)

    def test_failing_palm_stops_with_a_message(self):
        bad = script(os.path.join(self.dir, "palm"), 'echo "Error: --config must be tiny or small" >&2\nexit 64\n')
        with self.assertRaises(SystemExit) as e, redirect_stderr(io.StringIO()):
            compare.main(["--palm", bad, "--peers", "", "--rounds", "1"])
        self.assertIn("--config must be tiny or small", str(e.exception.code))

    def test_bad_arguments_are_rejected(self):
        for argv in (["--peers", "mxnet"], ["--rounds", "0"], ["--precision", "fp16"]):
            with self.assertRaises(SystemExit), redirect_stderr(io.StringIO()):
                compare.parse(argv)


if __name__ == "__main__":
    unittest.main()
