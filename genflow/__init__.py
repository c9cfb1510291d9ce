"""genflow: latent flow-matching audio generation (text-to-audio, text-to-music, speech enhancement).

    import genflow
    gen = genflow.load("runs/tta-demo/release")     # a release folder or a hub id
    clips = gen.generate(["a dog barking"], duration_s=5)
"""

__version__ = "0.1.0"


def load(path_or_hub_id, device=None, dtype=None, revision=None):
    """A release folder or hub id -> ready ``genflow.pipeline.Generator`` (see ``genflow.pipeline.load``)."""
    from genflow.pipeline import load as _load

    return _load(path_or_hub_id, device=device, dtype=dtype, revision=revision)
