"""What an explanation request asks for (``layers=``, ``channels=``, ``maps=``, ``erf=``), validated.

Parsed in the HTTP server before anything is queued, so a bad option is a 400 naming what is allowed and never
reaches an inference worker; the worker checks the layer names again against the model it actually loaded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# How feature maps (and the class-activation overlay) travel inside the JSON answer: base64 PNG pictures, arrays of
# numbers, or both. ``format=png|json`` is the older, deprecated name of the option: it named a file type although
# every answer is JSON.
MAPS = ("png", "array", "both")
DEPRECATED_FORMATS = {"png": "png", "json": "array"}
DEFAULT_CHANNELS = 4
MAX_CHANNELS = 512
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")
_SHOWN = 40  # characters of a rejected value quoted back in the message


class OptionError(ValueError):
    """A malformed explanation option: always answered with 400 and this message."""

    status = 400


@dataclass(frozen=True)
class ExplainOptions:
    """``layers``: stage names in the order asked (``None``: every stage); ``channels``: top-K per stage;
    ``maps``: feature maps as ``png`` (base64 PNG pictures, plus the CAM overlay), ``array`` (numbers) or
    ``both``; ``erf``: add effective receptive fields."""

    layers: tuple[str, ...] | None = None
    channels: int = DEFAULT_CHANNELS
    maps: str = "png"
    erf: bool = False

    def __post_init__(self) -> None:
        if self.maps not in MAPS:
            raise OptionError(f"maps must be one of {', '.join(MAPS)}, got {_shown(self.maps)}")

    @property
    def pictures(self) -> bool:
        """Whether the answer carries PNG pictures of the maps (and the CAM overlay)."""
        return self.maps in ("png", "both")

    @property
    def arrays(self) -> bool:
        """Whether the answer carries each feature map's values as an array."""
        return self.maps in ("array", "both")

    def resolved_layers(self, valid: Sequence[str]) -> tuple[str, ...]:
        """The layers to explain: the requested ones after checking them against ``valid``, else all of them."""
        if self.layers is None:
            return tuple(valid)
        check_layers(self.layers, valid)
        return self.layers


def _shown(value: str) -> str:
    """``value`` quoted for an error message, cut short: query values can be as long as the request line."""
    return repr(value) if len(value) <= _SHOWN else f"{value[:_SHOWN]!r}... ({len(value)} characters)"


def check_layers(layers: Sequence[str], valid: Sequence[str]) -> None:
    """Raise ``OptionError`` listing the valid names if any of ``layers`` is not one of them."""
    unknown = [name for name in layers if name not in valid]
    if unknown:
        raise OptionError(f"unknown layer(s) {', '.join(map(_shown, unknown))}; valid layers are {', '.join(valid)}")


OPTIONS = ("layers", "channels", "maps", "format", "erf")


def parse_options(query: Mapping[str, str], valid_layers: Sequence[str] | None = None) -> ExplainOptions:
    """Options from query parameters; ``valid_layers`` (when known) checks ``layers`` now.

    ``layers=a,b`` (comma-separated, duplicates dropped), ``channels=K`` (1..MAX_CHANNELS; stages with fewer
    channels give all of theirs), ``maps=png|array|both`` (or its deprecated name ``format=png|json``, ``json``
    meaning ``array``), ``erf=true|false``. Each at most once: a query that repeats one (``query.getlist``, when it
    has it) would otherwise silently keep only its last value. Raises ``OptionError``.
    """
    getlist = getattr(query, "getlist", None)
    repeated = [name for name in OPTIONS if getlist is not None and len(getlist(name)) > 1]
    if repeated:
        raise OptionError(
            f"{', '.join(repeated)} given more than once; give each option once (layers takes a comma-separated list)"
        )
    layers: tuple[str, ...] | None = None
    if "layers" in query:
        names = [name.strip() for name in query["layers"].split(",")]
        if not any(names):
            hint = f"; valid layers are {', '.join(valid_layers)}" if valid_layers else ""
            raise OptionError(f"layers is empty: give stage names separated by commas{hint}")
        if not all(names):
            raise OptionError(f"layers has an empty name: {_shown(query['layers'])}")
        layers = tuple(dict.fromkeys(names))
        if valid_layers is not None:
            check_layers(layers, valid_layers)
    channels = DEFAULT_CHANNELS
    if "channels" in query:
        text = query["channels"].strip().lstrip("0") or "0"
        # isdigit alone takes "²"; the length check keeps int() from its 4300-digit limit (a ValueError)
        if not (text.isascii() and text.isdigit() and len(text) <= 3) or not 1 <= int(text) <= MAX_CHANNELS:
            raise OptionError(
                f"channels must be a whole number from 1 to {MAX_CHANNELS}, got {_shown(query['channels'])}"
            )
        channels = int(text)
    maps = _maps(query)
    erf_text = query.get("erf", "false").strip().lower()
    if erf_text not in _TRUE + _FALSE:
        raise OptionError(f"erf must be true or false, got {_shown(query['erf'])}")
    return ExplainOptions(layers, channels, maps, erf_text in _TRUE)


def _maps(query: Mapping[str, str]) -> str:
    """``maps=``, or what the deprecated ``format=`` means; giving both is ambiguous."""
    if "maps" in query and "format" in query:
        raise OptionError("give maps= or its deprecated name format=, not both")
    if "format" in query:
        old = query["format"].strip().lower()
        if old not in DEPRECATED_FORMATS:
            raise OptionError(
                f"format (deprecated: use maps={'|'.join(MAPS)}) must be png or json, got {_shown(query['format'])}"
            )
        return DEPRECATED_FORMATS[old]
    maps = query.get("maps", "png").strip().lower()
    if maps not in MAPS:
        raise OptionError(f"maps must be one of {', '.join(MAPS)}, got {_shown(query['maps'])}")
    return maps
