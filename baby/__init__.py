"""The Little Baby: small GPT-style language models in NumPy/CuPy with hand-written backward passes."""
__version__ = "0.1.0"
