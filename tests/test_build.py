"""Dataset building: prompts from trait_profiles.yaml, an OpenAI-compatible endpoint served by a
local HTTP server started here, validation with retries, and resume after an interruption."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from finetune.build import build_messages, build_rows, clean_answer, openai_generator
from finetune.io import read_raw, to_rows
from text2emoji.cli import main
from text2emoji.core.errors import UserError
from text2emoji.core.schema import TRAITS


class FakeChatServer:
    """Speaks POST /v1/chat/completions. Replies name the topic; the first request for a topic
    containing 'moody' gets an emoji (must be rejected and retried); 'flaky' topics get one 503."""

    def __init__(self, key="sk-test"):
        self.requests: list[dict] = []
        self.seen: dict[str, int] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                if self.path != "/v1/chat/completions":
                    self.send_error(404)
                    return
                if self.headers.get("Authorization") != f"Bearer {key}":
                    self.send_error(401, "bad key")
                    return
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                user = body["messages"][-1]["content"]
                topic = user.split("Topic: ")[1].split("\n")[0]
                n = outer.seen[topic + user[:40]] = outer.seen.get(topic + user[:40], 0) + 1
                if "flaky" in topic and n == 1:
                    self.send_error(503, "busy")
                    return
                text = f"Answer: I keep thinking about {topic} in my own way."
                if "moody" in topic and n == 1:
                    text = f"I feel great about {topic} 😀"
                payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_messages_come_from_the_trait_profiles():
    msgs = build_messages("Chess", "neuroticism")
    assert msgs[0]["role"] == "system" and msgs[1]["role"] == "user"
    user = msgs[1]["content"]
    assert "Topic: Chess\nQuestion: Thinking about Chess, what are your thoughts on Chess?" in user
    assert "anxious, worried" in user and "- Answer in 1 to 3 sentences" in user
    assert "emoji" not in user.lower()  # nothing in the PEFT data path hints at emojis


def test_answer_problem():
    from finetune.build import answer_problem

    assert answer_problem("I find chess calming because every move is a small puzzle.") is None
    assert "fewer than 8 words" in answer_problem("I like chess.")
    assert "not an answer" in answer_problem("Here is a possible answer for you about my chess:")
    assert "first person" in answer_problem("Chess is a game of strategy played by two people worldwide.")


def test_clean_answer():
    assert clean_answer('Answer: "I like it. A lot. Really. Truly."') == "I like it. A lot. Really."
    assert clean_answer("I like it.\n\nAs an AI, ...") == "I like it."


def test_build_against_local_endpoint_with_retry_and_resume(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    topics = [("Chess", "games"), ("moody weather", "nature"), ("flaky trains", "travel")]
    out = tmp_path / "built.jsonl"
    with FakeChatServer() as srv:
        gen = openai_generator("test-model", base_url=srv.url)
        first = build_rows(topics[:2], ["openness", "neuroticism"], gen, out, batch_size=3)
        assert first.written == 4 and first.rejected == []
        assert srv.requests[0]["model"] == "test-model" and srv.requests[0]["messages"][0]["role"] == "system"
        n_before = len(srv.requests)
        # simulate an interrupted write: a torn last line must be dropped, not crash the resume
        with open(out, "a", encoding="utf-8") as f:
            f.write('{"trait": "openness", "topic": "flaky tr')
        second = build_rows(topics, ["openness", "neuroticism"], gen, out, batch_size=3)
        assert second.skipped_existing == 4 and second.written == 2
        assert n_before == 6  # 4 pairs + 2 emoji replies for "moody" retried
        assert len(srv.requests) - n_before == 4  # 2 new pairs, each first answered 503 and retried
    rows = to_rows(read_raw(out))
    assert len(rows) == 6
    assert {(r.topic, r.trait) for r in rows} == {(t, tr) for t, _ in topics for tr in ("openness", "neuroticism")}
    assert all(r.answer.startswith("I keep thinking about") for r in rows)  # emoji reply was retried
    assert {r.domain for r in rows} == {"games", "nature", "travel"}


def test_rejected_after_attempts_and_bad_key(tmp_path, monkeypatch):
    with FakeChatServer() as srv:
        gen = openai_generator("m", base_url=srv.url, api_key="sk-test")
        res = build_rows([("moody sea", None)], ["openness"], gen, tmp_path / "o.jsonl", attempts=1)
        assert res.written == 0 and "contains emoji" in res.rejected[0]
        bad = openai_generator("m", base_url=srv.url, api_key="wrong", retries=0)
        with pytest.raises(UserError, match="HTTP 401"):
            build_rows([("Chess", None)], ["openness"], bad, tmp_path / "p.jsonl")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(UserError, match="OPENAI_API_KEY is not set"):
        openai_generator("m")


def test_cli_build(tmp_path, monkeypatch, capsys):
    topics = tmp_path / "topics.txt"
    topics.write_text("Chess\nJazz\n\nchess\n")
    out = tmp_path / "b.jsonl"
    with FakeChatServer() as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        code = main(["data", "build", "--topics", str(topics), "--generator", "openai:m",
                     "--out", str(out), "--tokenizer", "none"])
    assert code == 0
    res = json.loads(capsys.readouterr().out)
    assert res["written"] == 10 and res["rejected"] == []
    assert json.loads((tmp_path / "b.jsonl.config.json").read_text())["config"]["generator"] == "openai:m"
    assert main(["data", "validate", str(out), "--tokenizer", "none"]) == 0
    assert {r.trait for r in to_rows(read_raw(out))} == set(TRAITS)
