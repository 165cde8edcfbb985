"""Public names report their public module (as Trio's ``fixup_module_metadata``).

Tracebacks and reprs should say ``trioscope.ServiceCrashedError``, not
``trioscope._errors.ServiceCrashedError``. Rewriting ``__module__`` has a cost
Trio pays too: ``typing.get_type_hints`` evaluates string annotations (``from
__future__ import annotations``) in the globals of the module ``__module__``
names, which would then be the public package, where the private modules'
imports are missing. So a class's annotations are resolved first, while its
module is still the one that defined them (attrs classes through
`attrs.resolve_types`, which cattrs relies on).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping

import attrs


def _resolve_annotations(cls: type) -> None:
    own = inspect.get_annotations(cls)
    if not own:
        return
    try:
        # The class's own annotations only: a base class from another library
        # (Hypothesis's RuleBasedStateMachine) may have names that do not resolve.
        hints = inspect.get_annotations(cls, eval_str=True)
    except (NameError, TypeError):
        # Names only a type checker sees (under TYPE_CHECKING): leave them as strings.
        return
    cls.__annotations__ = {name: hints.get(name, value) for name, value in own.items()}
    if attrs.has(cls):
        attrs.resolve_types(cls)


def fixup_module_metadata(
    public: str, names: Iterable[str], namespace: Mapping[str, object], private: str = ""
) -> None:
    """Make each of *names* in *namespace* report module *public* (and its own name).

    Only names defined in the modules under *private* (default: *public*'s own
    private modules, ``public + "._"``) are rewritten.
    """
    private = private or public + "._"
    for name in names:
        obj = namespace[name]
        if not getattr(obj, "__module__", "").startswith(private):
            continue
        if isinstance(obj, type):
            _resolve_annotations(obj)
        try:
            obj.__module__ = public
        except (AttributeError, TypeError):
            continue
        if isinstance(obj, type):
            obj.__qualname__ = name
