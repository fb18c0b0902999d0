"""Typed run configuration, validated once at the boundary.

A run is described by one `Config`: sections data, model, loss, optimizer, scheduler, train,
eval. It comes from a preset (`default.yaml`: the seed 001 setting at full scale;
`quick.yaml`: the embedded digits and tiny models), a user YAML file on top, and `--set
section.key=value` overrides on top of that. Every key is checked: an unknown key, a value of
the wrong type, an unknown loss/optimizer/scheduler or a hyperparameter that does not belong to
it raises `InputError` naming the file and the key, before anything runs.

The loss, optimizer and scheduler sections hold their `name` plus that component's own
hyperparameters (e.g. `loss.gamma` for sogclr); the registries say which keys each accepts.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import InputError
from .hparams import COMMON_OPTIMIZER_PARAMS
from .machine_cache import machine_cache_dir

PRESETS = Path(__file__).parent / "presets"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Section):
    source: str = Field("embedded", description="'embedded' (MNIST 5,000 with measured captions) or a "
                        "caption file (JSON, JSONL, CSV), webdataset shards (a .tar, a folder or a brace pattern)")
    image_root: str | None = Field(None, description="folder the caption file's image paths are relative to")
    val_source: str | None = Field(
        None, description="a COCO-style captions file for retrieval, or 'embedded' (the held-out MNIST 1,000); "
        "unset: 'embedded' when data.source is, else the last data.val_fraction of data.source's images, held "
        "out from training")
    val_image_root: str | None = Field(None, description="folder the val_source file's image paths are relative to")
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0, description="share of a user's data.source held out for "
                                "retrieval when data.val_source is unset: the file's last images, never trained on")
    zeroshot_source: str | None = Field(
        None, description="an ImageFolder tree, or 'embedded' (scikit-learn's 8x8 digits); unset: 'embedded' "
        "when data.source is; with a user's data.source it must be given (the objective needs ACC@1)")
    zeroshot_classnames: str = Field(
        "auto", description="class names of an ImageFolder zeroshot_source: folders (the folder names); imagenet "
        "(folders named by WordNet id, n01440764 -> tench: ImageNet's names as OpenAI's CLIP wrote them); auto "
        "(imagenet when every folder is an ImageNet-1k WordNet id, else folders); or a UTF-8 text file, one name "
        "a line in sorted folder order, or FOLDER<TAB>NAME lines")
    zeroshot_templates: str = Field(
        "auto", description="zero-shot prompt templates: generic (4, 'a photo of a {}.'); openai (CLIP's 80 "
        "ImageNet templates); simple (CLIP's 7 of them); auto (generic for a folder, the digits' own for "
        "'embedded'); or a UTF-8 text file, one template a line, each with one {} for the class name")
    fraction: float = Field(1.0, gt=0.0, le=1.0, description="deterministic class-stratified share of the training set")
    image_size: int = Field(224, ge=8, le=1024)
    max_text_length: int = Field(32, ge=4, le=512)
    cache_dir: str = Field(default_factory=machine_cache_dir,
                           description="where decoded images and a frozen text tower's outputs are cached "
                           "(default: $CLIPSEARCH_CACHE_DIR, else $XDG_CACHE_HOME/clipsearch, else ~/.cache/clipsearch)")
    on_corrupt: Literal["error", "skip"] = Field("error", description="a corrupt image stops the run, or is skipped and counted")
    augment: bool = Field(True, description="random shifts of up to 1/8 of the image size in training")


class ModelConfig(Section):
    image_tower: str = Field("timm:resnet50", description="timm:NAME[.TAG], open_clip:NAME or open_clip:hf-hub:ORG/REPO "
                             "(that repo's weights, from the local HF cache)")
    image_weights: str | None = Field(None, description="the image tower's weights, never downloaded: a local file; "
                                      "an open_clip pretrained tag (laion2b_s34b_b79k); or, for timm, 'pretrained' "
                                      "(the tag's weights); named weights come from the local HF cache only")
    text_tower: str = Field("hf:distilbert-base-uncased", description="hf:NAME_OR_PATH (hf:minilm = the bundled "
                            "all-MiniLM-L6-v2), open_clip:NAME or open_clip:hf-hub:ORG/REPO")
    text_weights: str | None = Field(None, description="an open_clip text tower's weights: a local checkpoint or "
                                     "a pretrained tag, from the local cache only")
    text_layers: int | None = Field(None, ge=0, description="keep only the first k transformer layers of the text tower")
    freeze_text: Literal["none", "token_embeddings", "tower"] = Field(
        "none", description="what of the pretrained text tower stays frozen: none; its token embedding table (most "
        "of a small tower's parameters are a vocabulary a small caption set never uses); or the whole tower, whose "
        "output for each distinct caption is then computed once and cached (only the projection trains)")
    embed_dim: int = Field(256, ge=2, le=4096)


class ComponentSection(BaseModel):
    """A section holding a registry name plus that component's own hyperparameters."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)
    name: str

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class LossConfig(ComponentSection):
    name: str = "clip"


class OptimizerConfig(ComponentSection):
    name: str = "adamw"
    # declared once, with the optimizers' own check of them (hparams.COMMON_OPTIMIZER_PARAMS)
    lr: float = Field(COMMON_OPTIMIZER_PARAMS["lr"].default, gt=0.0)
    weight_decay: float = Field(COMMON_OPTIMIZER_PARAMS["weight_decay"].default, ge=0.0)


class SchedulerConfig(ComponentSection):
    name: str = "cosine"


class TrainConfig(Section):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(128, ge=2)
    grad_clip: float = Field(0.0, ge=0.0, description="max gradient norm; 0 turns clipping off")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field("auto", description="auto: bf16 autocast on CUDA, fp32 on CPU")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N")
    channels_last: bool = Field(True, description="keep the image tower and its inputs in NHWC: faster "
                                "convolutions on CPU (oneDNN) and CUDA (cuDNN)")
    threads: int = Field(0, ge=0, description="torch CPU threads; 0 keeps torch's default")
    max_steps_per_epoch: int = Field(0, ge=0, description="cap on steps per epoch (0: the whole epoch); for benchmarks")


class EvalConfig(Section):
    every: int = Field(1, ge=1, description="evaluate every N epochs (and always after the last)")
    batch_size: int = Field(256, ge=1)


class ImageConfig(Section):
    """The image-only task, which the losses supcon, ntxent and ce train (the loss decides the
    task: a loss without a text side trains the image tower alone; the text tower is not built).

    Data: data.source is 'embedded' (MNIST 5,000: train / val from the fixed training split,
    the fixed validation split as the held-out test) or an ImageFolder root with train/<class>/*
    and optionally test/<class>/*. The test split never reaches training or model selection.
    """

    sampler: Literal["auto", "shuffle", "balanced"] = Field(
        "auto", description="shuffle: plain shuffled batches; balanced: k = batch_size / n classes x n images "
        "per batch (classes with fewer than n images are drawn with replacement); auto: balanced for supcon")
    images_per_class: int = Field(2, ge=1, description="n of the balanced sampler")
    views: int = Field(0, ge=0, le=8, description="augmented views per image; 0: 2 for ntxent and supcon, 1 for ce")
    crop_scale: float = Field(0.5, gt=0.0, le=1.0, description="RandomResizedCrop's smallest area share (1: no crop)")
    flip: float = Field(0.5, ge=0.0, le=1.0, description="probability of a horizontal flip")
    jitter: float = Field(0.4, ge=0.0, le=1.0, description="colour jitter strength (brightness, contrast, "
                          "saturation), applied with probability 0.8")
    grayscale: float = Field(0.2, ge=0.0, le=1.0, description="probability of turning a view grayscale")
    head: Literal["linear", "mlp", "none"] = Field(
        "linear", description="projection head the contrastive loss sees (to model.embed_dim); kNN and the "
        "probe use the tower's features before it")
    evaluator: str = Field("knn", description="what is measured between epochs (see clipsearch.tasks.image)")
    knn_k: int = Field(20, ge=1, description="neighbours of the kNN accuracy")
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0, description="share of each class of the training "
                                "images kept for model selection (ImageFolder data)")
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="share of each class held out as the "
                                 "test split when an ImageFolder has no test/ folder")


class RetrievalConfig(Section):
    """Query and gallery images of the image task's "query_gallery" evaluator (cross-domain
    retrieval, seed 000; see clipsearch.data.querygallery and clipsearch.tasks.query_gallery)."""

    query: str = Field("embedded", description="'embedded' (scikit-learn's 8x8 digits) or a folder: "
                       "query/<class>/* or flat with retrieval.labels")
    gallery: str = Field("embedded", description="'embedded' (the held-out MNIST 1,000) or a folder: "
                         "gallery/<class>/* or flat with retrieval.labels")
    labels: str | None = Field(None, description="CSV with columns file,label for flat query/gallery folders "
                               "(file relative to the CSV's folder)")


class Config(Section):
    seed: int = 0
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    image: ImageConfig = ImageConfig()
    retrieval: RetrievalConfig = RetrievalConfig()

    def flat(self) -> dict[str, Any]:
        """Dotted keys -> values (for MLflow params, search spaces, trials.csv)."""
        return flatten(self.model_dump())


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from a file; safe_load only (no !!python tags)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("file not found", where=str(path), fix="check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the file ({exc.__class__.__name__})", where=str(path),
                         fix="pass a readable UTF-8 YAML file") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark else ""
        raise InputError(f"not valid YAML{line}: {getattr(exc, 'problem', exc)}", where=str(path),
                         fix="fix the YAML syntax (tags like !!python/object are refused)") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"expected a mapping of sections, got {type(data).__name__}", where=str(path),
                         fix="write `section:` blocks such as `train:` and `loss:`")
    return data


def parse_override(item: str) -> tuple[list[str], Any]:
    """'optimizer.lr=3e-4' -> (['optimizer', 'lr'], 0.0003); values are parsed as YAML scalars."""
    if "=" not in item:
        raise InputError(f"--set {item!r} has no '='", where="--set", fix="write --set section.key=value")
    key, raw = item.split("=", 1)
    keys = key.strip().split(".")
    if not all(keys):
        raise InputError(f"--set {item!r} has an empty key", where="--set", fix="write --set section.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    # YAML 1.1 reads "1e-3" as a string; numbers are what people mean there
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            pass
    return keys, value


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def set_dotted(tree: dict[str, Any], keys: list[str], value: Any) -> None:
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise InputError(f"{'.'.join(keys)}: {key} is not a section", where="--set",
                             fix="use section.key=value")
    node[keys[-1]] = value


COMPONENTS = ("loss", "optimizer", "scheduler")
#: keys a component section keeps when its name changes (they mean the same for every optimizer)
SHARED_KEYS = {"optimizer": {"lr", "weight_decay"}}


def switch_component(raw: dict[str, Any], section: str, new_name: Any, defaults: dict[str, Any]) -> None:
    """Changing loss/optimizer/scheduler `name` drops the previous component's own params (clip's
    `temperature` means nothing to isogclr) and takes the preset's defaults for the new one."""
    old = raw.get(section, {})
    if isinstance(old, dict) and old.get("name") != new_name:
        kept = {k: v for k, v in old.items() if k in SHARED_KEYS.get(section, set())}
        preset = defaults.get(section, {}).get(new_name, {})
        raw[section] = {**kept, **preset, "name": new_name}


def apply_settings(raw: dict[str, Any], settings: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """`settings` ({"loss.name": "sogclr", "optimizer.lr": 1e-3}) laid over `raw`.

    Component names are applied first, so that a component's own keys given beside its name
    (loss.gamma with loss.name) land on the new component, whatever their order.
    """
    raw = copy.deepcopy(raw)  # a shallow copy shared its sections: setting a key changed the caller's raw
    names = {k: v for k, v in settings.items() if k.count(".") == 1 and k.split(".")[0] in COMPONENTS
             and k.endswith(".name")}
    for key, value in names.items():
        switch_component(raw, key.split(".")[0], value, defaults)
    for key, value in settings.items():
        if key not in names:
            set_dotted(raw, key.split("."), value)
    return raw


def read_base(base: str | Path) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(raw config, component defaults, source name) of a preset name or a config file.

    A config file is laid over the default preset; presets may hold `component_defaults`:
    {section: {component name: {param: value}}}, the values that suit the preset's scale.
    """
    if str(base) in ("quick", "default"):
        raw = read_yaml(PRESETS / f"{base}.yaml")
        return raw, raw.pop("component_defaults", {}), f"{base} preset"
    raw, defaults, _ = read_base("default")
    return *lay_file(raw, defaults, base), str(base)


def lay_file(raw: dict[str, Any], defaults: dict[str, Any], path: str | Path) -> tuple[dict, dict]:
    """A user's config file laid over `raw`: components it names switch first (see apply_settings)."""
    user = read_yaml(path)
    defaults = merge(defaults, user.pop("component_defaults", {}))
    names = {f"{section}.name": user[section]["name"] for section in COMPONENTS
             if isinstance(user.get(section), dict) and "name" in user[section]}
    return merge(apply_settings(raw, names, defaults), user), defaults


def config_from(base: str | Path, settings: dict[str, Any], source: str | None = None) -> Config:
    """A validated Config: a preset name or config file, with dotted `settings` on top."""
    raw, defaults, base_source = read_base(base)
    return build_config(apply_settings(raw, settings, defaults), source or base_source)


def build_config(raw: dict[str, Any], source: str = "config") -> Config:
    """A validated Config from a raw mapping; raises InputError naming `source` and the key."""
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            section = err["loc"][:-1]
            model = Config
            for part in section:
                model = model.model_fields[str(part)].annotation
            valid = ", ".join(model.model_fields)
            raise InputError(f"config key {key!r} does not exist", where=source, fix=f"valid keys here: {valid}") from None
        raise InputError(f"{key}: {err['msg']} (got {err.get('input')!r})", where=source,
                         fix="see `clipsearch train --help` and the presets in clipsearch/presets/") from None
    validate_components(cfg, source)
    return cfg


def validate_components(cfg: Config, source: str) -> None:
    """Loss, optimizer and scheduler names and their own hyperparameters, against the registries."""
    from . import losses, optim, tasks

    try:
        losses.resolve_loss_params(cfg.loss.name, cfg.loss.params, where="loss")
        optim.resolve_optimizer_params(cfg.optimizer.name, cfg.optimizer.params, where="optimizer")
        schedule = optim.resolve_scheduler_params(cfg.scheduler.name, cfg.scheduler.params, where="scheduler")
        # the same rule the scheduler enforces at build time, checked here so that it fails
        # before data and models load
        held = schedule.get("warmup_epochs", 0) + schedule.get("cooldown_epochs", 0)
        tasks.check_config(cfg)
        if cfg.scheduler.name in ("cosine", "tanh") and held >= cfg.train.epochs:
            raise InputError(f"warmup_epochs + cooldown_epochs = {held} leave none of the {cfg.train.epochs} "
                             "epochs to anneal in", where="scheduler.warmup_epochs",
                             fix="lower warmup_epochs / cooldown_epochs or raise train.epochs")
    except InputError as exc:
        exc.where = f"{source}: {exc.where}" if exc.where else source
        raise InputError(exc.what, where=exc.where, fix=exc.fix) from None


def load_config(path: str | Path | None = None, overrides: list[str] = (), quick: bool = False) -> Config:
    """Preset (quick or default) <- YAML file <- --set overrides, validated.

    With both --quick and a file, the file is laid over the quick preset.
    """
    base = "quick" if quick else "default"
    raw, defaults, source = read_base(base)
    if path is not None:
        (raw, defaults), source = lay_file(raw, defaults, path), str(path)
    settings = {}
    for item in overrides:
        keys, value = parse_override(item)
        settings[".".join(keys)] = value
    if overrides:
        source = f"{source} + --set"
    return build_config(apply_settings(raw, settings, defaults), source)


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.model_dump(), sort_keys=False), encoding="utf-8")
