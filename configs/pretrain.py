"""SyncLipMAE pretraining configs: `get_config("VARIANT")`, VARIANT in mu | tiny | small | base | large.

    synclipmae pretrain --config=configs/pretrain.py:mu --workdir=runs/mu [--config.optim.lr=1e-3 ...]

Variants (encoder width/depth/heads, patch, crop):
  mu     128/3/4,    patch 8,  64 px   - CPU: the main job and the tests
  tiny   192/6/3,    patch 8,  64 px   - CPU benchmarks, quick GPU runs
  small  384/12/6,   patch 16, 128 px
  base   768/12/12,  patch 16, 224 px
  large  1024/24/16, patch 16, 256 px  - Sapiens-0.3B encoder geometry (the paper's encoder)

Audio encoder: mu and tiny train a small log-mel conv stack; small, base and large use the paper's frozen
wav2vec 2.0 (base geometry) and need its weights: --config.model.audio.wav2vec2.path=DIR (a Hugging Face
checkpoint directory). `synclipmae precompute-audio` with the same flags stores its features once; add
--config.data.audio_features=DIR to train on them instead of running the encoder every step.

The main job (README) runs `mu` with these defaults: 1050 steps of 8 clips x 16 frames (4 same-speaker pairs),
about 7 minutes on a 2-core CPU, reaching 89.5 % / 93.2 % zero-shot sync accuracy at K=5 on the validation
identities of the synthetic corpus (seeds 0 / 1; chance 9.5 %) and 86.2 % / 87.8 % on its test identities, with
the mouth out of z_id and z_amb and z_id's identity at 1.00 (BENCHMARKS.md "Tokens that factorize", "An identity
code by contrast"). mu departs from the paper-style
settings of the larger variants where its 8-minute budget needs it, each measured in BENCHMARKS.md: a conv stem
within each patch; 3 encoder blocks, MLP ratio 2 and one decoder block of width 48 (a cheap step: the number of
steps is what the 8 minutes buy);
half-strength jitter; lr 3e-3; the same-clip InfoNCE (loss.con_clip) and a smaller decorrelation weight. mu and
tiny also take the factorising options of issue 13 (encoder.mouth_private, data.identity_pairs, loss.amb_con,
loss.id_con).
Results are recorded in README.md / BENCHMARKS.md with the commands that produce them.
"""

import ml_collections

JITTER = {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1, "grayscale_p": 0.2}
JITTER_MU = {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.05, "grayscale_p": 0.1}

# name: (image, patch, enc width, enc depth, enc heads, prompt dim, dec width, dec depth, dec heads, audio width)
_VARIANTS = {
    "mu": (64, 8, 128, 3, 4, 64, 48, 1, 4, 96),
    "tiny": (64, 8, 192, 6, 3, 128, 128, 2, 4, 128),
    "small": (128, 16, 384, 12, 6, 256, 256, 4, 8, 256),
    "base": (224, 16, 768, 12, 12, 256, 512, 8, 16, 512),
    "large": (256, 16, 1024, 24, 16, 256, 512, 8, 16, 512),
}


def model_config(variant: str) -> ml_collections.ConfigDict:
  if variant not in _VARIANTS:
    raise ValueError(f"unknown variant {variant!r}; choose one of {sorted(_VARIANTS)}")
  image, patch, width, depth, heads, prompt, dwidth, ddepth, dheads, awidth = _VARIANTS[variant]
  # MLP hidden / width: 4 (ViT) except in mu, whose 8-minute CPU budget buys more steps with 2 (BENCHMARKS.md).
  mlp_ratio = 2.0 if variant == "mu" else 4.0
  return ml_collections.ConfigDict({
      # "synclipmae" | "mae": a plain MAE of single frames - one bypass, no prompt tokens, no audio (the paper's
      # "single bypass, no audio" ablation; synclipmae/models/mae.py). It trains on the reconstruction loss alone and
      # has no sync evaluation.
      "mode": "synclipmae",
      "image_size": image,
      # Computation dtype of every layer ("float32" | "bfloat16"); parameters, optimiser state, losses and the
      # log-mel front end stay float32.
      "dtype": "float32",
      # Recompute each encoder / decoder block's activations in the backward pass instead of storing them
      # (nnx.remat): less activation memory for more compute (experiments/memory_plan.py measures the trade).
      "remat": False,
      "patch_size": patch,
      "prompt_dim": prompt,  # Width of z_id, z_voc, z_amb and the audio tokens.
      "encoder": {"width": width, "depth": depth, "num_heads": heads, "mlp_ratio": mlp_ratio,
                  # For pretrained backbones (config.init.encoder): "sincos" (fixed, no state) | "learned" (a
                  # trained table, loaded from the checkpoint); and a CLS token kept from a MAE / ViT checkpoint.
                  "pos_embed": "sincos", "cls_token": False,
                  # "linear" (ViT patch embedding; pretrained checkpoints) | "conv" (a conv net within each
                  # patch, vit.ConvPatchEmbed: mu learns to read the mouth much sooner, BENCHMARKS.md).
                  "stem": "conv" if variant == "mu" else "linear",
                  # Mouth-region patches readable by z_voc only, so z_id / z_amb cannot carry the mouth (encoder.py;
                  # ours; mu, tiny).
                  "mouth_private": variant in ("mu", "tiny"),
                  # With mouth_private: nor do the mouth patches and z_voc read anything outside the mouth region, so
                  # z_voc sees the mouth region alone (encoder.py; ours). mu: z_voc's identity 0.32 / 0.39 against
                  # 0.62 / 0.53 on validation at the same sync, test sync 90.2 / 91.5 % against 86.2 / 87.8 %
                  # (BENCHMARKS.md "Where does z_voc's identity come from?"); not yet the default.
                  "mouth_isolated": False,
                  # "token": z_amb from its prompt token | "grid": plus a linear map of the patch grid (encoder.py;
                  # ours): z_amb learns head translation, not rotation, blinks or expression (BENCHMARKS.md).
                  "amb_readout": "token"},
      # A linear head from z_amb to each frame's head pose, trained by loss.amb_warp: a reference frame of the same
      # person, warped from its pose into the target's, must match the target's face (synclipmae/warp.py; ours).
      "ambient_pose": False,
      # C > 0: a linear speaker classifier on z_voc and on z_amb for loss.id_adversary (ours); C must cover the
      # corpus's speakers (its speaker list, every split). 0: none.
      "speaker_classes": 0,
      # With ambient_pose: g > 0 adds a g x g appearance image in face coordinates, linear in z_amb, to the warped
      # reference (losses.pose_warp_loss; an active-appearance model for lids and brows; ours). 0: off.
      "ambient_appearance": 0,
      # With ambient_appearance: the driving token (z_voc / audio token) adds its own appearance image, and the
      # warp loss then covers the mouth too, once per pass (video-, audio-driven; ours).
      "driving_appearance": False,
      "decoder": {"width": dwidth, "depth": ddepth, "num_heads": dheads, "mlp_ratio": mlp_ratio,
                  # Which bypass-1 patches the decoder sees: "target" (the frame's own, paper) | "identity_source"
                  # (the frame that gave z_id) | "none" (decoder.py).
                  "visible": "target",
                  # A second head for each patch's mean and spread, which norm_pix divides out: the decoder can
                  # then draw pixels (swap renders, dubbing); trained by loss.rec_stats.
                  "patch_stats": True,
                  # Add a projection of the three conditioning tokens to every position (decoder.py; ours).
                  "cond_broadcast": False,
                  # Scale and shift the final tokens by the conditioning (AdaLN; decoder.py; ours).
                  "cond_modulation": False},
      "audio": {
          # "logmel" (trainable conv stack on log-mel; mu, tiny) | "wav2vec2" (frozen, pretrained; small+).
          "encoder": "logmel" if variant in ("mu", "tiny") else "wav2vec2",
          "sample_rate": 16000,
          "fps": 25.0,
          "margin_frames": 2,  # Audio context on each side of the video window (the pipeline provides it).
          "window_frames": 2,  # The adapter reads features of frames t-2..t+2 for frame t.
          # layers: which conv layers' outputs the adapter reads (1-based); () = all.
          "logmel": {"num_mels": 80, "width": awidth, "depth": 3, "layers": ()},
          "wav2vec2": {
              # A Hugging Face wav2vec 2.0 checkpoint directory (config.json + model.safetensors), loaded before
              # the first step. Required for training unless allow_random (random-weight smoke tests only).
              "path": "",
              "allow_random": False,
              "geometry": "base",  # base | large | test (synclipmae/models/wav2vec2.py); must match the checkpoint.
              "layers": (),  # Hidden states the adapter reads (0 = encoder input ... 12 = last); () = all L+1.
              "normalize": True,  # Zero-mean unit-variance waveform per window (HF do_normalize; the released
                                  # base and large checkpoints expect it).
          },
          "adapter_hidden": 2 * prompt,
      },
  })


def get_config(variant: str = "mu") -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.variant = variant
  config.seed = 0
  config.model = model_config(variant)
  small = variant in ("mu", "tiny")

  config.data = ml_collections.ConfigDict({
      "dir": "runs/data/synthetic",  # Generated here (default synthetic corpus) if it holds no corpus.
      "train_split": "train",
      # Where pretraining's closing evaluation runs: the validation identities, on which recipes are chosen. The
      # test identities ("heldout") are reported separately (`synclipmae eval-sync --split=heldout`). A corpus
      # without a validation split (e.g. from `prep`) is evaluated on "heldout", with a note in the log.
      "eval_split": "validation",
      # Batches of same-speaker clip pairs; z_id then comes from the other clip of the pair (pipeline.py), and
      # loss.amb_con takes its negatives from the pair. Ours; mu, tiny (BENCHMARKS.md "Tokens that factorize").
      "identity_pairs": small,
      "num_frames": 16,  # T: frames per clip window; the global batch has batch_size * T frames.
      "batch_size": 8 if small else 64,  # Global batch size in clips (split across processes).
      "num_workers": 0,  # Grain worker processes per host.
      # Precomputed frozen audio-encoder features (`synclipmae precompute-audio`); "": run the encoder per step.
      "audio_features": "",
  })
  config.masking = ml_collections.ConfigDict({
      "mask_ratio": 0.75,  # Both bypasses keep round(P * 0.25) patches.
      "face_bias": 8.0,  # Bypass 2: a face patch is this many times likelier to be kept than background,
      "mouth_bias": 100.0,  # and a mouth-region patch this much more (see synclipmae/masking.py).
      "identity_shuffle": True,  # z_id for frame t comes from another frame of the same clip.
      # z_amb for frame t comes from frame t +- s, s uniform in [min, max] (0 max: from frame t itself). Pose and
      # expression change slowly, the mouth every frame: the decoder must take the mouth from z_voc / audio.
      "ambient_min_shift": 0,
      "ambient_max_shift": 0,
      # loss.amb_warp's reference for frame t (model.ambient_pose): 0 max: the frame that gave z_id (the partner clip
      # with data.identity_pairs); else frame t +- s of its own clip, s uniform in [min, max]: the same expression and
      # lighting, nearly the same pose, so what the warp must explain is the pose change and the blinks (ours).
      "warp_min_shift": 0,
      "warp_max_shift": 0,
      # Strengths of the bypass-2 photometric jitter. mu: half (JITTER_MU); at full strength its 8-minute run
      # learns to read the mouth far more slowly (72.8 % vs 82.5 % sync at K=5, BENCHMARKS.md).
      "jitter": dict(JITTER_MU if variant == "mu" else JITTER),
      # One jitter draw per clip window (True) or per frame (False); see masking.photometric_jitter.
      "jitter_per_clip": True,
      # Ablation of the two bypasses: True encodes one view (bypass 1: clean frames, uniform mask) for all tokens.
      "one_bypass": False,
  })
  config.loss = ml_collections.ConfigDict({
      "rec_video": 1.0,
      "rec_audio": 1.0,
      # lambda_con: InfoNCE between z_voc and the audio tokens. mu: 0 changes neither sync nor z_voc's identity
      # (loss.con_clip does the work; BENCHMARKS.md "Where does z_voc's identity come from?"); the paper's term stays.
      "con": 2.0 if small else 0.5,
      # The same InfoNCE with negatives from the same clip only (its other times: the decision sync detection
      # makes). Ours, not the paper's; on mu weight 8 lifted held-out sync at K=5 from 31 % to 50 %, 16 to 52 %
      # (BENCHMARKS.md). Unmeasured on the larger variants, which keep the paper's objective.
      "con_clip": 16.0 if small else 0.0,
      # Its audio negatives reach this many frames beyond the clip window on each side, so every frame meets the
      # offsets the evaluation weighs (ours, losses.reach_info_nce). mu: 15 costs sync (79.5 / 89.0 % against
      # ~91 % at K=5, BENCHMARKS.md "Audio negatives beyond the clip window"). 0: the window's own audio only.
      "clip_reach": 0,
      # The same-clip InfoNCE on windows of window_frames frames, each scored by the mean of its per-frame cosines
      # as the sync evaluation scores an offset (ours; losses.window_info_nce). mu: 16 beside con_clip changes
      # nothing, instead of it costs 11 points of sync (BENCHMARKS.md "Windows in the contrastive loss"). 0: off.
      "con_window": 0.0,
      "window_frames": 5,
      # The alignment term: 2 - 2 cos(z_voc, audio token) per frame (ours; losses.alignment_loss), charging for
      # what z_voc holds that the audio does not (e.g. the speaker's face). mu: 16 and 64 leave z_voc's identity
      # where it was (BENCHMARKS.md "Where does z_voc's identity come from?"). 0: off.
      "voc_align": 0.0,
      "voc_align_start": 300,  # From this step on: at first the audio tokens are nearly one vector.
      # lambda_xcov: decorrelation of z_id, z_voc, z_amb. mu: 0.01 (85.8 % vs 84.0 % sync at K=5 with 0.05; at 0.5
      # sync does not learn, BENCHMARKS.md).
      "xcov": 0.01 if small else 0.05,
      # The same decorrelation for the pairs (z_id, z_voc) and (z_id, z_amb) only, with its own weight: a linear
      # readout of identity from the motion tokens is what it removes (ours; BENCHMARKS.md "Identity out of the
      # motion tokens"). 0: off.
      "xcov_id": 0.0,
      # InfoNCE between z_id of the two clips of a speaker (data.identity_pairs), other speakers' frames the
      # negatives (ours; losses.speaker_info_nce). mu: 0.1 takes z_id's identity from 0.90 / 0.81 to 1.00 / 1.00
      # at the same sync (BENCHMARKS.md "An identity code by contrast"); 1 costs sync. 0: off.
      "id_con": 0.1 if small else 0.0,
      "id_temperature": 0.1,
      # Identity out of z_voc and z_amb: their similarity to a frame of the speaker's other clip made no higher than
      # to other speakers' frames (ours; losses.speaker_confusion; needs data.identity_pairs). mu: 1 and 4 leave
      # the identity probes of z_voc / z_amb where they were (BENCHMARKS.md "An identity code by contrast"). 0: off.
      "id_confusion": 0.0,
      # The same aim against a learned linear speaker classifier (model.speaker_classes), which z_voc and z_amb are
      # trained to leave at the uniform guess (ours; losses.speaker_adversary). mu: 1 (one seed) leaves the identity
      # probes where they were; the classifier never learns the speakers online (BENCHMARKS.md). 0: off.
      "id_adversary": 0.0,
      # InfoNCE between the z_amb of a frame's two views, negatives the same speaker's other frames (ours; losses.py).
      "amb_con": 4.0 if small else 0.0,
      "amb_temperature": 0.1,
      # Weight of the pose-warp term (losses.pose_warp_loss), computed when model.ambient_pose is on. mu: 3 with both
      # appearance heads keeps sync (89.2 % vs 91.0 % at K=5 on validation); 10 stalls the contrastive terms.
      "amb_warp": 3.0,
      "norm_pix": True,
      # Extra weight of mouth-region patches in both reconstruction losses (1 + w * mouth fraction; ours).
      "mouth_weight": 0.0,
      "rec_stats": 1.0,  # Squared error of the decoder's per-patch mean / std (model.decoder.patch_stats), pixels.
      "neighbour_frames": 2,  # Same-clip frames with 0 < |dt| <= this are not negatives.
  })
  config.optim = ml_collections.ConfigDict({
      "lr": {"mu": 3e-3, "tiny": 1e-3}.get(variant, 1.5e-4),
      "warmup_steps": 40 if small else 2000,
      "weight_decay": 0.05,
      "b1": 0.9,
      "b2": 0.95,
      "grad_clip": 1.0,
  })
  config.train = ml_collections.ConfigDict({
      "num_steps": {"mu": 1050, "tiny": 1500}.get(variant, 200_000),  # mu: ~7 min on 2 CPU cores.
      "log_every": 25,
      "checkpoint_every": 250 if small else 2000,
      "keep_checkpoints": 3,
  })
  config.init = ml_collections.ConfigDict({
      # A pretrained ViT / MAE / Sapiens checkpoint (file or Hugging Face directory) for the frame encoder's
      # backbone; the prompt tokens and factor heads stay freshly initialised. Empty: train from scratch.
      # Width, depth and patch size must match the variant's (an error names the tensor and the flag). A checkpoint
      # with a position table (HF ViTMAE, MAE, Sapiens) needs --config.model.encoder.pos_embed=learned; the table
      # is resized bicubically to the crop's patch grid. Its CLS token is dropped unless
      # --config.model.encoder.cls_token=True (then kept, first in the sequence). Nothing is switched silently:
      # the error says which flag to set. Layouts: synclipmae/pretrained/vit.py. E.g. Sapiens-0.3B into `large`:
      #   --config=configs/pretrain.py:large --config.init.encoder=sapiens_0.3b_epoch_1600_clean.pth
      #   --config.model.encoder.pos_embed=learned
      "encoder": "",
  })
  config.mesh = ml_collections.ConfigDict({
      "data": -1,  # -1: all devices not used by the other axes.
      "fsdp": 1,  # Parameters and optimiser state sharded over this axis (ZeRO-3 style).
  })
  config.eval = ml_collections.ConfigDict({
      "context_frames": 5,  # K: similarities averaged over K consecutive frames (DESIGN section 7).
      "max_offset": 15,  # Candidate offsets -15..+15 frames.
      "num_samples": 400,
      "seed": 2026,  # Which clips, windows and offsets are drawn: fixed, independent of the training seed.
  })
  return config
