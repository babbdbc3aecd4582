"""The one typed configuration of facescale: defaults < YAML file < FACESCALE_* environment.

Every stage reads its own section (`Settings.storage`, `Settings.scraper`, ...). The YAML
file is the one named by ``--config`` or ``FACESCALE_CONFIG``, else ``./facescale.yaml``
when it exists. Environment variables override single values with ``__`` between levels,
e.g. ``FACESCALE_STORAGE__ROOT=s3://bucket/faces`` or ``FACESCALE_TRAINING__IMAGE_SIZE=128``.
Everything is validated when loaded; a bad value raises ConfigError naming the key.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from facescale.errors import ConfigError

ENV_PREFIX = "FACESCALE_"
CONFIG_ENV = "FACESCALE_CONFIG"
DEFAULT_CONFIG_FILE = "facescale.yaml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StorageSettings(_Section):
    """Where datasets, runs, the registry and models live."""

    root: str = Field(
        "./facescale-data", description="local directory or fsspec URI (s3://bucket/prefix)"
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict, description="passed to fsspec (credentials, endpoint)"
    )
    rows_per_row_group: int = Field(256, ge=1, le=100_000)
    max_rows_per_shard: int = Field(4096, ge=1)
    max_bytes_per_shard: int = Field(256 * 1024 * 1024, ge=1024 * 1024)

    @field_validator("root")
    @classmethod
    def _root_given(cls, value: str) -> str:
        # A field validator (not the model one below), so the error names storage.root.
        if not value.strip():
            raise ValueError("root must not be empty")
        return value

    @model_validator(mode="after")
    def _groups_fit(self) -> StorageSettings:
        if self.rows_per_row_group > self.max_rows_per_shard:
            raise ValueError("rows_per_row_group must not exceed max_rows_per_shard")
        return self


def check_ray_address(value: str | None) -> str | None:
    """A cluster address curation can use: Ray Data's streaming executor does not run under Ray Client."""
    if value and value.strip().lower().startswith("ray://"):
        raise ValueError(
            f"{value!r} is a Ray Client address, under which Ray Data does not run: "
            "give the cluster's GCS address (host:port, e.g. ray-head:6379)"
        )
    return value or None


class ScraperSettings(_Section):
    """Search workers and the downloader."""

    engine: str = Field(
        "demo", description="search engine, or several in order of preference, comma-separated "
        "('duckduckgo,bing': the next is asked for a keyword the one before blocks or runs short on)"
    )
    base_url: str | None = Field(None, description="engine base URL override (the demo web's URL for 'demo')")
    per_keyword: int = Field(100, ge=1, le=10_000, description="candidate images per keyword")
    workers: int = Field(4, ge=1, le=64, description="parallel browser workers")
    chromium_binary: str = "/usr/bin/chromium"
    chromedriver: str = "/usr/bin/chromedriver"
    selenium_grid_url: str | None = Field(
        None, description="Remote WebDriver URL; local Chromium when unset"
    )
    grid_session_timeout_s: float = Field(
        300.0,
        gt=0,
        description="how long a new browser session may wait in the Grid's queue when every slot is "
        "busy (the hub's --session-request-timeout, 300 s by default); other calls use timeout_s",
    )
    politeness_delay_s: float = Field(1.0, ge=0)
    block_third_party: bool = Field(
        True, description="search browsers resolve only the engine's own hosts: third-party scripts and trackers "
        "fail at once instead of holding a result page (off: e.g. for a browser that reaches a proxy by name)"
    )
    download_concurrency: int = Field(16, ge=1, le=512)
    per_host_concurrency: int = Field(4, ge=1, le=128)
    timeout_s: float = Field(20.0, gt=0)
    retries: int = Field(3, ge=0, le=20)
    max_body_bytes: int = Field(20 * 1024 * 1024, ge=1024)
    max_pixels: int = Field(40_000_000, ge=10_000)
    min_side: int = Field(48, ge=1)
    honour_noai: bool = True
    commit_rows: int = Field(
        1000, ge=1, description="commit a RAW run after about this many rows (whole keywords): shard size vs redo"
    )


class SplitFractions(_Section):
    train: float = Field(0.7, gt=0, lt=1)
    val: float = Field(0.2, ge=0, lt=1)
    test: float = Field(0.1, ge=0, lt=1)

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitFractions:
        if abs(self.train + self.val + self.test - 1.0) > 1e-6:
            raise ValueError("split fractions must add up to 1")
        return self


class CurationSettings(_Section):
    """The seed's rules, made configurable."""

    min_per_identity: int = Field(
        30, ge=1, description="clean crops needed before an identity is used"
    )
    per_identity: int = Field(50, ge=1, description="source photos kept per identity")
    augment_factor: int = Field(
        10, ge=1, le=100, description="train samples per source photo, original included"
    )
    split: SplitFractions = Field(default_factory=SplitFractions)
    crop_size: int = Field(128, ge=32, le=1024, description="stored crop side in pixels")
    seed: int = 0
    ray_address: str | None = Field(
        None, description="existing Ray cluster's GCS address (host:port); a private local Ray when unset"
    )
    concurrency: int | None = Field(
        None, ge=1, le=1024, description="Ray actors per stage (default: the cluster's CPUs)"
    )
    chunk_rows: int = Field(
        4096, ge=1, description="RAW rows per crop-cache chunk (the unit a killed run redoes)"
    )
    min_face_px: int = Field(48, ge=8, description="smallest accepted face side in the source image")
    margin: float = Field(0.25, ge=0, le=2, description="crop margin as a fraction of the face side")
    dominance: float = Field(
        2.5, ge=1, description="keep the largest of several faces only if this many times the next one's area"
    )
    min_sharpness: float = Field(30.0, ge=0, description="variance of the Laplacian of the grey crop")
    min_brightness: float = Field(40.0, ge=0, le=255)
    max_brightness: float = Field(215.0, ge=0, le=255)
    min_contrast: float = Field(20.0, ge=0, description="standard deviation of the grey crop")
    near_duplicate_distance: int = Field(
        22, ge=0, le=96, description="Hamming distance of 192-bit keys under which photos are near-duplicates"
    )
    near_duplicate_same_face: bool = Field(
        True, description="also join two photos of one identity that show one face the same way (the "
        "near_duplicate_aligned_distance and near_duplicate_face_* tests); false: the keys alone decide",
    )  # fmt: skip
    near_duplicate_aligned_distance: int = Field(
        24, ge=0, le=192, description="Hamming distance of the aligned faces' keys under which two photos of one "
        "identity are near-duplicates",
    )  # fmt: skip
    near_duplicate_face_distance: float = Field(
        0.18, ge=0, le=2,
        description="face-embedding distance under which two photos of one identity whose keys are within "
        "near_duplicate_face_bits are near-duplicates",
    )  # fmt: skip
    near_duplicate_face_bits: int = Field(
        56, ge=0, le=192, description="key distance within which the face-embedding rule applies"
    )
    cleaning_threshold: float = Field(
        0.6, gt=0, le=2, description="face-embedding distance above which a crop is another person"
    )
    cleaning_min_core: int = Field(
        3, ge=2, le=100,
        description="fewest crops that agree (within cleaning_threshold) wrong-person cleaning trusts as the identity",
    )
    max_duplicate_rate: float = Field(
        0.0, ge=0, le=1, description="validation: share of originals whose bytes may repeat"
    )

    @model_validator(mode="after")
    def _enough(self) -> CurationSettings:
        if self.min_per_identity > self.per_identity:
            raise ValueError("min_per_identity must not exceed per_identity")
        if self.min_brightness > self.max_brightness:
            raise ValueError("min_brightness must not exceed max_brightness")
        return self

    @field_validator("ray_address")
    @classmethod
    def _not_ray_client(cls, value: str | None) -> str | None:
        return check_ray_address(value)


class TrainingSettings(_Section):
    """Inception V3 training."""

    backbone: Literal["inception_v3", "tiny"] = Field(
        "inception_v3",
        description="inception_v3, or tiny: three convolutions for tests of the training mechanics and smoke "
        "runs (not a face model)",
    )
    image_size: int = Field(
        96, ge=16, le=512, description="model input side (Inception V3 needs >= 75)"
    )
    batch_size: int = Field(64, ge=1)
    max_epochs: int = Field(60, ge=1)
    min_epochs: int = Field(1, ge=0)
    stop_metric: str = Field("val_accuracy", description="metric the threshold stop watches (val_loss, ...)")
    stop_threshold: float = Field(
        0.97, gt=0, description="stop when stop_metric reaches it (>= for accuracies, <= for losses)"
    )
    learning_rate: float = Field(1e-3, gt=0, description="Adam's learning rate (the peak, with a schedule)")
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant", description="cosine: linear warm-up over warmup_epochs, then cosine decay to 0 at max_epochs"
    )
    warmup_epochs: float = Field(0.0, ge=0, description="epochs of linear learning-rate warm-up (cosine schedule)")
    label_smoothing: float = Field(
        0.0, ge=0, lt=1, description="share of each target spread over the other classes (0: one-hot targets)"
    )
    mixed_precision: Literal["auto", "on", "off", "bfloat16"] = Field(
        "auto", description="auto: float16 on GPUs, float32 on CPUs; on: float16; bfloat16 (CPUs with AMX)"
    )
    weights: str | None = Field(
        None, description="local weights file; train from scratch when unset"
    )
    embedding_dim: int = Field(128, ge=1, le=4096, description="width of the embedding layer (verification)")
    head: Literal["softmax", "cosface"] = Field(
        "softmax",
        description="softmax: a dense layer of logits; cosface: scale x cosine between the normalised embedding "
        "and each identity's centre, trained with a cosine margin (large-margin cosine loss)",
    )
    cosface_margin: float = Field(
        0.2, ge=0, lt=1, description="cosface: the cosine margin the true identity must win by"
    )
    cosface_scale: float = Field(30.0, gt=0, description="cosface: the scale of the cosines (the logits' range)")
    teacher: Literal["none", "dlib"] = Field(
        "none",
        description="dlib: also train the embedding to reproduce the pretrained dlib embedding of each sample's "
        "photo (from the crop cache); none: the identity labels only",
    )
    teacher_weight: float = Field(
        1.0, ge=0, description="weight of the distillation loss, 1 - cosine(embedding, dlib embedding), per sample"
    )
    teacher_extra: int = Field(
        0,
        ge=0,
        description="dlib: unlabelled crops from the crop cache added to every batch, learnt from the teacher "
        "alone: photos the version does not use (spares, other identities, removed copies), none near a val or "
        "test photo; 0: the version's train photos only",
    )
    batchnorm_momentum: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="momentum of the BatchNormalization moving statistics (None: Inception V3's 0.99; "
        "0.9 suits short runs from scratch)",
    )
    shuffle_buffer: int = Field(8192, ge=1, description="about how many samples are shuffled together")
    deterministic: bool = Field(
        True, description="reproducible input order and ops (exact resume); False is faster on GPUs"
    )
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _input_fits_backbone(self) -> TrainingSettings:
        if self.warmup_epochs and self.lr_schedule != "cosine":
            raise ValueError("warmup_epochs needs lr_schedule: cosine")
        if self.warmup_epochs >= self.max_epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be below max_epochs ({self.max_epochs})")
        if self.backbone == "inception_v3" and self.image_size < 75:
            raise ValueError(f"image_size must be at least 75 for Inception V3, got {self.image_size}")
        if self.teacher == "dlib" and self.embedding_dim != 128:
            raise ValueError(
                f"teacher dlib needs embedding_dim 128 (the dlib embedding's width), got {self.embedding_dim}"
            )
        if self.teacher_extra and self.teacher != "dlib":
            raise ValueError("teacher_extra needs teacher: dlib (the extra crops have no labels, only dlib's targets)")
        return self


class OrchestrationSettings(_Section):
    """The Airflow DAGs' defaults (facescale.app.orchestration); DAG Params override them per run."""

    keywords_file: str | None = Field(
        None, description="candidate names for new identities, one per line (the nightly takes the next ones)"
    )
    new_per_night: int = Field(20, ge=0, le=10_000, description="new identities planned per nightly run")
    batch_size: int = Field(10, ge=1, le=1000, description="keywords per mapped scrape task")
    max_waiting_nights: int | None = Field(
        3, ge=0, description="nights an identity still short of clean photos is searched again, then the nightly "
        "gives up on it (None: no cap)"
    )
    scrape_pool_slots: int = Field(2, ge=1, le=1024, description="slots of the facescale_scrape Airflow pool")
    work_dir: str = Field("./facescale-runs", description="local directory for training runs started by DAGs")
    retrain_min_new_identities: int = Field(1, ge=1, description="retrain when a version adds this many identities")
    retrain_min_new_samples: float = Field(
        0.2, gt=0, description="... or this fraction more samples than the last model's version"
    )
    min_test_top1: float = Field(0.5, ge=0, le=1, description="quality bar: test top-1 a model needs to be published")
    min_served_right: float = Field(
        0.9, ge=0, le=1,
        description="quality bar: share of the version's test photos the model's default backend answers right "
        "(unknown counts as wrong)",
    )
    max_steps_per_epoch: int | None = Field(None, ge=1, description="cap on batches per epoch in DAG training runs")


class ServingSettings(_Section):
    """The identify / verify API, its page and the CLI commands that use a model."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    model: str = Field(
        "latest", description="registered model to serve: an id, or 'latest' (followed as new ones register)"
    )
    reload_interval_s: float = Field(30.0, gt=0, description="how often the API looks for a newly registered model")
    token: SecretStr | None = Field(None, description="bearer token the API requires (none: no auth)")
    max_upload_bytes: int = Field(10 * 1024 * 1024, ge=1024, description="largest accepted image file")
    max_pixels: int = Field(40_000_000, ge=10_000, description="largest accepted image, width x height")
    top_k: int = Field(3, ge=1, le=50, description="identities listed per face")
    cache_dir: str = Field(
        "./facescale-runs/serving", description="local copies of models kept in a remote store"
    )
    workers: int = Field(1, ge=1, le=64, description="uvicorn worker processes")
    max_batch: int = Field(
        32, ge=1, le=1024, description="faces of concurrent requests run through the model together (1: no batching)"
    )
    gallery_per_identity: int = Field(
        20, ge=1, le=1000,
        description="original training photos enrolled per identity when a model is calibrated (at registration)",
    )
    calibration_pairs: int = Field(4000, ge=10, description="validation pairs per backend when a model is calibrated")


class Settings(BaseSettings):
    """The effective configuration."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    storage: StorageSettings = Field(default_factory=StorageSettings)
    scraper: ScraperSettings = Field(default_factory=ScraperSettings)
    curation: CurationSettings = Field(default_factory=CurationSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    orchestration: OrchestrationSettings = Field(default_factory=OrchestrationSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # init values come from the YAML file: the environment overrides them.
        return (env_settings, init_settings)

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The YAML file in effect: explicit > $FACESCALE_CONFIG > ./facescale.yaml if present."""
    if explicit:
        return Path(explicit)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.is_file() else None


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Load and validate the configuration, or raise ConfigError with one clear line."""
    file = config_path(path)
    data: dict[str, Any] = {}
    if file is not None:
        try:
            loaded = yaml.safe_load(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {file}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read config file {file}: {exc}") from exc
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark else ""
            raise ConfigError(f"config file {file} is not valid YAML{where}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {file} must hold a mapping of sections")
        data = loaded or {}
        odd = [k for k in data if not isinstance(k, str)]
        if odd:  # Settings(**data) would fail with a bare TypeError
            raise ConfigError(f"config file {file}: section names must be text, got {odd[0]!r}")
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, file)) from exc
    except SettingsError as exc:  # an environment value that does not parse (JSON for dicts)
        names = ", ".join(f"${n}" for n in _env_names_under(_settings_field(exc))) or "environment"
        raise ConfigError(f"invalid configuration: {exc} [from {names}]") from exc


def _describe(exc: ValidationError, file: Path | None) -> str:
    parts = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        key = ".".join(loc) or "(root)"
        shown = err["type"] != "missing" and not isinstance(err["input"], dict)
        got = f" (got {err['input']!r})" if shown else ""
        envs = ", ".join(f"${n}" for n in _env_names_under(loc))
        source = envs or (str(file) if file else "")
        origin = f" [from {source}]" if source else ""
        parts.append(f"{key}: {err['msg']}{got}{origin}")
    return "invalid configuration: " + "; ".join(parts)


def _env_names_under(loc: list[str]) -> list[str]:
    """The FACESCALE_* variables that set ``loc``, a section holding it, or a key inside it.

    pydantic-settings matches names case-insensitively, and a model-level error (e.g. split
    fractions not adding up) sits on the section, while the variable names one of its keys.
    """
    if not loc:
        return []
    target = (ENV_PREFIX + "__".join(loc)).upper()
    found = []
    for name in os.environ:
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper == CONFIG_ENV:
            continue
        if upper == target or upper.startswith(target + "__") or target.startswith(upper + "__"):
            found.append(name)
    return sorted(found)


def _settings_field(exc: SettingsError) -> list[str]:
    """The top-level field a SettingsError is about (pydantic-settings names it in quotes)."""
    match = re.search(r'field "([^"]+)"', str(exc))
    return [match.group(1)] if match else []
