"""Which server a provider talks to: quota and cached answers are kept per address.

A self-hosted instance, a mirror or an emulator answers (and counts) for itself: a quota spent at the public
service does not refuse searches at another address, and an emulator's answers are never given for the
public service's. At the provider's own address everything is keyed as before addresses counted.
"""

from __future__ import annotations

from typing import Any

__all__ = ["cache_name", "provider_address"]


def provider_address(provider: Any) -> str | None:
    """The provider's ``base_url`` (without a trailing slash) when it is not the provider's own address
    (``default_url``); None at its own address, and for a provider that declares none."""
    base = str(getattr(provider, "base_url", "") or "").rstrip("/")
    default = str(getattr(type(provider), "default_url", "") or "").rstrip("/")
    return None if not base or not default or base == default else base


def cache_name(provider: Any) -> str:
    """The name a provider's answers are cached under: its name, and its address when that is not its own
    (:func:`provider_address`), or when it declares no address of its own (any server may answer)."""
    address = provider_address(provider)
    if address is None and not getattr(type(provider), "default_url", ""):
        address = str(getattr(provider, "base_url", "") or "").rstrip("/") or None
    return str(provider.name) if address is None else f"{provider.name}@{address}"
