"""Training: routing dataset -> hidden states -> layer probes -> SharedTrunkNet -> ONNX bundle.

Needs the ``train`` extra (torch, transformers, ...). This is the only subpackage
that imports torch or transformers.
"""

from __future__ import annotations
