"""Draws docs/figures/looped_model.png, the README's schematic of a looped LM (python docs/figures/looped_model.py)."""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

fig, ax = plt.subplots(figsize=(8, 2.6))
ax.set(xlim=(0, 10.8), ylim=(0, 3.2)); ax.axis("off")


def box(x, label, color, width=1.7):
    ax.add_patch(FancyBboxPatch((x, 1.0), width, 1.0, boxstyle="round,pad=0.05", fc=color, ec="black"))
    ax.text(x + width / 2, 1.5, label, ha="center", va="center", fontsize=10)


def arrow(x0, x1, y=1.5):
    ax.add_patch(FancyArrowPatch((x0, y), (x1, y), arrowstyle="-|>", mutation_scale=14))


ax.text(0.5, 1.5, "tokens", ha="center", va="center", fontsize=10)
arrow(1.0, 1.5)
box(1.6, "prelude\n(once)", "#dbe9f6")
arrow(3.4, 4.0)
box(4.1, "recurrent block\n(shared weights)", "#fde0c5", width=2.3)
arrow(6.5, 7.1)
box(7.2, "coda\n(once)", "#dbe9f6")
arrow(9.0, 9.45)
ax.text(10.1, 1.5, "next-token\nloss", ha="center", va="center", fontsize=10)
# the loop over the recurrent block, with the input re-injected each time
ax.add_patch(FancyArrowPatch((5.8, 2.05), (4.6, 2.05), connectionstyle="arc3,rad=1.2", arrowstyle="-|>",
                             mutation_scale=14))
ax.text(5.25, 2.95, "run the block T times", ha="center", fontsize=10)
ax.text(5.25, 0.45, "training: T drawn around µ_rec (its mean)\ntest time: any T, e.g. 1 … 3·µ_rec",
        ha="center", va="center", fontsize=9)
out = Path(__file__).with_suffix(".png")
fig.savefig(out, dpi=150, bbox_inches="tight")
print(out)
