"""Reading checkpoint files and copying tensors into modules: every failure names the file and the tensor."""

import json

import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import save_file

from synclipmae.pretrained import checkpoint_files as cf


class Tiny(nnx.Module):
  def __init__(self):
    self.fc = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    self.head = nnx.Linear(3, 1, rngs=nnx.Rngs(1))


def _write(tmp_path, tensors):
  save_file(tensors, str(tmp_path / cf.SAFETENSORS))
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "tiny"}))
  return tmp_path


def test_reads_safetensors_directory_and_assigns(tmp_path):
  w = np.arange(6, dtype=np.float32).reshape(2, 3)
  _write(tmp_path, {"fc.weight": w, "fc.bias": np.ones(3, np.float32)})
  source = cf.TensorSource.open(tmp_path)
  model = Tiny()
  head_before = np.asarray(model.head.kernel[...])
  cf.assign(model, {"fc/kernel": ("fc.weight", source.take("fc.weight", (2, 3))),
                    "fc/bias": ("fc.bias", source.take("fc.bias"))}, source.file, leave_out=["head"])
  source.finish()
  np.testing.assert_array_equal(model.fc.kernel[...], w)
  np.testing.assert_array_equal(model.head.kernel[...], head_before)  # Left out: fresh initialisation kept.
  assert cf.read_config(tmp_path)["model_type"] == "tiny"


def test_bfloat16_safetensors_read_without_torch(tmp_path):
  import ml_dtypes
  _write(tmp_path, {"x": np.array([1.5, -2.0], dtype=ml_dtypes.bfloat16)})
  np.testing.assert_array_equal(cf.TensorSource.open(tmp_path).take("x"), [1.5, -2.0])


def test_errors_name_the_file_and_the_tensor(tmp_path):
  _write(tmp_path, {"fc.weight": np.zeros((3, 3), np.float32), "extra.bias": np.zeros(2, np.float32)})
  source = cf.TensorSource.open(tmp_path)
  with pytest.raises(cf.CheckpointError, match=r"model\.safetensors: tensor 'fc\.weight' has shape \(3, 3\), "
                                               r"expected \(2, 3\)"):
    source.take("fc.weight", (2, 3))
  with pytest.raises(cf.CheckpointError, match="tensor 'fc.bias' is missing"):
    source.take("fc.bias")
  with pytest.raises(cf.CheckpointError, match="tensor 'extra.bias' is unexpected"):
    source.finish()
  with pytest.raises(cf.CheckpointError, match="tensor 'fc.weight' has shape \\(3, 3\\), parameter 'fc/kernel'"):
    cf.assign(Tiny(), {"fc/kernel": ("fc.weight", np.zeros((3, 3)))}, source.file, leave_out=["fc/bias", "head"])
  with pytest.raises(cf.CheckpointError, match="no tensor for parameter 'fc/bias'"):
    cf.assign(Tiny(), {"fc/kernel": ("fc.weight", np.zeros((2, 3)))}, source.file, leave_out=["head"])


def test_corrupt_truncated_and_missing_files(tmp_path):
  _write(tmp_path, {"fc.weight": np.zeros((2, 3), np.float32)})
  data = (tmp_path / cf.SAFETENSORS).read_bytes()
  (tmp_path / cf.SAFETENSORS).write_bytes(data[: len(data) // 2])
  with pytest.raises(cf.CheckpointError, match="model.safetensors: unreadable safetensors file"):
    cf.read_tensors(tmp_path)
  with pytest.raises(cf.CheckpointError, match="nowhere: no such checkpoint file or directory"):
    cf.read_tensors(tmp_path / "nowhere")
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(cf.CheckpointError, match="empty: no weights file"):
    cf.read_tensors(empty)
  with pytest.raises(cf.CheckpointError, match="no config.json"):
    cf.read_config(empty)


def test_pytorch_pickle_weights_only(tmp_path):
  torch = pytest.importorskip("torch")
  torch.save({"state_dict": {"fc.weight": torch.ones(2, 3)}, "meta": {"epoch": 3}}, tmp_path / "ckpt.pth")
  np.testing.assert_array_equal(cf.read_tensors(tmp_path / "ckpt.pth")["fc.weight"], np.ones((2, 3)))

  class Evil:
    def __reduce__(self):
      return (print, ("unpickled arbitrary code",))

  torch.save({"fc.weight": Evil()}, tmp_path / cf.PYTORCH_BIN)
  with pytest.raises(cf.CheckpointError, match="pytorch_model.bin: unreadable PyTorch checkpoint"):
    cf.read_tensors(tmp_path)
