"""The public talking-face corpora as TFDS builders that run `synclipmae prep` (see `builder.PrepBuilder`).

Each class declares where the corpus's videos lie once downloaded by hand, its official splits and speaker ids,
its terms, and the per-clip metadata its annotations give. Sources for every fact are the corpus's own pages and
READMEs (as read in 2026); where an author statement was missing, the docstring says what we assumed.

| builder | speakers from | heldout (test identities) | metadata per clip |
|---|---|---|---|
| synclipmae_lrs3 | talk folder (TED talk id) | the official `test` folder | transcript, word timings |
| synclipmae_voxceleb2 | `idXXXXX` folder | the official `test` set (118 identities) | YouTube id |
| synclipmae_hdtf | video name (digits of a person's n-th video dropped) | 10 % of speakers by hash | subset |
| synclipmae_celebv_hq | YouTube id of the clip | 10 % of YouTube ids by hash | emotion, actions, appearance |
| synclipmae_mead | actor folder `MXXX` / `WXXX` | M003, M030, W009, W015 | view, emotion, intensity, sentence |
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

from etils import epath

from data_pipelines.corpora.builder import Layout, PrepBuilder

@functools.lru_cache(maxsize=2)
def _read_json(path: str) -> dict[str, Any]:
  """A corpus's annotation file, read once per build ({} when absent)."""
  path = epath.Path(path)
  return json.loads(path.read_text()) if path.exists() else {}


_TERMS = "Use it under the corpus's own terms (below); the copyright of the videos stays with their owners."


class SynclipmaeLrs3(PrepBuilder):
  """LRS3-TED (Afouras et al. 2018): TED and TEDx talk face tracks with transcripts, as aligned clip records."""

  LAYOUT = Layout(official={"train": ("pretrain/*/*.mp4", "trainval/*/*.mp4"), "test": ("test/*/*.mp4",)},
                  speaker_pattern=r"(?:^|/)(?:pretrain|trainval|test)/(?P<speaker>[^/]+)/[^/]+$")
  HOMEPAGE = "https://www.robots.ox.ac.uk/~vgg/data/lip_reading/lrs3.html"
  LICENSE = ("Distributed by Oxford VGG for research use; the talks are TED's (CC BY-NC-ND 4.0). As of 2026 the "
             "authors no longer distribute LRS3: this builder is for those who hold a copy.")
  CITATION = """@article{afouras2018lrs3, title={LRS3-TED: a large-scale dataset for visual speech recognition},
  author={Afouras, Triantafyllos and Chung, Joon Son and Zisserman, Andrew}, journal={arXiv:1809.00496}, year={2018}}"""
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
  Put the extracted LRS3 folders in manual_dir: pretrain/, trainval/ and test/, each holding one folder per talk
  (its 11-character YouTube id) with NNNNN.mp4 utterances and their NNNNN.txt transcripts. pretrain and trainval
  become "train" (5 % of talks by hash: "validation"), test becomes "heldout". The speaker id is the talk folder:
  LRS3 gives no person ids, so a person with two talks counts twice. {_TERMS}"""

  def clip_metadata(self, manual_dir: epath.Path, key: str) -> dict[str, Any]:
    """The utterance's transcript and (pretrain) word timings in seconds from the start of the video."""
    path = manual_dir / key
    text_file = path.with_suffix(".txt")
    if not text_file.exists():
      return {}
    lines = text_file.read_text().splitlines()
    out: dict[str, Any] = {}
    for i, line in enumerate(lines):
      if line.startswith("Text:"):
        out["transcript"] = line.partition(":")[2].strip()
      elif line.split()[:3] == ["WORD", "START", "END"]:
        try:
          out["words"] = [[w, float(a), float(b)] for w, a, b, *_ in (r.split() for r in lines[i + 1:] if r.strip())]
        except ValueError as e:
          raise ValueError(f"{text_file}: unreadable word timings ({e})") from None
        break
    return out


class SynclipmaeVoxceleb2(PrepBuilder):
  """VoxCeleb2 (Chung et al. 2018): celebrity interview utterances from YouTube, as aligned clip records."""

  LAYOUT = Layout(official={"train": ("dev/mp4/*/*/*.mp4",), "test": ("test/mp4/*/*/*.mp4",)},
                  speaker_pattern="{speaker}/{video}/*.mp4")
  HOMEPAGE = "https://www.robots.ox.ac.uk/~vgg/data/voxceleb/vox2.html"
  LICENSE = ("Creative Commons Attribution 4.0 International (the VoxCeleb page: 'available to download for "
             "commercial/research purposes under a Creative Commons Attribution 4.0 International License. The "
             "copyright remains with the original owners of the video.')")
  CITATION = """@inproceedings{chung2018voxceleb2, title={VoxCeleb2: Deep Speaker Recognition},
  author={Chung, Joon Son and Nagrani, Arsha and Zisserman, Andrew}, booktitle={Interspeech}, year={2018}}"""
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
  Request access on the VoxCeleb2 page, download vox2_dev_mp4_parta* (join them with cat) and vox2_test_mp4.zip,
  and extract both into manual_dir so that it holds dev/mp4/idXXXXX/YOUTUBE_ID/NNNNN.mp4 and
  test/mp4/idXXXXX/YOUTUBE_ID/NNNNN.mp4 (the mp4s carry the audio; the aac archives are not needed). dev becomes
  "train" (5 % of identities by hash: "validation"), test (118 identities, disjoint from dev) becomes "heldout".
  {_TERMS}"""

  def clip_metadata(self, manual_dir: epath.Path, key: str) -> dict[str, Any]:
    del manual_dir
    return {"youtube_id": key.split("/")[-2]}


class SynclipmaeHdtf(PrepBuilder):
  """HDTF (Zhang et al. 2021): high-resolution talking faces from YouTube (RD, WDA, WRA), as aligned clip records."""

  LAYOUT = Layout(official={"train": ("*.mp4", "*/*.mp4")},
                  speaker_pattern=r"(?:^|/)(?:(?:RD|WDA|WRA)_)?(?P<speaker>Radio\d+|[A-Za-z]+?)\d*_\d+\.mp4$",
                  heldout_fraction=0.1)
  HOMEPAGE = "https://github.com/MRzzm/HDTF"
  LICENSE = ("The HDTF annotations: Creative Commons Attribution 4.0 International (its README); the videos are "
             "YouTube's and their owners'.")
  CITATION = """@inproceedings{zhang2021hdtf, title={Flow-guided One-shot Talking Face Generation with a
  High-resolution Audio-visual Dataset}, author={Zhang, Zhimeng and Li, Lincheng and Ding, Yu and Fan, Changjie},
  booktitle={CVPR}, year={2021}}"""
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
  HDTF ships YouTube links, time stamps and crop boxes (HDTF_dataset/*_video_url.txt, *_annotion_time.txt, ...):
  download the videos WITH their sound (e.g. yt-dlp -f 'bestvideo+bestaudio'; some community scripts fetch video
  only, and clips without audio fail at stage "probe"), cut the annotated intervals, and put the clips in
  manual_dir (or one folder below it) named NAME_I.mp4 or SUBSET_NAME_I.mp4 (e.g. WDA_BarackObama_000.mp4,
  Radio11_0.mp4). The speaker is NAME without the digits that number a person's videos (AdamKinzinger0 and
  AdamKinzinger1 are one speaker; RadioN are N different hosts). HDTF has no official split: 10 % of speakers by
  hash are "heldout", 5 % "validation". {_TERMS}"""

  def clip_metadata(self, manual_dir: epath.Path, key: str) -> dict[str, Any]:
    del manual_dir
    subset = re.match(r"(RD|WDA|WRA)_", key.rsplit("/", 1)[-1])
    return {"subset": subset.group(1)} if subset else {}


class SynclipmaeCelebvHq(PrepBuilder):
  """CelebV-HQ (Zhu et al. 2022): 35,666 celebrity clips with appearance, action and emotion labels."""

  LAYOUT = Layout(official={"train": ("*.mp4", "*/*.mp4")},
                  speaker_pattern=r"(?:^|/)(?P<speaker>[A-Za-z0-9_-]{11})_\d+\.mp4$", heldout_fraction=0.1)
  HOMEPAGE = "https://github.com/CelebV-HQ/CelebV-HQ"
  LICENSE = ("Non-commercial research purposes only, no redistribution (the CelebV-HQ agreement in its README); "
             "the videos are YouTube's and their owners'.")
  CITATION = """@inproceedings{zhu2022celebvhq, title={CelebV-HQ: A Large-Scale Video Facial Attributes Dataset},
  author={Zhu, Hao and Wu, Wayne and Zhu, Wentao and Jiang, Liming and Tang, Siwei and Zhang, Li and Liu, Ziwei
  and Loy, Chen Change}, booktitle={ECCV}, year={2022}}"""
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
  Run CelebV-HQ's download_and_process.py (it keeps the audio) and put its clips, named CLIP_ID.mp4 =
  YOUTUBE_ID_N.mp4, in manual_dir (or one folder below), with celebvhq_info.json at the top of manual_dir (its
  labels become each clip's metadata). CelebV-HQ gives no identity per clip: the YouTube id stands in for the
  speaker (clips of one video share it; a person in two videos counts twice). No official split: 10 % of YouTube
  ids by hash are "heldout", 5 % "validation". {_TERMS}"""

  def clip_metadata(self, manual_dir: epath.Path, key: str) -> dict[str, Any]:
    """The clip's labels from celebvhq_info.json, by name: emotion (one label, or timed segments), the actions
    and appearance attributes present."""
    info = _read_json(str(manual_dir / "celebvhq_info.json"))
    clip = info.get("clips", {}).get(key.rsplit("/", 1)[-1].rsplit(".", 1)[0])
    if clip is None:
      return {}
    mapping = info.get("meta_info", {})
    attributes = clip.get("attributes", {})
    named = lambda flags, names: [n for f, n in zip(flags, names) if f]
    return {"youtube_id": clip.get("ytb_id"), "emotion": attributes.get("emotion", {}).get("labels"),
            "actions": named(attributes.get("action", []), mapping.get("action_mapping", [])),
            "appearance": named(attributes.get("appearance", []), mapping.get("appearance_mapping", [])),
            "source_span_s": [clip.get("duration", {}).get("start_sec"), clip.get("duration", {}).get("end_sec")]}


class SynclipmaeMead(PrepBuilder):
  """MEAD (Wang et al. 2020): 60 actors speaking in 8 emotions at 3 intensities from 7 views."""

  LAYOUT = Layout(official={"train": ("*/video/*/*/level_*/*.mp4", "*/video/*/*/*/level_*/*.mp4")},
                  speaker_pattern=r"(?:^|/)(?P<speaker>[MW]\d{3})/video/",
                  heldout_speakers=("M003", "M030", "W009", "W015"))
  HOMEPAGE = "https://wywu.github.io/projects/MEAD/MEAD.html"
  LICENSE = "Non-commercial / non-profit research purposes only, no redistribution (the MEAD Terms of Use)."
  CITATION = """@inproceedings{wang2020mead, title={MEAD: A Large-scale Audio-visual Dataset for Emotional Talking-face
  Generation}, author={Wang, Kaisiyuan and Wu, Qianyi and Song, Linsen and Yang, Zhuoqian and Wu, Wayne and Qian, Chen
  and He, Ran and Qiao, Yu and Loy, Chen Change}, booktitle={ECCV}, year={2020}}"""
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
  Request MEAD on its page; extract each actor's video.tar into manual_dir/ACTOR/ so that it holds
  ACTOR/video/VIEW/EMOTION/level_N/NNN.mp4 (ACTOR is MXXX or WXXX). The mp4s carry the audio; the few without it
  fail at stage "probe" (audio.tar is not read). MEAD's own split is by sentence, not speaker; here the identities
  M003, M030, W009 and W015 (a common test set) are "heldout", 5 % of the others by hash "validation". Every view is
  read; steep side views may fail at stage "faces". {_TERMS}"""

  def clip_metadata(self, manual_dir: epath.Path, key: str) -> dict[str, Any]:
    del manual_dir
    match = re.search(r"video/(?:\w+/)?(?P<view>[\w-]+)/(?P<emotion>\w+)/level_(?P<level>\d+)/(?P<sentence>\d+)\.",
                      key)
    if not match:
      return {}
    return {"view": match["view"], "emotion": match["emotion"], "intensity": int(match["level"]),
            "sentence": int(match["sentence"])}
