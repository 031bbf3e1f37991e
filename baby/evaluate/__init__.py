"""Evaluations of trained models: BLiMP, perplexity, MQAR."""
