"""Writing a matplotlib figure to a PNG atomically: a reader never sees half a file, and the figure is closed."""
from __future__ import annotations

import os
from pathlib import Path


def save_figure(fig, path: str | Path) -> Path:
    """Saves `fig` as PNG at `path` (parent folders created) through a temporary file in the same folder."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a failed save leaves nothing behind
        raise
    finally:
        plt.close(fig)
    return path
