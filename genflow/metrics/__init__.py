"""Evaluation metrics: Fréchet distances, classifier scores, CLAP score and speech-enhancement metrics.

- ``frechet``: ``frechet_distance``, ``compute_stats``, ``save_stats`` / ``load_stats`` (.npz cache)
- ``kad``: ``kernel_audio_distance`` (kadtk's KAD: unbiased MMD, RBF, bandwidth from the reference set)
- ``protocols``: ``PROTOCOLS`` / ``get_protocol`` ("genflow" | "audioldm_eval" | "fadtk"): how files are loaded
- ``check``: ``python -m genflow.metrics check``, offline sanity checks of an evaluation setup
- ``classifier_scores``: ``kl_scores`` / ``paired_kl`` (audioldm_eval KL), ``inception_score``
- ``embeddings``: ``load_backend("mel-stats" | "vggish[:file]" | "panns[:file]" | "clap[:id]" | folder)``,
  ``embed_files``
- ``vggish``, ``panns``, ``clap``: native VGGish and CNN14-16k, ``load_clap`` + ``ClapEmbedder.clap_scores``
- ``speech``: ``si_sdr``, ``pesq_wb``, ``stoi``, ``dnsmos``, ``speech_metrics``
- ``folders``: ``evaluate_generation`` (= ``embed_files`` + ``score_embeddings``), ``evaluate_enhancement``;
  ``report``: JSON, markdown, PNG plots

Submodules import their heavy dependencies lazily; import what you need from them directly.
"""
