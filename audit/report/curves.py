"""Training and validation curves from run histories (the audit's section 9 and ``faceaudit compare``)."""

from __future__ import annotations

import math

from faceaudit.templates.figures import PALETTE, Figure, new_figure, png_figure

from .history import History


def _clean(values: list[float]) -> list[float]:
    return [v if v is not None and not math.isnan(v) else float("nan") for v in values]


def validation_curves_figure(histories: list[History], *, phase: str = "last") -> Figure | None:
    """Validation accuracy and loss per epoch of each run's final phase, side by side (the seed's figure layout).

    ``phase="last"`` plots the last training phase (the fine-tuning after a frozen warm-up), as the seed's
    ``model_predict_curves_3.png`` does; ``phase="all"`` concatenates every phase.
    """
    runs = [h for h in histories if any("val_accuracy" in p.metrics or "val_loss" in p.metrics for p in h.phases)]
    if not runs:
        return None
    fig, (acc_ax, loss_ax) = new_figure(7.2, 3.6, ncols=2)
    for index, history in enumerate(runs):
        colour = PALETTE[index % len(PALETTE)]
        phases = history.phases[-1:] if phase == "last" else history.phases
        label = history.name if phase != "last" or len(history.phases) == 1 else f"{history.name} ({phases[0].name})"
        for axis, key in ((acc_ax, "val_accuracy"), (loss_ax, "val_loss")):
            values = _clean([v for p in phases for v in p.metrics.get(key, [])])
            if values:
                axis.plot(range(len(values)), values, "--", color=colour, label=f"{label} {key}",
                          marker="o" if len(values) < 12 else None, markersize=3)
    for axis, ylabel in ((acc_ax, "accuracy"), (loss_ax, "loss")):
        axis.set_xlabel("epoch")
        axis.set_ylabel(ylabel)
        axis.xaxis.get_major_locator().set_params(integer=True)
        axis.legend(loc="best", frameon=True)
    acc_ax.set_title("Validation accuracy")
    loss_ax.set_title("Validation loss")
    names = ", ".join(h.name for h in runs)
    what = "final training phase" if phase == "last" else "whole run"
    return png_figure(
        fig,
        caption=(f"Validation accuracy (left) and loss (right) per epoch of each run's {what} ({names}). Look for the "
                 "run whose accuracy plateaus highest and whose loss is still falling or flat at the end; a loss "
                 "that rises while training continues means over-fitting, and a curve with only a few epochs is "
                 "weak evidence of where it would settle. Validation accuracy is over all faces, so it says "
                 "nothing about which groups the model fails."),
        alt=f"Validation curves for {names}")


def training_curves_figure(history: History) -> Figure | None:
    """Train and validation accuracy and loss over the whole run, with phase boundaries marked."""
    keys = [k for k in ("accuracy", "val_accuracy", "loss", "val_loss") if history.metric(k)]
    if not keys:
        return None
    fig, (acc_ax, loss_ax) = new_figure(7.2, 3.3, ncols=2)
    for axis, base in ((acc_ax, "accuracy"), (loss_ax, "loss")):
        for key, style, colour in ((base, "-", PALETTE[0]), (f"val_{base}", "--", PALETTE[5])):
            values = _clean(history.metric(key))
            if values:
                axis.plot(range(1, len(values) + 1), values, style, color=colour, label=key,
                          marker="o" if len(values) < 15 else None, markersize=3)
        boundary = 0
        for phase in history.phases[:-1]:
            boundary += phase.epochs
            axis.axvline(boundary + 0.5, color="#888", linewidth=0.8, linestyle=":")
        axis.set_xlabel("epoch")
        axis.set_ylabel(base)
        axis.xaxis.get_major_locator().set_params(integer=True)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(loc="best")
    acc_ax.set_title("Accuracy")
    loss_ax.set_title("Loss")
    phases = ", ".join(f"{p.name} ({p.epochs} epochs)" for p in history.phases)
    return png_figure(
        fig,
        caption=(f"Training (solid) and validation (dashed) accuracy and loss per epoch; dotted lines mark phase "
                 f"boundaries ({phases}). Look for a widening gap between training and validation (over-fitting) "
                 "and for whether the chosen checkpoint sits where validation loss is lowest."),
        alt=f"Training curves of {history.name}")
