"""The feature store: Parquet feature sets with a DuckDB catalog, versions, lineage,
point-in-time training frames and SQL (docs/architecture.md, "Store layout").

>>> store = FeatureStore("STORE")
>>> v = store.publish("radiomics", rows, producer="my-script", lineage={"inputs_hash": "..."})
>>> store.sql("SELECT center, avg(embedding[17]) FROM radiomics GROUP BY center")
>>> frame = store.training_frame("dltr", clinical=["age"], labs=["afp"], max_age_days=90)
>>> X = frame.embedding_matrix()   # (N, D) float32 view of the Arrow buffer

SQL view names: each table by its name; each feature set ``NAME`` (latest version) and every
version as ``NAME__<version_id>`` and ``"NAME@<version_id>"``.
"""

from features._catalog import CATALOG_NAME
from features._cohort import predictor_columns, registered_cohort_config
from features._frames import TrainingFrame, embedding_matrix, memory_frame, table_hash
from features._multi import MultiFrame, multi_frame
from features._registry import FeatureSetVersion
from features._rows import PACKED, STORAGE_KEY, feature_schema, pack, unpack, unpacked
from features._store import FeatureStore
from features._writer import FeatureWriter, version_id_of

__all__ = [
    "CATALOG_NAME",
    "FeatureSetVersion",
    "FeatureStore",
    "FeatureWriter",
    "MultiFrame",
    "PACKED",
    "STORAGE_KEY",
    "TrainingFrame",
    "embedding_matrix",
    "feature_schema",
    "memory_frame",
    "multi_frame",
    "pack",
    "predictor_columns",
    "registered_cohort_config",
    "table_hash",
    "unpack",
    "unpacked",
    "version_id_of",
]
