"""The bundled taxonomy, its loader's validation, and pair difficulty."""

from __future__ import annotations

import itertools
import json
from collections import Counter, defaultdict

import pytest
from catalog_factory import make_catalog

from pvtt.builder.catalog import check_catalog
from pvtt.schemas.taxonomy import Difficulty, Taxonomy, TaxonomyError, UnknownCategoryError

SEED_CATEGORIES = ("Jewelry", "Toys", "Home", "Clothing")  # the four the seed plan names


@pytest.fixture(scope="module")
def taxonomy() -> Taxonomy:
    return Taxonomy.default()


def test_default_covers_eleven_categories_with_several_subcategories(taxonomy: Taxonomy) -> None:
    assert len(taxonomy.categories) >= 11
    assert set(SEED_CATEGORIES) <= set(taxonomy.categories)
    for category in taxonomy.categories:
        assert len(taxonomy.subcategories(category)) >= 4, category


def test_every_form_family_spans_two_categories(taxonomy: Taxonomy) -> None:
    """Otherwise a family could never give a hard pair."""
    categories_of = defaultdict(set)
    for category in taxonomy.categories:
        for sub in taxonomy.subcategories(category):
            categories_of[taxonomy.form_family(category, sub)].add(category)
    assert len(categories_of) >= 10
    lonely = {family for family, cats in categories_of.items() if len(cats) < 2}
    assert not lonely


def test_every_difficulty_happens_with_default(taxonomy: Taxonomy) -> None:
    entries = [(c, s) for c in taxonomy.categories for s in taxonomy.subcategories(c)]
    counts = Counter(
        taxonomy.difficulty(*src, *tgt) for src, tgt in itertools.product(entries, repeat=2)
    )
    assert set(counts) == set(Difficulty)
    # Same-entry pairs are exactly the easy ones.
    assert counts[Difficulty.EASY] == len(entries)
    # Many hard pairs, but expert stays the common cross-category case.
    assert counts[Difficulty.HARD] > len(entries)
    assert counts[Difficulty.EXPERT] > counts[Difficulty.HARD]


@pytest.mark.parametrize(
    ("source", "target", "expected"),
    [
        (("Jewelry", "necklace"), ("Jewelry", "necklace"), Difficulty.EASY),
        (("Jewelry", "necklace"), ("Jewelry", "bracelet"), Difficulty.MEDIUM),
        (("Jewelry", "bracelet"), ("Accessories", "keychain"), Difficulty.HARD),
        (("Home", "mug"), ("Beauty", "cream jar"), Difficulty.HARD),
        (("Jewelry", "watch"), ("Pet Supplies", "collar"), Difficulty.HARD),
        (("Jewelry", "necklace"), ("Toys", "stuffed animal"), Difficulty.EXPERT),
        (("Home", "mug"), ("Clothing", "dress"), Difficulty.EXPERT),
    ],
)
def test_difficulty_examples(taxonomy: Taxonomy, source, target, expected) -> None:
    assert taxonomy.difficulty(*source, *target) is expected


def test_names_match_case_and_space_insensitively(taxonomy: Taxonomy) -> None:
    assert taxonomy.resolve(" jewelry ", "NECKLACE") == ("Jewelry", "necklace")
    assert taxonomy.resolve("craft  supplies", "Jewelry Findings") == (
        "Craft Supplies",
        "jewelry findings",
    )
    assert taxonomy.has("pet supplies", "Pet Bowl")
    assert taxonomy.form_family("HOME", " mug") == "vessel"
    assert taxonomy.difficulty("jewelry", "Necklace", "JEWELRY", "necklace") is Difficulty.EASY


def test_unknown_category_names_the_known_ones(taxonomy: Taxonomy) -> None:
    with pytest.raises(UnknownCategoryError) as info:
        taxonomy.form_family("Jewlery", "ring")
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "'Jewlery'" in message and "did you mean 'Jewelry'" in message
    assert all(category in message for category in taxonomy.categories)
    assert info.value.subcategory is None
    assert not taxonomy.has("Jewlery", "ring")


def test_unknown_subcategory_names_the_categorys_subcategories(taxonomy: Taxonomy) -> None:
    with pytest.raises(UnknownCategoryError) as info:
        taxonomy.difficulty("Jewelry", "neckalce", "Toys", "doll")
    message = str(info.value)
    assert "'neckalce'" in message and "Jewelry" in message and "did you mean 'necklace'" in message
    assert all(sub in message for sub in taxonomy.subcategories("Jewelry"))
    assert "stuffed animal" not in message
    assert (info.value.category, info.value.subcategory) == ("Jewelry", "neckalce")
    assert not taxonomy.has("Jewelry", "neckalce")


def test_difficulty_enum() -> None:
    assert [d.value for d in Difficulty] == ["easy", "medium", "hard", "expert"]
    assert [d.level for d in Difficulty] == [0, 1, 2, 3]
    assert all(Difficulty.from_level(d.level) is d for d in Difficulty)
    assert Difficulty(" Hard") is Difficulty.HARD
    assert str(Difficulty.EXPERT) == "expert" and f"{Difficulty.MEDIUM}" == "medium"
    assert json.dumps({"d": Difficulty.EASY}) == '{"d": "easy"}'
    for bad in (-1, 4, True, "1"):
        with pytest.raises(ValueError):
            Difficulty.from_level(bad)
    with pytest.raises(ValueError):
        Difficulty("trivial")


def test_from_mapping_round_trip(taxonomy: Taxonomy) -> None:
    again = Taxonomy.from_mapping(taxonomy.to_mapping())
    assert again.to_mapping() == taxonomy.to_mapping()
    assert again == taxonomy and hash(again) == hash(taxonomy) and again is not taxonomy
    changed = taxonomy.to_mapping()
    changed["categories"]["Jewelry"]["ring"] = "chain"
    assert Taxonomy.from_mapping(changed) != taxonomy
    assert again.categories == taxonomy.categories


def test_from_mapping_reports_every_problem_at_once() -> None:
    bad = {
        "categories": {
            "Jewelry": {"necklace": "chain", "ring": 3, "": "chain", "bracelet": "  "},
            "jewelry ": {"anklet": "chain"},
            "Toys": {},
            "": {"x": "y"},
            7: {"x": "y"},
        },
        "version": 2,
    }
    with pytest.raises(TaxonomyError) as info:
        Taxonomy.from_mapping(bad, source="mine.yaml")
    problems = info.value.problems
    assert len(problems) == 8, problems
    message = str(info.value)
    assert message.startswith("mine.yaml: 8 problems")
    assert "categories.Jewelry.ring: form family must be a non-empty string, got 3" in message
    assert "categories.Jewelry.bracelet" in message
    assert "name the same category" in message
    assert "categories.Toys: must be a non-empty mapping" in message
    assert "unknown key 'version'" in message


@pytest.mark.parametrize("data", [None, [], {"Jewelry": {"ring": "x"}}, {"categories": {}}])
def test_from_mapping_rejects_wrong_shapes(data) -> None:
    with pytest.raises(TaxonomyError, match="categories"):
        Taxonomy.from_mapping(data)


def test_from_yaml_errors_name_the_file(tmp_path) -> None:
    path = tmp_path / "tax.yaml"
    path.write_text("categories:\n  Jewelry: {ring: [a, b}\n", encoding="utf-8")
    with pytest.raises(TaxonomyError, match=r"tax\.yaml: line 2: invalid YAML"):
        Taxonomy.from_yaml(path)
    path.write_text("categories:\n  Jewelry:\n    ring: chain\n    ring: box\n", encoding="utf-8")
    with pytest.raises(
        TaxonomyError, match=r"tax\.yaml: line 4: invalid YAML: duplicate key 'ring'"
    ):
        Taxonomy.from_yaml(path)
    path.write_bytes(b"categories:\n  Jewel\xe9ry: {ring: x}\n")
    with pytest.raises(TaxonomyError, match=r"tax\.yaml: not UTF-8"):
        Taxonomy.from_yaml(path)
    with pytest.raises(TaxonomyError, match=r"missing\.yaml: cannot read"):
        Taxonomy.from_yaml(tmp_path / "missing.yaml")


def test_from_yaml_keeps_canonical_names(tmp_path) -> None:
    path = tmp_path / "tax.yaml"
    path.write_text(
        "\ufeffcategories:\n  Gadgets: {Widget: device, gizmo: device}\n  Home: {mug: vessel}\n",
        encoding="utf-8",
    )
    taxonomy = Taxonomy.from_yaml(path)
    assert taxonomy.source == str(path)
    assert taxonomy.resolve("gadgets", "widget") == ("Gadgets", "Widget")
    assert taxonomy.difficulty("gadgets", "WIDGET", "Gadgets", "gizmo") is Difficulty.MEDIUM
    assert taxonomy.difficulty("gadgets", "widget", "home", "mug") is Difficulty.EXPERT


def test_catalog_taxonomy_overrides_the_bundled_one(tmp_path) -> None:
    override = {
        "categories": {
            "Gadgets": {"widget": "device", "gizmo": "device"},
            "Jewelry": {"necklace": "chain", "charm": "device"},
        }
    }
    root = make_catalog(
        tmp_path / "cat",
        [
            {"id": "w1", "category": "gadgets", "subcategory": "Widget"},
            {"id": "g1", "category": "Gadgets", "subcategory": "gizmo"},
            {"id": "n1", "category": "Jewelry", "subcategory": "necklace"},
            {"id": "c1", "category": "Jewelry", "subcategory": "charm"},
            {"id": "t1", "category": "Toys", "subcategory": "doll"},
        ],
        images_per_product=1,
        taxonomy=override,
    )
    catalog, problems = check_catalog(root, check_media=False)
    assert [p.id for p in catalog] == ["w1", "g1", "n1", "c1"]
    assert catalog.products[0].category == "Gadgets"
    [problem] = problems
    assert (problem.row, problem.column) == (6, "category")
    assert "'Toys'" in problem.message and str(root / "taxonomy.yaml") in problem.message
    w1, g1, n1, c1 = catalog.products
    assert catalog.difficulty(w1, g1) is Difficulty.MEDIUM
    assert catalog.difficulty(w1, c1) is Difficulty.HARD  # charm is a device in this taxonomy
    assert catalog.difficulty(w1, n1) is Difficulty.EXPERT


def test_broken_catalog_taxonomy_is_reported_and_keeps_no_product(tmp_path) -> None:
    root = make_catalog(
        tmp_path / "cat",
        [
            {"id": "n1", "category": "Jewelry", "subcategory": "necklace"},
            {"id": "bad.id", "category": "Jewelry", "subcategory": "necklace"},
        ],
        images_per_product=1,
        taxonomy={"categories": {"Jewelry": {"necklace": None}}},
    )
    catalog, problems = check_catalog(root, check_media=False)
    assert len(catalog) == 0
    assert [str(p) for p in problems] == [
        "taxonomy.yaml: categories.Jewelry.necklace: form family must be a non-empty string, "
        "got None",
        "products.csv:3: id: 'bad.id' may hold only letters, digits, '_' and '-' "
        "(ids become WebDataset keys)",
    ]
