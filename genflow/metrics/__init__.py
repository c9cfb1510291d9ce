"""Evaluation metrics: Fréchet distances, classifier scores, CLAP score and speech-enhancement metrics.

- ``frechet``: ``frechet_distance``, ``compute_stats``, ``save_stats`` / ``load_stats`` (.npz cache)
- ``classifier_scores``: ``kl_scores`` / ``paired_kl`` (audioldm_eval KL), ``inception_score``
- ``embeddings``: ``load_backend("mel-stats" | "vggish[:file]" | "panns[:file]" | "clap[:id]" | folder)``,
  ``embed_files``
- ``vggish``, ``panns``, ``clap``: native VGGish and CNN14-16k, ``load_clap`` + ``ClapEmbedder.clap_scores``
- ``speech``: ``si_sdr``, ``pesq_wb``, ``stoi``, ``dnsmos``, ``speech_metrics``
- ``folders``: ``evaluate_generation``, ``evaluate_enhancement``; ``report``: JSON, markdown, PNG plots

Submodules import their heavy dependencies lazily; import what you need from them directly.
"""
