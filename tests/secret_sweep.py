"""Secret sweeps for tests: is a secret anywhere in a text (a playbook's ``-vvv`` output, a result, a file), or on
the command line of any process while a block of the test runs?

    with ProcessSampler(containers=[sandbox_name]) as ps:
        res = playbook(state, "site.yml", "-vvv", "--diff")
    assert_no_secrets(res.stdout + res.stderr, SECRETS, where="site.yml -vvv")
    ps.assert_no_secrets(SECRETS)                 # every argv seen on the host and in the container
    assert ps.saw("restic"), "the sampler never saw restic run"

A secret is looked for in the forms it takes in output: as it is, JSON-escaped (a ``"`` or ``\\`` in it is escaped in
JSON and in Ansible's YAML-ish callback output), and percent-encoded (in URLs). A hit is reported with its line
number and the text around it, the secret itself shown as ``<SECRET n>`` so the report does not leak it further.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, quote_plus

MIN_SECRET_LEN = 4  # shorter "secrets" match by chance everywhere: a sweep for them proves nothing


@dataclass(frozen=True)
class Hit:
    secret: int  # index of the secret in the list given
    form: str  # "raw", "json", "percent" or "plus"
    where: str
    line: int  # 1-based
    context: str  # the text around the hit, every secret replaced by <SECRET n>

    def __str__(self) -> str:
        return f"{self.where}:{self.line}: <SECRET {self.secret}> ({self.form}) in: {self.context}"


def secret_forms(secret: str) -> dict[str, str]:
    """{form: text} of the ways SECRET can appear in output (each distinct text once, raw first)."""
    forms = {"raw": secret, "json": json.dumps(secret)[1:-1], "percent": quote(secret, safe=""),
             "plus": quote_plus(secret, safe="")}
    out: dict[str, str] = {}
    for name, text in forms.items():
        if text not in out.values():
            out[name] = text
    return out


def _as_text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str, ensure_ascii=False)


def _check(secrets: Iterable[str]) -> list[str]:
    out = [str(s) for s in secrets]
    if not out:
        raise ValueError("no secrets to look for: a sweep for nothing asserts nothing")
    short = [i for i, s in enumerate(out) if len(s) < MIN_SECRET_LEN]
    if short:
        raise ValueError(f"secrets {short} are shorter than {MIN_SECRET_LEN} characters: they would match by chance")
    return out


def _hide(text: str, secrets: list[str]) -> str:
    for i in sorted(range(len(secrets)), key=lambda i: -len(secrets[i])):
        for form in secret_forms(secrets[i]).values():
            text = text.replace(form, f"<SECRET {i}>")
    return text


def find_secrets(text: object, secrets: Iterable[str], *, where: str = "output", context: int = 60) -> list[Hit]:
    """Every occurrence of every form of every secret in TEXT (a str, bytes, or anything JSON can dump)."""
    wanted = _check(secrets)
    data = _as_text(text)
    hits = []
    for index, secret in enumerate(wanted):
        for form, needle in secret_forms(secret).items():
            start = data.find(needle)
            while start >= 0:
                line = data.count("\n", 0, start) + 1
                lo, hi = max(0, start - context), start + len(needle) + context
                snippet = _hide(data[lo:hi], wanted).replace("\n", "\\n")
                hits.append(Hit(index, form, where, line, snippet))
                start = data.find(needle, start + 1)
    return hits


def assert_no_secrets(text: object, secrets: Iterable[str], *, where: str = "output", context: int = 60) -> None:
    """Fail listing every hit (line and context) when any form of any secret is in TEXT."""
    hits = find_secrets(text, secrets, where=where, context=context)
    if hits:
        raise AssertionError(f"{len(hits)} secret occurrence(s) in {where}:\n" + "\n".join(map(str, hits)))


@dataclass
class ProcessSampler:
    """While the ``with`` block runs, read the command line of every process (``ps -eww -o args=``) on this host
    and, with CONTAINERS, inside each of those containers every INTERVAL seconds.
    ``lines`` maps each source ("host" or the container's name) to the distinct command lines seen there;
    ``rounds`` counts the successful reads per source and ``errors`` the failed ones.

    A container is read by one ``docker exec`` that runs the loop inside it (bash, ps) and streams every round: a
    ``docker exec`` per round costs a second or more when the test host is busy, and a short-lived process (a dump
    of a few hundred milliseconds) then falls between two reads. The loop ends when its stdin closes."""

    containers: Iterable[str] = ()
    interval: float = 0.2
    host: bool = True
    lines: dict[str, dict[str, None]] = field(default_factory=dict)
    rounds: dict[str, int] = field(default_factory=dict)
    errors: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.containers = list(self.containers)
        self.sources = (["host"] if self.host else []) + self.containers
        for source in self.sources:
            self.lines[source], self.rounds[source], self.errors[source] = {}, 0, []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @staticmethod
    def _argv(source: str) -> list[str]:
        ps = ["ps", "-eww", "-o", "args="]
        return ps if source == "host" else ["docker", "exec", source, *ps]

    def sample(self, source: str) -> None:
        """One read of SOURCE's process list."""
        try:
            res = subprocess.run(self._argv(source), capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            self.errors[source].append(str(exc))
            return
        if res.returncode != 0:
            self.errors[source].append(res.stderr.strip()[-300:])
            return
        self._keep(source, res.stdout.splitlines())

    def _keep(self, source: str, round_lines: Iterable[str]) -> None:
        """One successful read of SOURCE: its distinct command lines kept, the round counted."""
        for line in round_lines:
            if line.strip():
                self.lines[source].setdefault(line.strip(), None)
        self.rounds[source] += 1

    ROUND_END = "@@shp-sampler-round@@"

    def _loop(self, source: str) -> None:
        if source != "host":
            self._stream(source)
            return
        while True:
            self.sample(source)
            if self._stop.wait(self.interval):
                return

    def _stream(self, source: str) -> None:
        """Read SOURCE's process list in a loop inside the container until the block ends."""
        loop = (f"while :; do ps -eww -o args= || exit 3; echo {self.ROUND_END}; read -r -t {self.interval} _; "
                "[ $? -gt 128 ] || exit 0; done")
        try:
            proc = subprocess.Popen(["docker", "exec", "-i", source, "bash", "-c", loop], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        except OSError as exc:
            self.errors[source].append(str(exc))
            return
        closer = threading.Thread(target=self._close_when_stopped, args=(proc,), daemon=True)
        closer.start()
        block: list[str] = []
        for raw in proc.stdout:
            line = raw.strip()
            if line == self.ROUND_END:
                self._keep(source, block)
                block = []
            else:
                block.append(line)
        rc = proc.wait()
        if rc != 0:
            self.errors[source].append(f"docker exec (rc={rc}): {proc.stderr.read().strip()[-300:]}")
        closer.join(timeout=15)

    def _close_when_stopped(self, proc: subprocess.Popen) -> None:
        self._stop.wait()
        with contextlib.suppress(OSError):
            proc.stdin.close()  # the loop's read sees the end of its input and exits
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()

    def __enter__(self) -> ProcessSampler:
        for source in self.sources:
            thread = threading.Thread(target=self._loop, args=(source,), daemon=True, name=f"ps-{source}")
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)
        for source in self.sources:  # one last look, so a block shorter than the interval is still seen
            self.sample(source)

    def text(self, source: str | None = None) -> str:
        """The command lines seen (of SOURCE, or of every source, each line prefixed with its source)."""
        if source is not None:
            return "\n".join(self.lines[source])
        return "\n".join(f"[{src}] {line}" for src in self.sources for line in self.lines[src])

    def saw(self, word: str, source: str | None = None) -> list[str]:
        """The command lines containing WORD (to show that the process of interest was sampled at all)."""
        sources = [source] if source else self.sources
        return [line for src in sources for line in self.lines[src] if word in line]

    def assert_no_secrets(self, secrets: Iterable[str], context: int = 60) -> None:
        """Fail when any source was never read (the sweep would prove nothing there) or when any form of any
        secret is on a command line seen."""
        unread = {src: self.errors[src][-1:] for src in self.sources if self.rounds[src] == 0}
        if unread:
            raise AssertionError(f"the process list of {sorted(unread)} was never read: {unread}")
        hits: list[Hit] = []
        for src in self.sources:
            hits += find_secrets(self.text(src), secrets, where=f"argv[{src}]", context=context)
        if hits:
            raise AssertionError(f"{len(hits)} secret occurrence(s) on command lines:\n" + "\n".join(map(str, hits)))


def sweep(outputs: Mapping[str, object], secrets: Iterable[str], sampler: ProcessSampler | None = None) -> None:
    """assert_no_secrets over several named outputs (and a sampler's command lines), reporting every hit of every
    output at once."""
    wanted = _check(secrets)
    problems = []
    for where, text in outputs.items():
        problems += [str(h) for h in find_secrets(text, wanted, where=where)]
    if sampler is not None:
        try:
            sampler.assert_no_secrets(wanted)
        except AssertionError as exc:
            problems.append(str(exc))
    if problems:
        raise AssertionError(f"secrets found ({len(problems)}):\n" + "\n".join(problems))


def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.05) -> bool:
    """Poll PREDICATE until true or TIMEOUT seconds passed; returns its last answer."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
