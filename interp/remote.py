"""Remote execution on NDIF (the National Deep Inference Fabric) through nnsight.

The nnsight backends of :mod:`interp.capture` (activations) and :mod:`interp.tracing` (emoji
log-probabilities) take ``remote: bool``. Both run the same ``LanguageModel.trace`` block either
way: ``remote=False`` on a local model that nnsight wraps, ``remote=True`` on
:func:`remote_model`, a hub model of which only the structure exists here (built on the meta
device: no weights are downloaded), with the block shipped to NDIF and only the ``.save()``-d
tensors sent back. Tests hold the local nnsight path to the torch backend (1e-5), so a remote
number differs from a local one only by the server's hardware and dtype.

* The API key comes from the environment variable ``NDIF_API_KEY`` (:func:`remote_key`) and is
  put into nnsight's in-memory config only: ``CONFIG.set_default_api_key`` would also write it to
  ``~/.config/nnsight/config.yaml``, so it is not used; no result, log or config file of this
  project holds the key. ``NDIF_HOST`` (optional, as nnsight reads it) names another host.
* Every remote trace runs inside :func:`remote_errors`: a refused or failed connection, a
  rejected key, an HTTP error or a failed job ends in one :class:`UserError` line naming the
  host, with no traceback and never the key.
* Only hub ids (``owner/name``) can run remotely: NDIF loads the model itself, by its id. The
  embedded model, a local directory or a GGUF file with ``--remote`` is one error line.

Adapters: NDIF hosts base models, so a trait's local LoRA adapter travels with each request as
an in-trace intervention (:mod:`interp.remote_probe`, which the ``neurons``, ``trace`` and
``ablate`` stages and ``emoji-prob`` use with ``--remote``). ``activations`` reads the base
model remotely (``--adapter`` with ``--remote`` is refused there). nnsight 0.8 can also name a
hub-hosted adapter per request (``peft=``), where a deployment accepts it; that is not used.

>>> from interp.remote import remote_model                                 # doctest: +SKIP
>>> from interp.capture import capture, register_nnsight                   # doctest: +SKIP
>>> lm = remote_model("meta-llama/Llama-3.1-8B")                            # doctest: +SKIP
>>> register_nnsight(lm.pipeline.model, lm)                                 # doctest: +SKIP
>>> capture(lm.pipeline.model, lm.tokenizer, ["Hi"], backend="nnsight", remote=True)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

from text2emoji.core.errors import UserError

KEY_VAR = "NDIF_API_KEY"
HOST_VAR = "NDIF_HOST"
KEY_URL = "https://login.ndif.us"


def remote_key() -> str:
    """The NDIF API key from ``NDIF_API_KEY``, set in nnsight's in-memory config.

    Also points nnsight at ``NDIF_HOST`` when that is set (nnsight reads it once, at import)
    and turns nnsight's live status display off: it writes to stdout, which holds the
    commands' JSON.

    Raises:
        UserError: the variable is missing or empty (one line: which variable, where a key comes
            from), or ``NDIF_HOST`` is not an http(s) URL.
    """
    key = os.environ.get(KEY_VAR, "").strip()
    if not key:
        raise UserError(f"--remote needs an NDIF API key in the environment variable {KEY_VAR} "
                        f"(a free account at {KEY_URL} gives one); it is read from the environment only")
    from nnsight import CONFIG

    host = os.environ.get(HOST_VAR, "").strip() or CONFIG.API.HOST
    if not host.startswith(("http://", "https://")):
        raise UserError(f"{HOST_VAR}: the NDIF host must be an http:// or https:// URL, got {host!r}")
    # in memory only: CONFIG.set_default_api_key(key) would also save it to nnsight's config file
    CONFIG.API.APIKEY = key
    CONFIG.API.HOST = host
    CONFIG.APP.REMOTE_LOGGING = False
    return key


def remote_host() -> str:
    """The NDIF host nnsight sends requests to (``CONFIG.API.HOST``)."""
    from nnsight import CONFIG

    return str(CONFIG.API.HOST)


def require_hub_id(model: str) -> None:
    """``model`` must be a hub id (``owner/name``): NDIF loads models by their id.

    Raises:
        UserError: the embedded model, a local directory or a GGUF file (one line).
    """
    from interp.models import resolve_source

    try:
        kind = resolve_source(model).kind
    except UserError:
        kind = "other"  # a path that does not exist, a .gguf file: not a hub id either
    if kind != "hub":
        what = {"embedded": "the embedded model, whose weights are only on this machine",
                "local": "a local model, whose weights are only on this machine"}.get(kind, "not a hub id")
        raise UserError(f"--remote needs a hub model id (owner/name) that NDIF hosts; {model!r} is {what}")


def remote_model(model_id: str) -> Any:
    """nnsight's ``LanguageModel`` for the hub model ``model_id``, with no weights here.

    nnsight builds the model's structure on the meta device from its config (the tokenizer is
    loaded too: prompts are tokenized here); a trace with ``remote=True`` runs on NDIF's copy.
    The Hugging Face module is ``lm.pipeline.model`` (on the meta device): register the pair
    with :func:`interp.capture.register_nnsight` (so that the nnsight backends trace this
    wrapper, not a new one around the module), then give the module to
    :func:`interp.capture.capture` or :func:`interp.tracing.emoji_logprobs` with
    ``backend="nnsight", remote=True``.

    Raises:
        UserError: ``model_id`` is not a hub id, its config or tokenizer cannot be read, or the
            hub cannot be asked for its canonical id (the remote model key).
    """
    import warnings

    from nnsight import LanguageModel

    from interp.models import load_tokenizer

    require_hub_id(model_id)
    # given, not left to nnsight: nnsight 0.8.1 asks transformers 5's check_task() which
    # preprocessors a task loads, gets an import path instead of a class, and then loads no
    # tokenizer ("Impossible to guess which tokenizer to use")
    tokenizer = load_tokenizer(model_id)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="LanguageModel is deprecated")
            # dispatch=False: the structure on the meta device, no weights (as for remote use)
            lm = LanguageModel(model_id, tokenizer=tokenizer)
    except (OSError, ValueError) as e:
        raise UserError(f"model {model_id}: cannot read its config or tokenizer ({_first_line(e)})") from e
    try:
        lm.to_model_key()  # asks the hub for the canonical id once (nnsight caches it)
    except Exception as e:  # no network, unknown or gated repo: all end here the same way
        raise UserError(f"model {model_id}: the Hugging Face hub must confirm the id for NDIF and did not "
                        f"({_first_line(e)})") from e
    return lm


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _job_message(text: str) -> str:
    """A server's description in one line: a traceback's last line is its error."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return "no description"
    return lines[-1] if lines[0].startswith("Traceback") else lines[0]


@contextlib.contextmanager
def remote_errors(remote: bool) -> Iterator[None]:
    """Run one nnsight trace (the block) with ``remote=`` True or False; when True, nnsight's
    connection, authentication, HTTP and job errors become one :class:`UserError` line that
    names the host and never holds the key. Locally (``remote=False``) errors pass unchanged.

    What nnsight 0.8 raises (``nnsight.intervention.backends.remote``): the blocking backend first
    opens a websocket (``websocket.create_connection``: ``OSError`` such as
    ``ConnectionRefusedError`` or a DNS failure, ``websocket.WebSocketException`` such as a bad
    handshake status), then POSTs the request (``httpx`` errors, re-raised as ``RemoteError``
    with the server's detail, e.g. a rejected key), then a job that fails on the server is a
    ``RemoteError`` with its description; downloading the result can raise ``httpx.HTTPError``.

    While a remote trace runs, what nnsight prints (its status display, on with ``--verbose`` /
    ``NNSIGHT_DEBUG``) goes to stderr: stdout holds the commands' JSON.
    """
    if not remote:
        yield
        return
    import httpx
    import websocket
    from nnsight import CONFIG
    from nnsight.intervention.backends.remote import RemoteError

    host = remote_host()
    key = CONFIG.API.APIKEY or ""

    def scrub(text: str) -> str:
        return text.replace(key, "***") if key else text

    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    except RemoteError as e:
        raise UserError(scrub(f"NDIF at {host}: {_job_message(str(e))}")) from None
    except websocket.WebSocketBadStatusException as e:
        code = getattr(e, "status_code", None)
        hint = " (is NDIF_API_KEY a valid key?)" if code in (401, 403) else ""
        raise UserError(scrub(f"NDIF at {host}: connection refused with HTTP status {code}{hint}")) from None
    except (OSError, websocket.WebSocketException, httpx.HTTPError) as e:
        raise UserError(scrub(f"NDIF at {host} is unreachable: {type(e).__name__}: {_first_line(e)} "
                              "(check the network, or NDIF_HOST)")) from None
