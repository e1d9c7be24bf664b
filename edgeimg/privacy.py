"""Every log line is ours: library warnings, log records and exception texts, scrubbed.

pydicom, highdicom and friends quote element values in what they say (highdicom's "The string
"<the patient's name>" is unlikely to represent the intended person name", pydicom's "Invalid
value for VR UI: '...'"), and Python's exceptions quote the values that failed. Anything
that reaches stderr, results.jsonl, the audit file or the queue goes through `scrub`, which
replaces quoted values and `Keyword=value` pairs of identifying attributes with `<value>` while
keeping the sentence, so the message stays a stable template. UIDs, DICOM keywords, VRs,
character-set and codec names and paths are kept: they say where and what, not who.

`capture()` routes Python warnings, third-party log records and uncaught exceptions (any thread)
through `emit` as structured events; the CLI calls it once at start, decoding and writing worker
processes call it from their initializer.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
import traceback
import warnings
from functools import lru_cache
from pathlib import Path
from types import TracebackType
from typing import Any

REDACTED = "<value>"
MAX_TEXT = 400
LIBRARY_LOGGERS = ("pydicom", "highdicom", "pynetdicom", "onnxruntime", "PIL", "numcodecs")

_QUOTED = re.compile(
    r"""(?<![\w'"])[bBrRuUfF]?(?P<q>['"`])(?P<v>(?:\\.|(?!(?P=q)).)*)(?:(?P=q)|$)"""
    r"""|“(?P<v2>[^”]*)(?:”|$)|‘(?P<v3>[^’]*)(?:’|$)""",
    re.S,
)
_IDENTIFYING = (
    r"(?:Other)?Patient\w*|Accession\w*|\w*Physician\w*|Operators?Name|Institution\w*"
    r"|\w*Description|\w*Comments?|PerformedProcedureStep\w*|Requesting\w*|Issuer\w*"
    r"|MedicalRecordLocator|\w*Names?|\w*Address|\w*TelephoneNumbers?"
)
_IDENTIFYING_KEYWORD = re.compile(rf"{_IDENTIFYING}|\w*Date\w*|\w*(?<!U)IDs?")
_BEFORE = re.compile(r"\b([A-Z][A-Za-z0-9]+)\s?$")
#: ASCII digits and punctuation, and letters in runs too short to spell a name
_CODE_LIKE = r"(?:[ -@\[-`{-~]|(?<![A-Za-z])[A-Za-z]{1,2}(?![A-Za-z]))"
#: the values kept after a keyword that is not identifying, by the keyword's VR: codes, UIDs and
#: numbers that may be malformed (`NumberOfFrames '1A'`) but cannot spell a name
_STRUCTURAL = {
    "CS": re.compile(r"[A-Z0-9_ ]{0,16}"),
    "UI": re.compile(f"{_CODE_LIKE}{{0,64}}"),
    **{
        vr: re.compile(f"{_CODE_LIKE}{{0,32}}")
        for vr in ("IS", "DS", "US", "SS", "UL", "SL", "FL", "FD", "UV")
    },
}
_PAIR = re.compile(rf"(?P<k>\b(?:{_IDENTIFYING}))(?P<s>\s*[:=]\s*)(?P<v>[^,;)\]}}\n]+)")
_UID = re.compile(r"(?:0|[1-9]\d*)(?:\.(?:0|[1-9]\d*)){3,}|2\.25\.[1-9]\d*")
_NUMBER = re.compile(r"[-+]?\d{1,4}(?:\.\d{1,6})?")
_CHARSET = re.compile(r"(?:ISO[ _]IR[ _]\d+|ISO 2022 IR \d+|GB18030|GBK|ISO_IR \d+)")
_PATH = re.compile(r"(?:/|\./|\.\./|~/)[^\s]*")
_VRS = frozenset(
    "AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL "
    "UN UR US UT UV".split()
)
_write_lock = threading.Lock()
_seen: dict[tuple[Any, ...], int] = {}
_installed = False


@lru_cache(maxsize=1)
def _keywords() -> frozenset[str]:
    from pydicom.datadict import keyword_dict

    return frozenset(keyword_dict)


def _safe(value: str, after: str, before: str = "") -> bool:
    """A quoted token that says what or where rather than who."""
    if not value:
        return True
    keyword = _BEFORE.search(before)
    if keyword and keyword.group(1) in _keywords():  # `PatientID '1234'`: the attribute decides
        return _structural(keyword.group(1), value)
    if _UID.fullmatch(value) or _NUMBER.fullmatch(value) or _CHARSET.fullmatch(value):
        return True
    if value in _VRS or value in _keywords() or after.startswith(" codec"):
        return True
    return bool(_PATH.fullmatch(value)) and "^" not in value


def _structural(keyword: str, value: str) -> bool:
    """`value` is one a non-identifying attribute can hold without it being free text."""
    from pydicom.datadict import dictionary_VR, keyword_dict

    if _IDENTIFYING_KEYWORD.fullmatch(keyword):
        return False
    pattern = _STRUCTURAL.get(dictionary_VR(keyword_dict[keyword]))
    return bool(pattern and pattern.fullmatch(value))


def scrub(text: object) -> str:
    """`text` on one line with element values replaced by `<value>`; the wording is kept."""
    raw = " ".join(str(text).split())[: 4 * MAX_TEXT]  # a quote cut open here runs to the end

    def quoted(match: re.Match[str]) -> str:
        value = match.group("v") or match.group("v2") or match.group("v3") or ""
        before = raw[max(0, match.start() - 80) : match.start()]
        safe = _safe(value, raw[match.end() : match.end() + 8], before)
        return match.group(0) if safe else REDACTED

    cleaned = _QUOTED.sub(quoted, raw)
    cleaned = _PAIR.sub(lambda m: m.group("k") + m.group("s") + REDACTED, cleaned)
    return cleaned if len(cleaned) <= MAX_TEXT else cleaned[: MAX_TEXT - 3] + "..."


def describe(error: BaseException) -> str:
    """`Type: message` of an exception, scrubbed: what logs, queue rows and results carry."""
    message = scrub(error)
    name = type(error).__name__
    return f"{name}: {message}" if message else name


def scrub_fields(value: Any) -> Any:
    """`value` with every string inside it (dicts, lists) scrubbed; other types as they are."""
    if isinstance(value, str):
        return scrub(value) if _needs_scrub(value) else value
    if isinstance(value, dict):
        return {key: scrub_fields(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub_fields(item) for item in value]
    return value


def _needs_scrub(text: str) -> bool:
    """Cheap pre-check: most fields (UIDs, AE titles, paths) hold no quote, pair or newline."""
    return any(mark in text for mark in "'\"`“‘\n=:") or len(text) > MAX_TEXT


def emit(event: str, **fields: Any) -> None:
    """One event on stderr: JSON when not a terminal, `time event key=value ...` otherwise.

    String fields are scrubbed here, so no caller can put an element value on a log line.
    """
    fields = {key: scrub_fields(value) for key, value in fields.items()}
    stream = sys.stderr
    if stream is None:
        return
    if stream.isatty():
        parts = [time.strftime("%H:%M:%S"), event, *(f"{k}={v}" for k, v in fields.items())]
        line = " ".join(parts)
    else:
        line = json.dumps({"time": round(time.time(), 3), "event": event, **fields}, default=str)
    with _write_lock:
        stream.write(line + "\n")
        stream.flush()


def _first_of_kind(key: tuple[Any, ...]) -> int | None:
    """The occurrence count when this kind of event should be shown: 1, 10, 100, ..."""
    with _write_lock:
        if len(_seen) > 10_000:  # texts that vary without end: start counting again
            _seen.clear()
        count = _seen[key] = _seen.get(key, 0) + 1
    return count if count == 10 ** (len(str(count)) - 1) else None


@lru_cache(maxsize=256)
def _module_of(filename: str) -> str:
    """`pydicom.valuerep` for .../site-packages/pydicom/valuerep.py; the file name otherwise."""
    path = Path(filename)
    roots = sorted((Path(entry) for entry in sys.path if entry), key=lambda p: -len(str(p)))
    for root in roots:
        try:
            relative = path.relative_to(root)
        except ValueError:
            continue
        return ".".join(relative.with_suffix("").parts)
    return path.stem


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """warnings.showwarning: a `library_warning` event instead of the raw text."""
    text = scrub(message)
    module = _module_of(str(filename))
    occurrences = _first_of_kind(("warning", category, module, lineno, text))
    if occurrences:
        fields = {"category": category.__name__, "module": module, "line": lineno}
        emit("library_warning", **fields, message=text, occurrences=occurrences)


class _Handler(logging.Handler):
    """Third-party log records as `library_log` events: template with scrubbed arguments."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = _record_text(record)
            occurrences = _first_of_kind(("log", record.name, record.levelno, text))
            if not occurrences:
                return
            fields: dict[str, Any] = {"logger": record.name, "level": record.levelname}
            fields.update(message=text, occurrences=occurrences)
            if record.exc_info and record.exc_info[1] is not None:
                fields["exception"] = describe(record.exc_info[1])
            emit("library_log", **fields)
        except Exception:  # a log handler must never raise into the code that logged
            self.handleError(record)


def _record_text(record: logging.LogRecord) -> str:
    """The record's message with string arguments that are not safe tokens left out."""
    args = record.args
    if isinstance(args, dict):
        args = {key: _argument(value) for key, value in args.items()}
    elif args:
        args = tuple(_argument(value) for value in args)
    try:
        text = str(record.msg) % args if args else str(record.msg)
    except (TypeError, ValueError, KeyError):
        text = str(record.msg)
    return scrub(text)


def _argument(value: Any) -> Any:
    if isinstance(value, (int, float)) or value is None:
        return value
    text = str(value)
    return text if _safe(text, "") else REDACTED


def _uncaught(kind: str, error: BaseException, tb: TracebackType | None, **fields: Any) -> None:
    """An uncaught exception as one event: its type, scrubbed text and where it was raised."""
    frames = traceback.extract_tb(tb)[-6:]
    where = [f"{_module_of(frame.filename)}:{frame.lineno} {frame.name}" for frame in frames]
    emit(kind, error=describe(error), where=where, **fields)


def _excepthook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, tb)
        return
    _uncaught("uncaught_exception", error, tb)


def _thread_excepthook(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit or args.exc_value is None:
        return
    thread = args.thread.name if args.thread is not None else None
    _uncaught("thread_exception", args.exc_value, args.exc_traceback, thread=thread)


def capture() -> None:
    """Route warnings, library log records and uncaught exceptions through `emit` (idempotent).

    Loggers of the libraries we use lose any stream handler of their own and propagate to one
    handler on the root logger, so a record is written once, scrubbed, and never raw; without
    a root handler logging's last resort would print a WARNING record's text as it is.
    """
    global _installed
    warnings.showwarning = _show_warning
    sys.excepthook = _excepthook
    threading.excepthook = _thread_excepthook
    if _installed:
        return
    _installed = True
    root = logging.getLogger()
    if not any(isinstance(handler, _Handler) for handler in root.handlers):
        root.addHandler(_Handler(logging.WARNING))
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if isinstance(handler, logging.StreamHandler):
                logger.removeHandler(handler)
        logger.propagate = True
