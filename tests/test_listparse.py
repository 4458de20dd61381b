"""Tests for factory.attributes.listparse: messy small-LLM replies -> lists, class names and yes/no answers."""

from __future__ import annotations

import pytest

from factory.attributes.listparse import MAX_ITEM_WORDS, match_names, parse_list, parse_yes_no
from factory.labels import NameMatcher, name_key

# ---------------------------------------------------------------------------------------------
# parse_list
# ---------------------------------------------------------------------------------------------

LIST_CASES: list[tuple[str, str, list[str]]] = [
    (
        "numbered_dot_with_preamble_and_trailer",
        "Sure! Here are 10 subtopics of sports news:\n\n"
        "1. Football\n2. Basketball\n3. Tennis\n\n"
        "These cover the most popular sports in the news.",
        ["Football", "Basketball", "Tennis"],
    ),
    (
        "numbered_paren",
        "1) Stock market\n2) Mergers and acquisitions\n3) Earnings reports",
        ["Stock market", "Mergers and acquisitions", "Earnings reports"],
    ),
    (
        "numbered_parenthesised",
        "(1) Stock market\n(2) Interest rates\n(3) Startups",
        ["Stock market", "Interest rates", "Startups"],
    ),
    (
        "numbered_hash",
        "#1 Elections\n#2 Climate policy\n#3. Diplomacy",
        ["Elections", "Climate policy", "Diplomacy"],
    ),
    (
        "numbered_no_space_after_dot",
        "1.Football\n2.Cricket\n3.Rugby",
        ["Football", "Cricket", "Rugby"],
    ),
    (
        "numbered_with_blank_lines_between",
        "Here is the list:\n\n1. Football\n\n2. Basketball\n\n\n3. Tennis\n",
        ["Football", "Basketball", "Tennis"],
    ),
    (
        "numbered_inline_on_one_line",
        "Subtopics: 1. Football 2. Basketball 3. Formula 1 racing",
        ["Football", "Basketball", "Formula 1 racing"],
    ),
    (
        "numbered_parenthesised_inline",
        "(1) Stocks (2) Bonds (3) Commodities",
        ["Stocks", "Bonds", "Commodities"],
    ),
    (
        "dash_bullets",
        "- Football\n- Basketball\n- Tennis",
        ["Football", "Basketball", "Tennis"],
    ),
    (
        "star_bullets",
        "Some ideas:\n* Smartphones\n* Artificial intelligence\n* Cybersecurity\nLet me know if you need more!",
        ["Smartphones", "Artificial intelligence", "Cybersecurity"],
    ),
    (
        "unicode_bullets_mixed",
        "• Smartphones\n• Cloud computing\n– Robotics",
        ["Smartphones", "Cloud computing", "Robotics"],
    ),
    (
        "nested_bullets_are_explanations",
        "1. Football\n   - Premier League matches\n   - Transfers\n2. Tennis\n   * Grand slams",
        ["Football", "Tennis"],
    ),
    (
        "duplicates_different_case_keep_first_spelling",
        "1. Football\n2. football\n3. FOOTBALL\n4. Tennis\n5. tennis",
        ["Football", "Tennis"],
    ),
    (
        "duplicates_after_cleaning",
        '1. **Football**\n2. "football".\n3. Football: the most popular sport on earth',
        ["Football"],
    ),
    (
        "name_colon_explanation",
        "1. Transfer market: news about players moving between clubs\n"
        "2. Injuries: updates on injured players and their recovery\n"
        "3. Match reports: summaries of games",
        ["Transfer market", "Injuries", "Match reports"],
    ),
    (
        "name_dash_explanation",
        "- Transfer market - news about players moving between clubs\n"
        "- Injuries – updates on injured players\n"
        "- Match reports — summaries of games",
        ["Transfer market", "Injuries", "Match reports"],
    ),
    (
        "bold_name_colon_explanation",
        "Here are some subtopics:\n\n"
        "1. **Transfer market**: News about players moving between clubs.\n"
        "2. **Injuries:** Updates on injured players.\n"
        "3. __Match reports__ - Summaries of the games played.",
        ["Transfer market", "Injuries", "Match reports"],
    ),
    (
        "short_colon_tail_is_part_of_name",
        "1. Star Wars: Episode IV\n2. Mission: Impossible",
        ["Star Wars: Episode IV", "Mission: Impossible"],
    ),
    (
        "hyphenated_words_are_not_explanations",
        "- E-sports\n- Formula-1 racing\n- Spider-Man",
        ["E-sports", "Formula-1 racing", "Spider-Man"],
    ),
    (
        "quotes_around_items",
        "1. \"Football\"\n2. 'Basketball'\n3. “Tennis”\n4. `Golf`",
        ["Football", "Basketball", "Tennis", "Golf"],
    ),
    (
        "markdown_bold_and_italic",
        "- **Football**\n- *Basketball*\n- _Tennis_\n- ***Golf***",
        ["Football", "Basketball", "Tennis", "Golf"],
    ),
    (
        "markdown_link",
        "- [Football](https://example.com/football)\n- Tennis",
        ["Football", "Tennis"],
    ),
    (
        "trailing_punctuation",
        "1. Football.\n2. Basketball,\n3. Tennis;\n4. Golf!",
        ["Football", "Basketball", "Tennis", "Golf"],
    ),
    (
        "whitespace_collapsed",
        "1.    Stock     market   \n2.\tInterest\t rates",
        ["Stock market", "Interest rates"],
    ),
    (
        "sentence_items_dropped",
        "1. Football\n"
        "2. This is a very long sentence that explains why the next topics are all really interesting ones\n"
        "3. Golf",
        ["Football", "Golf"],
    ),
    (
        "empty_and_filler_items_dropped",
        "1. Football\n2.\n3. **\n4. Tennis\n5. etc.",
        ["Football", "Tennis"],
    ),
    (
        "parenthetical_explanation_dropped_short_qualifier_kept",
        "- Football (the most popular sport in the world)\n- Tennis (singles)\n- Cricket (e.g. IPL)",
        ["Football", "Tennis (singles)", "Cricket"],
    ),
    # --- JSON ---------------------------------------------------------------------------------
    (
        "json_array",
        '["Football", "Basketball", "Tennis"]',
        ["Football", "Basketball", "Tennis"],
    ),
    (
        "json_array_in_code_fence_with_prose",
        'Here you go:\n```json\n["Football", "basketball", "Football", "Tennis"]\n```\nHope this helps!',
        ["Football", "basketball", "Tennis"],
    ),
    (
        "json_array_in_plain_fence",
        '```\n[\n  "Stock market",\n  "Startups"\n]\n```',
        ["Stock market", "Startups"],
    ),
    (
        "json_array_embedded_in_prose",
        'Sure! The subtopics are ["Elections", "Diplomacy", "Climate policy"]. These are common.',
        ["Elections", "Diplomacy", "Climate policy"],
    ),
    (
        "json_object_with_list_value",
        '{"subtopics": ["Transfer market", "Injuries", "Match reports"]}',
        ["Transfer market", "Injuries", "Match reports"],
    ),
    (
        "json_object_in_fence_nested",
        '```json\n{"result": {"similar_classes": ["World", "Business"]}}\n```',
        ["World", "Business"],
    ),
    (
        "json_list_of_objects",
        '[{"name": "Football", "description": "The sport"}, {"name": "Tennis", "description": "Racket sport"}]',
        ["Football", "Tennis"],
    ),
    (
        "json_object_numbered_values",
        '{"1": "Football", "2": "Tennis", "3": "Golf"}',
        ["Football", "Tennis", "Golf"],
    ),
    (
        "json_items_are_cleaned",
        '["**Football**: the sport", "  tennis  ", "", "Tennis", "Golf."]',
        ["Football", "tennis", "Golf"],
    ),
    (
        "python_list_literal",
        "['Football', 'Basketball', \"world's news\"]",
        ["Football", "Basketball", "world's news"],
    ),
    (
        "json_array_truncated",
        '["Football", "Basketball", "Ten',
        ["Football", "Basketball"],
    ),
    (
        "json_array_of_objects_truncated",
        '[{"name": "Football"}, {"name": "Basketball"}, {"name": "Ten',
        ["Football", "Basketball"],
    ),
    (
        "citation_brackets_are_not_json",
        "Here are the topics [1]:\n- Football\n- Golf",
        ["Football", "Golf"],
    ),
    # --- separated lines ----------------------------------------------------------------------
    (
        "comma_line",
        "Football, Basketball, Tennis, Golf",
        ["Football", "Basketball", "Tennis", "Golf"],
    ),
    (
        "comma_line_with_inline_preamble_and_and",
        "Sure! Here are 5 subtopics: football, basketball, tennis, golf, and rugby.",
        ["football", "basketball", "tennis", "golf", "rugby"],
    ),
    (
        "comma_line_with_trailing_sentence",
        "Football, Basketball, Tennis. These are the most popular ones.",
        ["Football", "Basketball", "Tennis"],
    ),
    (
        "comma_line_after_preamble_line",
        "Here are some subtopics:\nstocks, bonds, commodities\nThese cover the main markets.",
        ["stocks", "bonds", "commodities"],
    ),
    (
        "semicolon_line_keeps_commas_inside_items",
        "Washington, D.C.; New York; Los Angeles",
        ["Washington, D.C", "New York", "Los Angeles"],
    ),
    (
        "comma_line_parentheses_not_split",
        "Football (soccer, futsal), Tennis, Golf",
        ["Football (soccer, futsal)", "Tennis", "Golf"],
    ),
    (
        "comma_lines_wrapped",
        "Football, Basketball,\nTennis, Golf",
        ["Football", "Basketball", "Tennis", "Golf"],
    ),
    (
        "similar_classes_sentence_with_colon",
        "The 3 most similar classes to Sports are: World, Business, Sci/Tech.",
        ["World", "Business", "Sci/Tech"],
    ),
    (
        "refusal_is_no_list",
        "I'm sorry, I cannot help with that request.",
        [],
    ),
    (
        "repeated_item_weak_model",
        "1. Football\n2. Football\n3. football\n4. Football",
        ["Football"],
    ),
    (
        "comma_line_duplicates",
        "AI, machine learning, ai, Machine Learning, robotics",
        ["AI", "machine learning", "robotics"],
    ),
    # --- one per line -------------------------------------------------------------------------
    (
        "plain_lines_with_blank_lines",
        "Football\nBasketball\n\nTennis\n\n",
        ["Football", "Basketball", "Tennis"],
    ),
    (
        "plain_lines_with_preamble_and_trailer",
        "Sure! Here are some subtopics of business news:\n"
        "Stock market\nMergers and acquisitions\nStartups\n"
        "I hope this helps!",
        ["Stock market", "Mergers and acquisitions", "Startups"],
    ),
    (
        "plain_lines_with_long_trailing_sentence",
        "Stock market\nStartups\nThe list above covers most of the business topics in the news.",
        ["Stock market", "Startups"],
    ),
    (
        "plain_lines_with_a_comma_item",
        "Washington, D.C.\nNew York\nLos Angeles",
        ["Washington, D.C", "New York", "Los Angeles"],
    ),
    (
        "plain_lines_duplicates",
        "Football\nTennis\nfootball\nTENNIS\nGolf",
        ["Football", "Tennis", "Golf"],
    ),
    (
        "single_value",
        "Football",
        ["Football"],
    ),
    (
        "single_numbered_value_with_preamble",
        "Here is one subtopic:\n1. Football",
        ["Football"],
    ),
    (
        "code_fence_with_plain_list",
        "```\nFootball\nTennis\n```",
        ["Football", "Tennis"],
    ),
    (
        "markdown_heading_preamble",
        "## Subtopics\n\n- Football\n- Tennis",
        ["Football", "Tennis"],
    ),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in LIST_CASES], ids=[c[0] for c in LIST_CASES])
def test_parse_list(text: str, expected: list[str]) -> None:
    assert parse_list(text) == expected


@pytest.mark.parametrize("text", ["", "   ", "\n\n", "Sure!", "```\n```", "I'm sorry, I cannot help with that request."])
def test_parse_list_nothing_usable(text: str) -> None:
    assert parse_list(text) == []


def test_parse_list_limit_numbered() -> None:
    text = "Here are 10:\n" + "\n".join(f"{i}. Topic {chr(64 + i)}" for i in range(1, 11))
    assert parse_list(text, limit=3) == ["Topic A", "Topic B", "Topic C"]


def test_parse_list_limit_counts_unique_items() -> None:
    assert parse_list("1. a\n2. A\n3. b\n4. B\n5. c", limit=2) == ["a", "b"]


def test_parse_list_limit_json_and_comma() -> None:
    assert parse_list('["x", "y", "z"]', limit=2) == ["x", "y"]
    assert parse_list("x, y, z", limit=1) == ["x"]


def test_parse_list_limit_larger_than_list_and_zero() -> None:
    assert parse_list("- a\n- b", limit=10) == ["a", "b"]
    assert parse_list("- a\n- b", limit=0) == []
    assert parse_list("- a\n- b", limit=None) == ["a", "b"]


def test_parse_list_negative_limit_rejected() -> None:
    with pytest.raises(ValueError):
        parse_list("- a", limit=-1)


def test_parse_list_word_limit_boundary() -> None:
    ok = " ".join(["word"] * MAX_ITEM_WORDS)
    too_long = " ".join(["term"] * (MAX_ITEM_WORDS + 1))
    assert parse_list(f"- {ok}\n- {too_long}\n- short") == [ok, "short"]


def test_parse_list_realistic_smollm_reply() -> None:
    text = (
        "Sure! Here are 10 subtopics of sports news:\n\n"
        "1. **Transfer Market**: News about players moving between clubs.\n"
        "2. **Injuries**: Updates on injured players.\n"
        "3. **Match Reports**: Detailed reports of games.\n"
        "4. **transfer market**: Again, news about transfers.\n"
        "5. **Coaching Changes** - Managers hired and fired during the season.\n"
        "6. \"Youth Academies\"\n"
        "7. Fan culture.\n"
        "\n"
        "These subtopics cover a wide range of sports news and can be used to write articles."
    )
    assert parse_list(text) == [
        "Transfer Market",
        "Injuries",
        "Match Reports",
        "Coaching Changes",
        "Youth Academies",
        "Fan culture",
    ]
    assert parse_list(text, limit=4) == ["Transfer Market", "Injuries", "Match Reports", "Coaching Changes"]


# ---------------------------------------------------------------------------------------------
# NameMatcher (shared by match_names, LabelMapper and parse_label_answer)
# ---------------------------------------------------------------------------------------------


def test_name_key_ignores_case_spacing_and_punctuation() -> None:
    assert {name_key(n) for n in ["Sci/Tech", "sci_tech", " SCI-TECH ", "sci tech", "SciTech."]} == {"scitech"}
    assert name_key("R&D") == name_key("r and d") and name_key("  ") == ""


def test_name_matcher_exact_fuzzy_and_mentioned() -> None:
    m = NameMatcher(["World", "Sports", "Business", "Sci/Tech"])
    assert [m.exact(x) for x in ["Sports", " sci_tech ", "Sport", "World News", ""]] == [
        "Sports", "Sci/Tech", None, None, None]
    assert [m.fuzzy(x) for x in ["Sport", "Bussiness", "World News", "Science and Technology", "Cooking", "!"]] == [
        "Sports", "Business", "World", "Sci/Tech", None, None]
    assert m.mentioned("It is about sci-tech, not business.") == "Sci/Tech"
    assert m.mentioned("Worldwide sportswear") is None
    assert NameMatcher(["a_b", "ab"]).exact("ab") == "ab"  # an exact spelling wins over a normalised one
    assert NameMatcher(["x", "world"]).mentioned("world x") == "world"  # the earliest mention wins


# ---------------------------------------------------------------------------------------------
# match_names
# ---------------------------------------------------------------------------------------------

AG_NEWS = ["World", "Sports", "Business", "Sci/Tech"]


@pytest.mark.parametrize(
    ("candidates", "expected"),
    [
        (["sports", "BUSINESS", "world"], (["Sports", "Business", "World"], [])),
        (["Sci/Tech"], (["Sci/Tech"], [])),
        (["sci tech"], (["Sci/Tech"], [])),
        (["sci_tech"], (["Sci/Tech"], [])),
        (["SciTech"], (["Sci/Tech"], [])),
        (["Sci-Tech."], (["Sci/Tech"], [])),
        (["Science and Technology"], (["Sci/Tech"], [])),
        (["Sport"], (["Sports"], [])),  # difflib ratio 0.91
        (["Bussiness"], (["Business"], [])),  # typo
        (["World News"], (["World"], [])),  # token prefix
        (["  'Sports'  "], (["Sports"], [])),
        (["1. Business"], (["Business"], [])),
        (["Entertainment", "Cooking"], ([], ["Entertainment", "Cooking"])),
        (["Sports", "sports", "SPORTS news"], (["Sports"], [])),  # no duplicates
        (["Cooking", "cooking", "Sports"], (["Sports"], ["Cooking"])),
        (["Business", "Sports", "World"], (["Business", "Sports", "World"], [])),  # candidate order
        (["", "   ", "Sports"], (["Sports"], [])),  # blanks skipped
        ([], ([], [])),
    ],
)
def test_match_names_ag_news(candidates: list[str], expected: tuple[list[str], list[str]]) -> None:
    assert match_names(candidates, AG_NEWS) == expected


def test_match_names_keeps_valid_spelling_and_underscores() -> None:
    valid = ["company", "educational_institution", "mean_of_transportation", "natural_place"]
    assert match_names(
        ["Educational Institution", "Mean of transportation", "Natural Place", "Company", "Album"], valid
    ) == (["educational_institution", "mean_of_transportation", "natural_place", "company"], ["Album"])


def test_match_names_prefers_exact_over_prefix() -> None:
    valid = ["World", "World News"]
    assert match_names(["world news", "World"], valid) == (["World News", "World"], [])


def test_match_names_ambiguous_prefix_is_unknown() -> None:
    valid = ["World Politics", "World Sports"]
    assert match_names(["World"], valid) == ([], ["World"])


def test_match_names_not_close_enough() -> None:
    valid = ["Sports", "Business"]
    assert match_names(["Spirituality", "Busy"], valid) == ([], ["Spirituality", "Busy"])


def test_match_names_feeds_from_parse_list() -> None:
    reply = "The most similar classes are:\n1. **Business**\n2. sci-tech\n3. Politics"
    assert match_names(parse_list(reply), AG_NEWS) == (["Business", "Sci/Tech"], ["Politics"])


# ---------------------------------------------------------------------------------------------
# parse_yes_no
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes", True),
        ("yes.", True),
        ("YES!", True),
        ("Yes, the subtopic is relevant to business news.", True),
        ("**Yes**", True),
        ('"Yes"', True),
        ("No", False),
        ("no.", False),
        ("NO, it is not relevant.", False),
        ("**No.** Transfer market is about sports.", False),
        ("Nope", False),
        ("True", True),
        ("false", False),
        ("Not relevant.", False),
        ("Definitely not.", False),
        ("Answer: yes", True),
        ("Answer: No", False),
        ("answer : YES.", True),
        ("Answer (yes/no): no", False),
        ("Final answer: **Yes**", True),
        ("Let me think. Answer: no. Final answer: yes", True),
        ("The answer is yes.", True),
        ("Sure! The answer is no.", False),
        ('{"relevant": true}', True),
        ('{"relevant": false}', False),
        ('{"answer": "yes"}', True),
        ('{"relevant": "No"}', False),
        ('```json\n{"relevant": true, "reason": "it is about money"}\n```', True),
        ('Here is my judgement: {"is_relevant": false}', False),
        ("Is 'transfer market' relevant to business news? Yes.", True),
        ("I would say no.", False),
        ("The subtopic 'transfer market' is relevant to business news.", True),
        ("The subtopic 'transfer market' is not relevant to business news.", False),
        ("It is irrelevant.", False),
        ("Notably, it is not.", None),
        ("", None),
        ("   ", None),
        ("Maybe", None),
        ("I don't know.", None),
        ("Yes or no?", None),
        ("Please answer yes/no.", None),
        ("Is the subtopic relevant to business news?", None),
        ("The subtopic is about football.", None),
        ("N/A", None),
        ("Relevant: Yes", True),
    ],
)
def test_parse_yes_no(text: str, expected: bool | None) -> None:
    assert parse_yes_no(text) is expected
