"""Parsing and aggregating the ICL explainability replies."""

from interp.behaviour.icl import explain_messages, parse_tokens, top_tokens


def test_parse_tokens_cases():
    assert parse_tokens("curious, creative, open, imaginative, adventurous, bold") == [
        "curious", "creative", "open", "imaginative", "adventurous"]
    assert parse_tokens("1) Friendly\n2) Outgoing\n- Social\n* Fun 🎉") == ["friendly", "outgoing", "social", "fun", "🎉"]
    assert parse_tokens('Tokens: "worry", anxious; tense.') == ["worry", "anxious", "tense"]
    assert parse_tokens("😊👍🏽, kind") == ["😊", "👍🏽", "kind"]
    assert parse_tokens("Here is a long sentence that is not a token at all, calm") == ["calm"]
    assert parse_tokens("") == []
    # what a small chat model really replies
    assert parse_tokens("The five tokens that best represent the personality trait shown in this text are:\n\n"
                        "1. **Happiness**: This is a positive emotion\n2. **Loyal**\n3") == ["happiness", "loyal"]
    assert parse_tokens("1. **A**\n2. **B**\n3. **C") == []
    # commas inside the quotes
    assert parse_tokens('The five tokens are: "Choirs," "barbershop quartets," and "duets."') == [
        "choirs", "barbershop quartets", "duets"]
    assert parse_tokens('The five tokens are: "Billboards" and "I\'m worried that I\'m not good enough."') == []


def test_top_tokens_counts_and_flags():
    recs = [{"trait": "extraversion", "model": "post", "tokens": ["fun", "🎉", "party"]},
            {"trait": "extraversion", "model": "post", "tokens": ["🎉", "fun"]},
            {"trait": "extraversion", "model": "pre", "tokens": ["social"]}]
    top = top_tokens(recs)
    assert top["extraversion"]["post"] == [
        {"token": "fun", "count": 2, "is_emoji": False},
        {"token": "🎉", "count": 2, "is_emoji": True},
        {"token": "party", "count": 1, "is_emoji": False},
    ]
    assert top["extraversion"]["pre"][0]["token"] == "social"


def test_prompt_has_the_text_and_no_emoji_hint():
    (msg,) = explain_messages("I love parties.")
    assert '"I love parties."' in msg["content"] and "five tokens" in msg["content"]
    assert "emoji" not in msg["content"].lower()
