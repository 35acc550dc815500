"""Linear probes (`synclipmae probe`): planted signals are found and shuffled labels score at chance, for classes,
multi-label targets and continuous ones; label files; the command on a pretrained model."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from synclipmae import inference
from synclipmae.data.corpus import Corpus
from synclipmae.eval import probes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _fit_and_score(x, y, kind, train, **fit):
  head = probes.fit_linear(x[train], y[train], kind, **fit)
  return probes.score(probes.predict(head, x[~train], kind), y[~train], kind,
                      train_target=y[train] if kind == "class" else None)


@pytest.mark.parametrize("kind", probes.KINDS)
def test_probe_recovers_a_planted_linear_signal_and_is_at_chance_on_shuffled_labels(kind):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(600, 12))
  logits = x[:, :4] @ rng.normal(size=(4, 4))
  y = {"class": logits.argmax(1), "multilabel": (logits > 0).astype(np.float32),
       "regression": logits[:, :2] + 0.1 * rng.normal(size=(600, 2))}[kind]
  train = np.arange(600) < 400
  planted = _fit_and_score(x, y, kind, train)
  shuffled = _fit_and_score(x, y[rng.permutation(600)], kind, train)
  if kind == "class":
    assert planted["accuracy"] > 0.9 and planted["macro_auc"] > 0.97
    assert abs(shuffled["accuracy"] - 0.25) < 0.1 and abs(shuffled["macro_auc"] - 0.5) < 0.08
    assert np.asarray(planted["confusion"]).sum() == 200 and np.trace(planted["confusion"]) > 180
  elif kind == "multilabel":
    assert planted["mean_auc"] > 0.97 and planted["macro_f1"] > 0.85
    assert abs(shuffled["mean_auc"] - 0.5) < 0.08
  else:
    assert planted["r2"] > 0.95 and min(planted["r2_columns"]) > 0.95
    assert shuffled["r2"] < 0.05


def test_weight_decay_is_chosen_by_cross_validation_on_the_training_rows():
  """Few samples, many dimensions: the validated penalty beats the weakest one on the test rows."""
  rng = np.random.default_rng(1)
  x = rng.normal(size=(260, 80))
  y = (x[:, :1] + rng.normal(size=(260, 1))).astype(np.float64)
  train = np.arange(260) < 60
  folds = np.arange(60) % 3
  chosen, scores = probes.choose_weight_decay(x[train], y[train], "regression", folds)
  assert set(scores) == set(probes.WEIGHT_DECAYS) and scores[chosen] == max(scores.values())
  assert chosen > min(probes.WEIGHT_DECAYS)
  validated = _fit_and_score(x, y, "regression", train, weight_decay=chosen)["r2"]
  weakest = _fit_and_score(x, y, "regression", train, weight_decay=min(probes.WEIGHT_DECAYS))["r2"]
  assert validated > weakest + 0.1


def test_token_sets():
  assert probes.token_sets("z_amb,z_voc,z_id+z_amb") == [("z_amb",), ("z_voc",), ("z_id", "z_amb")]
  assert probes.token_sets(["audio"]) == [("audio",)]
  with pytest.raises(ValueError, match="unknown \\['z_ambient'\\]"):
    probes.token_sets("z_ambient")


def test_label_files_and_kinds(tmp_path):
  (tmp_path / "one.csv").write_text("clip_id,emotion\na,happy\nb,sad\n")
  (tmp_path / "hot.csv").write_text("clip_id,smile,talk,nod\na,1,0,1\nb,0,0,0\n")
  (tmp_path / "vec.csv").write_text("clip_id,valence,arousal\na,0.5,-1\nb,0.25,2\n")
  (tmp_path / "map.json").write_text(json.dumps({"a": ["smile"], "b": []}))
  (tmp_path / "bad.csv").write_text("clip_id,emotion\na,happy,extra\n")
  one, hot = probes.read_label_file(tmp_path / "one.csv"), probes.read_label_file(tmp_path / "hot.csv")
  vec, mapped = probes.read_label_file(tmp_path / "vec.csv"), probes.read_label_file(tmp_path / "map.json")
  assert one == {"a": "happy", "b": "sad"} and probes.kind_of(list(one.values())) == "class"
  assert hot == {"a": ["smile", "nod"], "b": []} and probes.kind_of(list(hot.values())) == "multilabel"
  assert vec == {"a": [0.5, -1], "b": [0.25, 2]} and probes.kind_of(list(vec.values())) == "regression"
  assert probes.kind_of(list(mapped.values())) == "multilabel"
  with pytest.raises(probes.LabelError, match="rows \\[2\\] do not have the header's 2 columns"):
    probes.read_label_file(tmp_path / "bad.csv")


def test_probe_of_a_pretrained_model(trained_run, tmp_path):
  """The command: z_id names the speakers of unseen clips; a label file's clips are probed; disjoint speakers are
  refused before any encoding."""
  export = trained_run["export"]
  result = subprocess.run([sys.executable, "-m", "synclipmae.cli", "probe", f"--model={export}", "--label=speaker",
                           "--tokens=z_id", "--train_split=heldout", "--test_split=heldout", f"--out={tmp_path}"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  written = json.load(open(tmp_path / "probe_z_id_speaker.json"))
  assert written["kind"] == "class" and written["num_train"] + written["num_test"] == 32
  assert written["accuracy"] >= 0.9 and written["chance"] <= 0.25
  assert os.path.getsize(tmp_path / "probe_z_id_speaker.png") > 0

  corpus, pretrained = Corpus(trained_run["corpus"]), inference.load_pretrained(export)
  with pytest.raises(probes.LabelError, match="no class of the split 'heldout' occurs in 'train'"):
    probes.evaluate(pretrained, corpus, ["speaker"], tokens=["z_id"])
  clips = [corpus.read(split, i) for split in ("train", "heldout") for i in range(0, 16, 2)]
  label_file = {c.clip_id: c.metadata["expression"] for c in clips}
  out = probes.evaluate(pretrained, corpus, ["expression"], tokens="z_amb+audio,z_voc", label_file=label_file,
                        weight_decay=1e-2)
  assert set(out["probes"]) == {"z_amb+audio", "z_voc"}
  probe = out["probes"]["z_amb+audio"]["expression"]
  assert probe["num_train"] == 8 and out["clips_without_label"] == {"train": 88, "heldout": 24}
  assert probe["num_test"] + probe["num_test_unseen_class"] == 8 and probe["classes"] == sorted(set(
      label_file[c.clip_id] for c in clips[:8]))
