"""Dubbing: the mouth region and its views, the decoder fine-tune, `dub` on aligned and raw videos with its bad
inputs, and `eval-dub` against the synthetic truth."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import prep_media
from data_pipelines import media
from data_pipelines.prep import decode
from synclipmae import dubbing, inference
from synclipmae.data.corpus import Corpus
from synclipmae.eval import dubbing as dubbing_eval

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_region_grows_the_mouth_box_and_every_frame_keeps_the_same_visible_patches():
  mouth = np.zeros((3, 64, 64), bool)
  mouth[0, 40:44, 28:36] = True  # A closed mouth,
  mouth[1, 38:52, 26:38] = True  # a wide open one,
  region = dubbing.region_masks(mouth, grow=0.05)  # and frame 2 has no mask: the mean box.
  # 0.05 * 64 = 3.2 px, rounded outwards: rows 36..47, columns 24..39.
  assert region[0, 36:48, 24:40].all() and region[0].sum() == 12 * 16
  assert region[2].any() and region[1].sum() > region[2].sum() > region[0].sum()
  masked = dubbing.masked_patches(region, 8)
  touched = dubbing.touched_patches(region, 8)
  assert (masked >= touched).all() and len(set(masked.sum(1))) == 1 and masked.sum(1)[0] == touched.sum(1).max()
  # The extra patches of the smaller regions border them; the visible ones are the rest, in order.
  keep = dubbing.visible_keep(masked)
  assert keep.shape == (3, 64 - masked.sum(1)[0]) and (np.diff(keep, axis=1) > 0).all()
  assert not masked[0, 0] and not masked[0, 63]
  pixels = dubbing.patch_pixels(masked, 8)
  assert (pixels >= region).all() and pixels.shape == (3, 64, 64)
  assert dubbing.mask_exactly(touched, 24).sum(1).tolist() == [24] * 3
  with pytest.raises(ValueError, match="clip c7: no frame has a mouth mask"):
    dubbing.region_masks(np.zeros((2, 64, 64), bool), where="clip c7")


def test_retrieve_mouths_finds_the_own_frame_with_the_driver_in_the_frames_pose():
  rng = np.random.default_rng(0)
  own = rng.normal(size=(40, 8))
  own[20:] = own[:20]  # Frames s and s + 20 show the same mouth, in two poses (z_amb ten apart on every axis):
  ambient = rng.normal(scale=0.1, size=(40, 5)) + 10.0 * (np.arange(40) >= 20)[:, None]
  mouth = rng.integers(20, size=40)  # The mouth each frame must show.
  driving = own[mouth]
  sources = dubbing.retrieve_mouths(driving, own, ambient, neighbours=1, ambient_weight=0.5)
  assert sources.shape == (40, 1) and (sources[:, 0] == mouth + 20 * (np.arange(40) >= 20)).all()
  # Without the pose term the two frames with that mouth tie (the first wins): the pose term picks the frame's pose.
  assert (dubbing.retrieve_mouths(driving, own, ambient, neighbours=1, ambient_weight=0.0)[:, 0] == mouth).all()
  # Nearest first; never more neighbours than frames; the same answer computed a few rows at a time.
  three = dubbing.retrieve_mouths(driving, own, ambient, neighbours=3)
  assert three.shape == (40, 3) and (three[:, 0] == sources[:, 0]).all()
  np.testing.assert_array_equal(three, dubbing.retrieve_mouths(driving, own, ambient, neighbours=3, rows=7))
  assert dubbing.retrieve_mouths(driving[:2], own[:2], ambient[:2], neighbours=5).shape == (2, 2)


def test_finetune_moves_only_the_decoder_towards_the_truth(trained_run, dub_model):
  base, tuned = inference.load_pretrained(trained_run["export"]), inference.load_pretrained(dub_model)
  info = tuned.info["dubbing"]
  assert info["monitor_loss_after"] < 0.9 * info["monitor_loss_before"]
  assert 0 < info["max_masked"] < tuned.num_patches
  from synclipmae import export
  before, after = export.flat_weights(base.model), export.flat_weights(tuned.model)
  changed = {k for k in before if not np.array_equal(before[k], after[k])}
  assert changed and all(k.startswith("decoder/") for k in changed)
  # So the tokens of any frame are the base model's.
  clip = Corpus(trained_run["corpus"]).read("heldout", 0)
  np.testing.assert_array_equal(base.encode_clip(clip)["z_voc"], tuned.encode_clip(clip)["z_voc"])


def test_dub_frames_redraws_only_the_mouth_region_of_driven_frames(trained_run, dub_model):
  pretrained = inference.load_pretrained(dub_model)
  corpus = Corpus(trained_run["corpus"])
  a, b = corpus.read("heldout", 0), corpus.read("heldout", 5)
  t = min(a.num_frames, b.num_frames, 40)
  frames = a.decode_frames()[:t]
  driving = pretrained.encode_clip(b, ("audio",))["audio"][:t]
  driven = np.arange(t) < t - 5
  dub = dubbing.dub_frames(pretrained, frames, a.face_masks[:t], a.mouth_masks[:t], driving, driven, mode="replace")
  assert dub.frames.shape == frames.shape and dub.reference == t // 2
  np.testing.assert_array_equal(dub.frames[~dub.region], frames[~dub.region])
  np.testing.assert_array_equal(dub.frames[t - 5:], frames[t - 5:])
  assert dub.region[:t - 5].any(axis=(1, 2)).all() and (dub.region[:t - 5] >= a.mouth_masks[:t - 5]).all()
  assert np.abs(dub.frames.astype(int) - frames).max() > 0


def test_retrieve_dub_pastes_the_targets_own_mouths_with_any_model(trained_run, tmp_path):
  pretrained = inference.load_pretrained(trained_run["export"])  # Not fine-tuned for dubbing.
  corpus = Corpus(trained_run["corpus"])
  a, b = corpus.read("heldout", 0), corpus.read("heldout", 5)
  t = min(a.num_frames, b.num_frames, 40)
  frames, face, mouth = a.decode_frames()[:t], a.face_masks[:t], a.mouth_masks[:t]
  own = pretrained.encode_clip(a, ("z_voc", "audio"))
  # Driven by its own z_voc, every frame's nearest own frame is itself: the dub is the target.
  itself = dubbing.dub_frames(pretrained, frames, face, mouth, own["z_voc"][:t], mode="retrieve", neighbours=1)
  assert (itself.sources[:, 0] == np.arange(t)).all() and np.array_equal(itself.frames, frames)
  # Driven by B's audio, indexed by A's own audio: A's pixels outside the region, inside the mean of its sources.
  driven = np.arange(t) < t - 5
  dub = dubbing.dub_frames(pretrained, frames, face, mouth, pretrained.encode_clip(b, ("audio",))["audio"][:t],
                           driven, mode="retrieve", own_driving=own["audio"][:t])
  assert dub.sources.shape == (t, dubbing.RETRIEVE_NEIGHBOURS) and dub.reference == -1
  np.testing.assert_array_equal(dub.frames[~dub.region], frames[~dub.region])
  np.testing.assert_array_equal(dub.frames[t - 5:], frames[t - 5:])
  mean = np.round(frames[dub.sources].astype(np.float32).mean(1))
  np.testing.assert_array_equal(dub.frames[dub.region], mean[dub.region])
  assert (dub.region[:t - 5] >= dubbing.region_masks(mouth[:t - 5])).all() and (dub.frames != frames).any()
  with pytest.raises(ValueError, match="40 target frames but 39 of their own driving tokens"):
    dubbing.dub_frames(pretrained, frames, face, mouth, own["z_voc"][:t], mode="retrieve",
                       own_driving=own["audio"][:t - 1])
  # `dub` of a silent aligned target: its frames are indexed by z_voc, and it says so.
  target = _aligned_clip_video(a, tmp_path / "target.mp4", audio=False)
  summary = dubbing.dub_video(pretrained, target, tmp_path / "dub.mp4", audio=str(_aligned_clip_video(
      b, tmp_path / "new.mp4")), aligned=True, mode="retrieve", log=None)
  assert summary["redrawn_frames"] == min(a.num_frames, b.num_frames) and (tmp_path / "dub.mp4").is_file()
  assert any("no audio track" in note for note in summary["notes"])


def _aligned_clip_video(clip, path, audio=True):
  return media.write_mp4(path, clip.decode_frames(), clip.audio_float() if audio else None)


def test_dub_command_writes_the_new_sound_and_names_bad_inputs(trained_run, dub_model, tmp_path):
  corpus = Corpus(trained_run["corpus"])
  a, b = corpus.read("heldout", 0), corpus.read("heldout", 5)
  target = _aligned_clip_video(a, tmp_path / "target.mp4", audio=False)  # A silent target is fine.
  short = tmp_path / "short.wav"
  import soundfile
  soundfile.write(short, b.audio_float()[:20 * 640], 16000)
  pretrained = inference.load_pretrained(dub_model)
  summary = dubbing.dub_video(pretrained, target, tmp_path / "audio_dub.mp4", audio=str(short), aligned=True,
                              mode="replace", log=None)
  assert summary["redrawn_frames"] == 20 and summary["num_frames"] == a.num_frames
  assert "padded with silence" in summary["notes"][0]
  out = decode.decode(tmp_path / "audio_dub.mp4")
  assert len(out.frames) == a.num_frames and np.abs(out.audio[:20 * 640]).max() > 0.01
  assert np.abs(out.audio[21 * 640:]).max() < 0.01  # The new sound, not the target's.
  # Video-driven, through the command: the driving video's sound comes with its mouth.
  driver = _aligned_clip_video(b, tmp_path / "driver.mp4")
  run = lambda *args: subprocess.run([sys.executable, "-m", "synclipmae.cli", "dub", f"--model={dub_model}",
                                      *args], cwd=REPO, capture_output=True, text=True, timeout=600)
  done = run(f"--video={target}", f"--driving_video={driver}", "--aligned", f"--out={tmp_path / 'video_dub.mp4'}")
  assert done.returncode == 0, done.stderr[-3000:]
  assert (tmp_path / "video_dub.mp4").is_file() and "video-driven" in done.stdout
  # Bad inputs: one line naming the problem, and no output file.
  noise = prep_media.write_video(tmp_path / "noface.mp4", prep_media.noise_frames(30), fps=25,
                                 audio=np.zeros(30 * 640, np.float32))
  for args, message in [
      ((f"--video={noise}", f"--audio={short}"), "no face found"),
      ((f"--video={target}", f"--aligned", f"--driving_video={noise}", "--driving_aligned=false"), "no face found"),
      ((f"--video={target}", "--aligned", f"--audio={tmp_path / 'none.wav'}"), "none.wav: no such audio file"),
      ((f"--video={target}", "--aligned"), "exactly one of --audio"),
      ((f"--video={target}", "--aligned", f"--audio={short}", f"--model={trained_run['export']}", "--mode=replace"),
       "not fine-tuned for dubbing")]:
    out = tmp_path / "bad.mp4"
    failed = run(*args, f"--out={out}")
    assert failed.returncode != 0 and message in failed.stderr, (args, failed.stderr[-2000:])
    assert not out.exists() and not list(tmp_path.glob(".bad.mp4*"))


@pytest.mark.parametrize("mode", ["replace", "retrieve"])
def test_dub_of_a_raw_video_at_another_frame_rate_is_pasted_into_the_full_frame(dub_model, tmp_path, mode):
  video = prep_media.astronaut_video(tmp_path / "astronaut.mp4", seconds=2.0, fps=30)
  pretrained = inference.load_pretrained(dub_model)
  new_audio = prep_media.speech(2.0, seed=4, rate=16000)
  path = tmp_path / "new.wav"
  import soundfile
  soundfile.write(path, new_audio, 16000)
  summary = dubbing.dub_video(pretrained, video, tmp_path / "dub.mp4", audio=str(path), mode=mode, log=None)
  source, out = decode.decode(video), decode.decode(tmp_path / "dub.mp4")
  assert out.frames.shape == source.frames.shape and summary["num_frames"] == 50
  changed = np.abs(out.frames.astype(int) - source.frames).max(-1) > 40
  # Redrawn pixels lie inside the face, in a small part of the frame.
  assert summary["redrawn_frames"] > 0 and 0 < changed.mean() < 0.05
  rows, cols = np.nonzero(changed.any(0))
  assert 40 < rows.mean() < 170 and 60 < cols.mean() < 200


def test_eval_dub_scores_against_the_truth(dub_model, trained_run, tmp_path, monkeypatch):
  pretrained = inference.load_pretrained(dub_model)
  judge = inference.load_pretrained(trained_run["export"])  # Sync scored by another model than the dubbing one.
  judged_by = []
  sync = dubbing_eval._sync
  monkeypatch.setattr(dubbing_eval, "_sync", lambda model, *args: judged_by.append(model) or sync(model, *args))
  result = dubbing_eval.evaluate(pretrained, Corpus(trained_run["corpus"]), "heldout", num_pairs=2, mode="replace",
                                 judge=judge, videos_dir=tmp_path, num_videos=1, log=None)
  s = result["summary"]
  assert result["sync_judge"] == judge.path and len(judged_by) == 2 * 5 and all(m is judge for m in judged_by)
  assert result["num_pairs"] == 2 and set(s) == {"audio", "video", "undubbed", "truth", "delayed"}
  # Every kind is scored for sync the same way (the small test model's verdicts themselves are not asserted).
  for row in result["pairs"]:
    assert all(float(row[k]["offset_frames"]).is_integer() and np.isfinite(row[k]["confidence"]) for k in s)
  assert all(s[k]["in_sync"] in (0.0, 0.5, 1.0) for k in s)
  assert s["delayed"]["at_planted_offset"] in (0.0, 0.5, 1.0) and "found at offset -4" in dubbing_eval.format_summary(
      result)
  # The truth is A's face with B's mouth: the undubbed target differs from it, but within the same face.
  assert 5 < s["undubbed"]["mouth_psnr"] < 60
  for kind in ("audio", "video"):
    assert 0 < s[kind]["mouth_psnr"] < 60 and -1 <= s[kind]["mouth_ssim"] <= 1
    assert 0.5 < s[kind]["identity_cosine"] <= 1.0001
  assert np.isclose(s["audio"]["psnr_gain_db"], s["audio"]["mouth_psnr"] - s["undubbed"]["mouth_psnr"])
  written = dubbing_eval.write_results(result, tmp_path)
  assert json.load(open(written["json"]))["pairs"][0]["num_frames"] > 0
  videos = list(tmp_path.glob("dub_00_*.mp4"))
  assert len(videos) == 1 and decode.decode(videos[0]).frames.shape[2] == 4 * 4 * pretrained.image_size
