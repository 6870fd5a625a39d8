"""specauf: train masked block drafters (DFlash, Domino) for speculative decoding under switchable losses."""

__version__ = "0.1.0"
