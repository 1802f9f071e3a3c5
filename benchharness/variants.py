"""Method variants: a registered method run under another name with other settings.

A suite declares one as a section of its own with ``base``::

    [methods."bigan-112e"]
    base = "bigan"
    encoder_size = 112

The rule: a variant's settings are its base's suite section (``[methods.bigan]``, empty when
the suite has none) overlaid with the variant's own keys (``base`` itself removed). A base may
be another variant; the sections then overlay in chain order, from the registered method's
section down to the variant's. The registered method at the root of the chain pretrains it.

A variant is a method of its own everywhere else: its own jobs, representation cache entry,
result ``method`` (with ``base`` recorded beside it) and leaderboard row. A variant whose base
is neither a registered method nor another variant, a chain of bases that loops, or a variant
named like a registered method is an error naming the suite file.
"""

from __future__ import annotations

from dataclasses import dataclass

from .interfaces import BenchharnessError


@dataclass(frozen=True)
class ResolvedMethod:
    """A method name of a suite resolved to what runs it."""

    name: str
    """As the suite or ``--method`` names it (without a ``:ARG``)."""
    plugin: str
    """The registered method that pretrains it: ``name`` itself unless it is a variant."""
    base: str | None
    """The base the variant's section names; None for a registered method."""
    settings: dict
    """Its suite settings, the bases' sections overlaid (see the module docstring)."""


def declared_bases(sections: dict, where: str) -> dict[str, str]:
    """Variant name -> base for every ``[methods.NAME]`` section holding ``base``; checked
    for a base that is not a name, a name with ``:`` (the argument separator) and loops."""
    bases = {}
    for name, section in sections.items():
        if not isinstance(section, dict) or "base" not in section:
            continue
        base = section["base"]
        if not isinstance(base, str) or not base or ":" in base:
            raise BenchharnessError(f"{where}: [methods.\"{name}\"] base must be a method name, "
                                    f"got {base!r}")
        if ":" in name:
            raise BenchharnessError(f"{where}: [methods.\"{name}\"]: a variant's name may not hold "
                                    "':' (it separates a method from its argument)")
        bases[name] = base
    for name in bases:
        chain = [name]
        while chain[-1] in bases:
            chain.append(bases[chain[-1]])
            if chain[-1] in chain[:-1]:
                raise BenchharnessError(f"{where}: the bases of variant {name!r} loop: "
                                        + " -> ".join(chain))
    return bases


def resolve(name: str, sections: dict, bases: dict[str, str]) -> ResolvedMethod:
    """``name``'s plugin, declared base and overlaid settings (``bases`` from
    :func:`declared_bases`, so the chain is known to end)."""
    chain = [name]
    while chain[-1] in bases:
        chain.append(bases[chain[-1]])
    settings: dict = {}
    for link in reversed(chain):
        settings.update({k: v for k, v in sections.get(link, {}).items() if k != "base"})
    return ResolvedMethod(name, chain[-1], bases.get(name), settings)


def check_bases(bases: dict[str, str], registered: dict, where: str) -> None:
    """Every variant's chain of bases ends at a registered method, and no variant takes a
    registered method's name."""
    for name, base in bases.items():
        if name in registered:
            raise BenchharnessError(f"{where}: [methods.\"{name}\"] declares base = {base!r}, but "
                                    f"{name!r} is a registered method; give the variant a name of "
                                    "its own")
        root = base
        while root in bases:
            root = bases[root]
        if root not in registered:
            raise BenchharnessError(
                f"{where}: variant {name!r} has base {root!r}, which is neither a registered "
                f"method ({', '.join(sorted(registered))}) nor a variant of this suite "
                f"({', '.join(sorted(bases))})")
