"""Low-level resampling ops shared by the generator adapters (NVlabs ``torch_utils/ops``).

* :mod:`.upfirdn`: the plain reference implementations (up-FIR-down, filtered leaky ReLU,
  low-pass filter design); the test oracle;
* :mod:`.resample`: the fast implementations of the same ops (the default path), with
  :func:`~invkit.ops.resample.use_impl` to switch between the two.

May import: torch, numpy. Nothing else from invkit.
"""
