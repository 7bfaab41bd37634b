"""The model ``orient`` scores with: the default one shipped in the package, or a run.

The default model (``default_model/`` next to this module, package data) is laid
out as a run folder: ``config.toml``, ``checkpoints/best.pt`` (weights stored as
fp16, loaded into fp32) and ``model.json`` (how it was built, the exact command
that rebuilds it, and the calibrated confidence temperature). It is a
single-orientation model (``train.mode=single``) at 32³ that knows upright
furniture: the ModelNet10 bed, chair, desk, dresser, monitor, night stand, sofa and
table (train grids and train point clouds) and the procedural chair, table, bed,
sofa, lamp, desk, shelf and monitor. ``scripts/build_default_model.py`` rebuilds it.

The default model was trained on grids framed as the mesh voxelizer frames meshes
(:func:`orient3d.data.arrays.reframe`: the largest side spanning ``res - 2`` voxels,
centred), so ``orient`` frames every grid that way before scoring it
(``"framing": "fit"`` in model.json). The rotation found is applied to the file as
it is; the framing only decides what the model sees.

Any trained run folder works in its place (``--model RUN``); its canonical pose is
the one it was trained in (mode ``single``) or learned (mode ``search``). A run
folder may hold a ``model.json`` with a ``temperature`` and a ``framing``; without
one ``T = 1`` and grids are scored as given (meshes are always voxelized centred).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from orient3d.errors import RunError
from orient3d.evaluation.protocols import load_run
from orient3d.model import VAE

__all__ = ["DEFAULT_MODEL", "OrientModel", "load_model"]

log = logging.getLogger(__name__)

DEFAULT_MODEL = Path(__file__).resolve().parent / "default_model"
META = "model.json"


@dataclass(frozen=True)
class OrientModel:
    model: VAE  # in eval mode
    res: int  # the grid side it scores
    temperature: float  # its confidence temperature (model.json, else 1)
    name: str  # "default" or the run folder
    mode: str  # train.mode it was trained with
    framing: str = "as_given"  # "fit": grids are reframed before scoring (model.json)


FRAMINGS = ("as_given", "fit")


def _meta(folder: Path) -> tuple[float, str]:
    """``(temperature, framing)`` from the folder's model.json; ``(1, "as_given")`` without."""
    path = folder / META
    if not path.is_file():
        return 1.0, "as_given"
    try:
        meta = json.loads(path.read_text())
        t, framing = float(meta["temperature"]), str(meta.get("framing", "as_given"))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise RunError(f"{path}: no valid 'temperature' ({err})") from err
    if not t > 0 or framing not in FRAMINGS:
        raise RunError(f"{path}: need temperature > 0, framing in {FRAMINGS}: {t}, {framing!r}")
    return t, framing


def load_model(run: str | Path | None = None, device: str = "cpu") -> OrientModel:
    """The run's model (its best checkpoint, else its last), or the default one for None."""
    folder = DEFAULT_MODEL if run is None else Path(run)
    if run is None and not (folder / "config.toml").is_file():
        raise RunError(
            f"{folder}: the default model is missing from this installation; "
            "give a trained run with --model RUN"
        )
    cfg, model = load_run(folder, device)
    if cfg.train.mode == "augmented":
        log.warning(
            "%s: trained on all 24 rotations (mode augmented): it scores every pose "
            "alike, so the orientation it picks means little",
            folder,
        )
    name = "default" if run is None else str(run)
    t, framing = _meta(folder)
    return OrientModel(model, cfg.data.res, t, name, cfg.train.mode, framing)
