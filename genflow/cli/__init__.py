"""genflow's command lines, one module each, one style: flags generated from dataclasses where there is one.

- ``config``: ``--field.path value`` flags for the training configs (``parse_config``);
- ``sample``: prompts -> WAVs (``recipes/tta/sample.py``, ``recipes/ttm/sample.py``);
- ``enhance``: noisy files/folders -> enhanced ones (``recipes/se/enhance.py``);
- ``evaluate``: generated audio vs references, enhanced vs clean speech (``recipes/*/evaluate.py``);
- ``codec``: ``python -m genflow.codecs`` / ``genflow-codec`` (round trip through a codec);
- ``common``: what sample and enhance share (release, device, precision, sampling-setting flags).
"""
