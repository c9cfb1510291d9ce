"""Evaluation metrics: Fréchet distances, classifier scores, CLAP score and speech-enhancement metrics."""
