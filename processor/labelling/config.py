"""The labelling app's settings: ``PROCESSOR_LABEL_*`` environment variables, CLI flags on top."""

from __future__ import annotations

from typing import Any, Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class LabelConfig(BaseSettings):
    """Consensus, sessions, sign-in limits and image display; immutable once built."""

    model_config = SettingsConfigDict(env_prefix="PROCESSOR_LABEL_", frozen=True, extra="ignore")

    host: str = Field("127.0.0.1", description="Address the app listens on.")
    port: int = Field(8080, ge=0, le=65535, description="Port the app listens on (0: any free port).")
    agree: int = Field(3, ge=1, description="Labellers who must give the same answer for it to be final (K).")
    max_labellers: int = Field(5, ge=1, description="Most labellers an image is shown to (N).")
    db_schema: str = Field("", description="Postgres schema of the labelling tables (empty: the search path).")
    session_ttl_s: int = Field(12 * 3600, ge=60, description="How long a sign-in lasts.")
    assignment_ttl_s: int = Field(900, ge=10, description="How long an image shown to someone holds a slot.")
    sign_in_attempts: int = Field(5, ge=1, description="Failed sign-ins per user name per window (4x per address).")
    sign_in_window_s: int = Field(900, ge=1, description="Window of the sign-in limit.")
    cookie_secure: bool = Field(False, description="Mark cookies Secure (set it when served over HTTPS).")
    trusted_proxies: int = Field(
        0,
        ge=0,
        description="Reverse proxies in front of the app whose X-Forwarded-Proto and X-Forwarded-For to believe "
        "(0: none; 1 behind one TLS-terminating proxy).",
    )
    image_cache_items: int = Field(256, ge=0, description="Displayed images kept in memory.")
    display_px: int = Field(1280, ge=64, description="Longest side of a displayed image.")
    suggestion_hidden_share: float = Field(
        0.2,
        ge=0.0,
        le=1.0,
        description="Share of draws on which the model's suggestion is hidden, to compare agreement with and "
        "without it (never shown on the random sample).",
    )
    holdout_percent: int = Field(20, ge=0, le=100, description="Share of final labels kept out of training.")

    @model_validator(mode="after")
    def _k_within_n(self) -> Self:
        if self.agree > self.max_labellers:
            raise ValueError(f"agree ({self.agree}) cannot exceed max_labellers ({self.max_labellers})")
        return self

    def with_overrides(self, **overrides: Any) -> LabelConfig:
        """A copy with the given non-None fields replaced and re-validated."""
        data = self.model_dump()
        data.update({k: v for k, v in overrides.items() if v is not None})
        return LabelConfig.model_validate(data)
