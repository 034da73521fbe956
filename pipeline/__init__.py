"""Stage packages that move voxels: ``pipeline.ingest`` (cohort -> Zarr), ``pipeline.loaders``
(Zarr -> tensors, DALI and the reference loader) and ``pipeline.extract`` (Ray extraction)."""
