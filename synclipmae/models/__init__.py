"""SyncLipMAE models: the frame encoder, the audio branch, the decoder and the whole model.

    from synclipmae.models import SyncLipMAE
    model = SyncLipMAE(config.model, rngs=nnx.Rngs(0))
    out = model(inputs, num_frames=T)   # dict of named intermediates, see SyncLipMAE.__call__
"""

from synclipmae.models.audio import AudioAdapter, AudioEncoder, LogMelEncoder, log_mel_spectrogram, make_audio_encoder
from synclipmae.models.decoder import COND_SLOTS, Decoder
from synclipmae.models.encoder import FACTORS, FrameEncoder
from synclipmae.models.synclipmae import SyncLipMAE, param_counts
from synclipmae.models.vit import patchify, sincos_pos_embed_2d, unpatchify

__all__ = ["AudioAdapter", "AudioEncoder", "COND_SLOTS", "Decoder", "FACTORS", "FrameEncoder", "LogMelEncoder",
           "SyncLipMAE", "log_mel_spectrogram", "make_audio_encoder", "param_counts", "patchify", "sincos_pos_embed_2d",
           "unpatchify"]
