"""A training run's loss curve as a standalone SVG: job reports and the dashboard draw it (no plotting stack needed)."""

from __future__ import annotations

from html import escape

__all__ = ["loss_svg"]

_W, _H, _PAD = 640, 320, 48


def _ticks(low: float, high: float) -> list[float]:
    span = high - low or 1.0
    return [low + span * i / 4 for i in range(5)]


def loss_svg(curves: dict[str, list[tuple[int, float]]], title: str) -> str:
    """Each named curve of (step, loss) points on shared axes, with a legend."""
    points = [p for curve in curves.values() for p in curve]
    if not points:
        raise ValueError("no loss points to draw")
    steps, losses = [s for s, _ in points], [v for _, v in points]
    x0, x1 = min(steps), max(steps) if max(steps) > min(steps) else min(steps) + 1
    y0, y1 = min(0.0, min(losses)), max(losses) * 1.05 or 1.0

    def x(step: float) -> float:
        return _PAD + (step - x0) / (x1 - x0) * (_W - 2 * _PAD)

    def y(loss: float) -> float:
        return _H - _PAD - (loss - y0) / (y1 - y0) * (_H - 2 * _PAD)

    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" viewBox="0 0 {_W} {_H}" '
        'font-family="sans-serif" font-size="12">',
        f"<title>{escape(title)}</title>",
        f'<rect width="{_W}" height="{_H}" fill="white"/>',
        f'<text x="{_W / 2}" y="20" text-anchor="middle" font-size="14">{escape(title)}</text>',
        f'<line x1="{_PAD}" y1="{_H - _PAD}" x2="{_W - _PAD}" y2="{_H - _PAD}" stroke="black"/>',
        f'<line x1="{_PAD}" y1="{_PAD}" x2="{_PAD}" y2="{_H - _PAD}" stroke="black"/>',
        f'<text x="{_W / 2}" y="{_H - 10}" text-anchor="middle">optimizer step</text>',
    ]
    for value in _ticks(y0, y1):
        parts.append(f'<text x="{_PAD - 6}" y="{y(value) + 4:.1f}" text-anchor="end">{value:.2f}</text>')
        parts.append(f'<line x1="{_PAD}" y1="{y(value):.1f}" x2="{_W - _PAD}" y2="{y(value):.1f}" stroke="#eee"/>')
    for value in _ticks(x0, x1):
        parts.append(f'<text x="{x(value):.1f}" y="{_H - _PAD + 16}" text-anchor="middle">{value:.0f}</text>')
    for i, (name, curve) in enumerate(curves.items()):
        if not curve:
            continue
        colour = colours[i % len(colours)]
        line = " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in curve)
        parts.append(f'<polyline class="curve" fill="none" stroke="{colour}" stroke-width="2" points="{line}"/>')
        legend = f'<text x="{_W - _PAD}" y="{_PAD + 14 * i}" text-anchor="end" fill="{colour}">'
        parts.append(f"{legend}{escape(name)}</text>")
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
