"""Post-processing: class rasters to polygons, block by block, equal to tracing them whole.

- :mod:`postprocessing.grid`: integer pixel windows (``plan_blocks``), exact block transforms.
- :mod:`postprocessing.kernel`: the pure per-block kernel (``mask_to_polygons``).
- :mod:`postprocessing.merge`: the streaming join across block edges (``EdgeMerger``,
  ``merge_across_block_edges``).
- :mod:`postprocessing.finalize`: area filter, coverage-preserving simplification, geotransform,
  stable order and WKB.
- :mod:`postprocessing.vectorize`: rasters in, GeoDataFrames or files out, on any Dask scheduler.
- :mod:`postprocessing.io`: windowed reads and the one streaming GeoParquet/GeoJSON writer
  (``FeatureWriter``; file formats in ``_feature_files``), used by vectorize, batch inference
  and serving's RFC 7946 conversion.
- :mod:`postprocessing.registry`: which post-processor a model's MLM output asks for.
- :mod:`postprocessing.features`: a model's output for a block, and the features made of it.
"""
