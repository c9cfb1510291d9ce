"""The official Dasheng-AudioGen generator (DiT + T5 front-end, DashengTokenizer latents) in genflow.

    from genflow.audiogen import load_official, AudioGen, official_sigmas, format_prompt
    model = load_official("Dasheng-AudioGen/", dtype=torch.bfloat16, device="cuda")   # official folder
    model = AudioGen.from_pretrained("converted/")              # python -m genflow.audiogen convert ...
    frames = model.predict_frames(t5_states, t5_mask)           # T5 of format_prompt(caption)
    x = genflow.flow.sample(model, noise, official_sigmas(), guidance_scale=5.0, mask=..., text=..., text_mask=...)

``genflow.load`` takes either folder (or hub id) directly: ``genflow.release`` dispatches on ``model_type``
(``dasheng_audiogen`` official, ``genflow-audiogen`` converted) to ``official_pipeline`` / ``converted_pipeline``.
"""

from genflow.audiogen.config import MODEL_TYPE, OFFICIAL_MODEL_TYPE, AudioGenConfig, is_official
from genflow.audiogen.convert import load_official
from genflow.audiogen.frontend import compose_prompt, format_prompt
from genflow.audiogen.model import AudioGen
from genflow.audiogen.sampling import (
           DEFAULTS,
           PROMPT_TEMPLATE,
           official_padding,
           official_sigmas,
           sample_official_batch,
)

__all__ = ["AudioGen", "AudioGenConfig", "DEFAULTS", "MODEL_TYPE", "OFFICIAL_MODEL_TYPE", "PROMPT_TEMPLATE",
           "compose_prompt", "format_prompt", "is_official", "load_official", "official_padding", "official_sigmas",
           "sample_official_batch"]
