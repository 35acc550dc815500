"""Export, `load_pretrained` and the tokens of a video: what users of a trained model rely on."""

import json
import os
import subprocess
import sys

import numpy as np
import prep_media
from conftest import TRAINED_STEPS
import pytest
from safetensors.numpy import load_file

from data_pipelines import media
from synclipmae import export, inference
from synclipmae.commands.extract import extract_videos
from synclipmae.data.corpus import Corpus

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN_KEYS = ("z_id", "z_voc", "z_amb", "audio_tokens")

# Loads an export with checkpointing, the input pipeline and the training code made unimportable, and saves the
# tokens of a video. (optax cannot be blocked: flax.nnx itself imports it; the loader never uses it.)
FRESH_PROCESS = """
import sys
for name in ("orbax", "orbax.checkpoint", "grain", "synclipmae.train", "synclipmae.data.pipeline"):
  sys.modules[name] = None  # Any import of these now fails.
import numpy as np
import synclipmae
pretrained = synclipmae.load_pretrained(sys.argv[1])
tokens = synclipmae.video_tokens(pretrained, sys.argv[2], aligned=True)
np.savez(sys.argv[3], frame_index=tokens.frame_index, **{k: getattr(tokens, k) for k in %r})
""" % (TOKEN_KEYS,)


@pytest.fixture(scope="module")
def heldout_video(trained_run, tmp_path_factory):
  clip = Corpus(trained_run["corpus"]).read("heldout", 0)
  return str(media.write_mp4(tmp_path_factory.mktemp("video") / "clip.mp4", clip.decode_frames(), clip.audio_float()))


def test_export_in_a_fresh_process_gives_the_workdirs_tokens_bit_for_bit(trained_run, heldout_video, tmp_path):
  out = tmp_path / "tokens.npz"
  result = subprocess.run([sys.executable, "-c", FRESH_PROCESS, str(trained_run["export"]), heldout_video, str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  fresh = np.load(out)
  workdir = inference.load_pretrained(trained_run["workdir"])  # Through orbax, from the checkpoint.
  tokens = inference.video_tokens(workdir, heldout_video, aligned=True)
  assert tokens.z_voc.shape == (tokens.num_frames, 64) and len(tokens.audio_tokens) == tokens.num_frames
  for key in TOKEN_KEYS:
    np.testing.assert_array_equal(fresh[key], getattr(tokens, key), err_msg=key)
  np.testing.assert_array_equal(fresh["frame_index"], np.arange(tokens.num_frames))


def test_export_directory_and_model_card(trained_run):
  directory = trained_run["export"]
  assert sorted(os.listdir(directory)) == ["README.md", "config.json", "model.safetensors"]
  info = json.load(open(directory / "config.json"))
  assert info["format"] == "synclipmae-export" and info["variant"] == "mu" and info["step"] == TRAINED_STEPS
  assert len(info["views"]["aligned_masks"]["mouth_fraction"]) == 64
  assert 0 <= info["sync_eval"]["accuracy"] <= 1 and info["training"]["num_steps"] == TRAINED_STEPS
  weights = load_file(directory / "model.safetensors")
  assert not any("opt" in name or "mu" == name.split("/")[0] for name in weights)  # No optimiser state.
  assert any(name.startswith("audio_encoder/") for name in weights)
  assert info["factors"]["matrix"]["z_id"]["identity"] > 0.5  # pretrain ran the factor probes; the card shows them.
  card = (directory / "README.md").read_text()
  assert f"step {TRAINED_STEPS}" in card and "load_pretrained" in card and "Zero-shot AV sync" in card
  assert "| z_amb |" in card


def _copy_export(trained_run, tmp_path):
  target = tmp_path / "export"
  target.mkdir(parents=True)
  for name in os.listdir(trained_run["export"]):
    (target / name).write_bytes((trained_run["export"] / name).read_bytes())
  return target


def test_broken_exports_are_one_line_errors_naming_file_and_tensor(trained_run, tmp_path):
  broken = _copy_export(trained_run, tmp_path)
  weights = broken / "model.safetensors"
  weights.write_bytes(weights.read_bytes()[:len(weights.read_bytes()) // 2])
  with pytest.raises(inference.ModelFileError, match=r"model\.safetensors.*(truncated|tensor)"):
    inference.load_pretrained(broken)

  mismatched = _copy_export(trained_run, tmp_path / "b")
  info = json.load(open(mismatched / "config.json"))
  info["model"]["prompt_dim"] = 32
  (mismatched / "config.json").write_text(json.dumps(info))
  with pytest.raises(inference.ModelFileError, match=r"model\.safetensors: tensor '[\w/]+' has shape"):
    inference.load_pretrained(mismatched)

  missing = _copy_export(trained_run, tmp_path / "c")
  os.remove(missing / "model.safetensors")
  with pytest.raises(inference.ModelFileError, match="neither an export"):
    inference.load_pretrained(missing)
  with pytest.raises(inference.ModelFileError, match="no such"):
    inference.load_pretrained(tmp_path / "nowhere")


def test_a_failed_export_leaves_nothing_a_loader_accepts(trained_run, tmp_path, monkeypatch):
  import safetensors.numpy

  def dies(tensors, path, metadata=None):
    with open(path, "wb") as f:
      f.write(b"partial")
    raise KeyboardInterrupt("killed mid-write")

  monkeypatch.setattr(safetensors.numpy, "save_file", dies)
  with pytest.raises(KeyboardInterrupt):
    export.export(trained_run["workdir"], tmp_path / "out")
  assert os.listdir(tmp_path) == []  # Neither the export nor its staging directory.
  monkeypatch.undo()
  with pytest.raises(FileExistsError):
    export.export(trained_run["workdir"], trained_run["export"])


def test_extract_aligned_and_raw_videos_with_failures_and_rerun(trained_run, heldout_video, tmp_path):
  out = tmp_path / "features"
  counts = extract_videos(str(trained_run["export"]), [heldout_video], str(out), aligned=True, quiet=True,
                          echo=lambda *_: None)
  assert counts == {"done": 1, "failed": 0, "skipped": 0}
  entry = json.loads((out / "manifest.jsonl").read_text())
  tensors = load_file(out / entry["file"])
  assert tensors["z_voc"].shape == (entry["num_frames"], 64) and entry["segments"] == [[0, entry["num_frames"]]]
  np.testing.assert_allclose(tensors["frame_time_s"], np.arange(entry["num_frames"]) / 25)
  assert tensors["audio_tokens"].shape == tensors["z_voc"].shape

  # Raw videos through the face pipeline: a real talking face muxed with speech, and bad inputs beside it.
  raw = tmp_path / "raw"
  raw.mkdir()
  carphone = prep_media.carphone_with_speech(raw / "carphone.mp4")
  bad = prep_media.bad_inputs(raw / "bad", carphone)
  keep = ("corrupt", "no_audio", "no_face")
  for kind in set(bad) - set(keep):
    os.remove(bad[kind])
  counts = extract_videos(str(trained_run["export"]), [str(raw)], str(tmp_path / "raw_features"), quiet=True,
                          echo=lambda *_: None)
  assert counts == {"done": 1, "failed": 3, "skipped": 0}
  failures = {os.path.basename(f["video"]): f for f in map(json.loads, open(tmp_path / "raw_features" /
                                                                                "failures.jsonl"))}
  assert failures["no_audio.mp4"]["reason"] == "no audio track"
  assert failures["no_face.mp4"]["stage"] == "faces" and failures["corrupt.mp4"]["stage"] in ("open", "probe")
  entry = json.loads((tmp_path / "raw_features" / "manifest.jsonl").read_text())
  assert entry["video"] == str(carphone) and entry["face_frames"] >= 90  # 4 s at 25 fps, a face throughout.
  tensors = load_file(tmp_path / "raw_features" / entry["file"])
  assert tensors["z_id"].shape == (entry["face_frames"], 64) and np.all(np.isfinite(tensors["z_voc"]))
  again = extract_videos(str(trained_run["export"]), [str(raw)], str(tmp_path / "raw_features"), quiet=True,
                         echo=lambda *_: None)
  assert again == {"done": 0, "failed": 0, "skipped": 4}


def test_sync_command_on_a_raw_video_and_one_line_errors(trained_run, tmp_path):
  carphone = prep_media.carphone_with_speech(tmp_path / "carphone.mp4")
  cli = [sys.executable, "-m", "synclipmae.cli", "sync", f"--model={trained_run['export']}",
         f"--out={tmp_path / 'out'}", "--quiet"]
  result = subprocess.run([*cli, str(carphone)], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  line = json.loads((tmp_path / "out" / "sync.jsonl").read_text())
  assert line["video"] == str(carphone) and line["num_frames"] >= 90 and -15 <= line["offset_frames"] <= 15
  assert "confidence" in result.stdout and str(carphone) in result.stdout

  silent = tmp_path / "silent.mp4"
  prep_media.write_video(silent, prep_media.carphone_frames()[:60])
  result = subprocess.run([*cli, str(silent)], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 1
  assert f"{silent}: probe: no audio track" in result.stderr
  result = subprocess.run([sys.executable, "-m", "synclipmae.cli", "sync", f"--model={tmp_path / 'none'}",
                           str(carphone)], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2 and "no such export directory" in result.stderr
  assert len(result.stderr.strip().splitlines()) == 2  # The error line and the traceback hint.


def test_an_export_goes_to_and_comes_from_object_storage_whole(trained_run, tmp_path, monkeypatch):
  """The gs:// branch of export / load_pretrained (synclipmae/storage.py), run on a local directory standing in for
  a bucket: staged off the bucket, copied up with config.json last, fetched back to the same weights."""
  from synclipmae import storage
  bucket = str(tmp_path / "bucket")
  monkeypatch.setattr(storage, "is_url", lambda path: os.fspath(path).startswith(bucket))
  monkeypatch.setenv(storage.CACHE_ENV, str(tmp_path / "cache"))  # Where load_pretrained stages the export.
  copied = []
  gpath = type(storage.path(bucket))
  real_copy = gpath.copy
  monkeypatch.setattr(gpath, "copy", lambda self, dst, **kw: (copied.append(self.name), real_copy(self, dst, **kw))[1])
  out = export.export(trained_run["workdir"], f"{bucket}/export")
  assert sorted(os.listdir(out)) == ["README.md", "config.json", "model.safetensors"]
  assert copied[-1] == "config.json" and os.listdir(tmp_path) == ["bucket"]  # Nothing staged beside it.
  loaded = inference.load_pretrained(out)
  assert loaded.path == str(out)
  reference = load_file(trained_run["export"] / "model.safetensors")
  for name, value in load_file(out / "model.safetensors").items():
    np.testing.assert_array_equal(value, reference[name], err_msg=name)
