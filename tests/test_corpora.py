"""The public corpora's TFDS builders (`data_pipelines.corpora`): each corpus's layout, speakers, splits and
metadata, and a real build of a folder laid out like LRS3 through prep's per-input function, bad inputs recorded
as `prep` records them."""

import dataclasses
import importlib.util
import json

import numpy as np
import pytest
import tensorflow_datasets as tfds
from etils import epath
from test_records import _assert_same

import prep_media
from data_pipelines.corpora import builder as builder_lib
from data_pipelines.corpora import catalog
from data_pipelines.prep import inputs, process
from synclipmae.commands import tfds_build
from synclipmae.data import corpus as corpus_lib
from synclipmae.data import pipeline, records

VERSION = f"{records.SCHEMA_VERSION}.0.0"


@pytest.fixture(scope="module")
def lrs3(tmp_path_factory):
  """An LRS3-like folder built with `synclipmae tfds-build synclipmae_lrs3` (the default 128-pixel config)."""
  root = tmp_path_factory.mktemp("manual") / "LRS3"
  expected = prep_media.lrs3_folder(root)
  data_dir = tmp_path_factory.mktemp("tfds")
  tfds_build.run(["synclipmae_lrs3/default", f"--manual_dir={root}", f"--data_dir={data_dir}"])
  return root, expected, data_dir


def test_an_lrs3_folder_builds_into_speaker_disjoint_splits_of_prep_records(lrs3):
  root, expected, data_dir = lrs3
  assert importlib.util.find_spec("tensorflow") is None
  path = data_dir / "synclipmae_lrs3" / "default" / VERSION
  corpus = corpus_lib.Corpus(path)
  builder = catalog.SynclipmaeLrs3(data_dir=str(data_dir))
  # Every bad input has exactly one failures entry, with prep's stage; the good ones have clips.
  failures = corpus_lib.read_jsonl(path / "failures.jsonl")
  assert {f["input"]: f["stage"] for f in failures} == expected["bad"]
  assert all(f["path"] == str(root / f["input"]) and f["reason"] for f in failures)
  assert corpus.info["inputs"] == {"failed": 3, "failed_by_stage": {"faces": 1, "open": 1, "probe": 1}}
  assert corpus.info["generator"]["settings"]["speaker_pattern"] == builder.LAYOUT.speaker_pattern
  clips: dict[str, list[tuple[str, records.ClipRecord]]] = {}
  for split in corpus.splits:
    for i in range(len(corpus.manifest(split))):
      record = corpus.read(split, i)
      clips.setdefault(record.metadata["input"], []).append((split, record))
  assert set(clips) == set(expected["good"])
  # The official test talk is "heldout"; the others follow the layout's speaker hash. Speakers never straddle.
  assert {s for s, _ in clips["test/QqRrSsTtUu1/00003.mp4"]} == {"heldout"}
  splits_of_speaker: dict[str, set[str]] = {}
  for split, record in (c for cs in clips.values() for c in cs):
    splits_of_speaker.setdefault(record.speaker_id, set()).add(split)
  assert all(len(s) == 1 for s in splits_of_speaker.values()) and len(splits_of_speaker) == 3
  # The clips are exactly what prep's per-input function gives for that video, plus the transcript.
  processor = process.InputProcessor(builder.prep_config())
  try:
    for key, transcript in expected["good"].items():
      official, speaker = key.split("/")[:2]
      assert {s for s, _ in clips[key]} == {builder.LAYOUT.split_of(official, speaker)}
      outcome = processor.handle(inputs.Input(key, str(root / key)))
      built = sorted((r for _, r in clips[key]), key=lambda r: r.clip_id)
      assert outcome.failure is None and len(outcome.clips) == len(built) > 0
      for clip, record in zip(outcome.clips, built):
        assert record.speaker_id == speaker and record.frame_size == (128, 128)
        assert records.label_spec(record) == process.label_spec(builder.prep_config())
        assert record.metadata["transcript"] == transcript
        assert record.metadata["words"][0] == [transcript.split()[0], 0.0, 0.25]
        extra = {"transcript": transcript, "words": record.metadata["words"]}
        _assert_same(dataclasses.replace(clip, metadata={**clip.metadata, **extra}), record)
  finally:
    processor.close()
  # TFDS opens it (TensorFlow absent), and it feeds the Grain pipeline.
  tfds_builder = tfds.builder_from_directory(str(path))
  assert tfds_builder.info.name == "synclipmae_lrs3" and "LRS3-TED" in tfds_builder.info.description
  assert "CC BY-NC-ND" in tfds_builder.info.redistribution_info.license
  for split in corpus.splits:
    source = tfds_builder.as_data_source(split)
    assert len(source) == len(corpus.manifest(split))
    first = records.from_example(source[0])
    assert first.clip_id == corpus.manifest(split)[0]["clip_id"]
  train = "train" if "train" in corpus.splits else corpus.splits[0]
  batch = pipeline.make_dataset(corpus, train, batch_size=1, num_frames=8, process_index=0, process_count=1)[0]
  assert batch["video"].shape == (1, 8, 128, 128, 3)


def test_a_folder_without_videos_where_the_layout_puts_them_is_named(tmp_path):
  (tmp_path / "LRS3" / "main").mkdir(parents=True)
  (tmp_path / "LRS3" / "main" / "00001.mp4").write_bytes(b"")  # LRS2's layout, not LRS3's.
  builder = catalog.SynclipmaeLrs3(data_dir=str(tmp_path / "tfds"))
  with pytest.raises(FileNotFoundError, match=r"synclipmae_lrs3: no videos under --manual_dir=.*LRS3 where the "
                     r"layout puts them \(train: pretrain/\*/\*.mp4, trainval/\*/\*.mp4; test: test/\*/\*.mp4\)"):
    builder.list_tasks(epath.Path(tmp_path / "LRS3"))
  hdtf = catalog.SynclipmaeHdtf(data_dir=str(tmp_path / "tfds"))
  _touch(tmp_path / "HDTF", ["holiday.mp4", "beach party.mp4"])
  with pytest.raises(ValueError, match=r"synclipmae_hdtf: none of the 2 videos under --manual_dir=.*HDTF names a "
                     r"speaker as .* reads it, e.g. 'beach party.mp4'"):
    hdtf.list_tasks(epath.Path(tmp_path / "HDTF"))


def _touch(root, keys):
  for key in keys:
    (root / key).parent.mkdir(parents=True, exist_ok=True)
    (root / key).write_bytes(b"")


def _listing(builder_class, root):
  builder = builder_class(data_dir=str(root.parent / "tfds"))
  tasks, failures = builder.list_tasks(epath.Path(root))
  speaker_of = inputs.SpeakerPattern(builder.LAYOUT.speaker_pattern)
  listed = {t.item.key: (split, speaker_of(t.item), dict(t.metadata)) for split, ts in tasks.items() for t in ts}
  return builder, listed, {f["input"]: f["stage"] for f in failures}


def test_voxceleb2_identities_and_its_disjoint_test_set(tmp_path):
  root = tmp_path / "vox2"
  _touch(root, ["dev/mp4/id00012/21Uxsk56VDQ/00001.mp4", "dev/mp4/id00012/zzZZ-9_aaaa/00002.mp4",
                "dev/mp4/id00015/0fRfr5ef6hQ/00001.mp4", "test/mp4/id00017/01dfn2spqyE/00001.mp4",
                "dev/aac/id00012/21Uxsk56VDQ/00001.m4a", "vox2_meta.csv",
                "dev/mp4/id00017/5tHh0A2m3YI/00001.mp4"])  # A test identity also in dev: held out with its videos.
  builder, listed, failures = _listing(catalog.SynclipmaeVoxceleb2, root)
  assert not failures and set(listed) == {k for k in listed if k.endswith(".mp4")} and len(listed) == 5
  assert listed["dev/mp4/id00017/5tHh0A2m3YI/00001.mp4"][:2] == ("heldout", "id00017")
  assert listed["test/mp4/id00017/01dfn2spqyE/00001.mp4"] == ("heldout", "id00017", {"youtube_id": "01dfn2spqyE"})
  assert listed["dev/mp4/id00012/zzZZ-9_aaaa/00002.mp4"][1:] == ("id00012", {"youtube_id": "zzZZ-9_aaaa"})
  for key, (split, speaker, _) in listed.items():
    if speaker != "id00017":
      assert split == builder.LAYOUT.split_of("test" if key.startswith("test/") else "train", speaker)
      assert split == "heldout" if key.startswith("test/") else split in ("train", "validation")


def test_hdtf_speakers_join_a_persons_videos_and_keep_radio_hosts_apart(tmp_path):
  root = tmp_path / "HDTF"
  _touch(root, ["WDA_BarackObama_000.mp4", "WDA_BarackObama_001.mp4", "clips/WRA_AdamKinzinger0_000.mp4",
                "clips/WRA_AdamKinzinger1_000.mp4", "RD_Radio11_000.mp4", "Radio2_0.mp4", "holiday.mp4"])
  builder, listed, failures = _listing(catalog.SynclipmaeHdtf, root)
  assert failures == {"holiday.mp4": inputs.STAGE_SPEAKER}  # Its name gives no speaker: a failures entry.
  speakers = {k: s for k, (_, s, _) in listed.items()}
  assert speakers == {"WDA_BarackObama_000.mp4": "BarackObama", "WDA_BarackObama_001.mp4": "BarackObama",
                      "clips/WRA_AdamKinzinger0_000.mp4": "AdamKinzinger",
                      "clips/WRA_AdamKinzinger1_000.mp4": "AdamKinzinger", "RD_Radio11_000.mp4": "Radio11",
                      "Radio2_0.mp4": "Radio2"}
  assert listed["RD_Radio11_000.mp4"][2] == {"subset": "RD"} and listed["Radio2_0.mp4"][2] == {}
  for split, speaker, _ in listed.values():  # No official test set: 10 % of speakers by hash, 5 % validation.
    h = inputs.speaker_hash(speaker)
    assert split == ("heldout" if h < 0.1 else "validation" if h < 0.15 else "train")


def test_celebv_hq_labels_come_from_its_info_file(tmp_path):
  root = tmp_path / "CelebV-HQ"
  _touch(root, ["35666/M2Ohb0FAaJU_1.mp4", "35666/M2Ohb0FAaJU_2.mp4", "35666/-_aB3dE7fGh_0.mp4"])
  (root / "celebvhq_info.json").write_text(json.dumps({
      "meta_info": {"appearance_mapping": ["blurry", "smiling", "young"], "action_mapping": ["talk", "blink"],
                    "emotion_mapping": ["neutral", "happy"]},
      "clips": {"M2Ohb0FAaJU_1": {"ytb_id": "M2Ohb0FAaJU", "duration": {"start_sec": 1.5, "end_sec": 9.0},
                                  "attributes": {"appearance": [0, 1, 1], "action": [1, 0],
                                                 "emotion": {"sep_flag": False, "labels": "happy"}}},
                "M2Ohb0FAaJU_2": {"ytb_id": "M2Ohb0FAaJU", "duration": {"start_sec": 20.0, "end_sec": 25.0},
                                  "attributes": {"appearance": [1, 0, 0], "action": [1, 1], "emotion": {
                                      "sep_flag": True, "labels": [{"emotion": "neutral", "start_sec": 20.0,
                                                                     "end_sec": 22.0}]}}}}}))
  _, listed, failures = _listing(catalog.SynclipmaeCelebvHq, root)
  assert not failures and {k: s for k, (_, s, _) in listed.items()} == {
      "35666/M2Ohb0FAaJU_1.mp4": "M2Ohb0FAaJU", "35666/M2Ohb0FAaJU_2.mp4": "M2Ohb0FAaJU",
      "35666/-_aB3dE7fGh_0.mp4": "-_aB3dE7fGh"}
  assert listed["35666/M2Ohb0FAaJU_1.mp4"][2] == {"youtube_id": "M2Ohb0FAaJU", "emotion": "happy",
                                                  "actions": ["talk"], "appearance": ["smiling", "young"],
                                                  "source_span_s": [1.5, 9.0]}
  assert listed["35666/M2Ohb0FAaJU_2.mp4"][2]["emotion"] == [{"emotion": "neutral", "start_sec": 20.0,
                                                               "end_sec": 22.0}]
  assert listed["35666/-_aB3dE7fGh_0.mp4"][2] == {}  # Not in the info file: no labels, still processed.
  assert listed["35666/M2Ohb0FAaJU_1.mp4"][0] == listed["35666/M2Ohb0FAaJU_2.mp4"][0]  # One video, one split.


def test_mead_actors_views_emotions_and_its_common_test_identities(tmp_path):
  root = tmp_path / "MEAD"
  _touch(root, ["M003/video/front/angry/level_1/001.mp4", "W009/video/left_30/happy/level_3/012.mp4",
                "M005/video/front/neutral/level_1/040.mp4", "W021/video/1/front/sad/level_2/020.mp4",
                "M005/audio/neutral/level_1/040.m4a"])
  _, listed, failures = _listing(catalog.SynclipmaeMead, root)
  assert not failures and len(listed) == 4
  assert listed["M003/video/front/angry/level_1/001.mp4"] == (
      "heldout", "M003", {"view": "front", "emotion": "angry", "intensity": 1, "sentence": 1})
  assert listed["W009/video/left_30/happy/level_3/012.mp4"] == (
      "heldout", "W009", {"view": "left_30", "emotion": "happy", "intensity": 3, "sentence": 12})
  assert listed["W021/video/1/front/sad/level_2/020.mp4"][1:] == (
      "W021", {"view": "front", "emotion": "sad", "intensity": 2, "sentence": 20})
  assert listed["M005/video/front/neutral/level_1/040.mp4"][0] in ("train", "validation")


def test_every_corpus_declares_its_terms_and_where_its_files_go():
  names = {c.name for c in (catalog.SynclipmaeLrs3, catalog.SynclipmaeVoxceleb2, catalog.SynclipmaeHdtf,
                            catalog.SynclipmaeCelebvHq, catalog.SynclipmaeMead)}
  assert names == {"synclipmae_lrs3", "synclipmae_voxceleb2", "synclipmae_hdtf", "synclipmae_celebv_hq",
                   "synclipmae_mead"}
  for builder_class in builder_lib.PrepBuilder.__subclasses__():
    assert builder_class.LICENSE and builder_class.HOMEPAGE and "manual_dir" in \
        builder_class.MANUAL_DOWNLOAD_INSTRUCTIONS, builder_class.name
    spec = process.label_spec(builder_class.BUILDER_CONFIGS[0].prep)
    assert spec == {"crop_transform": ("float32", (2, 3)), "face_score": ("float32", ()),
                    "landmarks": ("float16", (468, 2))}
  assert np.isclose(sum(inputs.speaker_hash(f"s{i}") < 0.5 for i in range(2000)) / 2000, 0.5, atol=0.05)
