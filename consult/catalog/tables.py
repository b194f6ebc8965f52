"""The catalog schema (SQLAlchemy Core). Migrations in ``migrations/`` create it.

Times are UTC (timezone-aware). DICOM dates and times are kept as the sender wrote them.
Patients are identified per issuer: (sending hospital, Patient ID, Issuer of Patient ID).
Status columns hold the values of the enum named beside them, defined in the module that
moves the state (this layer is below those, so the columns are plain strings).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

UTC = DateTime(timezone=True)
UID = String(64)

hospitals = Table(
    "hospitals",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("created_at", UTC, nullable=False),
)

# DICOM peers of a hospital: who may send to us (AE title + host), and, when a port is
# set, where we send opinions back.
peers = Table(
    "peers",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("hospital_id", ForeignKey("hospitals.id"), nullable=False, index=True),
    Column("ae_title", String(16), nullable=False),
    Column("host", String(255), nullable=False),
    Column("port", Integer, nullable=True),
    Column("created_at", UTC, nullable=False),
    UniqueConstraint("ae_title", "host", name="uq_peers_ae_host"),
)

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("username", String(100), nullable=False, unique=True),
    Column("display_name", String(200), nullable=False),
    Column("hospital_id", ForeignKey("hospitals.id"), nullable=False, index=True),
    Column("role", String(20), nullable=False),  # access.directory.Role
    Column("password_hash", String(255), nullable=False),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_at", UTC, nullable=False),
)

# Server-side sessions: the cookie holds a random token, the catalog its SHA-256.
sessions = Table(
    "sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("user_id", ForeignKey("users.id"), nullable=False, index=True),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", UTC, nullable=False),
    Column("expires_at", UTC, nullable=False),
    Column("client", String(100), nullable=False, default=""),
)

patients = Table(
    "patients",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("hospital_id", ForeignKey("hospitals.id"), nullable=False),
    Column("patient_id", String(64), nullable=False),
    Column("issuer", String(64), nullable=False),  # "" when the sender gave none
    Column("name", String(324), nullable=False, default=""),
    Column("birth_date", String(8), nullable=False, default=""),
    Column("sex", String(16), nullable=False, default=""),
    UniqueConstraint("hospital_id", "patient_id", "issuer", name="uq_patients_identity"),
)

studies = Table(
    "studies",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("study_uid", UID, nullable=False, unique=True),
    Column("hospital_id", ForeignKey("hospitals.id"), nullable=False, index=True),
    Column("patient_pk", ForeignKey("patients.id"), nullable=False, index=True),
    Column("study_date", String(8), nullable=False, default=""),
    Column("study_time", String(16), nullable=False, default=""),
    Column("description", String(64), nullable=False, default=""),
    Column("accession_number", String(16), nullable=False, default=""),
    Column("referring_physician", String(324), nullable=False, default=""),
    Column("study_id", String(16), nullable=False, default=""),
    Column("first_received_at", UTC, nullable=False),
    Column("last_received_at", UTC, nullable=False),
)

series = Table(
    "series",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("study_pk", ForeignKey("studies.id"), nullable=False, index=True),
    Column("series_uid", UID, nullable=False, unique=True),
    Column("modality", String(16), nullable=False, default=""),
    Column("series_number", String(12), nullable=False, default=""),
    Column("description", String(64), nullable=False, default=""),
    Column("instance_count", Integer, nullable=False, default=0),
    Column("last_received_at", UTC, nullable=False),
)

instances = Table(
    "instances",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("series_pk", ForeignKey("series.id"), nullable=False, index=True),
    Column("sop_instance_uid", UID, nullable=False, unique=True),
    Column("sop_class_uid", UID, nullable=False),
    Column("instance_number", String(12), nullable=False, default=""),
    Column("current_version", Integer, nullable=False),
)

# Every distinct content ever received for an instance; the highest version is current.
instance_versions = Table(
    "instance_versions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("instance_pk", ForeignKey("instances.id"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("object_key", String(512), nullable=False),
    Column("dataset_offset", Integer, nullable=False),  # where the bytes as received start
    Column("transfer_syntax_uid", UID, nullable=False),
    Column("hospital_id", ForeignKey("hospitals.id"), nullable=False),
    Column("calling_ae", String(16), nullable=False),
    Column("peer_host", String(255), nullable=False),
    Column("peer_port", Integer, nullable=False),
    Column("rows", Integer, nullable=True),
    Column("columns", Integer, nullable=True),
    Column("frames", Integer, nullable=False, default=0),
    Column("received_at", UTC, nullable=False),
    UniqueConstraint("instance_pk", "version", name="uq_instance_versions_number"),
    UniqueConstraint("instance_pk", "sha256", name="uq_instance_versions_content"),
)

# One row per frame of an instance version once its preview job ran.
previews = Table(
    "previews",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("version_pk", ForeignKey("instance_versions.id"), nullable=False),
    Column("frame", Integer, nullable=False),
    Column("status", String(16), nullable=False),  # previews.builds.PreviewStatus
    Column("object_key", String(512), nullable=True),
    Column("media_type", String(32), nullable=True),
    Column("width", Integer, nullable=True),
    Column("height", Integer, nullable=True),
    Column("reason", Text, nullable=True),
    Column("created_at", UTC, nullable=False),
    # The frame's tile pack (object_key; see viewer.tilepack) rendered with the default window.
    Column("tile_format", String(8), nullable=True),  # jpeg | png
    Column("tile_size", Integer, nullable=True),
    Column("overlap", Integer, nullable=True),
    Column("levels", Integer, nullable=True),
    Column("bytes", BigInteger, nullable=True),  # size of the pack object
    Column("lossy", Boolean, nullable=True),  # lossy tiles (JPEG)
    Column("source_lossy", Boolean, nullable=True),  # the original was lossy compressed
    Column("window_center", Float, nullable=True),  # the default window, when linear
    Column("window_width", Float, nullable=True),
    Column("window_function", String(16), nullable=True),  # LINEAR... or VOI_LUT
    Column("windows", Text, nullable=True),  # JSON: the presets offered for the frame
    Column("built_at", UTC, nullable=True),
    UniqueConstraint("version_pk", "frame", name="uq_previews_frame"),
)

# On-demand renders (other windows, lossless tiles): a cache bounded by count and bytes,
# evicted least recently used first. A row being built (RenderStatus.BUILDING) is the
# build lock.
renders = Table(
    "renders",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("version_pk", ForeignKey("instance_versions.id"), nullable=False),
    Column("frame", Integer, nullable=False),
    Column("window", String(100), nullable=False),  # quantised window, e.g. LINEAR:40:400
    Column("tile_format", String(8), nullable=False),
    Column("status", String(16), nullable=False),  # previews.renders.RenderStatus
    Column("object_key", String(512), nullable=True),
    Column("bytes", BigInteger, nullable=False, default=0),
    Column("reason", Text, nullable=True),
    Column("claimed_at", UTC, nullable=False),
    Column("last_used_at", UTC, nullable=False),
    UniqueConstraint("version_pk", "frame", "window", "tile_format", name="uq_renders_render"),
    Index("ix_renders_last_used", "status", "last_used_at"),
)

# The one durable queue for every kind of background work.
jobs = Table(
    "jobs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(40), nullable=False),
    Column("payload", Text, nullable=False),  # JSON
    Column("status", String(16), nullable=False),  # jobs.queue.JobStatus
    Column("attempts", Integer, nullable=False, default=0),
    Column("max_attempts", Integer, nullable=False, default=5),
    Column("run_after", UTC, nullable=False),
    Column("lease_until", UTC, nullable=True),
    Column("worker", String(100), nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_at", UTC, nullable=False),
    Column("finished_at", UTC, nullable=True),
    Column("dedup_key", String(128), nullable=True, unique=True),
    Index("ix_jobs_claim", "status", "run_after"),
)

consultations = Table(
    "consultations",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("study_pk", ForeignKey("studies.id"), nullable=False, index=True),
    Column("requesting_hospital_id", ForeignKey("hospitals.id"), nullable=False),
    Column("requested_by", ForeignKey("users.id"), nullable=False),
    Column("target_hospital_id", ForeignKey("hospitals.id"), nullable=False, index=True),
    Column("question", Text, nullable=False),
    Column("urgency", String(16), nullable=False),  # consultations.lifecycle.Urgency
    Column("status", String(16), nullable=False),  # consultations.lifecycle.ConsultationStatus
    Column("accepted_by", ForeignKey("users.id"), nullable=True),
    Column("created_at", UTC, nullable=False),
    Column("updated_at", UTC, nullable=False),
)

messages = Table(
    "messages",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("consultation_pk", ForeignKey("consultations.id"), nullable=False, index=True),
    Column("author_id", ForeignKey("users.id"), nullable=False),
    Column("body", Text, nullable=False),
    Column("created_at", UTC, nullable=False),
)

opinions = Table(
    "opinions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("consultation_pk", ForeignKey("consultations.id"), nullable=False, unique=True),
    Column("author_id", ForeignKey("users.id"), nullable=False),
    Column("body", Text, nullable=False),
    Column("status", String(16), nullable=False),  # consultations.opinions.OpinionStatus
    Column("signed_by", ForeignKey("users.id"), nullable=True),
    Column("signed_at", UTC, nullable=True),
    Column("sha256", String(64), nullable=True),
    Column("sr_series_uid", UID, nullable=True),
    Column("sr_sop_instance_uid", UID, nullable=True),
    Column("created_at", UTC, nullable=False),
    Column("updated_at", UTC, nullable=False),
)

# One row per (opinion, destination peer): the return of the opinion to the sender.
deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("opinion_pk", ForeignKey("opinions.id"), nullable=False, index=True),
    Column("peer_pk", ForeignKey("peers.id"), nullable=False),
    Column("status", String(16), nullable=False),  # consultations.opinions.DeliveryStatus
    Column("dicom_status", Integer, nullable=True),
    Column("detail", Text, nullable=True),
    Column("updated_at", UTC, nullable=False),
    UniqueConstraint("opinion_pk", "peer_pk", name="uq_deliveries_target"),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", UTC, nullable=False, index=True),
    Column("user_id", ForeignKey("users.id"), nullable=True),
    Column("username", String(100), nullable=False),
    Column("action", String(60), nullable=False),
    Column("object_type", String(40), nullable=False),
    Column("object_id", String(128), nullable=False),
    Column("outcome", String(16), nullable=False),  # access.audit.Outcome
    Column("client", String(100), nullable=False),
    Column("detail", Text, nullable=False, default=""),
    # Set for events recorded once per (session, object), e.g. preview reads.
    Column("dedup_key", String(200), nullable=True, unique=True),
)
