"""Showing and comparing configs: each field's doc read from its comment, the config as commented YAML
(``wm-jax config``), flat dotted keys, and the keys where two configs differ (resume checks)."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import yaml

from wm_jax.config import Config
from wm_jax.config_build import DECIMAL


def field_docs(cls: type) -> dict[str, str]:
    """Each field's doc, read from the comments of its definition (wm_jax/config.py): the comment lines just above a
    field and the comment after it on its line (with lines that continue that comment: they start lowercase or
    with '...'). A field without a comment has no entry."""
    import inspect

    lines, docs, above, last = inspect.getsourcelines(cls)[0], {}, [], None
    field = re.compile(r"^    (\w+): [^=]+=[^#]*(?:#\s?(.*))?$")
    for line in lines[1:]:
        text = line.rstrip()
        if text.strip().startswith("#"):
            comment = text.strip()[1:].strip()
            if last is not None and not above and (comment[:1].islower() or comment.startswith("...")):
                docs[last] = f"{docs[last]} {comment}"  # continues the previous field's trailing comment
            else:
                above.append(comment)
            continue
        m = field.match(text)
        if m:
            doc = " ".join([*above, m.group(2) or ""]).strip()
            if doc:
                docs[m.group(1)] = doc
            above, last = [], m.group(1) if m.group(2) else None
        elif text.strip():
            above, last = [], None
    return docs


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, str) and DECIMAL.fullmatch(value.strip()):
        return f"'{value}'"  # a string that YAML 1.2 would read as a number
    if isinstance(value, tuple):
        return yaml.safe_dump(list(value), default_flow_style=True, width=10_000).strip()
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return text.removesuffix("\n...").strip()


def _comment_lines(doc: str, indent: str, width: int = 116) -> list[str]:
    import textwrap

    return [f"{indent}# {line}" for line in textwrap.wrap(doc, width - len(indent) - 2)]


def format_config(cfg: Config) -> str:
    """The resolved config as YAML, every field with its doc as a comment (``wm-jax config show``).

    Round trip: writing this text to a file and ``load_config`` of that file gives a Config equal to `cfg`.
    A doc that fits goes after its value, a longer one above its key."""
    out = ["# wm-jax config, resolved (defaults < YAML file < overrides). Load it with --config FILE."]

    def section(obj: Any, indent: str) -> None:
        docs = field_docs(type(obj))
        for f in dataclasses.fields(obj):
            value, doc = getattr(obj, f.name), docs.get(f.name, "")
            if dataclasses.is_dataclass(value):
                sub_doc = " ".join((type(value).__doc__ or "").split())
                if sub_doc and not sub_doc.startswith(f"{type(value).__name__}("):  # not dataclass's signature
                    out.extend(_comment_lines(sub_doc, indent))
                out.append(f"{indent}{f.name}:")
                section(value, indent + "  ")
                continue
            line = f"{indent}{f.name}: {_yaml_scalar(value)}"
            if doc and len(line) + 4 + len(doc) <= 120:
                out.append(f"{line}  # {doc}")
            else:
                out.extend(_comment_lines(doc, indent) if doc else [])
                out.append(line)

    section(cfg, "")
    return "\n".join(out) + "\n"


def flatten(cfg: Config) -> dict[str, Any]:
    """Dotted key -> value of every field, e.g. ``{'vae.z_dim': 32, ...}``."""
    out: dict[str, Any] = {}

    def walk(d: dict, prefix: str) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                out[prefix + k] = v

    walk(cfg.to_dict(), "")
    return out


def config_diff(saved: Config, requested: Config) -> list[str]:
    """The dotted keys whose values differ between two configs, sorted, e.g. ``['es.generations', 'vae.z_dim']``."""
    a, b = flatten(saved), flatten(requested)
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
