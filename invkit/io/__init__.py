"""File formats and I/O: everything that reads or writes bytes on disk.

* :mod:`.atomic`: atomic file writes (temporary file + rename);
* :mod:`.tensorfile`: invkit's own format, safetensors + JSON metadata;
* :mod:`.checkpoint`: :class:`~invkit.io.checkpoint.CheckpointFile` (format sniffing, safe
  ``torch.load``) and :class:`~invkit.io.checkpoint.CheckpointError`;
* :mod:`.safe_pickle`: the restricted unpickler for NVlabs / TensorFlow network pickles;
* :mod:`.zoo`: named pretrained weights (URL, sha256, cache, offline switch);
* :mod:`.images`: image files and grids (loading, saving, listing, tensor conversion).

May import: torch, numpy, pillow, safetensors and other modules of this package. Nothing else
from invkit, so that every other layer can use it.
"""
