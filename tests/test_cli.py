"""The command line: bad input ends with one line naming it, not a traceback."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args, env=None):
  return subprocess.run([sys.executable, "-m", "synclipmae.cli", *args], cwd=REPO, capture_output=True, text=True,
                        timeout=120, env={**os.environ, **(env or {})})


def test_bad_input_is_one_line_without_traceback(tmp_path):
  result = _run("eval-sync", f"--workdir={tmp_path / 'missing'}")
  assert result.returncode == 2
  assert f"synclipmae eval-sync: error: {tmp_path / 'missing'}" in result.stderr
  assert "Traceback" not in result.stderr
  debug = _run("eval-sync", f"--workdir={tmp_path / 'missing'}", env={"SYNCLIPMAE_TRACEBACK": "1"})
  assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_unknown_command_lists_the_commands():
  result = _run("pretrian")
  assert result.returncode == 2 and "unknown command 'pretrian'" in result.stderr and "prep" in result.stderr


def test_help_shows_the_subcommands_doc_and_flags():
  result = _run("sync", "--help")  # (absl exits with status 1 after --help.)
  assert "POSITIVE offset means the AUDIO LAGS" in result.stdout and "--fix_out" in result.stdout
  assert "--workdir" in _run("export", "--help").stdout
