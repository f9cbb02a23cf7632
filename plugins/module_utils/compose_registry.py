# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a pull would do, asked of the registry without pulling, for compose_stack.

The Docker Engine answers ``GET /distribution/{name}/json`` with the registry's manifest digest for an
image reference (the daemon asks the registry itself, through its own mirrors, proxies and insecure-registry
settings, exactly as a pull would), given the caller's credentials in the ``X-Registry-Auth`` header. Comparing
that digest with the local image's ``RepoDigests`` tells, before anything is pulled, whether ``pull: always``
would fetch a newer image and whether an image that is not present locally exists at all.

This module is the pure part: reference parsing (Docker's defaults), the credentials lookup in the docker
CLI's config.json (credential helpers are run through a callable), the ``X-Registry-Auth`` header, the
classification of the daemon's answer and the verdict per image. No socket and no process here.
"""

from __future__ import annotations

import base64
import json
import re

DEFAULT_DOMAIN = "docker.io"
INDEX_SERVER = "https://index.docker.io/v1/"
DIGEST = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}$")

# verdicts
CURRENT = "current"        # the registry's digest is the local image's: a pull fetches nothing
NEWER = "newer"            # the registry has another image under the tag: a pull replaces the local one
PULLABLE = "pullable"      # not present locally, the registry has it: it will be pulled
MISSING = "missing"        # not in the registry (manifest unknown): the pull fails
DENIED = "denied"          # the registry refused (no, wrong or insufficient credentials): the pull fails
UNVERIFIED = "unverified"  # the registry could not be asked (unreachable, no Engine API, other error)
FAILING = (MISSING, DENIED)


class Reference:
    """A parsed image reference: ``domain``, ``path`` (with docker.io's ``library/``), ``tag``, ``digest``."""

    def __init__(self, domain, path, tag, digest):
        self.domain = domain
        self.path = path
        self.tag = tag
        self.digest = digest

    @property
    def repo(self):
        """The canonical repository name, e.g. docker.io/library/redis or 127.0.0.1:5000/team/app."""
        return "%s/%s" % (self.domain, self.path)

    def __repr__(self):  # pragma: no cover - debugging aid
        return "Reference(%r, %r, %r, %r)" % (self.domain, self.path, self.tag, self.digest)


def parse_reference(ref):
    """Docker's normalisation of an image reference (distribution/reference ParseNormalizedNamed): the first
    path component is a registry host when it contains a dot or a colon (a port), is ``localhost`` or has
    upper-case letters; otherwise the image is on docker.io, where one-component names get ``library/``.
    ``index.docker.io`` is docker.io. No tag and no digest means ``latest``. Raises ValueError for what is
    not a reference (an image id, an empty string)."""
    if not ref or not isinstance(ref, str) or ref.startswith("sha256:") or any(c.isspace() for c in ref):
        raise ValueError("not an image reference: %r" % (ref,))
    name, digest = ref, None
    if "@" in ref:
        name, digest = ref.split("@", 1)
        if not DIGEST.match(digest):
            raise ValueError("invalid digest in %r" % ref)
    tag = None
    slash, colon = name.rfind("/"), name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1:]
        if not tag:
            raise ValueError("empty tag in %r" % ref)
    if not name:
        raise ValueError("not an image reference: %r" % (ref,))
    first, sep, rest = name.partition("/")
    if sep and (("." in first or ":" in first) or first == "localhost" or first.lower() != first):
        domain, path = first, rest
    else:
        domain, path = DEFAULT_DOMAIN, name
    if domain == "index.docker.io":
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = "library/" + path
    if not path or path != path.lower():
        raise ValueError("invalid repository name in %r" % ref)
    if tag is None and digest is None:
        tag = "latest"
    return Reference(domain, path, tag, digest)


def repo_digests(entries):
    """{canonical repository: set of digests} of an image's RepoDigests (``redis@sha256:...``)."""
    out = {}
    for entry in entries or []:
        try:
            r = parse_reference(entry)
        except ValueError:
            continue
        if r.digest:
            out.setdefault(r.repo, set()).add(r.digest)
    return out


# ---------------------------------------------------------------------------------------------
# credentials, as the docker CLI finds them
# ---------------------------------------------------------------------------------------------
def auth_key(ref):
    """The key the docker CLI stores a registry's credentials under: its host (with port), or
    ``https://index.docker.io/v1/`` for Docker Hub."""
    return INDEX_SERVER if ref.domain == DEFAULT_DOMAIN else ref.domain


def hostname(key):
    """The docker CLI's ConvertToHostname: ``https://host:5000/v1/`` -> ``host:5000``."""
    for scheme in ("http://", "https://"):
        if key.startswith(scheme):
            key = key[len(scheme):]
            break
    return key.split("/", 1)[0]


def _from_entry(entry):
    """{username, password} / {identitytoken} / {registrytoken} from a config.json ``auths`` entry."""
    if not isinstance(entry, dict):
        return None
    if entry.get("identitytoken"):
        return {"identitytoken": entry["identitytoken"]}
    if entry.get("registrytoken"):
        return {"registrytoken": entry["registrytoken"]}
    username, password = entry.get("username"), entry.get("password")
    if entry.get("auth"):
        try:
            decoded = base64.b64decode(entry["auth"]).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return None
        username, sep, password = decoded.partition(":")
        if not sep:
            return None
    if username:
        return {"username": username, "password": password or ""}
    return None


def find_credentials(docker_config, ref, run_helper=None):
    """(credentials dict or None, source text) for the registry of ``ref``, looked up as the docker CLI does:
    ``credHelpers[host]``, else ``credsStore``, run as ``docker-credential-<name> get`` through
    ``run_helper(name, server) -> (ok, stdout or error text)``; else the ``auths`` entry of config.json
    (exact key, or a key whose host is the registry's). The source names where they came from, never what
    they are."""
    key = auth_key(ref)
    helpers = docker_config.get("credHelpers") or {}
    helper = helpers.get(key) if isinstance(helpers, dict) else None
    helper = helper or docker_config.get("credsStore")
    if helper and isinstance(helper, str):
        if run_helper is None:
            return None, "credential helper docker-credential-%s not run" % helper
        ok, out = run_helper(helper, key)
        if not ok:
            return None, "credential helper docker-credential-%s: %s" % (helper, out)
        try:
            data = json.loads(out)
        except ValueError:
            return None, "credential helper docker-credential-%s printed no JSON" % helper
        username, secret = data.get("Username"), data.get("Secret")
        if not secret:
            return None, "credential helper docker-credential-%s: no credentials for %s" % (helper, key)
        if username == "<token>":
            return {"identitytoken": secret}, "credential helper docker-credential-%s" % helper
        return {"username": username or "", "password": secret}, "credential helper docker-credential-%s" % helper
    auths = docker_config.get("auths") or {}
    if not isinstance(auths, dict):
        return None, "no credentials"
    entry = auths.get(key)
    if entry is None:
        for k, v in auths.items():
            if hostname(k) == hostname(key):
                entry = v
                break
    creds = _from_entry(entry)
    return (creds, "config.json auths") if creds else (None, "no credentials")


def auth_header(creds, ref):
    """The ``X-Registry-Auth`` value for ``creds``: base64url of the JSON AuthConfig the Engine expects
    (as the docker CLI encodes it), or None without credentials."""
    if not creds:
        return None
    body = dict(creds)
    body["serveraddress"] = auth_key(ref)
    return base64.urlsafe_b64encode(json.dumps(body, sort_keys=True).encode("utf-8")).decode("ascii")


# ---------------------------------------------------------------------------------------------
# the daemon's answer and the verdict
# ---------------------------------------------------------------------------------------------
DENIED_WORDS = ("no basic auth credentials", "unauthorized", "authentication required", "denied",
                "incorrect username or password")


def message_of(body):
    if isinstance(body, dict):
        return str(body.get("message") or "")
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    try:
        data = json.loads(body or "")
        if isinstance(data, dict) and data.get("message"):
            return str(data["message"])
    except ValueError:
        pass
    return (body or "").strip()


def classify(status, body):
    """The daemon's answer to GET /distribution/{name}/json as (kind, digest, detail): kind is
    ``found`` (200; the manifest digest), ``missing`` (404: manifest unknown / name unknown), ``denied``
    (401/403, or the 500 the daemon gives when the registry wants credentials that were not sent) or
    ``unreachable`` (anything else: the daemon could not reach the registry, a rate limit, an Engine without
    the endpoint). Measured against Engine 20.10 and Debian's docker-registry 2.8:
    200 ``{"Descriptor": {"digest": ...}}``; 404 ``manifest unknown: manifest unknown``; 401
    ``unauthorized: authentication required`` (wrong password); 500 ``Head "...": no basic auth credentials``
    (none sent); 500 ``Get "http://127.0.0.1:PORT/v2/": dial tcp ...: connect: connection refused``."""
    detail = message_of(body)
    low = detail.lower()
    if status == 200:
        try:
            data = body if isinstance(body, dict) else json.loads(body.decode("utf-8") if isinstance(body, bytes)
                                                                  else body)
            digest = (data.get("Descriptor") or {}).get("digest")
        except (ValueError, AttributeError):
            digest = None
        if digest:
            return "found", digest, ""
        return "unreachable", None, "the Engine answered without a digest"
    if status in (401, 403) or (status == 500 and any(w in low for w in DENIED_WORDS)):
        return "denied", None, detail or "HTTP %s" % status
    if status == 404 and "page not found" not in low:
        return "missing", None, detail or "not found"
    if status == 500 and any(w in low for w in ("manifest unknown", "name unknown")):
        return "missing", None, detail
    return "unreachable", None, detail or "HTTP %s" % status


def needs_query(mode, ref, local_id, local_digests):
    """Whether the registry must be asked about ``ref`` for pull ``mode`` (always / missing): with ``missing``
    only images that are not present; with ``always`` every image, except one pinned by digest that is present
    (its content cannot change)."""
    if mode == "missing":
        return not local_id
    if mode == "always":
        return not (local_id and ref.digest)
    return False


def verdict(mode, ref, local_id, local_digests, answer):
    """The verdict for one image: CURRENT, NEWER, PULLABLE, MISSING, DENIED or UNVERIFIED.
    ``local_digests`` is the local image's RepoDigests, ``answer`` classify()'s tuple or None when the
    registry was not asked (needs_query() said so)."""
    if answer is None:
        return CURRENT if local_id else PULLABLE
    kind, digest, _detail = answer
    if kind == "missing":
        return MISSING
    if kind == "denied":
        return DENIED
    if kind != "found":
        return UNVERIFIED
    if not local_id:
        return PULLABLE
    if mode == "always" and digest not in repo_digests(local_digests).get(ref.repo, set()):
        return NEWER
    return CURRENT


def describe(image, result):
    """One sentence for a verdict (the failure message, the warning)."""
    v, detail = result["verdict"], result.get("detail") or ""
    registry = result.get("registry") or "the registry"
    if v == MISSING:
        return "image %s is not in registry %s (%s)" % (image, registry, detail)
    if v == DENIED:
        creds = result.get("credentials") or "none"
        return "registry %s refused image %s (%s; credentials: %s)" % (registry, image, detail, creds)
    if v == UNVERIFIED:
        return "registry %s could not be asked about image %s (%s)" % (registry, image, detail)
    if v == NEWER:
        return "registry %s has a newer image for %s (%s)" % (registry, image, short(result.get("digest")))
    return "image %s: %s" % (image, v)


def short(digest):
    return (digest or "")[:19]


def apply_to_plan(steps, desired, results, recreate):
    """Steps of compose_plan.plan() with what a pull predicted in check mode: a service whose image the
    registry has newer is recreated by ``up`` after the pull (unless recreate=never), with the reason named.
    Returns new step dicts; steps of other services are kept as they are."""
    newer = {img: r for img, r in results.items() if r["verdict"] == NEWER}
    out = []
    for step in steps:
        want = desired.get(step["service"]) or {}
        r = newer.get(want.get("image"))
        if r is None or step["action"] in ("skip", "stop", "remove") or want.get("replicas") == 0:
            out.append(step)
            continue
        reason = "newer image in registry: %s (%s)" % (want["image"], short(r.get("digest")))
        if step["action"] in ("create", "recreate"):
            out.append(dict(step, reasons=list(step["reasons"]) + [reason]))
        elif recreate == "never":
            out.append(dict(step, reasons=list(step["reasons"]) + ["%s, but recreate=never" % reason]))
        else:
            out.append({"service": step["service"], "action": "recreate", "reasons": [reason]})
    return out
