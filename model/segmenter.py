"""`Segmenter`: load a checkpoint and propose several masks for an image."""

from __future__ import annotations

import copy
import dataclasses
import os
import time
import warnings
from collections.abc import Callable, Generator
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .files.architecture_check import MODEL_PREFIX, check_network_size, check_weight_shapes, config_of
from .files.checkpoint import CheckpointError, load_checkpoint, read_checkpoint_meta, save_checkpoint
from .config import SegmenterConfig
from .files.config_schema import check_config
from .inputs.limits import MAX_SAMPLES, MAX_STEPS, check_float, check_int, check_proposal_size, check_seed, is_out_of_memory, out_of_memory
from .devices import resolve_device
from .inputs.kept import KeptPixels
from .nets.network import DualPathUNet
from .inputs.prompts import Prompts, encode_prompts
from .inputs.margins import find_margins
from .inputs.preprocess import BLANK_CONTRAST, flip_views, image_and_contrast, to_float_rgb, unflip_samples
from .proposal import Proposal, empty_proposal, soft_masks_to_proposal
from .diffusion.sampler import direct_soft_masks, iter_sample_soft_masks, run_to_completion, trajectories_per_call

DEFAULT_WEIGHTS = "default.mlffm"


class NoDefaultWeightsError(FileNotFoundError):
    """Raised by ``Segmenter.load(None)`` when the package ships no weights."""


def default_weights_path() -> Path:
    """Where the package's shipped weights live (whether or not they exist)."""
    return Path(str(resources.files("model") / "weights" / DEFAULT_WEIGHTS))


class Segmenter:
    """A diffusion segmenter: the network, its configuration and its device."""

    def __init__(
        self,
        config: SegmenterConfig | None = None,
        device: str | torch.device = "cpu",
        *,
        provenance: dict[str, Any] | None = None,
        checkpoint_id: str = "untrained",
    ) -> None:
        self.config = config or SegmenterConfig()
        check_config(self.config)
        check_network_size(self.config)
        self.device = resolve_device(device)
        self.network = DualPathUNet(self.config.network).to(self.device).eval()
        self.provenance = dict(provenance or {})
        self.checkpoint_id = checkpoint_id
        self.encode_calls = 0  # how many times the image path ran (tests count it)

    def with_options(self, **changes: Any) -> Segmenter:
        """A segmenter sharing this one's network, with inference options changed.

        Only options that leave the network alone may change:
        ``default_steps``, ``default_samples``, ``default_refine_samples``, ``output_smoothing``,
        ``flip_views``, ``probability_temperature``, ``decision_threshold``
        and ``flat_field``.
        """
        allowed = {"default_steps", "default_samples", "default_refine_samples", "output_smoothing", "flip_views", "probability_temperature", "decision_threshold", "flat_field"}
        unknown = set(changes) - allowed
        if unknown:
            raise ValueError(f"cannot change {sorted(unknown)} without retraining; allowed: {sorted(allowed)}")
        return self._sharing_network(**changes)

    def at_working_size(self, size: int) -> Segmenter:
        """A segmenter sharing this one's network, run at another working size.

        The network is fully convolutional, so its weights apply at any size
        divisible by ``2 ** (levels - 1)``; this is for *training* at the new
        size (images become ``(B, 3, size, size)``), since a network runs best
        at the size it was trained at. Raises ``ValueError`` for a size the
        network cannot take.
        """
        return self._sharing_network(size=int(size))

    def with_network_changes(self, changed: Callable[[str], bool], **network_changes: Any) -> Segmenter:
        """A copy whose network is rebuilt with ``network_changes``, every weight it keeps copied over unchanged.

        The rebuilt network may only gain or lose weights whose state-dict
        names ``changed`` accepts (gained ones keep their fresh
        initialisation); any other weight gained, lost or of another shape is
        a RuntimeError, since the copy would no longer be the same model.
        """
        network = dataclasses.replace(self.config.network, **network_changes)
        config = dataclasses.replace(self.config, network=network)
        rebuilt = Segmenter(config, self.device, provenance=self.provenance, checkpoint_id=self.checkpoint_id)
        try:
            missing, unexpected = rebuilt.network.load_state_dict(self.network.state_dict(), strict=False)
        except RuntimeError as err:  # a shape mismatch
            detail = next((line.strip() for line in str(err).splitlines() if "size mismatch" in line), str(err).strip().splitlines()[-1])
            raise RuntimeError(f"rebuilding with {network_changes} changed existing weights: {detail}") from None
        if not all(changed(name) for name in [*missing, *unexpected]):
            raise RuntimeError(f"rebuilding with {network_changes} changed more than it should: missing {missing}, unexpected {unexpected}")
        return rebuilt

    def with_deep_supervision(self, levels: int) -> Segmenter:
        """A copy with ``levels`` auxiliary decoder heads (training's deep supervision); the same proposals.

        New heads are freshly initialised, kept ones keep their weights, and
        heads beyond ``levels`` are dropped (no head touches the sampling
        path). ``levels = 0`` removes them all.
        """
        if levels == self.config.network.deep_supervision:
            return self
        return self.with_network_changes(lambda name: name.startswith("aux_heads."), deep_supervision=levels)

    def _sharing_network(self, **config_changes: Any) -> Segmenter:
        """A shallow copy with the same network and these config fields changed (validated by the config)."""
        other = copy.copy(self)
        other.config = dataclasses.replace(self.config, **config_changes)
        check_config(other.config)
        other.provenance = dict(self.provenance)
        return other

    # ----- persistence -------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {MODEL_PREFIX + k: v for k, v in self.network.state_dict().items()}

    def save(
        self,
        path: str | os.PathLike,
        *,
        provenance: dict[str, Any] | None = None,
        extra_tensors: dict[str, torch.Tensor] | None = None,
        extra_meta: dict[str, Any] | None = None,
        replace: bool = True,
    ) -> None:
        """Write weights, config and provenance to one file, atomically.

        ``extra_tensors`` and ``extra_meta`` carry a training state (optimizer,
        EMA, RNG, counters) in the same format; inference ignores them.
        ``replace=False``: FileExistsError, and nothing written, where a file is at ``path``.
        """
        meta = {"config": self.config.to_dict(), "provenance": provenance if provenance is not None else self.provenance}
        if extra_meta:
            meta["training"] = extra_meta
        save_checkpoint(path, {**self.state_tensors(), **(extra_tensors or {})}, meta, replace=replace)

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, device: str | torch.device = "auto") -> "Segmenter":
        """Load a checkpoint; ``None`` loads the weights shipped in the package."""
        segmenter, _, _ = cls.load_with_state(path, device)
        return segmenter

    @staticmethod
    def read_config(path: str | os.PathLike | None = None) -> SegmenterConfig:
        """A checkpoint's config from its header alone (no weights read, no network built); ``None``: the shipped weights."""
        path = default_weights_path() if path is None else path
        return config_of(path, read_checkpoint_meta(path))

    @classmethod
    def load_with_state(
        cls, path: str | os.PathLike | None = None, device: str | torch.device = "auto"
    ) -> tuple["Segmenter", dict[str, torch.Tensor], dict[str, Any]]:
        """Like :meth:`load`, also returning the non-model tensors and the training metadata."""
        if path is None:
            path = default_weights_path()
            if not path.is_file():
                raise NoDefaultWeightsError(
                    "no default weights are installed in this package; pass a checkpoint file (--checkpoint FILE)"
                )
        configs: list[SegmenterConfig] = []  # the config, checked before any tensor is decoded
        tensors, meta, checkpoint_id = load_checkpoint(path, check_meta=lambda meta: configs.append(config_of(path, meta)))
        config = configs[0]
        check_weight_shapes(path, config, tensors)
        segmenter = cls(config, device, provenance=meta.get("provenance", {}), checkpoint_id=checkpoint_id)
        weights = {k[len(MODEL_PREFIX):]: v for k, v in tensors.items() if k.startswith(MODEL_PREFIX)}
        try:
            segmenter.network.load_state_dict(weights, strict=True)
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0]
            raise CheckpointError(f"{path}: weights do not match the stored architecture ({first})") from None
        rest = {k: v for k, v in tensors.items() if not k.startswith(MODEL_PREFIX)}
        return segmenter, rest, meta.get("training", {})

    # ----- inference ---------------------------------------------------
    def prepare(self, image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        """Validate an image and return ((1, 3, S, S) input tensor, (H, W) of the original)."""
        x, size, _ = self._prepare(image)
        return x, size

    def _prepare(self, image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int], str | None]:
        """:meth:`prepare`, and a note when the image is blank (nothing varies in it at the working size), else None."""
        if not isinstance(image, np.ndarray):
            raise ValueError(f"image must be a numpy array, got {type(image).__name__}")
        height, width = image.shape[:2] if image.ndim >= 2 else (0, 0)
        rgb = to_float_rgb(image, max_side=self.config.size)
        x, spread = image_and_contrast(rgb, self.config.size, self.device, self.config.flat_field)
        blank = None
        if spread < BLANK_CONTRAST:
            blank = f"blank image (its pixels vary by {spread * 255:.2f} of 255 grey levels): nothing to outline, no lesion proposed"
        return x, (height, width), blank

    def sampling_settings(self, n_samples: int | None = None, steps: int | None = None) -> tuple[int, int]:
        """(N, DDIM steps) to use: the config's defaults where None; ValueError below 1."""
        n_samples = check_int("n_samples", self.config.default_samples if n_samples is None else n_samples, 1, MAX_SAMPLES)
        most = min(MAX_STEPS, self.config.diffusion.timesteps)
        # A default above the schedule's timesteps (a hand-edited file) means "as many as it has", as in the plugin.
        steps = check_int("steps", min(self.config.default_steps, most) if steps is None else steps, 1, most)
        return n_samples, steps

    def refine_sampling_settings(self, n_samples: int | None = None, steps: int | None = None) -> tuple[int, int]:
        """(N, DDIM steps) for a refine: :meth:`sampling_settings`, where N is None the smaller of
        ``default_refine_samples`` and ``default_samples`` (a refine never draws more than a first proposal by default)."""
        if n_samples is None:
            n_samples = min(self.config.default_refine_samples, self.config.default_samples)
        return self.sampling_settings(n_samples, steps)

    def propose_iter(
        self,
        image: np.ndarray,
        n_samples: int | None = None,
        steps: int | None = None,
        seed: int = 0,
        eta: float = 0.0,
        *,
        prompts: Prompts | None = None,
        kept: KeptPixels | None = None,
    ) -> Generator[tuple[int, int], None, Proposal]:
        """Generator form of :meth:`propose` for GUIs.

        Yields ``(steps_done, steps_total)`` after every DDIM step and returns
        the :class:`Proposal`. Closing the generator cancels the work.
        """
        n_samples, steps = self.sampling_settings(n_samples, steps)
        seed, eta = check_seed(seed), check_float("eta", eta, 0.0, 1.0)
        if isinstance(image, np.ndarray) and image.ndim >= 2:
            check_proposal_size(n_samples, image.shape[0], image.shape[1])
        start = time.perf_counter()
        try:
            return (yield from self._propose_iter(image, n_samples, steps, seed, eta, start, prompts, kept))
        except (MemoryError, RuntimeError) as err:
            if not is_out_of_memory(err) or isinstance(err, torch.cuda.OutOfMemoryError):
                raise
            shape = image.shape if isinstance(image, np.ndarray) else ()
            raise out_of_memory(err, f"{n_samples} samples of a {' x '.join(map(str, shape[1::-1]))} image on {self.device}") from None

    def _propose_iter(self, image, n_samples, steps, seed, eta, start, prompts=None, kept=None, whole=False) -> Generator[tuple[int, int], None, Proposal]:
        x, (height, width), blank = self._prepare(image)
        margins = None if whole or blank is not None else find_margins(np.asarray(image))
        if margins is not None:  # bars or a page round the photo: the lesion is sought inside, the margins are background
            inside = margins.crop(image)
            proposal = yield from self._propose_iter(inside, n_samples, steps, seed, eta, start, margins.crop_prompts(prompts), margins.crop_kept(kept), True)
            return margins.pad(proposal, kept)
        guidance = self._guidance(prompts, kept, height, width)
        if blank is not None:
            proposal = empty_proposal(n_samples, height, width, self.config.decision_threshold, blank, kept)
            return dataclasses.replace(proposal, seconds=time.perf_counter() - start)
        notes: list[str] = []
        network = self.network
        max_batch = trajectories_per_call(n_samples, next(network.parameters()).device)
        while True:
            try:
                soft = yield from self._sample(network, x.to(next(network.parameters()).device), n_samples, steps, seed, eta, max_batch, guidance)
                break
            except torch.cuda.OutOfMemoryError:
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                if max_batch > 1:
                    max_batch = max(1, max_batch // 2)
                    notes.append(f"out of GPU memory: retrying with {max_batch} samples per batch")
                elif next(network.parameters()).device.type != "cpu":
                    network = copy.deepcopy(self.network).cpu()
                    max_batch = trajectories_per_call(n_samples, "cpu")
                    notes.append("out of GPU memory with 1 sample per batch: falling back to the CPU")
                else:
                    raise
                warnings.warn(notes[-1], RuntimeWarning, stacklevel=2)
        proposal = self._to_proposal(soft, height, width, kept)
        return dataclasses.replace(proposal, seconds=time.perf_counter() - start, notes=tuple(notes))

    def _guidance(self, prompts: Prompts | None, kept: KeptPixels | None, height: int, width: int):
        """(prompt channels (1, P, S, S) or None, kept (weight, x0) at the working size or None), validated."""
        if prompts is not None and not isinstance(prompts, Prompts):
            raise ValueError(f"prompts must be a model.inputs.prompts.Prompts, got {type(prompts).__name__}")
        if kept is not None and not isinstance(kept, KeptPixels):
            raise ValueError(f"kept must be a model.inputs.kept.KeptPixels, got {type(kept).__name__}")
        encoded = None
        if prompts is not None and not prompts.empty:
            if not self.config.network.prompt_channels:
                raise ValueError(
                    f"checkpoint {self.checkpoint_id} has no prompt channels: it cannot take clicks as input "
                    "(use kept pixels, model.inputs.kept.click_disks, or weights trained with mlffm train/finetune --click-prob P)"
                )
            encoded = encode_prompts(prompts, height, width, self.config.size)
        working_kept = None
        if kept is not None:
            kept.check(height, width)
            if kept.any:
                working_kept = kept.at_working_size(self.config.size)
        return encoded, working_kept

    def _sample(self, network, x, n_samples, steps, seed, eta, max_batch, guidance=(None, None)) -> Generator[tuple[int, int], None, torch.Tensor]:
        prompts, kept = guidance
        with torch.inference_mode():
            # Sample i uses view i % views, so fewer samples than views need only the first n views.
            views = min(self.config.flip_views, n_samples)
            if prompts is not None:
                prompts = prompts.to(x.device)
                prompts = flip_views(prompts, views) if views > 1 else prompts
            if kept is not None:
                kept = tuple(flip_views(k, views) if views > 1 else k for k in kept)
            image = flip_views(x, views) if views > 1 else x
            features = network.encode_image(image) if prompts is None else network.encode_image(image, prompts)
            self.encode_calls += 1
            loop = iter_sample_soft_masks(
                network, features, self.config.diffusion, n_samples, self.config.size, steps, seed, eta, max_batch, kept=kept
            )
            while True:
                try:
                    done = next(loop)
                except StopIteration as stop:
                    return unflip_samples(stop.value, views)
                yield done, steps

    def propose(
        self,
        image: np.ndarray,
        n_samples: int | None = None,
        steps: int | None = None,
        seed: int = 0,
        eta: float = 0.0,
        on_step: Callable[[int, int], None] | None = None,
        *,
        prompts: Prompts | None = None,
        kept: KeptPixels | None = None,
    ) -> Proposal:
        """Draw ``n_samples`` masks for ``image`` in one batched pass per DDIM step.

        Args:
            image: (H, W), (H, W, 3) or (H, W, 4) array; uint8, uint16 or float in [0, 1].
            n_samples: number of proposals N (config default if None).
            steps: DDIM steps (config default if None).
            seed: the same seed gives the same masks on the same device.
            eta: DDIM stochasticity (0 = deterministic given the seed's x_T).
            on_step: called as ``on_step(done, total)`` after each step; raise
                from it to cancel.
            prompts: the clinician's clicks and current mask
                (:class:`model.inputs.prompts.Prompts`), for a model with prompt
                channels; ValueError for one without. None or empty: no prompts.
            kept: pixels held fixed (:class:`model.inputs.kept.KeptPixels`, (H, W)):
                every sample's mask equals ``kept.values`` where ``kept.mask``,
                and the rest is resampled around them; any model.
        """
        loop = self.propose_iter(image, n_samples, steps, seed, eta, prompts=prompts, kept=kept)
        return run_to_completion(loop, None if on_step is None else lambda item: on_step(*item))

    def predict_direct(self, image: np.ndarray, seed: int = 0) -> Proposal:
        """One forward pass, no sampling (the single-step ablation): N = 1, zero uncertainty.

        Flip views still apply: each view is one pass, and their soft masks are
        averaged. ``seed`` draws x_T for a diffusion-trained model (see
        :func:`model.diffusion.sampler.direct_soft_masks`).
        """
        start = time.perf_counter()
        proposal = self._predict_direct(image, check_seed(seed))
        return dataclasses.replace(proposal, seconds=time.perf_counter() - start)

    def _predict_direct(self, image: np.ndarray, seed: int, whole: bool = False) -> Proposal:
        """:meth:`predict_direct` without its timing; ``whole``: the image is already the inside of its margins
        (they are found once, as in :meth:`_propose_iter`)."""
        x, (height, width), blank = self._prepare(image)
        if blank is not None:
            return empty_proposal(1, height, width, self.config.decision_threshold, blank)
        margins = None if whole else find_margins(np.asarray(image))
        if margins is not None:  # framed as propose frames it
            return margins.pad(self._predict_direct(margins.crop(image), seed, whole=True))
        views = self.config.flip_views
        try:
            with torch.inference_mode():
                features = self.network.encode_image(flip_views(x, views) if views > 1 else x)
                self.encode_calls += 1
                soft = unflip_samples(direct_soft_masks(self.network, features, self.config.diffusion, self.config.size, seed), views)
            return self._to_proposal(soft.mean(dim=0, keepdim=True), height, width)
        except (MemoryError, RuntimeError) as err:
            if not is_out_of_memory(err) or isinstance(err, torch.cuda.OutOfMemoryError):
                raise
            raise out_of_memory(err, f"one pass over a {width} x {height} image on {self.device}") from None

    def _to_proposal(self, soft: torch.Tensor, height: int, width: int, kept: KeptPixels | None = None) -> Proposal:
        """The (N, 1, S, S) soft masks as a :class:`Proposal` at (H, W), with this config's calibration.

        ValueError when the network's output is not finite (weights that overflow float32 for this image)."""
        if not bool(torch.isfinite(soft).all()):
            raise ValueError(f"checkpoint {self.checkpoint_id}: the network's output is not finite for this image (damaged or diverged weights)")
        config = self.config
        return soft_masks_to_proposal(
            soft, height, width, config.probability_temperature, config.decision_threshold, config.output_smoothing, kept
        )
