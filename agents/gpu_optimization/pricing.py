"""How a training host is priced: own hardware at the local rate, or a rented GPU at its provider's rate.

The host says who rents it (``MEETARA_PROVIDER``) and, where the detected GPU's name does not say
it, which price-table GPU type it is billed as (``MEETARA_GPU``). Checked when the GPU agent
starts, so a host that would be priced wrongly refuses to start instead of under-charging budgets.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from protocol.agents.gpu_optimization import DeviceProfile
from runtime import Catalog

__all__ = ["host_pricing", "price_table_gpu"]


def price_table_gpu(device_name: str, gpu_types: Iterable[str]) -> str | None:
    """The price-table GPU type a detected device name names, if exactly one does.

    ``NVIDIA H100 80GB HBM3`` is ``H100``, ``NVIDIA GeForce RTX 4090`` is ``RTX_4090``,
    ``NVIDIA A100-SXM4-40GB`` is ``A100``: the type's words appear in order, as whole words.
    """
    words = [w for w in re.split(r"[^A-Z0-9]+", device_name.upper()) if w]
    matches = set()
    for gpu in gpu_types:
        parts = gpu.upper().split("_")
        if any(words[i : i + len(parts)] == parts for i in range(len(words) - len(parts) + 1)):
            matches.add(gpu)
    return matches.pop() if len(matches) == 1 else None


def host_pricing(provider: str, gpu: str | None, device: DeviceProfile, catalog: Catalog) -> tuple[str, str | None]:
    """``(provider, gpu)`` to price this host's work at; ``ValueError`` says what to set when neither fits."""
    if provider == "local":
        if gpu is not None:
            raise ValueError(
                f"MEETARA_GPU={gpu} names a rented GPU type but MEETARA_PROVIDER is 'local' (own hardware, "
                "priced at the local rate): set MEETARA_PROVIDER to the provider renting this host"
            )
        return "local", None
    if provider not in catalog.providers:
        raise ValueError(
            f"MEETARA_PROVIDER={provider!r} is not in the price table; known: local, {', '.join(catalog.providers)}"
        )
    prices = catalog.providers[provider].prices
    named = f"MEETARA_GPU={gpu!r}"
    if gpu is None:
        gpu = price_table_gpu(device.name, catalog.gpus) if device.kind == "cuda" else None
        named = f"the detected {gpu}"
        if gpu is None:
            raise ValueError(
                f"the device {device.name!r} matches none of the price table's GPU types "
                f"({', '.join(catalog.gpus)}): set MEETARA_GPU to the type this host is billed as"
            )
    if gpu not in prices:
        raise ValueError(f"{provider} has no price for {named}; it prices {', '.join(sorted(prices))}")
    return provider, gpu
