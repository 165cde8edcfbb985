"""The foundation's own configuration schema, and `setting` to declare one of yours.

::

    import attrs
    from trioscope.foundation._settings import FoundationConfig, setting, updatable_paths

    @attrs.frozen
    class Limits:
        low: int = setting(1, updatable=True)
        high: int = setting(10, updatable=True)

    assert FoundationConfig().events.max_events == 100_000
    assert updatable_paths(Limits) == frozenset({"low", "high"})

A schema is a tree of ``@attrs.frozen`` classes: a field whose type is an
attrs class is a *section*, any other field a *setting*. Paths are dotted
(``"events.max_events"``). Every field has a default, so ``Schema()`` is the
configuration nobody overrode; validators (and cross-field rules in
``__attrs_post_init__``) run on every construction, so a configuration that
exists is valid. A setting (or a whole section) may be changed at run time
only if it was declared with ``setting(..., updatable=True)``.

Units follow the foundation's rule: durations are ``float`` seconds (names
end in ``_s``), sizes ``int`` bytes (``_bytes``), counts plain ints.
"""

from __future__ import annotations

import difflib
import json
import math
import sys
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal, TypeVar, cast, get_args, get_origin, overload

import attrs
import cattrs
from cattrs.errors import CattrsError
from cattrs.v import format_exception

from ._errors import ConfigRejected, UnknownConfigPathError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on 3.10
    import tomli as tomllib

T = TypeVar("T")

UPDATABLE: Final = "trioscope.updatable"
"""The attrs field metadata key that `setting` sets for ``updatable=True``."""

_Validator = Callable[[Any, "attrs.Attribute[Any]", Any], Any]


class SettingError(ValueError):
    """A setting's value breaks its rule; `rule` says which, without the value."""

    def __init__(self, name: str, value: object, rule: str) -> None:
        self.name = name
        self.value = value
        self.rule = rule
        super().__init__(f"{name} {rule}, got {value!r}")


@overload
def setting(default: T, *, updatable: bool = False, validator: _Validator | None = None) -> T: ...
@overload
def setting(
    *, factory: Callable[[], T], updatable: bool = False, validator: _Validator | None = None
) -> T: ...
def setting(
    default: object = attrs.NOTHING,
    *,
    factory: Callable[[], object] | None = None,
    updatable: bool = False,
    validator: _Validator | None = None,
) -> Any:
    """Declare a field of a configuration schema (an `attrs.field` with metadata).

    Args:
        default: The value when no source sets it.
        factory: Instead of *default*: called for it (a section: ``factory=Section``).
        updatable: Whether `trioscope.foundation.config.update` may change it at
            run time (for a section: the whole section and everything in it).
        validator: An attrs validator (raise `ValueError`/`TypeError` naming the rule).

    Raises:
        TypeError: both or neither of *default* and *factory*.
    """
    if (default is attrs.NOTHING) == (factory is None):
        raise TypeError("setting() takes exactly one of default and factory")
    metadata = {UPDATABLE: True} if updatable else {}
    if factory is not None:
        return attrs.field(factory=factory, validator=validator, metadata=metadata)
    return attrs.field(default=default, validator=validator, metadata=metadata)


# -- validators (messages name the field and the rule) -----------------------


def at_least(minimum: int) -> _Validator:
    """An attrs validator: an ``int`` (not a ``bool``) >= *minimum*."""

    def check(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, int) or isinstance(value, bool):
            raise SettingError(attribute.name, value, "must be an int")
        if value < minimum:
            raise SettingError(attribute.name, value, f"must be >= {minimum}")

    return check


def positive_seconds(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """An attrs validator: a finite ``float`` (or ``int``) number of seconds > 0."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise SettingError(attribute.name, value, "must be a number of seconds")
    if not (math.isfinite(value) and value > 0):
        raise SettingError(attribute.name, value, "must be finite and > 0 seconds")


def positive_seconds_or_inf(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """An attrs validator: a number of seconds > 0, or ``math.inf`` for no limit (not NaN)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise SettingError(attribute.name, value, "must be a number of seconds")
    if not value > 0:  # NaN compares false too
        raise SettingError(attribute.name, value, "must be > 0 seconds, or inf for no limit")


def one_of(*choices: str) -> _Validator:
    """An attrs validator: one of *choices*."""

    def check(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value not in choices:
            listed = ", ".join(repr(c) for c in choices)
            raise SettingError(attribute.name, value, f"must be one of {listed}")

    return check


def a_str(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """An attrs validator: a ``str``."""
    if not isinstance(value, str):
        raise SettingError(attribute.name, value, "must be a str")


# -- the foundation's schema ----------------------------------------------


@attrs.frozen
class EventsSettings:
    """The event store's settings (``events.*``)."""

    max_events: int = setting(100_000, updatable=True, validator=at_least(1))
    """Events retained; the oldest are pruned beyond it (updatable)."""
    max_age_s: float = setting(3600.0, updatable=True, validator=positive_seconds_or_inf)
    """Seconds an event is retained (updatable); ``math.inf`` (``inf`` in TOML and the
    environment) for no age limit. NaN and values <= 0 are rejected."""
    max_data_bytes: int = setting(1_000_000, validator=at_least(1))
    """Largest encoded ``data`` of one event, in bytes; larger events are rejected."""
    prune_interval_s: float = setting(60.0, validator=positive_seconds)
    """Seconds between runs of the periodic retention task."""
    subscriber_buffer: int = setting(1_000, validator=at_least(1))
    """Default buffer of a live event subscription."""
    client_buffer: int = setting(10_000, validator=at_least(1))
    """Writes a client buffers while the store restarts."""
    backend: Literal["memory", "sqlite"] = setting("memory", validator=one_of("memory", "sqlite"))
    """Where events are kept: ``"memory"`` or ``"sqlite"`` (durable)."""
    sqlite_path: str = setting("trioscope-events.db", validator=a_str)
    """The SQLite database file, for ``backend = "sqlite"``."""

    def __attrs_post_init__(self) -> None:
        # A cross-field rule: checked on every construction, updates included.
        if self.backend == "sqlite" and not self.sqlite_path:
            raise SettingError(
                "sqlite_path", self.sqlite_path, "must not be empty when backend is 'sqlite'"
            )


@attrs.frozen
class ConfigSettings:
    """The config server's own settings (``config.*``)."""

    subscriber_buffer: int = setting(1_000, validator=at_least(1))
    """Default buffer of a config subscription."""
    retry_initial_s: float = setting(0.05, validator=positive_seconds)
    """First delay before retrying an update queued while the server restarts."""
    retry_max_s: float = setting(2.0, validator=positive_seconds)
    """Longest delay between retries (the delay doubles up to it, with jitter)."""

    def __attrs_post_init__(self) -> None:
        if self.retry_initial_s > self.retry_max_s:
            raise SettingError(
                "retry_initial_s",
                self.retry_initial_s,
                f"must be <= retry_max_s ({self.retry_max_s!r})",
            )


@attrs.frozen
class TelemetrySettings:
    """The telemetry service's settings (``telemetry.*``)."""

    window_s: float = setting(60.0, updatable=True, validator=positive_seconds)
    """Seconds of history that aggregates cover (updatable)."""
    buffer_size: int = setting(10_000, validator=at_least(1))
    """Measurements buffered before aggregation."""


@attrs.frozen
class FoundationConfig:
    """The default schema: the foundation services' own settings."""

    events: EventsSettings = attrs.field(factory=EventsSettings)
    """The event store."""
    config: ConfigSettings = attrs.field(factory=ConfigSettings)
    """The config server itself."""
    telemetry: TelemetrySettings = attrs.field(factory=TelemetrySettings)
    """Telemetry aggregation."""


# -- introspection: paths, updatable, replacing one path --------------------


def is_updatable(field: attrs.Attribute[Any]) -> bool:
    """Whether *field* was declared with ``setting(..., updatable=True)``."""
    metadata: Mapping[str, object] = field.metadata
    return metadata.get(UPDATABLE) is True


@attrs.frozen
class _Node:
    """One path of a schema: a section or a setting."""

    path: str
    name: str
    alias: str  # the __init__ argument (attrs' alias: "_x" -> "x")
    kind: Any  # the field's type
    section: type[Any] | None  # the attrs class, for a section
    updatable: bool  # declared so, or inside a section declared so
    default: Callable[[], object] | None  # the field's default, if it has one


_NO_VALUE: Final = object()
_FACTORY: Final[type[Any]] = type(attrs.Factory(list))  # a function, to type checkers


class _BuildError(Exception):
    """A class of the tree refused its arguments (a validator or a cross-field rule)."""

    def __init__(self, prefix: str, given: Mapping[str, object], cause: Exception) -> None:
        super().__init__(str(cause))
        self.prefix = prefix
        self.given = given  # path -> value set at this level
        self.cause = cause


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _default_of(field: attrs.Attribute[Any]) -> Callable[[], object] | None:
    default: Any = field.default
    if default is attrs.NOTHING:
        return None
    if isinstance(default, _FACTORY):
        if default.takes_self:
            return None  # depends on the instance: build the section from scratch
        factory: Callable[[], object] = default.factory
        return factory
    return lambda: default


class Schema:
    """What the loader and the server need to know about a schema class (cached per class)."""

    __slots__ = ("_children", "_descendants", "cls", "nodes", "updatable")

    def __init__(self, cls: type[Any]) -> None:
        given: object = cls  # callers without type checking can pass anything
        if not (isinstance(given, type) and attrs.has(given)):
            raise TypeError(
                f"a configuration schema must be an attrs class, got {cls!r}; "
                "decorate it with @attrs.frozen"
            )
        self.cls = cls
        self.nodes: dict[str, _Node] = {}
        # path -> its direct children's names (for a section; "" is the root).
        self._children: dict[str, tuple[str, ...]] = {}
        self._walk(cls, "", inherited=False, seen=(cls,))
        # path -> every path inside it, for rebuilding a snapshot's flat view.
        self._descendants: dict[str, tuple[str, ...]] = {
            path: tuple(p for p in self.nodes if p.startswith(path + ".")) for path in self.nodes
        }
        self.updatable = frozenset(p for p, node in self.nodes.items() if node.updatable)

    def __repr__(self) -> str:
        return f"<Schema {self.cls.__qualname__} {len(self.nodes)} paths>"

    def _walk(
        self, cls: type[Any], prefix: str, *, inherited: bool, seen: tuple[type, ...]
    ) -> None:
        attrs.resolve_types(cls)
        names = []
        for field in attrs.fields(cls):
            if not field.init:
                continue
            path = _join(prefix, field.name)
            ftype: Any = field.type
            section = ftype if isinstance(ftype, type) and attrs.has(ftype) else None
            if section is not None and section in seen:
                raise TypeError(f"the schema is recursive at {path!r} ({section.__qualname__})")
            updatable = inherited or is_updatable(field)
            self.nodes[path] = _Node(
                path, field.name, field.alias or field.name, ftype, section, updatable,
                _default_of(field),
            )  # fmt: skip
            names.append(field.name)
            if section is not None:
                self._walk(section, path, inherited=updatable, seen=(*seen, section))
        self._children[prefix] = tuple(names)

    def node(self, path: str) -> _Node:
        """The node at *path*.

        Raises:
            UnknownConfigPathError: no such path (naming the nearest ones).
        """
        node = self.nodes.get(path)
        if node is None:
            raise self.unknown(path)
        return node

    def unknown(self, path: object) -> UnknownConfigPathError:
        """The error for an unknown *path*, with the nearest valid paths."""
        text = path if isinstance(path, str) else repr(path)
        nearest = difflib.get_close_matches(text, list(self.nodes), n=3, cutoff=0.6)
        if not nearest:
            # "max_events" alone: the paths that end with it.
            tail = text.rsplit(".", 1)[-1]
            nearest = [p for p in self.nodes if p.rsplit(".", 1)[-1] == tail][:3]
        return UnknownConfigPathError(text, nearest)

    def flat(self, config: object) -> dict[str, object]:
        """Every path of *config* (sections and settings) mapped to its value."""
        out: dict[str, object] = {}
        self._flatten(config, "", out)
        return out

    def _flatten(self, obj: object, prefix: str, out: dict[str, object]) -> None:
        for name in self._children[prefix]:
            path = _join(prefix, name)
            value = getattr(obj, name)
            out[path] = value
            if path in self._children:
                self._flatten(value, path, out)

    def flat_after(self, old: Mapping[str, object], config: object, path: str) -> dict[str, object]:
        """`flat` of *config*, which differs from *old*'s config only at *path* (and above)."""
        flat = dict(old)
        parts = path.split(".")
        obj = config
        for i, part in enumerate(parts):
            obj = getattr(obj, part)
            flat[".".join(parts[: i + 1])] = obj
        for inner in self._descendants[path]:
            value: object = obj
            for part in inner[len(path) + 1 :].split("."):
                value = getattr(value, part)
            flat[inner] = value
        return flat

    def build(
        self,
        overrides: Mapping[tuple[str, ...], object],
        base: object = None,
    ) -> object:
        """A new configuration: *base* (or the schema's defaults) with *overrides* applied.

        *overrides* maps path parts to values already structured to their
        type; an ancestor and its descendants may both be present (the
        descendants apply on top of it). Every class on the way is built once.

        Raises:
            _BuildError: a validator or a cross-field rule refused.
        """
        return self._make(self.cls, base, overrides, "")

    def _make(
        self,
        cls: type[Any],
        base: object,
        overrides: Mapping[tuple[str, ...], object],
        prefix: str,
    ) -> object:
        whole = overrides.get((), _NO_VALUE)
        if whole is not _NO_VALUE:
            base = whole
            if len(overrides) == 1:
                return base
        groups: dict[str, dict[tuple[str, ...], object]] = {}
        for parts, value in overrides.items():
            if parts:
                groups.setdefault(parts[0], {})[parts[1:]] = value
        kwargs: dict[str, object] = {}
        given: dict[str, object] = {}
        for name, inner in groups.items():
            node = self.nodes[_join(prefix, name)]
            if len(inner) == 1 and () in inner:
                kwargs[node.alias] = given[node.path] = inner[()]
                continue
            assert node.section is not None  # only sections have paths below them
            if base is not None:
                child: object = getattr(base, name)
            else:
                child = node.default() if node.default is not None else None
            kwargs[node.alias] = self._make(node.section, child, inner, node.path)
        try:
            if base is None:
                return cls(**kwargs)
            return attrs.evolve(cast(Any, base), **kwargs) if kwargs else base
        except (ValueError, TypeError) as exc:
            raise _BuildError(prefix, given, exc) from exc


_schemas: dict[type[Any], Schema] = {}


def schema_of(cls: type[Any]) -> Schema:
    """The (cached) `Schema` of *cls*.

    Raises:
        TypeError: *cls* is not an attrs class, or its tree is recursive.
    """
    schema = _schemas.get(cls)
    if schema is None:
        schema = _schemas[cls] = Schema(cls)
    return schema


def updatable_paths(cls: type[Any]) -> frozenset[str]:
    """The dotted paths of schema *cls* that may change at run time (settings and sections)."""
    return schema_of(cls).updatable


# -- structuring values (cattrs) ----------------------------------------------


def _strict_int(value: object, _: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise TypeError("must be an int")


def _strict_float(value: object, _: object) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise TypeError("must be a number")


def _strict_str(value: object, _: object) -> str:
    if isinstance(value, str):
        return value
    raise TypeError("must be a str")


def _strict_bool(value: object, _: object) -> bool:
    if isinstance(value, bool):
        return value
    raise TypeError("must be a bool")


def _is_literal(kind: object) -> bool:
    return get_origin(kind) is Literal


def _strict_literal(value: object, kind: object) -> object:
    choices = get_args(kind)
    if value in choices and any(type(value) is type(c) for c in choices if c == value):
        return value
    raise ValueError(f"must be one of {', '.join(repr(c) for c in choices)}")


def _make_converter() -> cattrs.Converter:
    # cattrs' defaults call int(value), str(value)...: "5" would become 5 and
    # 5.9 would become 5. Configuration is strict: a value has the field's type
    # (an int is accepted for a float); a mapping for a section has no unknown keys.
    converter = cattrs.Converter(forbid_extra_keys=True)
    converter.register_structure_hook(int, _strict_int)
    converter.register_structure_hook(float, _strict_float)
    converter.register_structure_hook(str, _strict_str)
    converter.register_structure_hook(bool, _strict_bool)
    converter.register_structure_hook_func(_is_literal, _strict_literal)
    return converter


converter: Final = _make_converter()
"""The cattrs converter that structures configuration values (strictly typed)."""

_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})


def _cattrs_message(exc: BaseException, kind: type | None) -> str:
    # A validator's (or a cross-field rule's) own message says more than cattrs'
    # "invalid value": keep it.
    if kind is None and isinstance(exc, (ValueError, TypeError)) and str(exc):
        return str(exc)
    return format_exception(exc, kind)


def _rule_of(exc: Exception) -> str:
    if isinstance(exc, cattrs.BaseValidationError):
        messages = cattrs.transform_error(exc, format_exception=_cattrs_message)
        return "; ".join(m.removesuffix(" @ $") for m in messages)
    if isinstance(exc, CattrsError):
        return str(exc)
    if isinstance(exc, SettingError):
        return exc.rule
    return str(exc) or type(exc).__name__


def structure(node: _Node, value: object) -> object:
    """*value* as *node*'s type (an attrs instance passes as is, for a section).

    Raises:
        ConfigRejected: it does not fit the type.
    """
    section = node.section
    if section is not None:
        if isinstance(value, section):
            return value
        if not isinstance(value, Mapping):
            rule = f"must be a mapping of its settings (or a {section.__qualname__})"
            raise ConfigRejected(node.path, value, rule)
    try:
        return converter.structure(value, node.kind)
    except (ValueError, TypeError, CattrsError) as exc:
        # A validator inside a section names its own field: keep that.
        inner = section is not None and isinstance(exc, SettingError)
        raise ConfigRejected(node.path, value, str(exc) if inner else _rule_of(exc)) from exc


def structure_env(node: _Node, raw: str) -> object:
    """*raw* (an environment variable's text) as *node*'s type.

    ``int``, ``float`` and ``str`` settings take the text as Python would
    read it; ``bool`` takes ``1/true/yes/on`` and ``0/false/no/off`` (any
    case); a ``Literal`` of strings takes the text; anything else (a section,
    a list, an optional) is read as JSON first.

    Raises:
        ConfigRejected: it does not parse, or does not fit the type.
    """
    kind = node.kind
    try:
        if kind is str:
            return raw
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        if kind is bool:
            text = raw.strip().lower()
            if text in _TRUE or text in _FALSE:
                return text in _TRUE
            raise ValueError("must be a bool (1/true/yes/on or 0/false/no/off)")
        if get_origin(kind) is Literal and all(isinstance(a, str) for a in get_args(kind)):
            return converter.structure(raw, kind)
    except (ValueError, TypeError, CattrsError) as exc:
        rule = _rule_of(exc)
        if kind in (int, float):
            rule = f"must be {'an int' if kind is int else 'a number'}"
        raise ConfigRejected(node.path, raw, rule) from exc
    try:
        parsed = json.loads(raw)
    except ValueError as exc:
        raise ConfigRejected(node.path, raw, f"must be JSON for a {kind!r} ({exc})") from exc
    return structure(node, parsed)


# -- sources -----------------------------------------------------------------

Overrides = dict[tuple[str, ...], object]
"""Path parts -> structured value, in the order they were given."""

DEFAULT_ENV_PREFIX: Final = "TRIOSCOPE"
"""Environment variables ``TRIOSCOPE__<SECTION>__<SETTING>`` override the configuration."""
DEFAULT_ENV_SEPARATOR: Final = "__"
"""Between the prefix and each path part of an environment variable's name."""


def _put(overrides: Overrides, parts: tuple[str, ...], value: object) -> None:
    # A later value wins: it replaces the same path and everything set inside it.
    n = len(parts)
    for key in [k for k in overrides if k[:n] == parts]:
        del overrides[key]
    overrides[parts] = value


def from_mapping(schema: Schema, values: Mapping[str, object], overrides: Overrides) -> None:
    """Add *values* (nested mappings by section, or dotted keys) to *overrides*.

    Raises:
        UnknownConfigPathError: a key that is not a path of the schema.
        ConfigRejected: a value that does not fit its setting's type.
    """
    _from_mapping(schema, "", values, overrides)


def _from_mapping(
    schema: Schema, prefix: str, values: Mapping[str, object], overrides: Overrides
) -> None:
    for key, value in values.items():
        if not isinstance(key, str):
            raise schema.unknown(f"{prefix}.{key!r}" if prefix else key)
        node = schema.node(_join(prefix, key))
        if node.section is not None and isinstance(value, Mapping):
            _from_mapping(schema, node.path, value, overrides)
        else:
            _put(overrides, tuple(node.path.split(".")), structure(node, value))


def parse_toml(text: str, source: str) -> dict[str, object]:
    """The table of TOML *text* (read from *source*, for the message).

    Raises:
        ConfigRejected: not valid TOML.
    """
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigRejected("", source, f"not valid TOML ({exc})") from exc


def from_env(
    schema: Schema,
    env: Mapping[str, str],
    prefix: str,
    separator: str,
    overrides: Overrides,
) -> None:
    """Add the environment variables named ``<prefix><separator><PATH>`` to *overrides*.

    ``TRIOSCOPE__EVENTS__MAX_EVENTS=5000`` sets ``events.max_events`` to
    ``5000``: the name after the prefix, lower-cased, with the separator
    read as a dot. Variables are read in sorted order. A variable under the
    prefix that names no path is an error, never ignored (a typo would
    otherwise silently keep the default).

    Raises:
        UnknownConfigPathError: a variable under the prefix names no path.
        ConfigRejected: a value that does not parse or fit its setting.
    """
    head = prefix + separator
    for name in sorted(env):
        if not name.startswith(head):
            continue
        path = ".".join(name[len(head) :].lower().split(separator))
        node = schema.nodes.get(path)
        if node is None:
            error = schema.unknown(path)
            error.source = f"the environment variable {name}"
            raise error
        try:
            value = structure_env(node, env[name])
        except ConfigRejected as exc:
            exc.source = f"the environment variable {name}"
            raise
        _put(overrides, tuple(path.split(".")), value)


def load(schema: Schema, overrides: Overrides) -> object:
    """Build the configuration from the defaults and *overrides*.

    Raises:
        ConfigRejected: a validator or cross-field rule refused (naming the path).
    """
    try:
        return schema.build(overrides)
    except _BuildError as exc:
        cause = exc.cause
        if isinstance(cause, SettingError):
            path = _join(exc.prefix, cause.name)
            raise ConfigRejected(path, cause.value, cause.rule) from cause
        if len(exc.given) == 1:
            ((path, value),) = exc.given.items()
        else:
            path, value = exc.prefix, dict(exc.given)
        raise ConfigRejected(path, value, _rule_of(cause)) from cause


def replace(schema: Schema, config: object, path: str, value: object) -> object:
    """*config* with *path* set to *value* (structured), validated as a whole.

    Raises:
        ConfigRejected: a validator or cross-field rule refused; *config* is untouched.
    """
    try:
        return schema.build({tuple(path.split(".")): value}, config)
    except _BuildError as exc:
        cause = exc.cause
        own = isinstance(cause, SettingError) and _join(exc.prefix, cause.name) == path
        rule = cause.rule if own and isinstance(cause, SettingError) else str(cause)
        raise ConfigRejected(path, value, rule) from cause
