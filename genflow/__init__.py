"""genflow: latent flow-matching audio generation (text-to-audio, text-to-music, speech enhancement)."""

__version__ = "0.1.0"
