"""`synclipmae prep`: decoding by timestamps, A/V alignment, shot cuts, failures, resume, sharding, and training on
the result. The face detection / alignment criteria themselves are tested in the faces/align tests; here they are
checked end to end on the written records."""

import dataclasses
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

import prep_media
from data_pipelines.prep import align, decode, inputs, parts, process, run, segment, settings
from synclipmae.data import pipeline, records
from synclipmae.data.corpus import Corpus

REPO = Path(__file__).resolve().parents[1]
SIZE = 64  # The `mu` model's image_size.
CONFIG = settings.PrepConfig(size=SIZE, min_clip_s=0.64)
EXPECTED_FAILURES = {  # bad input -> (stage, words in the reason)
    "corrupt": ("open", "corrupt or truncated"), "truncated": ("open", "corrupt or truncated"),
    "empty": ("open", "empty file"), "text": ("open", "not a readable media file"),
    "no_audio": ("probe", "no audio track"), "no_face": ("faces", "no face found"),
    "tiny": ("probe", "absurd resolution 16x16")}


@pytest.fixture(scope="module")
def media(tmp_path_factory):
  """A folder of good inputs (one speaker folder each) and one bad input of every kind."""
  root = tmp_path_factory.mktemp("prep_media") / "videos"
  for name in ("alice", "bob", "carol"):
    (root / name).mkdir(parents=True)
  good = {"alice/carphone.mp4": prep_media.carphone_with_speech(root / "alice" / "carphone.mp4", vfr=True),
          "bob/astronaut.mp4": prep_media.astronaut_video(root / "bob" / "astronaut.mp4")}
  path, click_s = prep_media.click_video(root / "carol" / "click.mp4")
  good["carol/click.mp4"] = path
  bad = {f"junk/{p.name}": p for p in prep_media.bad_inputs(root / "junk", good["alice/carphone.mp4"]).values()}
  (root / "junk" / "notes.txt").write_text("not an input: no video extension\n")
  return {"root": root, "good": good, "bad": bad, "click_s": click_s}


@pytest.fixture(scope="module")
def prepped(media, tmp_path_factory):
  """The media folder prepared once with one worker."""
  out = tmp_path_factory.mktemp("prepped")
  summary = run.run(str(media["root"]), out, CONFIG, quiet=True)
  return out, summary


# ----------------------------------------------------------------------------------------------------------------
# Decoding.


def test_variable_frame_rate_is_resampled_by_timestamps(tmp_path):
  """Output frame k shows the source frame on screen at the middle of its 40 ms slot, whatever the spacing."""
  rng = np.random.default_rng(0)
  times = np.cumsum(np.r_[0.0, rng.choice([0.017, 0.033, 0.05, 0.09], 29)])
  frames = np.repeat((np.arange(30) * 8 + 8).astype(np.uint8)[:, None, None, None], 3, -1)
  frames = np.broadcast_to(frames, (30, 48, 64, 3))
  path = prep_media.write_video(tmp_path / "vfr.mp4", frames, times, audio=np.zeros(64000, np.float32))
  decoded = decode.decode(path)
  end = times[-1] + 1001 / 30000  # The muxer gives the last frame the stream's nominal duration (29.97 fps).
  assert len(decoded.frames) == int(np.ceil(end * 25 - 0.5))  # Every slot whose middle is before the end.
  middles = (np.arange(len(decoded.frames)) + 0.5) / 25
  expected = np.searchsorted(times, middles + 1e-6, side="right") - 1
  shown = np.round((decoded.frames[:, 24, 32].mean(-1) - 8) / 8).astype(int)
  np.testing.assert_array_equal(shown, expected)
  assert decoded.audio.shape == (len(decoded.frames) * 640,)


def test_audio_and_video_stay_aligned_through_offsets_and_resampling(media):
  """The click (44.1 kHz AAC; video from 0.2 s, audio from 0.57 s on the container clock) lands in the flash frame."""
  decoded = decode.decode(media["good"]["carol/click.mp4"])
  assert decoded.info.audio_rate == 44100 and decoded.sample_rate == 16000
  click = np.flatnonzero(np.abs(decoded.audio) > 0.5)
  assert len(click) and click[-1] - click[0] < 64  # One click, about 1 ms long.
  assert abs(click[0] / 16000 - media["click_s"]) < 0.003
  flash = np.flatnonzero(decoded.frames[:, 2:18, 2:18].mean((1, 2, 3)) > 230)
  assert 2 <= len(flash) <= 3  # 3 source frames at 29.97 fps = 100 ms.
  assert abs((flash.mean() + 0.5) / 25 - click[0] / 16000) < 1 / 25  # Within one video frame.
  # Frames before the audio track starts are marked; after it they are all covered.
  first_valid = np.flatnonzero(decoded.audio_valid)[0]
  assert 8 <= first_valid <= 10 and decoded.audio_valid[first_valid:].all()
  assert np.abs(decoded.audio[:8 * 640]).max() == 0


def test_each_kind_of_bad_file_fails_with_its_stage_and_reason(media):
  for key, path in media["bad"].items():
    kind = Path(key).stem
    if kind == "no_face":
      decode.decode(path)  # A valid video: it fails later, at the face stage.
      continue
    with pytest.raises(decode.PrepError) as error:
      decode.decode(path)
    stage, words = EXPECTED_FAILURES[kind]
    assert (error.value.stage, words in error.value.reason) == (stage, True), error.value
    assert str(path) in str(error.value)
  with pytest.raises(decode.PrepError, match="absurd resolution 176x144"):
    decode.probe(media["good"]["alice/carphone.mp4"], max_side=100)
  with pytest.raises(decode.PrepError, match="no such file"):
    decode.probe(media["root"] / "missing.mp4")
  silent = decode.decode(media["bad"]["junk/no_audio.mp4"], allow_silent=True)
  assert not silent.audio.any() and silent.audio_valid.all() and len(silent.frames) == 50


# ----------------------------------------------------------------------------------------------------------------
# Cutting.


def test_shot_changes_are_found_exactly_at_the_joins():
  import cv2
  carphone = prep_media.carphone_frames()
  astronaut = np.stack([cv2.resize(f, (176, 144)) for f in prep_media.astronaut_frames(40)])
  faceless = prep_media.noise_frames(30)
  video = np.concatenate([carphone[:70], astronaut, faceless, carphone[70:]])
  detector = segment.ShotDetector()
  cuts = detector.update(video[:50]) + [50 + c for c in detector.update(video[50:])]  # Streaming in two chunks.
  assert cuts == [70, 110, 140]


def test_runs_are_split_into_clips_of_bounded_length():
  assert segment.split_run(0, 24, 250, 25) == []
  assert segment.split_run(5, 30, 250, 25) == [(5, 30)]
  for length in (251, 499, 500, 501, 1234):
    spans = segment.split_run(0, length, 250, 25)
    assert spans[0][0] == 0 and spans[-1][1] == length
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    assert all(125 <= b - a <= 250 for a, b in spans), spans
  found = np.ones(100, bool)
  found[40:42] = False
  track = np.r_[np.zeros(70, int), np.ones(30, int)]
  audio = np.ones(100, bool)
  audio[:5] = False
  assert segment.clip_spans(found, track, audio, [20], max_frames=250, min_frames=10) == [
      (5, 20), (20, 40), (42, 70), (70, 100)]


# ----------------------------------------------------------------------------------------------------------------
# The pipeline.


def test_streaming_clip_equals_tracking_and_aligning_the_whole_video(media):
  """The chunked tracker + look-ahead smoothing gives the landmarks of smoothing and aligning the whole run."""
  from data_pipelines.prep import faces
  config = settings.PrepConfig(size=SIZE, max_clip_s=60.0)
  processor = process.InputProcessor(config)
  item = inputs.Input("alice/carphone.mp4", str(media["good"]["alice/carphone.mp4"]))
  try:
    clips, stats = processor.process(item)
    decoded = decode.decode(item.path)
    track = faces.smooth_track(processor.analyzer.tracker().update(decoded.frames))
  finally:
    processor.close()
  assert len(clips) == 1 and stats["frames"] == len(decoded.frames) == 100
  (a, b), = track.segments()
  expected = align.align_track(decoded.frames[a:b], track.slice(a, b), SIZE)
  clip = clips[0]
  assert clip.metadata["start_frame"] == a and clip.num_frames == b - a
  np.testing.assert_allclose(clip.labels["landmarks"].astype(np.float32), expected.landmarks, atol=0.05)
  np.testing.assert_array_equal(clip.face_masks, expected.face_masks)
  np.testing.assert_allclose(clip.decode_frames(), expected.frames, atol=40)  # JPEG.
  assert np.abs(clip.decode_frames().astype(int) - expected.frames).mean() < 3


def test_mixed_folder_every_input_ends_as_clips_or_one_failure(media, prepped):
  out, summary = prepped
  corpus = Corpus(out)
  manifest = corpus.manifest("train")
  assert {e["source"] for e in manifest} == set(media["good"])
  assert summary["processed"] == len(media["good"]) + len(media["bad"]) and summary["skipped"] == 0
  failures = [json.loads(line) for line in open(out / parts.FAILURES_FILE)]
  assert sorted(f["input"] for f in failures) == sorted(media["bad"]) == summary["failed_inputs"]
  for entry in failures:
    stage, words = EXPECTED_FAILURES[Path(entry["input"]).stem]
    assert entry["stage"] == stage and words in entry["reason"], entry
  assert corpus.speakers == ["alice", "bob", "carol"]
  for i, entry in enumerate(manifest):  # Manifest line i describes record i.
    record = corpus.read("train", i)
    assert (record.clip_id, record.num_frames, record.source) == (entry["clip_id"], entry["num_frames"],
                                                                   entry["source"])
    assert {"start_s", "end_s", "face_score_mean", "shard"} <= entry.keys()
  assert not list(out.rglob("*.partial"))
  # The corpus is a TFDS dataset (TensorFlow absent): TFDS reads the records the manifest lists.
  source = tfds.builder_from_directory(str(out)).as_data_source("train")
  assert [records.from_example(source[i]).clip_id for i in range(len(source))] == [e["clip_id"] for e in manifest]


def test_carphone_faces_eyes_and_click_survive_into_the_records(media, prepped):
  out, _ = prepped
  corpus = Corpus(out)
  manifest = corpus.manifest("train")
  carphone = [i for i, e in enumerate(manifest) if e["source"] == "alice/carphone.mp4"]
  frames = sum(manifest[i]["num_frames"] for i in carphone)
  assert frames >= 0.95 * 100  # 4 s at 25 fps; clips only hold frames with the tracked face.
  template_eyes = align.template(SIZE)[:2]
  for i in carphone:
    eyes = align.eye_centres(corpus.read("train", i).labels["landmarks"].astype(np.float32))
    assert np.abs(eyes - template_eyes).max() < 2.0
  # The click, found in a record's audio, sits in the 25 fps frame of its time in the source.
  (index,) = [i for i, e in enumerate(manifest) if e["source"] == "carol/click.mp4"
              and e["start_frame"] <= media["click_s"] * 25 < e["end_frame"]]
  record = corpus.read("train", index)
  sample = int(np.flatnonzero(np.abs(record.audio_float()) > 0.5)[0])
  assert manifest[index]["start_frame"] + sample // 640 == int(media["click_s"] * 25)


def test_rerun_does_no_repeated_work(media, prepped):
  out, _ = prepped
  before = {p: p.stat().st_mtime_ns for p in (out / parts.PARTS_DIR).iterdir()}
  summary = run.run(str(media["root"]), out, CONFIG, quiet=True)
  assert summary["processed"] == 0 and summary["skipped"] == len(media["good"]) + len(media["bad"])
  assert {p: p.stat().st_mtime_ns for p in (out / parts.PARTS_DIR).iterdir()} == before
  assert summary["failed_inputs"] == sorted(media["bad"])  # Still reported: the exit status stays non-zero.
  with pytest.raises(settings.RunError, match="other settings.*'size': \\(64, 128\\)"):
    run.run(str(media["root"]), out, settings.PrepConfig(size=128, min_clip_s=0.64), quiet=True)


def test_two_shards_cover_the_input_list_exactly_once(media, tmp_path):
  listed = inputs.list_inputs(str(media["root"]))
  shares = [inputs.shard_inputs(listed, i, 2) for i in range(2)]
  assert sorted(i.key for share in shares for i in share) == [i.key for i in listed]
  config = dataclasses.replace(CONFIG, heldout_speakers=("bob",))
  first = run.run(str(media["root"]), tmp_path, config, shard_index=0, num_shards=2, quiet=True)
  assert not first["finalized"] and not (tmp_path / "corpus.json").exists()  # Job 1 has not finished.
  second = run.run(str(media["root"]), tmp_path, config, shard_index=1, num_shards=2, quiet=True)
  assert second["finalized"]
  assert first["processed"] + second["processed"] == len(listed)
  corpus = Corpus(tmp_path)
  entries = corpus.manifest("train") + corpus.manifest("heldout")
  sources = [e["source"] for e in entries]
  failed = [json.loads(line)["input"] for line in open(tmp_path / parts.FAILURES_FILE)]
  assert sorted(set(sources)) == sorted(media["good"]) and sorted(failed) == sorted(media["bad"])
  assert len(entries) == len({e["clip_id"] for e in entries})
  assert {e["speaker_id"] for e in corpus.manifest("heldout")} == {"bob"}
  assert "bob" not in {e["speaker_id"] for e in corpus.manifest("train")}
  assert corpus.read("heldout", 0).speaker_id == "bob"  # Held-out clips sit in their own shards.
  home = tmp_path / "tfds" / corpus.info["name"]
  home.mkdir(parents=True)
  (home / corpus.info["version"]).symlink_to(tmp_path)
  by_name = tfds.data_source(corpus.info["name"], data_dir=str(tmp_path / "tfds"))
  assert records.from_example(by_name["heldout"][0]).speaker_id == "bob"
  assert {p.name.split("-")[1] for p in (tmp_path / parts.PARTS_DIR).glob("*.array_record")} == {
      parts.job_name(0, 2), parts.job_name(1, 2)}


def test_dying_workers_are_replaced_and_their_unfinished_work_is_redone(media, tmp_path):
  """SIGKILL both worker processes mid-run (after one has written an input's clips into its unfinished shard):
  replacements redo those inputs and retry the ones in flight, and every input still ends exactly once."""
  outcome = {}
  thread = threading.Thread(target=lambda: outcome.update(
      summary=run.run(str(media["root"]), tmp_path, CONFIG, num_workers=2, quiet=True)))
  thread.start()
  deadline = time.time() + 60
  while not list((tmp_path / parts.PARTS_DIR).glob("*.partial")) and time.time() < deadline:
    time.sleep(0.02)
  time.sleep(0.3)  # Usually lets the worker report that input and start the next one.
  victims = multiprocessing.active_children()
  for victim in victims:
    os.kill(victim.pid, signal.SIGKILL)
  thread.join(timeout=120)
  assert victims and "summary" in outcome
  corpus = Corpus(tmp_path)
  entries = corpus.manifest("train")
  failures = [json.loads(line) for line in open(tmp_path / parts.FAILURES_FILE)]
  assert {e["source"] for e in entries} == set(media["good"])
  assert sorted(f["input"] for f in failures) == sorted(media["bad"])  # No "worker" failures: retried once.
  assert len(entries) == len({e["clip_id"] for e in entries}) == outcome["summary"]["clips"]
  assert outcome["summary"]["processed"] == len(media["good"]) + len(media["bad"])
  assert not list(tmp_path.rglob("*.partial"))  # The dead workers' unfinished shards were deleted at the end.


def test_killed_run_leaves_nothing_a_reader_accepts_and_resumes(media, tmp_path):
  out = tmp_path / "out"
  command = [sys.executable, "-m", "synclipmae.cli", "prep", f"--input={media['root']}", f"--out={out}",
             f"--size={SIZE}", "--min_clip_s=0.64", "--shard_size=1", "--quiet"]
  process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  deadline = time.time() + 60
  while not list((out / parts.PARTS_DIR).glob("*.jsonl")) and time.time() < deadline and process.poll() is None:
    time.sleep(0.05)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert process.returncode == -signal.SIGKILL
  assert not (out / "corpus.json").exists()
  # Whatever the kill left (a *.partial shard, a shard without manifest) is never listed and is cleaned up.
  stale = out / parts.PARTS_DIR / f"train-{parts.job_name(0, 1)}-deadbeef-0000.array_record"
  stale.write_bytes(b"half a shard")
  resumed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
  assert resumed.returncode == 1, resumed.stdout + resumed.stderr  # Non-zero: the bad inputs failed.
  assert f"{len(media['bad'])} failed" in resumed.stdout
  assert not stale.exists() and not list(out.rglob("*.partial"))
  corpus = Corpus(out)
  sources = [e["source"] for e in corpus.manifest("train")]
  assert sorted(set(sources)) == sorted(media["good"])
  assert len(sources) == len({e["clip_id"] for e in corpus.manifest("train")})
  failed = [json.loads(line)["input"] for line in open(out / parts.FAILURES_FILE)]
  assert sorted(failed) == sorted(media["bad"])


def test_speaker_ids_from_patterns_and_heldout_split():
  item = inputs.Input("vox/id123/vid_a/00001.mp4", "/data/vox/id123/vid_a/00001.mp4")
  assert inputs.SpeakerPattern(None)(item) == "vid_a"
  assert inputs.SpeakerPattern("{speaker}/{video}/*.mp4")(item) == "id123"
  assert inputs.SpeakerPattern("**/{speaker}/*/*.mp4")(item) == "id123"
  assert inputs.SpeakerPattern(r"(?P<speaker>id\d+)")(item) == "id123"
  with pytest.raises(decode.PrepError, match="does not match --speaker_pattern") as error:
    inputs.SpeakerPattern("{speaker}/*.mkv")(item)
  assert error.value.stage == inputs.STAGE_SPEAKER
  with pytest.raises(settings.RunError, match="no {speaker} field"):
    inputs.SpeakerPattern("{video}/*.mp4")
  config = settings.PrepConfig(heldout_speakers=("bob",), heldout_fraction=0.25)
  assert inputs.split_of("bob", config) == "heldout"
  held = [s for s in (f"spk{i}" for i in range(400)) if inputs.split_of(s, config) == "heldout"]
  assert 60 < len(held) < 140 and held == [s for s in held if inputs.split_of(s, config) == "heldout"]


def test_prepped_records_feed_the_grain_pipeline_and_mu_pretraining(prepped, tmp_path):
  from test_train import small_config
  from synclipmae.train import loop
  out, _ = prepped
  batch = next(iter(pipeline.make_dataset(out, "train", batch_size=4, num_frames=16, patch_size=8,
                                          process_index=0, process_count=1)))
  assert batch["video"].shape == (4, 16, SIZE, SIZE, 3) and batch["video"].dtype == np.uint8
  assert batch["audio"].shape == (4, (16 + 4) * 640)
  assert batch["face_mask"].any() and batch["mouth_patches"].max() > 0.5
  assert (batch["mouth_mask"] <= batch["face_mask"]).all()
  config = small_config(out, num_steps=2, checkpoint_every=100, log_every=1)
  result = loop.pretrain(config, str(tmp_path))
  assert int(result["state"].step) == 2
  lines = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert [l["step"] for l in lines] == [1, 2] and all(np.isfinite(l["loss"]) for l in lines)
