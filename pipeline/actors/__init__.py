"""Ray for the stages that fan out (deep-feature extraction, radiomics): ``ray_session`` (the run's Ray:
joined, reused or embedded; ``kept_ray`` keeps one for several stages) and ``run_actors`` (blocks of a table through a pool of plain actors that stream
their results back). Imports neither torch nor DALI: a radiomics actor stays light."""

from pipeline.actors._pool import StreamsBlocks, ahead, blocks_of, run_actors
from pipeline.actors._session import kept_ray, ray_session

__all__ = ["StreamsBlocks", "ahead", "blocks_of", "kept_ray", "ray_session", "run_actors"]
