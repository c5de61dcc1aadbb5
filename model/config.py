"""Frozen configuration dataclasses for the segmenter.

A model is always rebuilt from the :class:`SegmenterConfig` stored in its
checkpoint, so every field here is plain data (ints, floats, strings, tuples)
that round-trips through JSON with :meth:`SegmenterConfig.to_dict` and
:meth:`SegmenterConfig.from_dict`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

SCHEDULES = ("cosine", "linear")
PREDICTIONS = ("x0", "eps", "direct")
FUSIONS = ("mlffm", "plain")

FLIP_VIEWS = (1, 2, 4)
PROMPT_CHANNELS = (0, 3)  # none, or positive clicks, negative clicks and the current mask (model/inputs/prompts.py)

@dataclass(frozen=True)
class NetworkConfig:
    """Shape of the dual-path U-Net.

    Attributes:
        widths: channels per level of the image path, from full resolution
            down. The network has ``len(widths)`` levels, so the working size
            must be divisible by ``2 ** (len(widths) - 1)``.
        mask_widths: channels per level of the noisy-mask path and the
            decoder (the part that runs at every denoising step), or None for
            the same as ``widths``. The image path runs once per image, so it
            can be wide while the per-step denoiser stays light.
        image_blocks: residual blocks per level in the image path (computed
            once per image, so it may be deeper).
        mask_blocks: residual blocks per level in the noisy-mask path (run at
            every denoising step, so kept light).
        fusion: ``"mlffm"`` for the multi-level feature fusion module on the
            skips, ``"plain"`` for ordinary per-level skips (ablation).
        bottleneck_attention: one self-attention block at the lowest level.
        time_dim: width of the timestep embedding.
        mask_path: False drops the noisy-mask path and the timestep: the
            image encoder feeds the decoder directly, a plain U-Net (with
            ``fusion="plain"``) for the feed-forward baseline. Needs
            ``prediction="direct"``.
        prompt_channels: extra input channels of the image path for the
            clinician's prompts (:mod:`model.inputs.prompts`): 0 (none; every
            checkpoint written before prompts existed) or 3 (positive clicks,
            negative clicks, the current mask as a prior). Their input
            weights start at zero, so an untrained widening changes nothing.
        prompt_control: with prompt channels, also a prompt branch
            (:mod:`model.nets.prompt_control`): a copy of the image path that reads
            the prompts and adds zero-initialised residuals to the image
            features at every level. False: the prompts enter at the stem only.
        deep_supervision: how many of the decoder's coarser levels (1/2,
            1/4, ... of the working size) get an auxiliary head that predicts
            the clean mask there, for the deep-supervision loss in training
            (0: none). Inference never runs them, so proposals do not depend
            on them; they need a clean-mask target (prediction "x0" or
            "direct"), at most ``len(widths) - 2`` levels.
    """

    in_channels: int = 3
    widths: tuple[int, ...] = (16, 32, 64, 96, 128)
    mask_widths: tuple[int, ...] | None = None
    image_blocks: int = 2
    mask_blocks: int = 1
    fusion: str = "mlffm"
    bottleneck_attention: bool = True
    time_dim: int = 128
    mask_path: bool = True
    prompt_channels: int = 0
    prompt_control: bool = False
    deep_supervision: int = 0

    def __post_init__(self) -> None:
        if len(self.widths) < 2 or any(int(w) < 4 for w in self.widths):
            raise ValueError(f"widths must list at least 2 levels of >= 4 channels, got {self.widths}")
        if self.mask_widths is not None:
            if len(self.mask_widths) != len(self.widths) or any(int(w) < 4 for w in self.mask_widths):
                raise ValueError(f"mask_widths must list {len(self.widths)} levels of >= 4 channels, got {self.mask_widths}")
            if not self.mask_path:
                raise ValueError("mask_widths needs the mask path (mask_path=True)")
        if self.image_blocks < 1 or self.mask_blocks < 1:
            raise ValueError("image_blocks and mask_blocks must be >= 1")
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if self.in_channels < 1 or self.time_dim < 4:
            raise ValueError("in_channels must be >= 1 and time_dim >= 4")
        if self.prompt_channels not in PROMPT_CHANNELS:
            raise ValueError(f"prompt_channels must be one of {PROMPT_CHANNELS}, got {self.prompt_channels!r}")
        if self.prompt_control and not self.prompt_channels:
            raise ValueError("prompt_control needs prompt channels (prompt_channels=3)")
        if isinstance(self.deep_supervision, bool) or not isinstance(self.deep_supervision, int):
            raise ValueError(f"deep_supervision must be a whole number of levels, got {self.deep_supervision!r}")
        if not 0 <= self.deep_supervision <= len(self.widths) - 2:
            raise ValueError(f"deep_supervision must be 0-{len(self.widths) - 2} levels for {len(self.widths)} levels, got {self.deep_supervision!r}")

    @property
    def denoiser_widths(self) -> tuple[int, ...]:
        """Channels per level of the per-step part: the mask path and the decoder."""
        return tuple(self.mask_widths) if self.mask_widths is not None else tuple(self.widths)


@dataclass(frozen=True)
class DiffusionConfig:
    """Noise schedule and training target.

    Attributes:
        schedule: ``"cosine"`` (Nichol & Dhariwal 2021) or ``"linear"`` (Ho et al. 2020).
        timesteps: number of training timesteps T.
        prediction: ``"x0"`` (the network predicts the clean mask as logits),
            ``"eps"`` (the network predicts the added noise), or ``"direct"``
            (no diffusion: trained and run as one pass from x_T = 0 at
            t = T - 1, a feed-forward predictor for the ablations).
    """

    schedule: str = "cosine"
    timesteps: int = 1000
    prediction: str = "x0"

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {self.prediction!r}")
        if self.timesteps < 2:
            raise ValueError(f"timesteps must be >= 2, got {self.timesteps}")


@dataclass(frozen=True)
class SegmenterConfig:
    """Everything needed to rebuild a segmenter.

    Attributes:
        size: working resolution; images are resized to ``size x size``.
        network: the network's shape.
        diffusion: the schedule and target.
        default_steps: DDIM steps used when a caller does not say.
        default_samples: proposals drawn when a caller does not say.
        default_refine_samples: proposals drawn per *refine* (a re-run
            steered by clicks, kept pixels or a box:
            :func:`training.interactive.protocol.refine`) when a caller does
            not say; a refine draws at most ``default_samples`` all the same.
            Half of ``default_samples`` by default, so a click is answered in
            about half the time of a first proposal (the click protocol on
            val: docs/results.md). 8 in checkpoints written before it existed.
        output_smoothing: Gaussian sigma, in working-size pixels, applied to
            each soft mask before it is resized to the image (0 = none).
        flip_views: test-time flip averaging: 1 (off), 2 (the image and its
            left-right mirror) or 4 (also upside down, and both). The N
            samples are shared out over the views, so the cost stays N
            trajectories plus one image encoding per view.
        probability_temperature: T > 0 of the temperature scaling applied to
            the mean probability, sigmoid(logit(p) / T), fitted on validation
            data by ``mlffm calibrate``. It never moves the 0.5 contour; 1 = none.
        decision_threshold: the (temperature-scaled) probability at or above
            which a pixel is lesion, in the consensus mask and in each
            sample's mask; 0.5 = the plain rule. ``mlffm calibrate`` picks
            the value that maximizes the validation Dice: for calibrated
            probabilities the Dice-optimal threshold is below 0.5 (about half
            the attainable Dice; Lipton et al. 2014).
        flat_field: divide out each image's fitted illumination field
            (vignetting, a dermatoscope's black frame, uneven light;
            :mod:`model.inputs.shading`) before the network sees it, in inference
            and training alike. False in checkpoints written before it existed.
    """

    size: int = 128
    network: NetworkConfig = field(default_factory=NetworkConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    default_steps: int = 5
    default_samples: int = 16
    default_refine_samples: int = 8
    output_smoothing: float = 1.0
    flip_views: int = 1
    probability_temperature: float = 1.0
    decision_threshold: float = 0.5
    flat_field: bool = False

    def __post_init__(self) -> None:
        if self.flip_views not in FLIP_VIEWS:
            raise ValueError(f"flip_views must be one of {FLIP_VIEWS}, got {self.flip_views!r}")
        if not self.probability_temperature > 0:
            raise ValueError(f"probability_temperature must be > 0, got {self.probability_temperature}")
        if not 0 < self.decision_threshold < 1:
            raise ValueError(f"decision_threshold must be in (0, 1), got {self.decision_threshold}")
        if self.output_smoothing < 0:
            raise ValueError(f"output_smoothing must be >= 0, got {self.output_smoothing}")
        factor = 2 ** (len(self.network.widths) - 1)
        if self.size < factor or self.size % factor:
            raise ValueError(f"size {self.size} must be a positive multiple of {factor} for {len(self.network.widths)} levels")
        if not self.network.mask_path and self.diffusion.prediction != "direct":
            raise ValueError("a network without a mask path can only be a direct predictor (prediction='direct')")
        if self.network.deep_supervision and self.diffusion.prediction == "eps":
            raise ValueError("deep_supervision needs a clean-mask target (prediction 'x0' or 'direct'), not 'eps'")
        if self.default_steps < 1 or self.default_samples < 1 or self.default_refine_samples < 1:
            raise ValueError("default_steps, default_samples and default_refine_samples must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SegmenterConfig":
        """Rebuild from :meth:`to_dict` output; unknown keys, wrong types and out-of-range values raise ValueError."""
        from .files.config_schema import check_config_values

        check_config_values(cls, data)
        data = dict(data)
        network = _build(NetworkConfig, data.pop("network", {}))
        diffusion = _build(DiffusionConfig, data.pop("diffusion", {}))
        return _build(cls, data, network=network, diffusion=diffusion)


def _build(cls, data: dict[str, Any], **extra: Any):
    names = {f.name for f in fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    values.update(extra)
    return cls(**values)
