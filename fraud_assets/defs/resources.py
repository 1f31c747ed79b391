"""Resources: project settings and the sentence-transformers embedder.

Defaults come from the environment (FRAUD_* variables, see the README), so the
same values apply in `dagster dev`, `fraud-assets` and tests.
"""

from typing import Any

import dagster as dg
from pydantic import PrivateAttr

from fraud_assets.readers import IngestConfig
from fraud_assets.settings import DEFAULT_EMBEDDING_MODEL, DEFAULT_TIMEZONE, Settings
from fraud_assets.storage import Storage


class FraudSettings(dg.ConfigurableResource):
    """Storage root, landing folder, time zone and validation limits."""

    data_dir: str
    landing_dir: str
    timezone: str = DEFAULT_TIMEZONE
    ingest_config: str | None = None
    max_rejected_share: float = 0.2
    landing_settle_seconds: float = 2.0
    landing_batch_size: int = 200  # new files hashed and archived per sensor tick; the rest wait for the next
    ingest_batch_rows: int = 100_000  # records parsed and validated at a time: ingest memory grows with this, not the file
    seed: int = 0  # the train/validation/test split (FRAUD_SEED); the same seed gives the same split

    @classmethod
    def from_settings(cls, settings: Settings | None = None, **overrides: Any) -> "FraudSettings":
        settings = settings or Settings.from_env()
        values: dict[str, Any] = dict(
            data_dir=str(settings.data_dir),
            landing_dir=str(settings.landing_dir),
            timezone=settings.timezone,
            ingest_config=str(settings.ingest_config) if settings.ingest_config else None,
            max_rejected_share=settings.max_rejected_share,
            landing_settle_seconds=settings.landing_settle_seconds,
            seed=settings.seed,
        )
        values.update(overrides)
        return cls(**values)

    @property
    def storage(self) -> Storage:
        return Storage(self.data_dir, self.landing_dir)

    def load_ingest_config(self) -> IngestConfig:
        return IngestConfig.load(self.ingest_config)


class EmbedderResource(dg.ConfigurableResource):
    """A sentence-transformers model, loaded once per process and released after the run."""

    model: str = DEFAULT_EMBEDDING_MODEL
    device: str = "auto"
    batch_size: int | None = None  # None: 256 on CUDA, 64 on CPU
    max_seq_length: int = 256
    normalize: bool = True
    backend: str = "torch"  # torch | onnx | onnx-int8 (CPU only; the `onnx` extra)
    chunk_size: int = 2048

    _embedder: Any = PrivateAttr(default=None)

    @classmethod
    def from_settings(cls, settings: Settings | None = None, **overrides: Any) -> "EmbedderResource":
        settings = settings or Settings.from_env()
        values: dict[str, Any] = dict(model=settings.embedding_model, device=settings.device, backend=settings.embedding_backend)
        values.update(overrides)
        return cls(**values)

    def get_embedder(self):
        if self._embedder is None:
            from fraud_assets.embeddings import Embedder

            self._embedder = Embedder(
                self.model,
                device=self.device,
                batch_size=self.batch_size,
                max_seq_length=self.max_seq_length,
                normalize=self.normalize,
                backend=self.backend,
            )
        return self._embedder

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._embedder is not None:
            self._embedder.release()
            self._embedder = None


def default_resources() -> dict[str, Any]:
    """The resources every run uses, read from the environment (FRAUD_* variables)."""
    return {"fraud": FraudSettings.from_settings(), "embedder": EmbedderResource.from_settings()}


@dg.definitions
def resources() -> dg.Definitions:
    """Resources attached to the code location, in one place."""
    return dg.Definitions(resources=default_resources())
