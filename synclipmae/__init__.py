"""SyncLipMAE in JAX/Flax.

    import synclipmae
    pretrained = synclipmae.load_pretrained(PATH)          # an export directory or a pretraining workdir
    tokens = synclipmae.video_tokens(pretrained, "video.mp4")

The public inference API lives in `synclipmae.inference`; it is imported on first use so that `synclipmae` (and
the command line) start without loading JAX.
"""

_PUBLIC = ("load_pretrained", "video_tokens", "Pretrained", "VideoTokens", "VideoReader")


def __getattr__(name):
  if name in _PUBLIC:
    from synclipmae import inference
    return getattr(inference, name)
  raise AttributeError(f"module 'synclipmae' has no attribute {name!r}")


def __dir__():
  return sorted(list(globals()) + list(_PUBLIC))
