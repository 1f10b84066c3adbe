"""`melissa-launcher --print-options`: every config key with its type, default and meaning."""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Iterator

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

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
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        models = _models_in(field.annotation)
        if models:
            title = f"{path}[]" if typing.get_origin(field.annotation) is list else path
            yield f"{title}  ({_default(field) if field.default_factory is None else 'section'})"
            for sub in models:
                tag = ""
                if "distribution" in sub.model_fields and title.endswith("[]"):
                    literal = sub.model_fields["distribution"].annotation
                    tag = f"  with distribution = {_type_name(literal)}"
                    yield f"  {title}{tag}"
                yield from option_lines(sub, f"{title}.")
            continue
        if name == "distribution":
            continue
        desc = field.description or ""
        indent = "  " if prefix else ""
        yield f"{indent}{path}: {_type_name(field.annotation)} = {_default(field)}  -- {desc}"


def print_options() -> None:
    seen: set[str] = set()
    for line in option_lines():
        if line not in seen:  # the parameter variants share their common keys
            print(line)
            seen.add(line)
