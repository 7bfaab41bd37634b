"""Experiment configuration: frozen dataclasses, TOML files and dotted overrides.

Each component owns its config; :class:`Config` composes them. A config file is
TOML with top-level ``seed`` and tables ``[data]``, ``[model]``, ``[train]``,
``[search]``; anything left out takes the default below. Overrides are dotted,
``train.epochs=3`` or ``--train.epochs=3``. An unknown key or a value of the wrong
type is a :class:`~orient3d.errors.ConfigError` that names it and lists the valid
keys (the checks against the annotations: :mod:`orient3d.config_schema`).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import tomli_w

from orient3d.config_schema import flatten, from_dict, to_dict, valid_keys
from orient3d.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "RUNTIME_KEYS",
    "Config",
    "ContinuousConfig",
    "DataConfig",
    "Mode",
    "ModelConfig",
    "SearchConfig",
    "TrainConfig",
    "apply_overrides",
    "config_differences",
    "dumps",
    "flatten",
    "from_dict",
    "load_config",
    "parse_value",
    "read_toml",
    "to_dict",
]

Mode = Literal["single", "augmented", "search", "continuous"]


def _check(ok: bool, key: str, value: object, want: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {value!r} is invalid, must be {want}")


@dataclass(frozen=True)
class DataConfig:
    source: str = "procedural"  # "procedural" (built in) or a path to voxel/mesh files
    res: int = 16  # voxel grid side D (16, 32 or 64)
    # the largest grid side a run may use or a data file may hold (a guard against a
    # typo that would allocate hundreds of GiB: a 1024³ float grid is 4 GiB)
    max_res: int = 256
    n_train: int = 2048  # training objects, validation included (0: all available)
    # validation objects carved from the training objects, seeded and stratified by class;
    # model selection and early stopping read them (-1: 10%, at least 1; 0: none, the last
    # epoch is kept and early stopping is off)
    n_val: int = -1
    n_test: int = 512  # test objects (0: all available)
    classes: tuple[str, ...] = ()  # restrict to these classes (empty: all)
    cache_dir: str = ""  # where generated/voxelized data is cached ("": default)
    # a control: turn each training (and validation) object once by a fixed seeded random
    # element of O before training, so the stored frame carries no alignment; the test
    # objects keep their stored frame, in which the pose metrics are measured
    random_frames: bool = False
    # classes kept out of training and validation (their test objects stay): does what
    # the model learned about poses carry over to classes it never saw?
    unseen_classes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check(
            not self.classes or set(self.unseen_classes) <= set(self.classes),
            "data.unseen_classes",
            list(self.unseen_classes),
            f"a subset of data.classes {list(self.classes)} (the classes loaded at all)",
        )
        _check(
            self.res >= 8 and self.res & (self.res - 1) == 0,
            "data.res",
            self.res,
            "a power of 2 >= 8",
        )
        _check(self.max_res >= 8, "data.max_res", self.max_res, ">= 8")
        _check(
            self.res <= self.max_res,
            "data.res",
            self.res,
            f"<= data.max_res = {self.max_res} (raise data.max_res to go higher)",
        )
        _check(self.n_train >= 0, "data.n_train", self.n_train, ">= 0")
        _check(self.n_test >= 0, "data.n_test", self.n_test, ">= 0")
        _check(self.n_val >= -1, "data.n_val", self.n_val, ">= 0, or -1 for 10%")


@dataclass(frozen=True)
class ModelConfig:
    latent: int = 32  # Z, size of the Gaussian shape latent
    beta: float = 1.0  # weight of the KL term
    width: int = 32  # channels of the first encoder block, doubled per block
    max_width: int = 256  # cap on the channels of any block
    depth: int = 0  # strided blocks (0: log2(D) - 1, down to 2³)
    norm: Literal["batch", "group", "none"] = "batch"  # normalization after each conv
    recon: Literal["bce", "weighted_bce"] = "bce"  # Bernoulli, or Brock et al. 2016
    gamma: float = 0.97  # weighted_bce: weight of occupied voxels (false negatives)
    subpixel: bool = True  # last decoder layer as exact 3³ conv + 3D pixel shuffle
    # start the output bias at logit(init_occupancy), the share of occupied voxels, so a
    # fresh model predicts the data's occupancy instead of 0.5 everywhere and skips the
    # epochs spent learning "mostly empty" (0: PyTorch's default initialization)
    init_occupancy: float = 0.0
    # an orientation head on the encoder (24 logits over O, orient3d.training.pose_head):
    # fitted after training on the encoder's features of all 24 poses of the training
    # objects, it leaves the VAE's weights as they are; it proposes candidates to
    # `orient3d recover --proposals K` (false: no head, as before)
    pose_head: bool = False
    pose_head_epochs: int = 40  # epochs of that fit over the cached features

    def __post_init__(self) -> None:
        _check(self.latent >= 1, "model.latent", self.latent, ">= 1")
        _check(self.beta >= 0, "model.beta", self.beta, ">= 0")
        _check(self.width >= 1, "model.width", self.width, ">= 1")
        _check(self.depth >= 0, "model.depth", self.depth, ">= 0")
        _check(self.pose_head_epochs >= 1, "model.pose_head_epochs", self.pose_head_epochs, ">= 1")
        _check(0 < self.gamma < 1, "model.gamma", self.gamma, "in (0, 1)")
        _check(
            0 <= self.init_occupancy < 1, "model.init_occupancy", self.init_occupancy, "in [0, 1)"
        )


@dataclass(frozen=True)
class TrainConfig:
    mode: Mode = "single"  # single | augmented | search | continuous
    # the defaults are the recipe measured on validation IoU (RESULTS.md, "Recipe")
    epochs: int = 20  # passes over the training set
    batch_size: int = 32  # samples per SGD step
    lr: float = 1e-3  # Adam learning rate
    weight_decay: float = 0.0  # Adam weight decay
    lr_schedule: Literal["constant", "cosine", "step"] = "cosine"  # per-epoch schedule
    lr_step_epochs: int = 10  # step schedule: halve the rate every this many epochs
    grad_clip: float = 10.0  # max gradient norm (0: off)
    # augmentation: each training sample also shifted by a random integer offset in
    # [-shift, shift] voxels per axis, zero fill (0: off); validation and test are not
    shift: int = 0
    # augmentation: this share of each step's samples is shown turned by a fresh uniform
    # SO(3) rotation R and turned back, R⁻¹·[R·x > 0.5] (trilinear both ways): the stored
    # pose with the artifacts of a turned, voxelized object, the grid a continuous pose
    # search scores at the true pose (orient3d.search.continuous). 0: off; not with mode
    # continuous, whose views are resampled already
    resample_frac: float = 0.0
    early_stopping: int = 0  # stop after this many epochs without validation gain (0: off)
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    # autocast dtype; auto: bf16 where it pays (CUDA; CPUs with native bf16 whose bf16
    # matmul runs at least 2× fp32's: orient3d.devices.bf16_pays), else fp32
    # (BENCHMARKS.md: bf16 moves the test MSE < 1%); fp16: CUDA only, with a GradScaler
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: bool = True  # channels_last_3d memory format
    threads: int = 0  # torch CPU threads (0: leave as is)
    eval_batch_size: int = 256  # batch size for test evaluation
    # epochs between validation/test evaluations (the last epoch always); the best
    # checkpoint and early stopping consider evaluated epochs only
    eval_every: int = 1
    checkpoint_every: int = 1  # epochs between checkpoints (the last epoch always)
    progress: bool = True  # progress bar when output is a terminal

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, "train.epochs", self.epochs, ">= 1")
        _check(self.batch_size >= 1, "train.batch_size", self.batch_size, ">= 1")
        _check(0 < self.lr < math.inf, "train.lr", self.lr, "a finite number > 0")
        _check(self.grad_clip >= 0, "train.grad_clip", self.grad_clip, ">= 0")
        _check(self.shift >= 0, "train.shift", self.shift, ">= 0")
        _check(0 <= self.resample_frac <= 1, "train.resample_frac", self.resample_frac, "in [0, 1]")
        _check(self.checkpoint_every >= 1, "train.checkpoint_every", self.checkpoint_every, ">= 1")
        _check(self.eval_every >= 1, "train.eval_every", self.eval_every, ">= 1")


@dataclass(frozen=True)
class SearchConfig:
    group: Literal["O", "Oh"] = "O"  # candidate orientations
    choice: Literal["hard", "soft"] = "hard"  # argmin, or the posterior-weighted bound
    temperature: float = 1.0  # soft: final posterior temperature
    temperature_start: float = 1.0  # soft: starting temperature (annealed to `temperature`)
    warmup_epochs: int = 1  # epochs of augmented training before the search starts
    sample: bool = False  # score with a sampled z instead of the encoder mean
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # autocast (auto: train.precision's rule)
    chunk: int = 256  # rows per batched scoring pass
    top_k: int = 0  # soft: keep only the K best candidates (0: all)
    # Defaults: the fastest shortcut within 2% of full search's test MSE in
    # benchmarks/bench_search.py (BENCHMARKS.md, "## Search").
    cache: bool = True  # reuse each object's chosen canonical pose between refreshes
    refresh_every: int = 16  # cache: search epochs between re-searches of all (0: never)
    proposals: int = 1  # cache: poses kept per object and re-scored on a hit (1: reuse as is)
    refresh_frac: float = 0.05  # cache: fraction of each step's samples searched in full anyway
    # cache: the cached choices a fresh search would change (measured each epoch on the
    # refresh_frac samples, logged as cache_stale_frac); above this the next epoch
    # re-searches every object (1: never)
    max_stale: float = 0.05
    # cache: objects re-searched at the start of every search epoch after the first to
    # measure the staleness of the cache the epoch would train on (cache_stale_probe);
    # above max_stale the whole epoch re-searches every object (0: no probe)
    stale_probe: int = 64
    # cache, hard choice, proposals P > 1: each epoch a hit re-scores only the first k of
    # its P cached poses, k the smallest the probe finds within max_stale (k = 1: reused
    # as is, no scoring); above it even at k = P, the epoch re-searches every object
    adaptive_proposals: bool = False
    # Orientation prior over the canonical pose h = r⁻¹g (orient3d.training.prior): uniform (the
    # seed's model); stored_frame (one categorical p(h), updated each epoch; h is measured
    # in the dataset's stored frame, so this prior is weakly supervised by that frame;
    # "learned" is its former name); class (one per class: an oracle, reads the labels).
    # Hard scores become L - λ log p(h); soft weights softmax(-L/T + λ log p(h)).
    prior: Literal["uniform", "stored_frame", "learned", "class"] = "uniform"
    prior_floor: float = 1e-3  # stored_frame/class: minimum probability of any pose
    prior_update: Literal["em", "gradient"] = "em"  # EM step, or a gradient step on logits
    prior_step: float = 1.0  # em: step size in (0, 1] (1: M-step); gradient: learning rate
    prior_temperature: float = 1.0  # gradient: p = softmax(logits / temperature)
    prior_weight: float = 1.0  # λ in the score L - λ log p(h) (1: the ELBO; > 1 a stronger prior)
    # Shared template (congealing, orient3d.search.template; no stored frame, no labels):
    # none; voxels: each candidate also pays template_weight times the NLL of its grid
    # under the per-voxel occupancy of the previous epoch's chosen training grids;
    # latent: ½‖μ - c‖² of its encoder mean μ, c the mean μ of the previous epoch's choices.
    template: Literal["none", "voxels", "latent"] = "none"
    template_weight: float = 1.0  # λ_T in the score L + λ_T N_T (nats per nat)

    def __post_init__(self) -> None:
        _check(self.temperature > 0, "search.temperature", self.temperature, "> 0")
        _check(
            self.temperature_start > 0, "search.temperature_start", self.temperature_start, "> 0"
        )
        _check(self.warmup_epochs >= 0, "search.warmup_epochs", self.warmup_epochs, ">= 0")
        _check(self.chunk >= 1, "search.chunk", self.chunk, ">= 1")
        _check(self.top_k >= 0, "search.top_k", self.top_k, ">= 0")
        _check(self.refresh_every >= 0, "search.refresh_every", self.refresh_every, ">= 0")
        _check(self.proposals >= 1, "search.proposals", self.proposals, ">= 1")
        _check(0 <= self.refresh_frac <= 1, "search.refresh_frac", self.refresh_frac, "in [0, 1]")
        _check(0 <= self.max_stale <= 1, "search.max_stale", self.max_stale, "in [0, 1]")
        _check(self.stale_probe >= 0, "search.stale_probe", self.stale_probe, ">= 0")
        if self.adaptive_proposals:
            _check(
                self.cache and self.choice == "hard" and self.proposals > 1,
                "search.adaptive_proposals",
                self.adaptive_proposals,
                "used only with search.cache = true, choice = 'hard' and proposals > 1"
                f" (here cache = {self.cache}, choice = {self.choice!r},"
                f" proposals = {self.proposals})",
            )
            _check(
                self.stale_probe > 0,
                "search.adaptive_proposals",
                self.adaptive_proposals,
                "used only with search.stale_probe > 0 (the probe decides each epoch)",
            )
        _check(
            0 <= self.prior_floor < 1 / 48, "search.prior_floor", self.prior_floor, "in [0, 1/48)"
        )
        _check(self.prior_step > 0, "search.prior_step", self.prior_step, "> 0")
        _check(
            self.prior_update != "em" or self.prior_step <= 1,
            "search.prior_step",
            self.prior_step,
            "<= 1 for prior_update = em",
        )
        _check(
            self.prior_temperature > 0, "search.prior_temperature", self.prior_temperature, "> 0"
        )
        _check(self.prior_weight >= 0, "search.prior_weight", self.prior_weight, ">= 0")
        _check(
            0 <= self.template_weight < math.inf,
            "search.template_weight",
            self.template_weight,
            "a finite number >= 0",
        )


@dataclass(frozen=True)
class ContinuousConfig:
    """Mode ``continuous`` (orient3d.training.modes.continuous): SO(3) views, pose search."""

    warmup_epochs: int = 1  # epochs of SO(3)-augmented training before the search starts
    grid_level: int = 1  # coarse SO(3) grid: so3.so3_grid level (24, 96, 720 rotations)
    top_k: int = 4  # poses kept per sample after each coarse-to-fine stage
    levels: int = 1  # rotation subdivision rounds after the coarse grid (27 neighbours each)
    translate: int = 0  # max integer shift in voxels per axis, in views and search (0: off)
    scale: tuple[float, ...] = ()  # scale factors drawn in views and searched (empty: 1 only)
    binarize: bool = False  # threshold turned-back grids at 0.5 (else soft trilinear values)
    # score: "model" neg ELBO of P⁻¹x; "shown" BCE in the frame of x (unbiased over scales);
    # auto: shown when scale is set
    score_frame: Literal["auto", "model", "shown"] = "auto"
    cache: bool = True  # reuse each object's canonical pose H = R⁻¹G between refreshes
    refresh_every: int = 8  # cache: search epochs between full re-searches of all (0: never)
    refine_every: int = 1  # cache: search epochs between 27-neighbour refinements (0: never)
    refresh_frac: float = 0.05  # cache: fraction of each step's samples searched in full anyway
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # scoring autocast (auto: bf16 if native)
    chunk: int = 256  # grids per scoring pass

    def __post_init__(self) -> None:
        k = "continuous."
        _check(self.warmup_epochs >= 0, k + "warmup_epochs", self.warmup_epochs, ">= 0")
        _check(0 <= self.grid_level <= 3, k + "grid_level", self.grid_level, "in 0..3")
        _check(self.top_k >= 1, k + "top_k", self.top_k, ">= 1")
        _check(self.levels >= 0, k + "levels", self.levels, ">= 0")
        _check(self.translate >= 0, k + "translate", self.translate, ">= 0")
        _check(all(s > 0 for s in self.scale), k + "scale", self.scale, "positive factors")
        _check(self.refresh_every >= 0, k + "refresh_every", self.refresh_every, ">= 0")
        _check(self.refine_every >= 0, k + "refine_every", self.refine_every, ">= 0")
        _check(0 <= self.refresh_frac <= 1, k + "refresh_frac", self.refresh_frac, "in [0, 1]")
        _check(self.chunk >= 1, k + "chunk", self.chunk, ">= 1")


@dataclass(frozen=True)
class Config:
    seed: int = 0  # decides every random draw of a run
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    continuous: ContinuousConfig = field(default_factory=ContinuousConfig)


# Keys that change how fast or where a run goes, not its numbers: they may differ
# between a run and its resume, or a run and the spec that reuses it (train.device: a
# parallel sweep may resume a run on another card; data.cache_dir: where the
# procedural data is cached).
RUNTIME_KEYS = (
    "train.threads",
    "train.progress",
    "train.eval_batch_size",
    "train.device",
    "data.cache_dir",
)


def config_differences(a: Config, b: Config) -> list[str]:
    """Dotted keys whose values differ between two configs (:data:`RUNTIME_KEYS` ignored)."""
    fa, fb = flatten(to_dict(a)), flatten(to_dict(b))
    return sorted(
        k for k in fa.keys() | fb.keys() if k not in RUNTIME_KEYS and fa.get(k) != fb.get(k)
    )


def parse_value(text: str) -> Any:
    """Parse an override's value as TOML (``3``, ``1e-3``, ``true``, ``[1, 2]``), else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(cfg: Config, overrides: Sequence[str]) -> Config:
    """Apply dotted ``key=value`` overrides (a leading ``--`` is allowed)."""
    data = to_dict(cfg)
    for item in overrides:
        text = item[2:] if item.startswith("--") else item
        if "=" not in text:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = text.split("=", 1)
        parts = key.split(".")
        node: Any = data
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                valid = ", ".join(valid_keys(Config))
                raise ConfigError(f"unknown config key {key}; valid keys: {valid}")
            node = node[p]
        if parts[-1] not in node or isinstance(node[parts[-1]], dict):
            valid = ", ".join(valid_keys(Config))
            raise ConfigError(f"unknown config key {key}; valid keys: {valid}")
        node[parts[-1]] = parse_value(raw)
    return from_dict(Config, data)


def read_toml(path: Path, what: str = "file") -> dict[str, Any]:
    """The parsed TOML file, or one :class:`ConfigError` naming it and what is wrong."""
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """Read a TOML config (or the defaults when ``path`` is None) and apply overrides."""
    if path is not None:
        p = Path(path)
        data = read_toml(p, "config file")
        try:
            cfg = from_dict(Config, data)
        except ConfigError as err:
            raise ConfigError(f"{p}: {err}") from None
    else:
        cfg = Config()
    return apply_overrides(cfg, overrides)


def dumps(cfg: Config) -> str:
    """The config as TOML text."""
    return tomli_w.dumps(to_dict(cfg))
