"""Cloud masking for Landsat-8: an example geomlops model package.

A per-pixel gradient-boosting classifier learns clear (0) versus cloud (1) from the
Landsat-8 quality band's high-confidence cloud flags. Entry points live in the
``MLproject`` file beside this package; each calls ``python -m cloud_mask.<entry point>``.
"""

from __future__ import annotations

__version__ = "0.1.0"
