"""Symbolic differentiation and simplification (see the differentiation issue)."""
