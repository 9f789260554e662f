"""Product taxonomy and pair difficulty.

Pairs are graded by how far the target product is from the source product:
the same subcategory is easy, the same category medium, another category of
the same *form family* (a bracelet and a keychain both dangle from a chain)
hard, and anything else expert. The taxonomy is data, not code, so a catalog
can bring its own ``taxonomy.yaml``; the bundled one covers the usual Etsy
shelves.

Catalogs are typed by people, so names match case-insensitively with
surrounding and repeated whitespace ignored ("jewelry", " Jewelry "), while
records always carry the canonical spelling from the YAML.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Mapping, Sequence
from enum import Enum
from importlib import resources
from pathlib import Path

import yaml


class Difficulty(str, Enum):
    """How hard a source -> target swap is; the string value is what records store."""

    EASY = "easy"
    MEDIUM = "medium"
    HARD = "hard"
    EXPERT = "expert"

    @property
    def level(self) -> int:
        """0 (easy) .. 3 (expert): the ``difficulty_level`` column and curriculum order."""
        return list(Difficulty).index(self)

    @classmethod
    def from_level(cls, level: int) -> Difficulty:
        members = list(cls)
        if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level < len(members):
            raise ValueError(
                f"difficulty level must be an int in 0..{len(members) - 1}, got {level!r}"
            )
        return members[level]

    @classmethod
    def _missing_(cls, value: object) -> Difficulty | None:
        # Command lines and configs say "Hard" or " expert"; accept them.
        if isinstance(value, str):
            wanted = value.strip().lower()
            for member in cls:
                if member.value == wanted:
                    return member
        return None

    def __str__(self) -> str:
        return self.value


class TaxonomyError(ValueError):
    """A taxonomy file or mapping that cannot be used; ``problems`` lists every issue found."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = tuple(problems)
        if len(self.problems) == 1:
            message = f"{source}: {self.problems[0]}"
        else:
            lines = "\n".join(f"  - {p}" for p in self.problems)
            message = f"{source}: {len(self.problems)} problems:\n{lines}"
        super().__init__(message)


class UnknownCategoryError(ValueError):
    """A category or subcategory that the taxonomy does not list."""

    def __init__(self, message: str, category: str, subcategory: str | None) -> None:
        super().__init__(message)
        self.category = category
        self.subcategory = subcategory


def _key(name: str) -> str:
    return " ".join(name.split()).casefold()


def _suggest(name: str, known: Sequence[str]) -> str:
    by_key = {_key(k): k for k in known}
    close = difflib.get_close_matches(_key(name), list(by_key), n=1, cutoff=0.75)
    return f" (did you mean {by_key[close[0]]!r}?)" if close else ""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys, which PyYAML would silently collapse."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen: set[object] = set()
    for key_node, _ in node.value:
        if isinstance(key_node, yaml.ScalarNode):
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class Taxonomy:
    """Categories, their subcategories and each subcategory's form family (immutable)."""

    def __init__(self, categories: Mapping[str, Mapping[str, str]], source: str) -> None:
        # Callers go through from_mapping / from_yaml / default, which validate first.
        self.source = source
        self._categories: dict[str, tuple[str, dict[str, tuple[str, str]]]] = {
            _key(cat): (cat, {_key(sub): (sub, fam) for sub, fam in subs.items()})
            for cat, subs in categories.items()
        }

    @classmethod
    def default(cls) -> Taxonomy:
        """The taxonomy bundled with pvtt (``pvtt/schemas/taxonomy.yaml``)."""
        return _default_taxonomy()

    @classmethod
    def from_yaml(cls, path: str | Path) -> Taxonomy:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            raise TaxonomyError(
                str(path), [f"not UTF-8 text ({exc.reason} at byte {exc.start})"]
            ) from exc
        except OSError as exc:
            raise TaxonomyError(str(path), [f"cannot read: {exc.strerror or exc}"]) from exc
        return cls._from_text(text, str(path))

    @classmethod
    def _from_text(cls, text: str, source: str) -> Taxonomy:
        try:
            data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}: " if mark is not None else ""
            reason = getattr(exc, "problem", None) or str(exc)
            raise TaxonomyError(source, [f"{where}invalid YAML: {reason}"]) from exc
        return cls.from_mapping(data, source=source)

    @classmethod
    def from_mapping(cls, data: object, *, source: str = "taxonomy mapping") -> Taxonomy:
        """Validate ``{"categories": {Category: {subcategory: form_family}}}``; every issue is reported."""
        problems: list[str] = []
        if not isinstance(data, Mapping) or "categories" not in data:
            raise TaxonomyError(
                source,
                [
                    "must be a mapping with a 'categories' key: {categories: {Category: {sub: family}}}"
                ],
            )
        problems += [
            f"unknown key {k!r} (only 'categories' is read)" for k in data if k != "categories"
        ]
        raw = data["categories"]
        if not isinstance(raw, Mapping) or not raw:
            raise TaxonomyError(
                source, [*problems, "categories: must be a non-empty mapping of category names"]
            )

        categories: dict[str, dict[str, str]] = {}
        seen_categories: dict[str, str] = {}
        for cat, subs in raw.items():
            if not isinstance(cat, str) or not cat.strip():
                problems.append(f"categories: category name {cat!r} must be a non-empty string")
                continue
            name = cat.strip()
            if _key(name) in seen_categories:
                problems.append(
                    f"categories: {seen_categories[_key(name)]!r} and {cat!r} name the same category "
                    "(names match case-insensitively)"
                )
                continue
            seen_categories[_key(name)] = cat
            if not isinstance(subs, Mapping) or not subs:
                problems.append(
                    f"categories.{name}: must be a non-empty mapping of subcategory to form family, "
                    "e.g. {necklace: chain}"
                )
                continue
            entries: dict[str, str] = {}
            seen_subs: dict[str, str] = {}
            for sub, family in subs.items():
                if not isinstance(sub, str) or not sub.strip():
                    problems.append(
                        f"categories.{name}: subcategory name {sub!r} must be a non-empty string"
                    )
                    continue
                sub_name = sub.strip()
                if _key(sub_name) in seen_subs:
                    problems.append(
                        f"categories.{name}: {seen_subs[_key(sub_name)]!r} and {sub!r} name the same "
                        "subcategory (names match case-insensitively)"
                    )
                    continue
                seen_subs[_key(sub_name)] = sub
                if not isinstance(family, str) or not family.strip():
                    problems.append(
                        f"categories.{name}.{sub_name}: form family must be a non-empty string, "
                        f"got {family!r}"
                    )
                    continue
                entries[sub_name] = family.strip()
            categories[name] = entries
        if problems:
            raise TaxonomyError(source, problems)
        return cls(categories, source)

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(cat for cat, _ in self._categories.values())

    def subcategories(self, category: str) -> tuple[str, ...]:
        _, subs = self._category(category)
        return tuple(sub for sub, _ in subs.values())

    def resolve(self, category: str, subcategory: str) -> tuple[str, str]:
        """Canonical ``(category, subcategory)`` spelling; raises UnknownCategoryError."""
        cat, sub, _ = self._entry(category, subcategory)
        return cat, sub

    def has(self, category: str, subcategory: str) -> bool:
        try:
            self._entry(category, subcategory)
        except UnknownCategoryError:
            return False
        return True

    def form_family(self, category: str, subcategory: str) -> str:
        return self._entry(category, subcategory)[2]

    def difficulty(
        self, src_category: str, src_subcategory: str, tgt_category: str, tgt_subcategory: str
    ) -> Difficulty:
        src_cat, src_sub, src_family = self._entry(src_category, src_subcategory)
        tgt_cat, tgt_sub, tgt_family = self._entry(tgt_category, tgt_subcategory)
        if src_cat == tgt_cat:
            return Difficulty.EASY if src_sub == tgt_sub else Difficulty.MEDIUM
        if _key(src_family) == _key(tgt_family):
            return Difficulty.HARD
        return Difficulty.EXPERT

    def to_mapping(self) -> dict[str, dict[str, dict[str, str]]]:
        """The file format again, e.g. to record the taxonomy a build used in its manifest."""
        return {
            "categories": {
                cat: {sub: family for sub, family in subs.values()}
                for cat, subs in self._categories.values()
            }
        }

    def _category(self, category: str) -> tuple[str, dict[str, tuple[str, str]]]:
        found = self._categories.get(_key(category)) if isinstance(category, str) else None
        if found is None:
            known = self.categories
            raise UnknownCategoryError(
                f"unknown category {category!r}{_suggest(str(category), known)}; "
                f"known in {self.source}: {', '.join(known)}",
                category=category,
                subcategory=None,
            )
        return found

    def _entry(self, category: str, subcategory: str) -> tuple[str, str, str]:
        cat, subs = self._category(category)
        found = subs.get(_key(subcategory)) if isinstance(subcategory, str) else None
        if found is None:
            known = [sub for sub, _ in subs.values()]
            raise UnknownCategoryError(
                f"unknown subcategory {subcategory!r} of {cat}{_suggest(str(subcategory), known)}; "
                f"known in {self.source}: {', '.join(known)}",
                category=cat,
                subcategory=subcategory,
            )
        return cat, found[0], found[1]

    def __eq__(self, other: object) -> bool:
        # Same names, spellings and families; where it was read from does not matter.
        if not isinstance(other, Taxonomy):
            return NotImplemented
        return self._frozen() == other._frozen()

    def __hash__(self) -> int:
        return hash(self._frozen())

    def _frozen(self) -> tuple:
        return tuple((cat, tuple(subs.values())) for cat, subs in self._categories.values())

    def __repr__(self) -> str:
        return f"Taxonomy({len(self._categories)} categories from {self.source})"


@functools.lru_cache(maxsize=1)
def _default_taxonomy() -> Taxonomy:
    text = resources.files("pvtt.schemas").joinpath("taxonomy.yaml").read_text(encoding="utf-8")
    return Taxonomy._from_text(text, "the bundled taxonomy.yaml")
