"""Damaged checkpoints (a truncated or missing array file): named by step and file; resuming falls back past them
without deleting a good checkpoint; a config that no longer matches moves nothing."""

import glob
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from synclipmae.train.checkpoint import Checkpoints, DamagedCheckpoint

ABSTRACT = {"w": jax.ShapeDtypeStruct((64, 64), jnp.float32), "b": jax.ShapeDtypeStruct((10,), jnp.float32)}


def array_file(step_dir) -> str:
  """The largest array file of a checkpoint step (OCDBT data files under state/d/)."""
  return max(glob.glob(os.path.join(step_dir, "state", "d", "*")), key=os.path.getsize)


def damage(path, how: str) -> None:
  if how == "truncate":
    with open(path, "r+b") as f:
      f.truncate(os.path.getsize(path) // 2)
  else:
    os.remove(path)


def three_checkpoints(directory) -> Checkpoints:
  checkpoints = Checkpoints(directory, keep=3, async_save=False)
  for step in (100, 200, 300):
    checkpoints.save(step, {"w": jnp.full((64, 64), step, jnp.float32), "b": jnp.arange(10.0) + step},
                     {"position": step})
  checkpoints.wait()
  return checkpoints


@pytest.mark.parametrize("how", ["truncate", "missing"])
def test_damaged_newest_is_named_then_skipped_and_set_aside(tmp_path, how):
  checkpoints = three_checkpoints(tmp_path / "checkpoints")
  victim = array_file(tmp_path / "checkpoints" / "300")
  damage(victim, how)

  with pytest.raises(DamagedCheckpoint) as error:  # Evaluators and export: say what is wrong, do not guess.
    checkpoints.restore(ABSTRACT)
  message = str(error.value)
  assert "checkpoint step 300 is damaged" in message and victim in message and "older checkpoints: 100, 200" in message
  assert "\n" not in message and len(message) < 800
  assert checkpoints.all_steps() == [100, 200, 300]  # Nothing moved without fallback.

  lines = []
  state, data = checkpoints.restore(ABSTRACT, fallback=True, log=lines.append)
  assert float(state["w"][0, 0]) == 200 and data == {"position": 200}
  assert len(lines) == 1 and "skipping checkpoint step 300" in lines[0] and victim in lines[0]
  assert checkpoints.all_steps() == [100, 200]
  assert os.path.isdir(tmp_path / "damaged_checkpoints" / "300")  # Kept for inspection, outside orbax's count.

  # Saving step 300 again neither collides with the damaged copy nor deletes a good checkpoint to make room.
  checkpoints.save(300, {"w": jnp.full((64, 64), 301.0), "b": jnp.zeros(10)}, None)
  checkpoints.wait()
  assert checkpoints.all_steps() == [100, 200, 300]
  np.testing.assert_array_equal(checkpoints.restore(ABSTRACT)[0]["w"], 301.0)
  checkpoints.close()


def test_a_config_that_does_not_match_moves_nothing(tmp_path):
  checkpoints = three_checkpoints(tmp_path / "checkpoints")
  damage(array_file(tmp_path / "checkpoints" / "300"), "truncate")
  wrong = {**ABSTRACT, "w": jax.ShapeDtypeStruct((32, 32), jnp.float32)}
  with pytest.raises(ValueError, match="no checkpoint restores, none was moved: step 300: .*step 100"):
    checkpoints.restore(wrong, fallback=True)
  assert checkpoints.all_steps() == [100, 200, 300]
  assert not os.path.exists(tmp_path / "damaged_checkpoints")
  checkpoints.close()
