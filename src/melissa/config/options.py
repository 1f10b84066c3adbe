"""`melissa-launcher --print-options`: every config key with its type, default and meaning."""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Iterator

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from melissa.config.melissa_compat import ACCEPTED, REFUSED, SAME_AS_MELISSA
from melissa.config.models import StudyConfig


def _models_in(annotation: object) -> list[type[BaseModel]]:
    """The config models an annotation refers to (directly, in a list, or in a union)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        found.extend(_models_in(arg))
    return found


def _type_name(annotation: object) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " | ".join(json.dumps(a) for a in typing.get_args(annotation))
    if origin is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    return str(annotation).replace("typing.", "")


def _default(field: FieldInfo) -> str:
    if field.default is not PydanticUndefined:
        return json.dumps(field.default, default=str)
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
        return json.dumps(value.model_dump() if isinstance(value, BaseModel) else value)
    return "required"


def option_lines(model: type[BaseModel] = StudyConfig, prefix: str = "") -> Iterator[str]:
    indent = "  " if prefix else ""
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        models = _models_in(field.annotation)
        if not models:
            mark = " [Melissa]" if path in SAME_AS_MELISSA else ""
            yield (f"{indent}{path}: {_type_name(field.annotation)} = {_default(field)}{mark}"
                   f"  -- {field.description or ''}")
            continue
        if typing.get_origin(field.annotation) is list:
            yield f"{path}[]  (list, {_default(field)}; one entry per {name[:-1]}, by type:)"
            for variant in models:
                yield from option_lines(variant, f"{path}[].")
        else:
            yield f"{path}  (section, {'required' if field.is_required() else 'optional'})"
            yield from option_lines(models[0], f"{path}.")


def melissa_lines() -> Iterator[str]:
    """Melissa's keys: [Melissa] above marks those shared as they are; these are the others."""
    yield ""
    yield "[Melissa]: the key has the same name and meaning in Melissa's config.json."
    yield "Melissa's keys accepted under another name (docs/migrating-from-melissa.md):"
    for path, becomes in ACCEPTED.items():
        yield f"  {path} -> {becomes}"
    yield "Melissa's keys refused (each with what to write instead):"
    for path, advice in REFUSED.items():
        yield f"  {path}: {advice}"


def print_options() -> None:
    for line in option_lines():
        print(line)
    for line in melissa_lines():
        print(line)
