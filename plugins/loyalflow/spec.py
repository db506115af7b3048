"""Campaign specification: YAML files validated with pydantic, errors pointing at file, field and line."""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from loyalflow.errors import CampaignError

Channel = Literal["email", "sms"]
EMAIL_PARTS = ("subject", "html", "txt")
SMS_PARTS = ("sms",)
PARTS_BY_CHANNEL: dict[str, tuple[str, ...]] = {"email": EMAIL_PARTS, "sms": SMS_PARTS}
ID_PATTERN = r"^[a-z][a-z0-9_]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Step(_Strict):
    """One message of a sequence, sent ``delay_days`` after the anchor."""

    id: str = Field(pattern=ID_PATTERN)
    description: str = ""
    delay_days: int = Field(default=0, ge=0, le=3650)
    template: str | None = Field(default=None, pattern=ID_PATTERN)

    @property
    def template_name(self) -> str:
        """The template stem under ``templates/<campaign>/``."""
        return self.template or self.id


class ResponseRules(_Strict):
    """How what customers answered (loyalflow's own knowledge) shapes the audience, after the segment."""

    exit_on_negative: Literal["never", "ever", "since_anchor"] = "never"  # a "no thanks" ends it
    snooze: bool = False  # "contact me later" pauses the sequence; the next step follows the snooze
    qualify_on_positive: bool = False  # a positive answer qualifies rows whose `qualifies` column is false


class Campaign(_Strict):
    """A campaign: who (segment SQL), what (steps and templates), how (channels) and when (schedule)."""

    id: str = Field(pattern=ID_PATTERN)
    name: str
    description: str = ""
    category: Literal["relationship", "marketing"] = "marketing"
    schedule: str | None = "@daily"
    owner: str = "marketing-ops"
    tags: list[str] = Field(default_factory=list)
    retries: int = Field(default=2, ge=0, le=10)
    channels: list[Channel] = Field(min_length=1)
    segment: str
    steps: list[Step] = Field(min_length=1)
    entry: Literal["event", "state"] = "event"
    backfill_days: int = Field(default=0, ge=0, le=3650)
    max_entries_per_day: int | None = Field(default=None, ge=1)
    responses: ResponseRules = Field(default_factory=ResponseRules)
    catch_up_days: int = Field(default=2, ge=0, le=60)
    anchor_offset_days: int = Field(default=0, ge=0, le=3650)
    reentry_days: int | None = Field(default=None, ge=0, le=3650)
    program: Literal["nurture"] | None = None
    holdout_percent: float = Field(default=0.0, ge=0, le=100)
    priority: int = Field(default=50, ge=0, le=100)
    params: dict[str, Any] = Field(default_factory=dict)

    source: Path = Field(default=Path("."), exclude=True)

    @field_validator("channels")
    @classmethod
    def _unique_channels(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("each channel may appear once")
        return value

    @model_validator(mode="after")
    def _backfill_within_catch_up(self) -> Campaign:
        if self.backfill_days > self.catch_up_days:
            raise ValueError(
                f"backfill_days ({self.backfill_days}) must not exceed catch_up_days ({self.catch_up_days}):"
                " a step is only ever sent within the catch-up window"
            )
        return self

    @model_validator(mode="after")
    def _unique_steps(self) -> Campaign:
        ids = [s.id for s in self.steps]
        if len(set(ids)) != len(ids):
            raise ValueError(f"step ids must be unique, got {ids}")
        return self

    @cached_property
    def segment_path(self) -> Path:
        """The segment SQL file, relative to the campaign file's folder."""
        return self.source.parent / self.segment

    @property
    def lookback_days(self) -> int:
        """How many days before as_of an anchor can lie and still have a step due."""
        return self.anchor_offset_days + max(s.delay_days for s in self.steps) + self.catch_up_days

    def doc_md(self) -> str:
        """Markdown shown in the Airflow UI for this campaign's DAG."""
        reentry = f"after {self.reentry_days} days" if self.reentry_days is not None else "any time"
        entry = (
            "state: a customer enters on the first run that sees them match; steps count from that day"
            if self.entry == "state"
            else "event: steps count from the anchor event in the data"
        )
        folder = "campaigns" if self.source.suffix == ".yaml" else "dags"  # a YAML file, or a Python DAG
        rows = "\n".join(
            f"| `{s.id}` | day {self.anchor_offset_days + s.delay_days} | {s.description or '-'} |"
            for s in self.steps
        )
        return (
            f"# {self.name}\n\n{self.description}\n\n"
            f"- **Category:** {self.category} (frequency caps "
            f"{'do not apply' if self.category == 'relationship' else 'apply'})\n"
            f"- **Channels, in order of preference:** {', '.join(self.channels)}\n"
            f"- **Audience:** `campaigns/{self.segment}`\n"
            f"- **Holdout:** {self.holdout_percent:g}%\n"
            f"- **Entry:** {entry}\n"
            f"- **Re-entry:** {reentry}\n"
            f"- **Source:** `{folder}/{self.source.name}`\n\n"
            f"| step | when | what |\n|---|---|---|\n{rows}\n\n"
            "Trigger with *as_of* (YYYY-MM-DD) to evaluate another day, *dry_run* to decide without "
            "sending, and *send_limit* to cap the messages of this run."
        )


def _node_line(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """The 1-based line of the YAML node at ``loc`` (or of its nearest existing parent)."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            found = next((v for k, v in node.value if getattr(k, "value", None) == key), None)
            if found is None:
                found_key = next((k for k, _ in node.value if getattr(k, "value", None) == key), None)
                return found_key.start_mark.line + 1 if found_key is not None else line
            node = found
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            break
        line = node.start_mark.line + 1
    return line


def load_campaign(path: Path, templates_dir: Path | None = None) -> Campaign:
    """Read and validate one campaign file; raise :class:`CampaignError` naming file, field and line."""
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CampaignError(name, f"cannot read file ({exc.strerror})") from exc
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise CampaignError(name, f"malformed YAML: {problem}", line=mark.line + 1 if mark else None) from exc
    if not isinstance(data, dict):
        raise CampaignError(name, "expected a mapping of campaign settings at the top level", line=1)
    try:
        campaign = Campaign.model_validate({**data, "source": path})
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        field = ".".join(str(p) for p in loc) or None
        message = err["msg"] if err["type"] != "extra_forbidden" else "unknown field (check the spelling)"
        raise CampaignError(name, message, field=field, line=_node_line(node, loc)) from exc
    if campaign.id != path.stem:
        raise CampaignError(
            name,
            f"id '{campaign.id}' must match the file name '{path.stem}'",
            "id",
            _node_line(node, ("id",)),
        )
    check_files(campaign, templates_dir, name, lambda loc: _node_line(node, loc))
    return campaign


def check_files(
    campaign: Campaign,
    templates_dir: Path | None,
    name: str,
    line_of: Callable[[tuple[int | str, ...]], int | None] = lambda loc: None,
) -> None:
    """Raise :class:`CampaignError` when the segment file or a template of a step and channel is missing."""
    if not campaign.segment_path.is_file():
        raise CampaignError(
            name, f"segment file not found: {campaign.segment_path}", "segment", line_of(("segment",))
        )
    if templates_dir is None:
        return
    for i, step in enumerate(campaign.steps):
        for channel in campaign.channels:
            for part in PARTS_BY_CHANNEL[channel]:
                tpl = templates_dir / campaign.id / f"{step.template_name}.{part}.j2"
                if not tpl.is_file():
                    raise CampaignError(
                        name, f"missing template {tpl}", f"steps.{i}.template", line_of(("steps", i))
                    )


def define_campaign(source: Path, templates_dir: Path, **fields: Any) -> Campaign:
    """A campaign written in Python (in a DAG file), checked like a YAML file: its fields, its segment file
    and every template. ``source`` is ``<campaigns folder>/<DAG file name>``: segment paths are relative to
    its folder, errors name it, and the DAG's doc points at ``dags/<name>``."""
    try:
        campaign = Campaign.model_validate({**fields, "source": source})
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or None
        raise CampaignError(str(source), err["msg"], field=field) from exc
    check_files(campaign, templates_dir, str(source))
    return campaign


def campaign_files(campaigns_dir: Path) -> list[Path]:
    """Every campaign file (``*.yaml`` except shared settings files such as ``brand.yaml``)."""
    return sorted(p for p in campaigns_dir.glob("*.yaml") if p.stem not in SHARED_FILES)


SHARED_FILES = frozenset({"brand", "content_map"})


class Brand(_Strict):
    """The sender: shown in every footer (postal address) and used as the From line."""

    name: str
    from_email: str
    from_name: str
    reply_to: str | None = None
    postal_address: str = Field(min_length=5)
    website: str
    support_phone: str
    support_url: str
    sms_sender: str = Field(default="LOYALFLOW", max_length=11)
    primary_color: str = Field(default="#1f3b4d", pattern=r"^#[0-9a-fA-F]{6}$")  # preference centre
    logo_text: str | None = Field(default=None, max_length=60)  # the masthead; default: the name


def load_brand(campaigns_dir: Path) -> Brand:
    """Read ``campaigns/brand.yaml``."""
    path = campaigns_dir / "brand.yaml"
    try:
        return Brand.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise CampaignError(str(path), f"invalid brand settings: {str(exc).splitlines()[0]}") from exc
