"""One frozen settings object, read from ``CONSULT_*`` environment variables.

Every field has a type, a default (secrets excepted) and a help line; the README's
configuration table lists each one (a test checks that it does).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from consult.dicom import identifiers
from consult.errors import ConfigurationError


class Settings(BaseSettings):
    """Everything that differs between deployments."""

    model_config = SettingsConfigDict(env_prefix="CONSULT_", frozen=True, extra="ignore")

    data_dir: Path = Field(
        Path("./consult-data"),
        description="Folder for the SQLite catalog and the local object store.",
    )
    ae_title: str = Field("CONSULT", description="Our DICOM AE title (called and calling).")
    dicom_host: str = Field("0.0.0.0", description="Address the DICOM receiver binds to.")  # noqa: S104
    dicom_port: int = Field(11112, ge=0, le=65535, description="DICOM receiver port.")
    http_host: str = Field("127.0.0.1", description="Address the web app binds to.")
    http_port: int = Field(8000, ge=0, le=65535, description="Web app port.")
    database_url: str = Field(
        "",
        description="SQLAlchemy URL of the catalog; empty means SQLite in CONSULT_DATA_DIR.",
    )
    s3_endpoint: str = Field(
        "", description="S3 endpoint URL (MinIO, AWS, ...); empty means the local folder store."
    )
    s3_bucket: str = Field("consult", description="S3 bucket holding originals and previews.")
    s3_access_key: str = Field("", description="S3 access key.")
    s3_secret_key: str = Field("", description="S3 secret key.")
    s3_region: str = Field("us-east-1", description="S3 region name.")
    s3_connect_timeout: float = Field(
        2.0, gt=0, description="Seconds to wait for a connection to the S3 endpoint."
    )
    s3_read_timeout: float = Field(
        3.0, gt=0, description="Seconds to wait for each read from or write to the S3 endpoint."
    )
    s3_attempts: int = Field(
        2, ge=1, description="Attempts per S3 request, the first included (then 0xA700)."
    )
    catalog_lock_timeout: float = Field(
        3.0,
        gt=0,
        description="Seconds a catalog write waits for a lock (SQLite busy timeout; "
        "PostgreSQL lock_timeout on ingest) before failing (C-STORE then gets 0xA700).",
    )
    stable_seconds: float = Field(
        60.0, ge=0, description="Quiet seconds after the last instance before a study is stable."
    )
    accept_unknown_peers: bool = Field(
        False,
        description="Accept associations from unregistered AE titles (as the 'unknown sender').",
    )
    max_dataset_bytes: int = Field(
        2 * 1024**3, gt=0, description="Largest dataset accepted over C-STORE, in bytes."
    )
    max_connections_per_peer: int = Field(
        16,
        ge=1,
        description="DICOM connections one peer address may hold open at once (per process).",
    )
    receiver_processes: int = Field(
        1,
        ge=1,
        description=(
            "Receiver processes `consult receive` runs on the one DICOM port (they share one"
            " listening socket; the least busy accepts each connection)."
        ),
    )
    session_hours: float = Field(12.0, gt=0, description="Lifetime of a login session, in hours.")
    secure_cookies: bool = Field(
        False, description="Mark session cookies Secure (set when served over HTTPS)."
    )
    workers: int = Field(1, ge=0, description="Preview/delivery worker processes `serve` starts.")
    # Previews: deep-zoom tiles, on-demand renders, job leases.
    tile_format: Literal["jpeg", "png"] = Field(
        "jpeg", description="Format of the stored preview tiles: jpeg (lossy) or png (lossless)."
    )
    tile_quality: int = Field(85, ge=1, le=95, description="JPEG quality of preview tiles.")
    render_cache_items: int = Field(
        500, ge=1, description="Most on-demand renders (other windows, lossless tiles) kept."
    )
    render_cache_mb: int = Field(
        2048, ge=1, description="Most megabytes of on-demand renders kept in the object store."
    )
    job_lease_seconds: float = Field(
        30.0, gt=0, description="Job lease; a worker renews it while it works on a long job."
    )
    node_modules_dir: str = Field(
        "", description="Folder of the npm packages (OpenSeadragon); empty: beside the sources."
    )

    @field_validator("ae_title")
    @classmethod
    def _check_ae(cls, value: str) -> str:
        return identifiers.ae_title(value)  # its ValueError names the variable (load_settings)

    @property
    def catalog_url(self) -> str:
        """The catalog database URL, defaulting to SQLite inside the data folder."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'catalog.sqlite3').resolve()}"

    @property
    def objects_dir(self) -> Path:
        """Root of the local folder object store."""
        return self.data_dir / "objects"

    @property
    def doorbells_dir(self) -> Path:
        """Where waiting workers keep their doorbells (consult/jobs/doorbell.py)."""
        return self.data_dir / "doorbells"


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment, naming the variable on a bad value."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = "CONSULT_" + "_".join(str(p) for p in err["loc"]).upper()
            problems.append(f"{name}: {err['msg']}")
        raise ConfigurationError("invalid setting: " + "; ".join(problems)) from None
