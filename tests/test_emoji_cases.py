"""Table-driven cases for interp.emojis (find_emojis, split_sentences, emoji_stats).

The table below was written from the written spec alone, independently of the
implementation in interp/emojis.py.  Emoji expectations were checked against the
data of the installed `emoji` package (fully- or minimally-qualified sequences
from ``emoji.analyze(text, join_emoji=True)``), which defines RGI here.
"""

import pytest

from interp.behaviour.emoji_metrics import bootstrap_emoji_metrics, per_answer
from interp.emojis import emoji_stats, find_emojis, split_sentences

ZWJ = "\u200d"
VS16 = "\ufe0f"

# Sequences whose invisible parts matter are spelled out with escapes.
FAMILY = "\U0001F468" + ZWJ + "\U0001F469" + ZWJ + "\U0001F467"  # 👨‍👩‍👧
WOMAN_TECHNOLOGIST = "\U0001F469" + ZWJ + "\U0001F4BB"  # 👩‍💻
WOMAN_ASTRONAUT_MED = "\U0001F469\U0001F3FD" + ZWJ + "\U0001F680"  # 👩🏽‍🚀
PERSON_DARK_RED_HAIR = "\U0001F9D1\U0001F3FF" + ZWJ + "\U0001F9B0"  # 🧑🏿‍🦰
WOMAN_RUNNING_MINIMAL = "\U0001F3C3" + ZWJ + "\u2640"  # 🏃‍♀ (minimally qualified)
RAINBOW_FLAG = "\U0001F3F3" + VS16 + ZWJ + "\U0001F308"  # 🏳️‍🌈
PIRATE_FLAG = "\U0001F3F4" + ZWJ + "\u2620" + VS16  # 🏴‍☠️
HEART_ON_FIRE = "\u2764" + VS16 + ZWJ + "\U0001F525"  # ❤️‍🔥
SCOTLAND = "\U0001F3F4\U000E0067\U000E0062\U000E0073\U000E0063\U000E0074\U000E007F"
THUMBS_MED = "\U0001F44D\U0001F3FD"  # 👍🏽
KEYCAP_1 = "1" + VS16 + "\u20e3"  # 1️⃣
KEYCAP_HASH = "#" + VS16 + "\u20e3"  # #️⃣
KEYCAP_STAR = "*" + VS16 + "\u20e3"  # *️⃣
RED_HEART = "\u2764" + VS16  # ❤️
SMILING = "\u263a" + VS16  # ☺️
CHECK = "\u2714" + VS16  # ✔️
COPYRIGHT = "\u00a9" + VS16  # ©️
FR = "\U0001F1EB\U0001F1F7"  # 🇫🇷
US = "\U0001F1FA\U0001F1F8"  # 🇺🇸
ROBOT_CAT = "\U0001F916" + ZWJ + "\U0001F431"  # 🤖‍🐱 (not RGI)


# (id, text, expected_emojis, expected_sentences)
CASES = [
    # --- what is an emoji -------------------------------------------------
    ("zwj_family", f"My family {FAMILY} is here.",
     [FAMILY], [f"My family {FAMILY} is here."]),
    ("zwj_professions", f"{WOMAN_TECHNOLOGIST} codes and {WOMAN_ASTRONAUT_MED} flies.",
     [WOMAN_TECHNOLOGIST, WOMAN_ASTRONAUT_MED],
     [f"{WOMAN_TECHNOLOGIST} codes and {WOMAN_ASTRONAUT_MED} flies."]),
    ("zwj_skin_tone_hair", f"{PERSON_DARK_RED_HAIR} has red hair.",
     [PERSON_DARK_RED_HAIR], [f"{PERSON_DARK_RED_HAIR} has red hair."]),
    ("minimally_qualified_zwj", f"Running {WOMAN_RUNNING_MINIMAL} now.",
     [WOMAN_RUNNING_MINIMAL], [f"Running {WOMAN_RUNNING_MINIMAL} now."]),
    ("skin_tone", f"Nice work {THUMBS_MED} team.",
     [THUMBS_MED], [f"Nice work {THUMBS_MED} team."]),
    ("skin_tone_then_lone_modifier", f"ok{THUMBS_MED}\U0001F3FD fine",
     [THUMBS_MED], [f"ok{THUMBS_MED}\U0001F3FD fine"]),
    ("flag", f"Bonjour {FR} from Paris.",
     [FR], [f"Bonjour {FR} from Paris."]),
    ("adjacent_flags", f"USA or France {US}{FR} tonight.",
     [US, FR], [f"USA or France {US}{FR} tonight."]),
    ("subdivision_flag", f"Go Scotland {SCOTLAND}!",
     [SCOTLAND], [f"Go Scotland {SCOTLAND}!"]),
    ("zwj_flags_vs16", f"Pride {RAINBOW_FLAG} and pirates {PIRATE_FLAG} and {HEART_ON_FIRE}.",
     [RAINBOW_FLAG, PIRATE_FLAG, HEART_ON_FIRE],
     [f"Pride {RAINBOW_FLAG} and pirates {PIRATE_FLAG} and {HEART_ON_FIRE}."]),
    ("keycaps_with_vs16", f"Step {KEYCAP_1} then {KEYCAP_HASH} done.",
     [KEYCAP_1, KEYCAP_HASH], [f"Step {KEYCAP_1} then {KEYCAP_HASH} done."]),
    ("keycap_star_first", f"{KEYCAP_STAR} Star key.",
     [KEYCAP_STAR], [f"{KEYCAP_STAR} Star key."]),
    ("keycap_without_vs16", "Press 1\u20e3 or #\u20e3 now.",
     [], ["Press 1\u20e3 or #\u20e3 now."]),
    ("text_chars_with_vs16", f"I {RED_HEART} it {SMILING} {CHECK} {COPYRIGHT} Acme.",
     [RED_HEART, SMILING, CHECK, COPYRIGHT],
     [f"I {RED_HEART} it {SMILING} {CHECK} {COPYRIGHT} Acme."]),
    ("bare_text_chars", "\u00a9 2024 Acme\u00ae \u2122 \u2764 \u263a \u2714 \u2600 \u2194 ok.",
     [], ["\u00a9 2024 Acme\u00ae \u2122 \u2764 \u263a \u2714 \u2600 \u2194 ok."]),
    ("lone_components", "Tone \U0001F3FD hair \U0001F9B0 flag \U0001F1E6 end.",
     [], ["Tone \U0001F3FD hair \U0001F9B0 flag \U0001F1E6 end."]),
    ("ascii_emoticons", "Nice :) sad :-( love <3 xD ;P ^_^ :D",
     [], ["Nice :) sad :-( love <3 xD ;P ^_^ :D"]),
    ("shortcodes", "I am :smile: and :thumbs_up: today.",
     [], ["I am :smile: and :thumbs_up: today."]),
    ("kaomoji", "Oh well \u00af\\_(\u30c4)_/\u00af whatever.",
     [], ["Oh well \u00af\\_(\u30c4)_/\u00af whatever."]),
    ("non_rgi_zwj", f"Robot cat {ROBOT_CAT} is cute.",
     ["\U0001F916", "\U0001F431"], [f"Robot cat {ROBOT_CAT} is cute."]),
    ("emoji_mid_sentence", f"I {RED_HEART} New York.",
     [RED_HEART], [f"I {RED_HEART} New York."]),

    # --- abbreviations and other single-dot exceptions --------------------
    ("dr_abbrev", "Dr. Smith is here. He left.",
     [], ["Dr. Smith is here.", "He left."]),
    ("mr_mrs", "Mr. and Mrs. Jones came. Bye.",
     [], ["Mr. and Mrs. Jones came.", "Bye."]),
    ("eg_ie", "Bring fruit, e.g. Apples or pears, i.e. Fresh ones. Thanks.",
     [], ["Bring fruit, e.g. Apples or pears, i.e. Fresh ones.", "Thanks."]),
    ("vs_abbrev", "Lakers vs. Celtics tonight. Big game.",
     [], ["Lakers vs. Celtics tonight.", "Big game."]),
    ("v_abbrev", "Roe v. Wade was decided. Later too.",
     [], ["Roe v. Wade was decided.", "Later too."]),
    ("st_mt_sen", "We met at St. Paul's near Mt. Hood with Sen. Smith. Wow.",
     [], ["We met at St. Paul's near Mt. Hood with Sen. Smith.", "Wow."]),
    ("prof_gen_capt", "Prof. Xavier and Gen. Patton met. Capt. Kirk too.",
     [], ["Prof. Xavier and Gen. Patton met.", "Capt. Kirk too."]),
    ("fig_approx", "See Fig. 3 for approx. Values. Done.",
     [], ["See Fig. 3 for approx. Values.", "Done."]),
    ("no_number", "It was No. 5 on the chart. Great song.",
     [], ["It was No. 5 on the chart.", "Great song."]),
    ("no_not_number", "I said no. It ended.",
     [], ["I said no.", "It ended."]),
    ("initials", "J. K. Rowling wrote it. Fans agree.",
     [], ["J. K. Rowling wrote it.", "Fans agree."]),
    ("lowercase_single_letter_not_initial", "Plan b. Then c.",
     [], ["Plan b.", "Then c."]),
    ("etc_ends_sentence", "Apples, pears, etc. Then more.",
     [], ["Apples, pears, etc.", "Then more."]),
    ("etc_then_lowercase", "Apples, pears, etc. and more.",
     [], ["Apples, pears, etc. and more."]),
    ("us_ends_sentence", "He moved to the U.S. Then he left.",
     [], ["He moved to the U.S.", "Then he left."]),
    ("abbrev_with_exclamation", "Call the Dr! Now.",
     [], ["Call the Dr!", "Now."]),
    ("abbrev_with_ellipsis", "Hello Mr... Anyone?",
     [], ["Hello Mr...", "Anyone?"]),

    # --- numbers, urls, glued dots ---------------------------------------
    ("decimal", "3.14 is pi. Nice.",
     [], ["3.14 is pi.", "Nice."]),
    ("number_not_first_token", "I counted to 5. Then I stopped.",
     [], ["I counted to 5.", "Then I stopped."]),
    ("digit_starts_next_sentence", "Prices rose. 2024 was rough.",
     [], ["Prices rose.", "2024 was rough."]),
    ("domain", "Visit example.com today. It's great.",
     [], ["Visit example.com today.", "It's great."]),
    ("url_at_sentence_end", "Go to https://example.com. Then sign up.",
     [], ["Go to https://example.com.", "Then sign up."]),
    ("dot_glued_to_capital", "It works.Next step.",
     [], ["It works.Next step."]),

    # --- terminator runs and closers -------------------------------------
    ("ellipsis_then_lowercase", "Wait... maybe not.",
     [], ["Wait... maybe not."]),
    ("ellipsis_then_uppercase", "Wait... Maybe not.",
     [], ["Wait...", "Maybe not."]),
    ("unicode_ellipsis", "Hmm\u2026 Okay then.",
     [], ["Hmm\u2026", "Okay then."]),
    ("qmark_excl_runs", "Really?! Yes. Wow!!! OK",
     [], ["Really?!", "Yes.", "Wow!!!", "OK"]),
    ("other_terminators", "Ok\uff01 Next\uff1f Yes\u3002 Wow\u203c What\u2049 Fine.",
     [], ["Ok\uff01", "Next\uff1f", "Yes\u3002", "Wow\u203c", "What\u2049", "Fine."]),
    ("lowercase_after_period", "This is odd. but fine.",
     [], ["This is odd. but fine."]),
    ("closing_double_quote", 'He said "Stop!" Then he left.',
     [], ['He said "Stop!"', "Then he left."]),
    ("closing_single_quote", "She said 'Go.' He went.",
     [], ["She said 'Go.'", "He went."]),
    ("closing_paren_and_curly", "(It works.) Next one. She said \u201cDone.\u201d Fine.",
     [], ["(It works.)", "Next one.", "She said \u201cDone.\u201d", "Fine."]),
    ("closing_guillemet", "Il a dit \u00abNon.\u00bb Puis il est parti.",
     [], ["Il a dit \u00abNon.\u00bb", "Puis il est parti."]),
    ("quoted_exclamation_then_lowercase", '"Help!" she cried. Nobody came.',
     [], ['"Help!" she cried.', "Nobody came."]),
    ("no_terminator", "no punctuation here",
     [], ["no punctuation here"]),

    # --- lines, lists, bullets -------------------------------------------
    ("numbered_list", "1. First point\n2. Second point",
     [], ["1. First point", "2. Second point"]),
    ("numbered_list_with_sentences", "1. Buy milk. Then eggs.\n10. Done!",
     [], ["1. Buy milk.", "Then eggs.", "10. Done!"]),
    ("bullets", "- Fast\n- Cheap \U0001F4B8\n* Good\n\u2022 Nice",
     ["\U0001F4B8"], ["- Fast", "- Cheap \U0001F4B8", "* Good", "\u2022 Nice"]),
    ("crlf", "Hello there\r\nGeneral Kenobi!\r\n",
     [], ["Hello there", "General Kenobi!"]),
    ("blank_lines", "First.\n\n   \nSecond.",
     [], ["First.", "Second."]),
    ("cr_and_unicode_separators", "One\rTwo\u2028Three\u2029Four",
     [], ["One", "Two", "Three", "Four"]),
    ("digits_only_line_not_merged", "Call me at\n555-1234",
     [], ["Call me at", "555-1234"]),
    ("punctuation_only_line_merged", "Really\n?!",
     [], ["Really\n?!"]),

    # --- emoji-only segments ---------------------------------------------
    ("emoji_only_answer", "\U0001F602\U0001F602\U0001F602",
     ["\U0001F602"] * 3, ["\U0001F602\U0001F602\U0001F602"]),
    ("emoji_only_answer_spaced", "  \U0001F389 \U0001F389  ",
     ["\U0001F389"] * 2, ["\U0001F389 \U0001F389"]),
    ("emoji_after_punct", "I love it! \U0001F60D Great.",
     ["\U0001F60D"], ["I love it! \U0001F60D", "Great."]),
    ("emoji_glued_to_punct", "Great!\U0001F60D Love it.",
     ["\U0001F60D"], ["Great!\U0001F60D", "Love it."]),
    ("emoji_after_punct_then_lowercase", "Done! \U0001F389 and more.",
     ["\U0001F389"], ["Done! \U0001F389 and more."]),
    ("emoji_trailing_question", "Why? \U0001F914\U0001F914",
     ["\U0001F914"] * 2, ["Why? \U0001F914\U0001F914"]),
    ("emoji_own_line", "Thanks!\n\U0001F60A",
     ["\U0001F60A"], ["Thanks!\n\U0001F60A"]),
    ("emoji_own_line_crlf_blank", "Thanks a lot.\r\n\r\n\U0001F64F\U0001F3FD ",
     ["\U0001F64F\U0001F3FD"], ["Thanks a lot.\r\n\r\n\U0001F64F\U0001F3FD"]),
    ("emoji_line_between_sentences", "Great job!\n\U0001F44F\U0001F44F\nSee you.",
     ["\U0001F44F"] * 2, ["Great job!\n\U0001F44F\U0001F44F", "See you."]),
    ("emoji_first_line_stands_alone", "\U0001F525\nThis is hot.",
     ["\U0001F525"], ["\U0001F525", "This is hot."]),
    ("two_emoji_lines_first", "\U0001F389\n\U0001F389\nParty.",
     ["\U0001F389"] * 2, ["\U0001F389\n\U0001F389", "Party."]),

    # --- an emoji, then whitespace and a capital, ends a sentence ----------
    ("chat_emojis_between_sentences",
     "Great news \U0001F389 I am so happy for you \U0001F60A Tell me more.",
     ["\U0001F389", "\U0001F60A"],
     ["Great news \U0001F389", "I am so happy for you \U0001F60A", "Tell me more."]),
    ("chat_no_punctuation_emoji_at_end", "Thanks so much \U0001F64F See you soon \U0001F44B",
     ["\U0001F64F", "\U0001F44B"], ["Thanks so much \U0001F64F", "See you soon \U0001F44B"]),
    ("emoji_then_lowercase", "So happy for you \U0001F60A and so proud.",
     ["\U0001F60A"], ["So happy for you \U0001F60A and so proud."]),
    ("emoji_then_i", "That sounds great \U0001F60A I agree.",
     ["\U0001F60A"], ["That sounds great \U0001F60A", "I agree."]),
    ("emoji_then_lowercase_i", "That sounds great \U0001F60A i agree.",
     ["\U0001F60A"], ["That sounds great \U0001F60A i agree."]),
    ("emoji_after_one_word_is_a_word", "We \U0001F499 Paris so much. I \U0001F525 It.",
     ["\U0001F499", "\U0001F525"], ["We \U0001F499 Paris so much.", "I \U0001F525 It."]),
    ("emoji_at_very_end", "I love this song \U0001F3B6",
     ["\U0001F3B6"], ["I love this song \U0001F3B6"]),
    ("emojis_at_very_end_after_punct", "Best day ever. \U0001F389\U0001F389",
     ["\U0001F389"] * 2, ["Best day ever. \U0001F389\U0001F389"]),
    ("emoji_run_before_capital", "Party time \U0001F389\U0001F38A\U0001F973 Let's go!",
     ["\U0001F389", "\U0001F38A", "\U0001F973"],
     ["Party time \U0001F389\U0001F38A\U0001F973", "Let's go!"]),
    ("spaced_emoji_run_before_capital", "Party time \U0001F389 \U0001F38A Let's go!",
     ["\U0001F389", "\U0001F38A"], ["Party time \U0001F389 \U0001F38A", "Let's go!"]),
    ("skin_tone_before_capital", f"Well done {THUMBS_MED} Keep going.",
     [THUMBS_MED], [f"Well done {THUMBS_MED}", "Keep going."]),
    ("zwj_before_capital", f"She writes code {WOMAN_TECHNOLOGIST} Her app ships today.",
     [WOMAN_TECHNOLOGIST], [f"She writes code {WOMAN_TECHNOLOGIST}", "Her app ships today."]),
    ("zwj_skin_tone_flag_before_capital",
     f"Off to space {WOMAN_ASTRONAUT_MED} Love is love {RAINBOW_FLAG} Happy Pride!",
     [WOMAN_ASTRONAUT_MED, RAINBOW_FLAG],
     [f"Off to space {WOMAN_ASTRONAUT_MED}", f"Love is love {RAINBOW_FLAG}", "Happy Pride!"]),
    ("emoji_then_digit", "We won the cup \U0001F3C6 2024 was our year.",
     ["\U0001F3C6"], ["We won the cup \U0001F3C6 2024 was our year."]),
    ("emoji_then_quote_capital", 'Loved the film \U0001F60D "Best one ever," I said.',
     ["\U0001F60D"], ["Loved the film \U0001F60D", '"Best one ever," I said.']),
    ("emoji_then_curly_quote_capital", "Loved the film \U0001F60D \u201cWow\u201d she said.",
     ["\U0001F60D"], ["Loved the film \U0001F60D", "\u201cWow\u201d she said."]),
    ("emoji_then_quote_lowercase", 'She smiled at me \U0001F60A "thanks" was all she said.',
     ["\U0001F60A"], ['She smiled at me \U0001F60A "thanks" was all she said.']),
    ("emoji_glued_to_capital", "Great news \U0001F389I passed.",
     ["\U0001F389"], ["Great news \U0001F389I passed."]),
    ("bullets_with_emojis", "My tips:\n- \u2705 Drink water\n- \U0001F680 Start early\n- Sleep well \U0001F634",
     ["\u2705", "\U0001F680", "\U0001F634"],
     ["My tips:", "- \u2705 Drink water", "- \U0001F680 Start early", "- Sleep well \U0001F634"]),
    ("numbered_list_with_emojis", "1. \U0001F34E Buy apples\n2. \U0001F95B Get milk\n3. Cook dinner \U0001F373",
     ["\U0001F34E", "\U0001F95B", "\U0001F373"],
     ["1. \U0001F34E Buy apples", "2. \U0001F95B Get milk", "3. Cook dinner \U0001F373"]),
    ("keycap_numbered_list", f"{KEYCAP_1} Buy milk\n2\ufe0f\u20e3 Get eggs",
     [KEYCAP_1, "2\ufe0f\u20e3"], [f"{KEYCAP_1} Buy milk", "2\ufe0f\u20e3 Get eggs"]),
    ("bullet_line_split_by_emoji", "- Fast setup \u2705 Works offline too",
     ["\u2705"], ["- Fast setup \u2705", "Works offline too"]),
    ("emoji_only_line_after_chat", "Happy birthday to you \U0001F382\n\U0001F389\U0001F389\nHave a great day",
     ["\U0001F382", "\U0001F389", "\U0001F389"],
     ["Happy birthday to you \U0001F382\n\U0001F389\U0001F389", "Have a great day"]),
    ("emoji_only_first_line_then_chat", "\U0001F389\nGreat news \U0001F389 I passed",
     ["\U0001F389"] * 2, ["\U0001F389", "Great news \U0001F389", "I passed"]),
    ("trademark_before_capital", "We use the Acme Cloud \u2122\ufe0f Platform daily.",
     ["\u2122\ufe0f"], ["We use the Acme Cloud \u2122\ufe0f Platform daily."]),
    ("emoji_after_abbreviation", "We met Dr. \U0001F60A Smith today. Nice.",
     ["\U0001F60A"], ["We met Dr. \U0001F60A Smith today.", "Nice."]),
    # known limits of the rule (see the module docstring)
    ("limit_one_word_sentence_before_emoji", "Wow \U0001F389 That is great.",
     ["\U0001F389"], ["Wow \U0001F389 That is great."]),
    ("limit_proper_noun_after_emoji", f"I really {RED_HEART} New York.",
     [RED_HEART], [f"I really {RED_HEART}", "New York."]),

    # --- empty ------------------------------------------------------------
    ("empty", "", [], []),
    ("whitespace_only", " \n\t \r\n \u2028 ", [], []),
]


@pytest.mark.parametrize(
    "text, expected_emojis, expected_sentences",
    [pytest.param(t, e, s, id=i) for i, t, e, s in CASES],
)
def test_case_table(text, expected_emojis, expected_sentences):
    # Sanity of the table itself: every expected sentence is an exact,
    # stripped substring of the input.
    for s in expected_sentences:
        assert s in text and s == s.strip()
    assert find_emojis(text) == expected_emojis
    assert split_sentences(text) == expected_sentences


def _check_stats(d, expected):
    assert set(d) == set(expected)
    for key, want in expected.items():
        got = d[key]
        if key == "top_emojis":
            assert [list(p) for p in got] == want
        elif want is None or isinstance(want, int):
            assert got == want, key
        else:
            assert got == pytest.approx(want), key


def test_emoji_stats_hand_built():
    answers = [
        "I love it! \U0001F60D Great.",             # 2 sentences, 1 with emoji; 😍
        "",                                          # 0 sentences
        "No emoji here. Just text.",                 # 2 sentences, 0 with emoji
        "\U0001F389\U0001F389\nParty time \U0001F60D!",  # 2 sentences ("🎉🎉" alone, "Party time 😍!"), 2 with emoji; 🎉 🎉 😍
        f"Flags {FR}{US} and {THUMBS_MED}.",         # 1 sentence, 1 with emoji; 🇫🇷 🇺🇸 👍🏽
        "I \u2764 it :)",                            # 1 sentence, bare ❤ and :) are not emojis
    ]
    # By hand:
    #   n_answers = 6; n_answers_with_emoji = 3 (answers 1, 4, 5)
    #   n_sentences = 2+0+2+2+1+1 = 8; n_sentences_with_emoji = 1+0+0+2+1+0 = 4
    #   n_emoji = 1+0+0+3+3+0 = 7
    #   esr = 4/8 = 0.5; emoji_rate = 3/6 = 0.5; emojis_per_answer = 7/6
    #   counts: 🎉 2, 😍 2, 🇫🇷 1, 🇺🇸 1, 👍🏽 1
    #   ties by code point: 🎉 (U+1F389) < 😍 (U+1F60D);
    #                       🇫🇷 (U+1F1EB..) < 🇺🇸 (U+1F1FA..) < 👍🏽 (U+1F44D..)
    expected = {
        "n_answers": 6,
        "n_answers_with_emoji": 3,
        "n_sentences": 8,
        "n_sentences_with_emoji": 4,
        "n_emoji": 7,
        "esr": 4 / 8,
        "emoji_rate": 3 / 6,
        "emojis_per_answer": 7 / 6,
        "top_emojis": [
            ["\U0001F389", 2],
            ["\U0001F60D", 2],
            [FR, 1],
            [US, 1],
            [THUMBS_MED, 1],
        ],
    }
    _check_stats(emoji_stats(answers).to_dict(), expected)


def test_emoji_stats_top_emojis_capped_at_ten():
    # 12 distinct emojis once each, listed in reverse code-point order, plus
    # one extra 🐳 so it ranks first.  One answer, one sentence.
    singles = [chr(0x1F600 + k) for k in range(12)]  # 😀 .. 😋, all RGI
    text = "Faces " + " ".join(reversed(singles)) + " \U0001F433 and \U0001F433."
    # n_emoji = 12 + 2 = 14; top: 🐳 2 (U+1F433), then the 9 lowest faces.
    expected = {
        "n_answers": 1,
        "n_answers_with_emoji": 1,
        "n_sentences": 1,
        "n_sentences_with_emoji": 1,
        "n_emoji": 14,
        "esr": 1.0,
        "emoji_rate": 1.0,
        "emojis_per_answer": 14.0,
        "top_emojis": [["\U0001F433", 2]] + [[e, 1] for e in singles[:9]],
    }
    _check_stats(emoji_stats([text]).to_dict(), expected)


def test_emoji_stats_empty_list():
    expected = {
        "n_answers": 0,
        "n_answers_with_emoji": 0,
        "n_sentences": 0,
        "n_sentences_with_emoji": 0,
        "n_emoji": 0,
        "esr": None,
        "emoji_rate": None,
        "emojis_per_answer": None,
        "top_emojis": [],
    }
    _check_stats(emoji_stats([]).to_dict(), expected)


def test_emoji_stats_only_empty_answers():
    # 2 answers, 0 sentences: esr None, but emoji_rate = 0/2 and per-answer = 0/2.
    expected = {
        "n_answers": 2,
        "n_answers_with_emoji": 0,
        "n_sentences": 0,
        "n_sentences_with_emoji": 0,
        "n_emoji": 0,
        "esr": None,
        "emoji_rate": 0.0,
        "emojis_per_answer": 0.0,
        "top_emojis": [],
    }
    _check_stats(emoji_stats(["", "  \n "]).to_dict(), expected)


def test_esr_chat_style_answer():
    # "Great news 🎉" / "I am so happy for you 😊" / "Tell me more.": 2 of 3 sentences.
    chat = "Great news \U0001F389 I am so happy for you \U0001F60A Tell me more."
    s = emoji_stats([chat])
    assert (s.n_sentences, s.n_sentences_with_emoji) == (3, 2)
    assert s.esr == pytest.approx(2 / 3)
    a = per_answer([chat])
    assert a["n_sentences"].tolist() == [3.0] and a["n_sentences_with_emoji"].tolist() == [2.0]
    r = bootstrap_emoji_metrics([chat, "No emoji here. Just text."], n_boot=200)
    assert r["esr"]["value"] == pytest.approx(2 / 5)
    assert bootstrap_emoji_metrics([chat], n_boot=50)["esr"]["value"] == pytest.approx(2 / 3)
