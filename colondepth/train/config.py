"""Curriculum configuration: YAML validated into pydantic models.

A curriculum is a named, ordered list of stages.  Each stage is either ``supervised`` (depth ground
truth from synthetic levels or datasets) or ``self_supervised`` (photometric, on real video), chosen by
its ``kind`` key.  Every model forbids unknown keys; errors name the file and the key path
(``stages.1.loss.ssim_weight: ...``), and every problem of a file is reported at once (one line each).
See ``docs/training.md`` for every key.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from colondepth.errors import UserError

LEVEL_PATTERN = re.compile(r"^L[1-9][0-9]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSection(_Strict):
    """Depth network architecture (see :class:`colondepth.models.depth_net.DepthNetConfig`)."""

    input_size: tuple[int, int] = (128, 128)  # (height, width) px
    min_depth_mm: float = Field(1.0, gt=0)
    max_depth_mm: float = Field(150.0, gt=0)
    encoder_channels: list[Annotated[int, Field(gt=0)]] = [16, 24, 32, 48, 64]
    decoder_channels: list[Annotated[int, Field(gt=0)]] = [8, 16, 24, 32, 48]
    num_scales: int = Field(4, ge=1)
    norm: Literal["batch", "group", "none"] = "batch"
    arch: Literal["dispnet", "basic_unet"] = "dispnet"  # basic_unet: MONAI BasicUNet, fully convolutional
    features: list[Annotated[int, Field(gt=0)]] = [16, 32, 64, 128, 256, 16]  # basic_unet channels
    inputs: list[Literal["rays", "physics"]] = []  # extra input channels (ray directions, physics prior)
    default_fov_deg: float = Field(140.0, ge=1.0, lt=180.0)  # field of view assumed without intrinsics
    colour: Literal["rgb", "grey"] = "rgb"  # grey: the network sees each frame's luminance only

    @model_validator(mode="after")
    def _check(self) -> "ModelSection":
        h, w = self.input_size
        if h <= 0 or w <= 0:
            raise ValueError(f"input_size: must be positive (height, width), got {list(self.input_size)}")
        if self.arch == "basic_unet":
            if len(self.features) != 6:
                raise ValueError(f"features: basic_unet needs 6 channel counts, got {self.features}")
            if h % 16 or w % 16:
                raise ValueError(f"input_size: {list(self.input_size)} must be positive multiples of 16 for basic_unet")
        else:
            n = len(self.encoder_channels)
            if h % 2 ** n or w % 2 ** n:
                raise ValueError(f"input_size: {list(self.input_size)} must be multiples of {2 ** n} "
                                 f"(2 ** len(encoder_channels))")
            if len(self.decoder_channels) != n:
                raise ValueError("decoder_channels: needs as many entries as encoder_channels")
            if self.num_scales > n:
                raise ValueError(f"num_scales: {self.num_scales} cannot exceed len(encoder_channels) ({n})")
        if self.min_depth_mm >= self.max_depth_mm:
            raise ValueError(f"min_depth_mm: {self.min_depth_mm} must be below max_depth_mm ({self.max_depth_mm})")
        return self

    @classmethod
    def dict_from_card(cls, card_model: dict) -> dict:
        """The ``model:`` section (plain dict) that rebuilds a checkpoint's network from its card's ``model``
        entry (:meth:`DepthNetConfig.to_dict`): every architecture key, so a continued or fine-tuned run gets the
        same network (DispNet or BasicUNet, with its input channels)."""
        d = {"input_size": [int(card_model["input_height"]), int(card_model["input_width"])]}
        for key in cls.model_fields:
            if key != "input_size" and key in card_model:
                v = card_model[key]
                d[key] = list(v) if isinstance(v, (list, tuple)) else v
        return cls(**d).model_dump(mode="json")

    def to_net_config(self):
        from colondepth.models.depth_net import DepthNetConfig

        return DepthNetConfig(input_height=self.input_size[0], input_width=self.input_size[1],
                              min_depth_mm=self.min_depth_mm, max_depth_mm=self.max_depth_mm,
                              encoder_channels=list(self.encoder_channels),
                              decoder_channels=list(self.decoder_channels),
                              num_scales=self.num_scales, norm=self.norm, arch=self.arch,
                              features=list(self.features), inputs=list(self.inputs),
                              default_fov_deg=self.default_fov_deg, colour=self.colour)


class Budget(_Strict):
    """How long a stage trains: exactly one of ``epochs`` or ``steps`` (optimizer steps)."""

    epochs: Optional[float] = Field(None, gt=0)
    steps: Optional[int] = Field(None, gt=0)

    @model_validator(mode="after")
    def _one(self) -> "Budget":
        if (self.epochs is None) == (self.steps is None):
            raise ValueError("give exactly one of 'epochs' or 'steps'")
        return self


class Optimizer(_Strict):
    """AdamW settings."""

    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: Optional[float] = Field(1.0, gt=0)


class LRSchedule(_Strict):
    """Learning-rate factor over the stage's steps: linear warm-up, then constant, cosine or step decay.

    ``scope: run`` computes the factor at the run's global step over the run's total steps (the sum of every
    stage's step budget) instead of at the stage's step over its own: one warm-up and one decay for the whole
    run, the same learning-rate shape whatever the stages (what a fair curriculum-against-mixed comparison
    needs).  Every stage of such a run must give ``scope: run`` and a ``steps`` budget."""

    kind: Literal["constant", "cosine", "step"] = "cosine"
    scope: Literal["stage", "run"] = "stage"
    warmup_steps: int = Field(0, ge=0)
    min_factor: float = Field(0.05, ge=0, le=1)  # cosine floor (fraction of lr)
    step_every: Optional[int] = Field(None, gt=0)  # step decay period (steps)
    step_gamma: float = Field(0.5, gt=0, le=1)

    @model_validator(mode="after")
    def _step(self) -> "LRSchedule":
        if self.kind == "step" and self.step_every is None:
            raise ValueError("step_every: kind 'step' needs step_every")
        return self


class Promotion(_Strict):
    """When a stage ends: after its budget (``budget``), earlier when validation plateaus (``plateau``), or
    earlier when validation plateaus or its abs_rel (``val_abs_rel``: metric, pooled over the stage's validation
    pixels) reaches ``threshold`` (``competence``: pacing by competence, the budget is the cap).  ``carry_over``: the steps a stage promoted early did not use are
    added to the next stage's budget, so the run trains on as many samples as with fixed budgets."""

    rule: Literal["budget", "plateau", "competence"] = "budget"
    eval_every_steps: int = Field(100, gt=0)
    patience: int = Field(3, ge=1)  # evaluations without improvement before promotion
    min_delta: float = Field(1e-3, ge=0)  # improvement of the validation loss that counts
    min_steps: int = Field(0, ge=0)  # never promote before this many steps
    # competence: promote once val_abs_rel <= threshold (None: plateau only)
    threshold: Optional[float] = Field(None, gt=0)
    carry_over: bool = False


class SupervisedLoss(_Strict):
    """Weights of :func:`colondepth.losses.supervised.supervised_loss`."""

    silog_weight: float = Field(1.0, ge=0)
    silog_lambda: float = Field(0.85, ge=0, le=1)
    l1_weight: float = Field(0.1, ge=0)
    l1_space: Literal["depth", "inverse_depth"] = "inverse_depth"
    grad_weight: float = Field(0.5, ge=0)
    grad_scales: int = Field(4, ge=1)

    @model_validator(mode="after")
    def _nonzero(self) -> "SupervisedLoss":
        if self.silog_weight == 0 and self.l1_weight == 0 and self.grad_weight == 0:
            raise ValueError("silog_weight: at least one of silog_weight, l1_weight, grad_weight must be positive")
        return self


class Augment(_Strict):
    """Training augmentation (see :func:`colondepth.train.data.augment_frame`).

    Geometric: flips and ``zoom`` (a random crop of ``1 / zoom`` of the frame, resized back to the
    input size, with the intrinsics cropped and resized alike, so a narrower field of view is seen).
    Photometric (off by default): a global gain changes the metric brightness -> depth calibration, so
    use it with models that should not rely on absolute brightness (real endoscopes auto-expose).
    """

    hflip: bool = True
    vflip: bool = True
    zoom: tuple[float, float] = (1.0, 1.0)  # range of the zoom factor (>= 1)
    gain: tuple[float, float] = (1.0, 1.0)  # range of a global linear-intensity gain
    gamma: tuple[float, float] = (1.0, 1.0)  # range of an extra exponent on the [0, 1] image
    colour: float = Field(0.0, ge=0, le=1)  # std of the log per-channel gains
    blur_sigma_px: tuple[float, float] = (0.0, 0.0)  # range of a Gaussian blur sigma (px)
    noise_std: tuple[float, float] = (0.0, 0.0)  # range of additive Gaussian noise std ([0, 1] units)
    # std of the log of a smooth random albedo field (train.data.albedo_field): brightness is not only distance
    albedo_std: float = Field(0.0, ge=0, le=2)
    albedo_cells: int = Field(4, ge=2, le=32)  # the field's coarsest grid has 2..albedo_cells cells a side
    probability: float = Field(1.0, ge=0, le=1)  # fraction of frames that get the photometric jitter

    @model_validator(mode="after")
    def _ranges(self) -> "Augment":
        for name in ("zoom", "gain", "gamma", "blur_sigma_px", "noise_std"):
            lo, hi = getattr(self, name)
            if lo > hi or lo < 0:
                raise ValueError(f"{name}: need 0 <= lo <= hi, got [{lo}, {hi}]")
        if self.zoom[0] < 1.0:
            raise ValueError(f"zoom: factors must be >= 1 (a crop), got {list(self.zoom)}")
        if self.gain[0] <= 0 or self.gamma[0] <= 0:
            raise ValueError("gain, gamma: need positive values")
        return self

    @property
    def photometric(self) -> bool:
        """True when any photometric jitter is configured (otherwise images pass through untouched)."""
        return (self.gain != (1.0, 1.0) or self.gamma != (1.0, 1.0) or self.colour > 0
                or self.blur_sigma_px[1] > 0 or self.noise_std[1] > 0 or self.albedo_std > 0)


class _StageCommon(_Strict):
    name: str = Field(min_length=1)
    budget: Budget
    batch_size: int = Field(8, gt=0)
    optimizer: Optimizer = Optimizer()
    lr_schedule: LRSchedule = LRSchedule()
    promotion: Promotion = Promotion()

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", v):
            raise ValueError(f"stage name {v!r} may only hold letters, digits, '_', '.', '-'")
        return v


class SupervisedStage(_StageCommon):
    """Supervised shape-from-shading on data with depth ground truth."""

    kind: Literal["supervised"]
    levels: list[str] = []  # synthetic levels, matched against dataset.yaml `level`
    datasets: list[str] = []  # dataset folders (relative to the curriculum file), any level
    rehearsal: float = Field(0.0, ge=0, lt=1)  # fraction of each epoch drawn from earlier stages' data
    loss: SupervisedLoss = SupervisedLoss()
    augment: Augment = Augment()
    # "previous" (the weights the net holds: the preceding stage's, random for the first stage) or a
    # checkpoint path (relative to the curriculum file) whose depth weights start this stage
    init_from: str = "previous"

    @model_validator(mode="after")
    def _sources(self) -> "SupervisedStage":
        if not self.levels and not self.datasets:
            raise ValueError("levels: a supervised stage needs 'levels' or 'datasets'")
        for lv in self.levels:
            if not LEVEL_PATTERN.match(lv):
                raise ValueError(f"levels: {lv!r} is not a synthetic level name like 'L1'")
        if len(set(self.levels)) != len(self.levels):
            raise ValueError(f"levels: repeated entries in {self.levels}")
        return self


class TwoFrameNetwork(_Strict):
    """The two-frame depth network of a ``two_frame`` stage (:class:`colondepth.models.two_frame_net`); its
    input grid is the curriculum's ``model.input_size``."""

    features: list[Annotated[int, Field(gt=0)]] = [16, 16, 32, 64, 128, 16]  # MONAI BasicUNet channels
    inputs: list[Literal["rays", "physics"]] = ["rays"]  # extra channels of the target frame
    min_depth_mm: float = Field(0.5, gt=0)  # output range, depth at the reference displacement
    max_depth_mm: float = Field(400.0, gt=0)
    reference_displacement_mm: float = Field(1.0, gt=0)  # D0: the output is depth for this camera displacement

    @model_validator(mode="after")
    def _check(self) -> "TwoFrameNetwork":
        if len(self.features) != 6:
            raise ValueError(f"features: a BasicUNet needs 6 channel counts, got {self.features}")
        if not self.min_depth_mm < self.max_depth_mm:
            raise ValueError("min_depth_mm: must be below max_depth_mm")
        return self


class TwoFrameStage(_StageCommon):
    """Supervised depth from two frames (DepthNet, Pinard et al. 2017) on synthetic video with depth and poses
    (implemented by ``colondepth.train.two_frame``): for each training frame a partner ``g`` frames away
    (``g`` drawn from ``frame_gap``, either direction), the label ``depth * D0 / |t|``."""

    kind: Literal["two_frame"]
    levels: list[str] = []
    datasets: list[str] = []
    frame_gap: tuple[int, int] = (1, 3)  # partner offset range in frames (inclusive)
    # pairs whose relative rotation exceeds this are left out (a rotation-free stage); None: every pair
    max_rotation_deg: Optional[float] = Field(None, ge=0)
    min_displacement_mm: float = Field(0.2, ge=0)  # pairs with less camera motion are left out
    network: TwoFrameNetwork = TwoFrameNetwork()
    loss: SupervisedLoss = SupervisedLoss()
    # "previous" (the preceding two_frame stage's network; a fresh one for the first), "none" (fresh) or a
    # checkpoint path (relative to the curriculum file) holding a two-frame network
    init_from: str = "previous"

    @model_validator(mode="after")
    def _sources(self) -> "TwoFrameStage":
        if not self.levels and not self.datasets:
            raise ValueError("levels: a two_frame stage needs 'levels' or 'datasets'")
        for lv in self.levels:
            if not LEVEL_PATTERN.match(lv):
                raise ValueError(f"levels: {lv!r} is not a synthetic level name like 'L1'")
        lo, hi = self.frame_gap
        if not 1 <= lo <= hi:
            raise ValueError(f"frame_gap: need 1 <= lo <= hi, got {list(self.frame_gap)}")
        return self


class PhotometricLoss(_Strict):
    """Weights of the self-supervised photometric objective (monodepth2-style)."""

    ssim_weight: float = Field(0.85, ge=0, le=1)  # SSIM vs L1 mix of the photometric error
    l1_weight: float = Field(0.15, ge=0, le=1)
    smoothness_weight: float = Field(1e-3, ge=0)  # edge-aware disparity smoothness
    explainability_weight: float = Field(0.0, ge=0)  # explainability-mask regulariser (Zhou et al.)


class VideoSource(_Strict):
    """One real-data source for a self-supervised stage."""

    path: str
    format: Literal["video", "frames", "colondepth", "simcol3d", "c3vd"] = "video"


class CoopNetSection(_Strict):
    """CoopNet-style co-training (``colondepth.losses.flow``): an optical-flow network trained by its own
    photometric loss next to depth and pose; after the pose warm-up, target pixels whose flow and the rigid flow
    of the predicted depth and pose differ by more than ``max(threshold_px, threshold_rel * |rigid flow|)`` are
    left out of the depth/pose photometric loss, except in an image where more than ``max_nonrigid_fraction``
    of the field of view would be (an untrained flow, not a moving scene)."""

    enabled: bool = False
    flow_weight: float = Field(1.0, ge=0)
    flow_smoothness: float = Field(0.01, ge=0)
    threshold_px: float = Field(2.0, gt=0)
    threshold_rel: float = Field(0.2, ge=0)
    max_nonrigid_fraction: float = Field(0.5, gt=0, le=1)
    features: list[int] = Field(default_factory=lambda: [16, 16, 32, 64, 128, 16], min_length=6, max_length=6)


class SelfSupervisedRehearsal(_Strict):
    """Supervised synthetic batches mixed into every self-supervised step (see docs/finetune.md)."""

    levels: list[str] = []  # synthetic levels found under --data, like a supervised stage's
    datasets: list[str] = []  # dataset folders (relative to the curriculum file)
    weight: float = Field(0.0, ge=0)  # multiplies the supervised loss of the rehearsal batch (0: off)
    batch_size: int = Field(4, gt=0)
    loss: SupervisedLoss = SupervisedLoss()

    @model_validator(mode="after")
    def _sources(self) -> "SelfSupervisedRehearsal":
        if self.weight > 0 and not self.levels and not self.datasets:
            raise ValueError("rehearsal: a positive weight needs 'levels' or 'datasets'")
        for lv in self.levels:
            if not LEVEL_PATTERN.match(lv):
                raise ValueError(f"rehearsal.levels: {lv!r} is not a synthetic level name like 'L1'")
        return self


def pose_warmup_steps(budget_steps: int) -> int:
    """Pose-only warm-up steps of a self-supervised stage with a ``steps`` budget (as
    :class:`colondepth.train.selfsup.SelfSupervisedKind` runs it: ``POSE_WARMUP_STEPS``, or half of a smaller
    budget)."""
    from colondepth.train.selfsup import POSE_WARMUP_STEPS

    return min(POSE_WARMUP_STEPS, max(1, int(budget_steps) // 2))


def default_anchor_decay_steps(budget_steps: int) -> int:
    """``anchor_decay_steps`` when a stage leaves it unset: every step after the pose warm-up, so that the anchor
    reaches 0 at the end of the stage."""
    return max(1, int(budget_steps) - pose_warmup_steps(budget_steps))


class SelfSupervisedStage(_StageCommon):
    """Photometric fine-tuning on real video (implemented by ``colondepth.train.selfsup``).

    The defaults are the setting measured best on the shared real video sample (docs/finetune.md, "Real video"):
    batch 4, learning rate 1e-4, constant schedule, no auto-masking, BatchNorm statistics frozen, and the
    log-depth anchor (weight 0.1) decaying linearly to 0 over every step after the pose warm-up, and
    ``keep_best``: the stage never ends worse on the held-out snippets of its videos than it started.
    ``colondepth finetune`` takes its option defaults from these fields.
    """

    kind: Literal["self_supervised"]
    batch_size: int = Field(4, gt=0)
    optimizer: Optimizer = Optimizer(lr=1e-4)
    lr_schedule: LRSchedule = LRSchedule(kind="constant")
    init_from: str = "previous"  # "previous" (the preceding stage's weights) or a checkpoint path
    sources: list[VideoSource] = Field(min_length=1)
    crop: Optional[tuple[int, int, int, int]] = None  # x, y, width, height in source pixels
    intrinsics: Optional[str] = None  # YAML/JSON: width height fx fy cx cy [model: fisheye, k1 k2 k3 k4]
    # kept frames between target and source views; "auto": per video, the smallest skip whose views move
    # target_motion_px on the network's grid (colondepth.datasets.clips.adaptive_frame_skip)
    frame_skip: Union[Annotated[int, Field(ge=1)], Literal["auto"]] = 1
    target_motion_px: float = Field(3.0, gt=0)
    loss: PhotometricLoss = PhotometricLoss()
    min_reprojection: bool = True
    automask: bool = False
    brightness_alignment: bool = True
    translation_normalisation: bool = True
    # a pose warm-up mean translation (mm per frame step) below this turns translation normalisation off for the
    # stage ("the pose network did not learn"); 0: normalise to whatever the warm-up measured
    min_translation_norm_mm: float = Field(1e-2, ge=0)
    # per image, rescale predicted depth to the initial model's median (the scale follows the supervised depth
    # on every snippet, not a constant speed); translations are then not normalised
    depth_scale_anchor: bool = False
    # target pixels without a valid warp: "skip" (left out of the mean) or "identity" (count the un-warped error)
    invalid_warp: Literal["skip", "identity"] = "skip"
    # light at the endoscope tip in the view synthesis (inverse square and incidence angle, linear intensity
    # through the camera response I_linear = I ** light_gamma); "none": only the affine brightness alignment
    light: Literal["none", "tip"] = "none"
    light_gamma: float = Field(2.2, gt=0)
    # scale-invariant log-depth anchor to the initial (supervised) model's prediction; 0: off
    anchor_weight: float = Field(0.1, ge=0)
    # linear decay to 0 over this many joint steps (0: constant); unset: every step after the pose warm-up
    # (resolved from budget.steps when the stage is read)
    anchor_decay_steps: Optional[int] = Field(None, ge=0)
    freeze_encoder_steps: int = Field(0, ge=0)  # joint steps after the pose warm-up with the depth encoder frozen
    freeze_batchnorm: bool = True  # keep the depth net's BatchNorm statistics (eval mode) while fine-tuning
    # false: only the pose network learns (the depth network stays exactly as loaded); translations keep the
    # scale of that depth network (no translation normalisation): a pose network for a finished depth model
    train_depth: bool = True
    rehearsal: SelfSupervisedRehearsal = SelfSupervisedRehearsal()
    # weight of the supervised relative-pose loss (colondepth.losses.pose.relative_pose_loss, mm) on snippets
    # whose sequences have exact poses (synthetic video); 0: off.  Every source must then have poses.
    pose_supervision_weight: float = Field(0.0, ge=0)
    # the distance (mm) at which a rotation error is counted as displacement in that loss
    pose_supervision_rotation_mm: float = Field(20.0, gt=0)
    coopnet: CoopNetSection = CoopNetSection()
    # keep the better model: the stage ends with the weights of lowest photometric error on the held-out
    # snippets of its own videos, the initial model included (evaluated every promotion.eval_every_steps);
    # false: the stage ends with its last weights
    keep_best: bool = True

    @model_validator(mode="after")
    def _crop(self) -> "SelfSupervisedStage":
        if self.crop is not None:
            x, y, w, h = self.crop
            if x < 0 or y < 0 or w <= 0 or h <= 0:
                raise ValueError(f"crop: must be x, y >= 0 and width, height > 0, got {list(self.crop)}")
        return self

    @model_validator(mode="after")
    def _anchor_decay(self) -> "SelfSupervisedStage":
        if self.anchor_decay_steps is None:
            if self.budget.steps is not None:
                self.anchor_decay_steps = default_anchor_decay_steps(self.budget.steps)
            elif self.anchor_weight > 0:
                raise ValueError("anchor_decay_steps: an 'epochs' budget needs an explicit anchor_decay_steps "
                                 "(0: constant anchor), or use a 'steps' budget, or set anchor_weight: 0")
            else:
                self.anchor_decay_steps = 0
        return self


class TwoFrameSelfSupervisedStage(_StageCommon):
    """Self-supervised re-training of a two-frame network and its pose network on unlabelled video (Pinard et
    al. 2018; implemented by ``colondepth.train.two_frame``): the depth of each target from the two-frame
    network on it and its next view, scaled by the pose network's displacement, must warp both neighbours into
    it (photometric loss); translations normalised per snippet to the speed the initial pose network measures."""

    kind: Literal["two_frame_self_supervised"]
    batch_size: int = Field(4, gt=0)
    optimizer: Optimizer = Optimizer(lr=1e-4)
    lr_schedule: LRSchedule = LRSchedule(kind="constant")
    init_from: str  # a model bundle holding a two-frame and a pose network (e.g. data/default_model.pt)
    sources: list[VideoSource] = Field(min_length=1)
    crop: Optional[tuple[int, int, int, int]] = None
    intrinsics: Optional[str] = None
    frame_skip: int = Field(1, ge=1)
    loss: PhotometricLoss = PhotometricLoss()
    train_pose: bool = True
    # per snippet, the pose network's translations rescaled to the norm the initial (frozen) pose network
    # predicts for it: the measured speed pins the depth scale; false: the scale floats
    translation_normalisation: bool = True


Stage = Annotated[Union[SupervisedStage, SelfSupervisedStage, TwoFrameStage, TwoFrameSelfSupervisedStage],
                  Field(discriminator="kind")]


class DataSection(_Strict):
    """Loading and validation split."""

    num_workers: int = Field(0, ge=0)
    val_max_frames_per_level: int = Field(64, gt=0)  # evenly spaced frames of the held-out sequences
    val_fraction_single_sequence: float = Field(0.2, gt=0, lt=1)  # when a level has only one sequence


class GenerateSection(_Strict):
    """Optional: generate missing synthetic levels with colondepth.synth into RUN/data."""

    recipes: dict[str, str]  # level -> recipe YAML (relative to the curriculum file)
    sequences: int = Field(4, gt=1)
    frames: int = Field(32, gt=0)
    size: Optional[tuple[int, int]] = None  # (height, width) px; default: the recipe's
    seed: int = 0


class CheckpointSection(_Strict):
    every_steps: int = Field(200, gt=0)  # RUN/checkpoints/last.pt is rewritten this often
    log_every_steps: int = Field(10, gt=0)  # metrics.jsonl training records


class MonitorSet(_Strict):
    """A data set the forgetting monitor scores besides the levels (``colondepth.train.monitor``)."""

    name: str = Field(min_length=1)
    path: str  # relative to the curriculum file
    format: Literal["colondepth", "simcol3d", "c3vd", "sinus_sfm"] = "colondepth"
    # [first, last] frame numbers to score (inclusive), e.g. a real video's validation frames; default all
    frames: Optional[tuple[int, int]] = None

    @model_validator(mode="after")
    def _frames(self) -> "MonitorSet":
        if self.frames is not None and not 0 <= self.frames[0] <= self.frames[1]:
            raise ValueError(f"frames: must be [first, last] with 0 <= first <= last, got {list(self.frames)}")
        return self


class MonitorSection(_Strict):
    """The forgetting monitor: every ``every_steps`` optimizer steps (and at every stage's end), the depth
    network's error on the validation frames of every level trained on so far and on the ``foreign`` sets,
    logged as ``monitor`` records of ``metrics.jsonl``; 0: off."""

    every_steps: int = Field(0, ge=0)
    max_frames: int = Field(16, gt=0)  # per level and per foreign set, evenly spaced
    foreign: list[MonitorSet] = Field(default_factory=list)


class Curriculum(_Strict):
    """A whole training recipe."""

    name: str = Field(min_length=1)
    description: str = ""
    seed: int = 0
    model: ModelSection = ModelSection()
    data: DataSection = DataSection()
    checkpoint: CheckpointSection = CheckpointSection()
    generate: Optional[GenerateSection] = None
    monitor: MonitorSection = MonitorSection()
    stages: list[Stage] = Field(min_length=1)

    @model_validator(mode="after")
    def _cross(self) -> "Curriculum":
        problems = []  # every cross-field problem, one "key.path: message" each (reported together)
        names = [s.name for s in self.stages]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            problems.append(f"stages: stage names must be unique; repeated: {', '.join(dup)}")
        seen_supervised = False
        for i, s in enumerate(self.stages):
            if isinstance(s, SupervisedStage):
                if s.rehearsal > 0 and not seen_supervised:
                    problems.append(f"stages.{i}.rehearsal: the first supervised stage has no earlier data "
                                    f"to rehearse; set rehearsal: 0")
                seen_supervised = True
            elif isinstance(s, SelfSupervisedStage) and s.init_from == "previous" and i == 0:
                problems.append("stages.0.init_from: 'previous' needs an earlier stage; give a checkpoint path")
        scopes = [s.lr_schedule.scope for s in self.stages]
        if "run" in scopes:
            for i, s in enumerate(self.stages):
                if s.lr_schedule.scope != "run":
                    problems.append(f"stages.{i}.lr_schedule.scope: a run-wide schedule needs scope 'run' in "
                                    f"every stage (stage {s.name} has 'stage')")
                elif s.budget.steps is None:
                    problems.append(f"stages.{i}.budget: a run-wide learning-rate schedule needs a 'steps' "
                                    "budget in every stage")
        if self.generate is not None:
            used = {lv for s in self.stages if isinstance(s, (SupervisedStage, TwoFrameStage)) for lv in s.levels}
            for lv in self.generate.recipes:
                if not LEVEL_PATTERN.match(lv):
                    problems.append(f"generate.recipes.{lv}: not a level name like 'L1'")
                elif lv not in used:
                    problems.append(f"generate.recipes.{lv}: no stage uses level {lv}")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @property
    def levels(self) -> list[str]:
        """Every level any supervised or two-frame stage names, in first-use order."""
        out: list[str] = []
        for s in self.stages:
            if isinstance(s, (SupervisedStage, TwoFrameStage)):
                out += [lv for lv in s.levels if lv not in out]
        return out


_KEY_IN_MESSAGE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*): (.*)$")


def validation_problems(exc: ValidationError) -> list[tuple[str, str]]:
    """Every problem of a curriculum ``ValidationError`` as ``(key path, message)``, in pydantic's order.

    The key path drops the discriminator tag pydantic inserts (``stages.1.supervised.loss`` ->
    ``stages.1.loss``) and takes in the key our validators name at the start of their message
    (``stages.0.budget`` + ``give exactly one of ...``); a validator that finds several problems reports them
    on separate lines of one message.
    """
    out = []
    for err in exc.errors():
        loc = [str(x) for x in err["loc"]]
        loc = [x for j, x in enumerate(loc) if not (j > 0 and loc[j - 1].isdigit() and x in
                                                    ("supervised", "self_supervised"))]
        base = ".".join(loc)
        for msg in err["msg"].removeprefix("Value error, ").split("\n"):
            key = base
            sub = _KEY_IN_MESSAGE.match(msg)
            if sub and err["type"] == "value_error":  # our validators start with the (relative) key
                key = f"{key}.{sub.group(1)}" if key else sub.group(1)
                msg = sub.group(2)
            out.append((key or "(top level)", msg))
    return out


class CurriculumInvalid(UserError):
    """Every validation problem of a curriculum: a header line, then one indented line per problem naming the
    file and the key path (a :class:`UserError`, exit status 2; the only user error of more than one line)."""

    def __init__(self, header: str, problems: list[str]):
        lines = [" ".join(header.split())] + ["  " + " ".join(p.split()) for p in problems]
        Exception.__init__(self, "\n".join(lines))


def _curriculum_error(path: Path, exc: ValidationError) -> UserError:
    """One line for one problem; for several, a header line and one line per problem, each naming the file and
    the key path."""
    problems = validation_problems(exc)
    if len(problems) == 1:
        key, msg = problems[0]
        return UserError(f"{path}: {key}: {msg}; fix the curriculum (see docs/training.md)")
    return CurriculumInvalid(f"{path}: {len(problems)} problems; fix the curriculum (see docs/training.md):",
                             [f"{path}: {key}: {msg}" for key, msg in problems])


def parse_curriculum(data: dict, source: str | Path = "<curriculum>") -> Curriculum:
    """Validate a parsed YAML mapping; raises a :class:`UserError` naming ``source`` and the key path of every
    problem (one line for one problem, one line per problem after a header for several)."""
    if not isinstance(data, dict):
        raise UserError(f"{source}: a curriculum must be a YAML mapping with 'name' and 'stages'")
    try:
        return Curriculum.model_validate(data)
    except ValidationError as exc:
        raise _curriculum_error(Path(source), exc) from None


def load_curriculum(path: str | Path) -> Curriculum:
    """Read and validate a curriculum YAML file."""
    from colondepth.io import load_yaml

    p = Path(path)
    if p.is_dir():
        raise UserError(f"{p}: is a folder, not a curriculum file; pass --curriculum with a YAML from curricula/")
    if not p.is_file():
        raise UserError(f"{p}: curriculum file not found; pass --curriculum with a YAML from curricula/")
    data = load_yaml(p)
    return parse_curriculum(data, p)


def resolved_dict(curriculum: Curriculum) -> dict:
    """The curriculum with every default filled in, as plain YAML-able data."""
    return curriculum.model_dump(mode="json")
