"""A named hyperparameter with its default and valid range, shared by the loss, optimizer and
scheduler registries so that every one of them checks its values the same way."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Param:
    """One hyperparameter (of a loss, optimizer or scheduler): its default and the range it must lie in.

    `low`/`high` bound the value; `low_open`/`high_open` say whether the bound itself is
    excluded (gamma lies in (0, 1]: low=0, low_open=True, high=1).
    """

    default: float
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    help: str = ""

    def check(self, name: str, value: Any) -> str | None:
        """Return why `value` is invalid for this parameter, or None when it is fine."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{name} must be a number, got {value!r}"
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return f"{name}={value} is out of range: it must be {'>' if self.low_open else '>='} {self.low}"
        if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            return f"{name}={value} is out of range: it must be {'<' if self.high_open else '<='} {self.high}"
        return None


def resolve_params(owner: str, specs: dict[str, Param], given: dict[str, Any], where: str) -> dict[str, float]:
    """`given` checked against `specs`, defaults filled in; raises InputError naming the key.

    owner: what the params belong to, for the message ("loss 'sogclr'").
    where: the config path of the params ("loss"), so a message names "loss.gamma".
    """
    from .errors import InputError

    unknown = sorted(set(given) - set(specs))
    if unknown:
        accepted = ", ".join(sorted(specs)) or "none"
        raise InputError(f"{unknown[0]!r} is not a hyperparameter of {owner}",
                         where=f"{where}.{unknown[0]}", fix=f"{owner} accepts: {accepted}")
    resolved = {key: given.get(key, spec.default) for key, spec in specs.items()}
    for key, spec in specs.items():
        problem = spec.check(key, resolved[key])
        if problem:
            raise InputError(problem, where=f"{where}.{key}", fix=spec.help or None)
    return resolved


#: lr and weight_decay: every optimizer takes them (as arguments of optim.build_optimizer, and
#: as optimizer.lr / optimizer.weight_decay in a config, whose defaults these are)
COMMON_OPTIMIZER_PARAMS: dict[str, Param] = {
    "lr": Param(1e-3, low=0.0, low_open=True, help="learning rate, > 0"),
    "weight_decay": Param(0.01, low=0.0, help="weight decay, >= 0 (never applied to biases and norms)"),
}
