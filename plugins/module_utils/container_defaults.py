# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The platform's hardened container defaults, in one place.

Every Compose service the collection renders - a data tier instance, an app stack's service, the nginx router or
Nginx Proxy Manager, Authelia - goes through :func:`harden`, which adds what the service does not say itself:

  - ``security_opt: [no-new-privileges:true]`` (option ``no_new_privileges``);
  - ``cap_drop: [ALL]`` plus only the capabilities its image needs (``drop_capabilities``; the sets per image family
    are in :data:`PROFILES`, measured on the stand-in images, see docs/security.md);
  - ``read_only: true`` with a ``tmpfs`` on each path the image writes outside its volumes (``read_only``), where the
    image allows it;
  - the image's unprivileged user (``non_root``), where the image supports being started as it;
  - a PIDs, a memory and a CPU limit (``pids_limit``, ``memory``, ``cpus``; in ``deploy.resources.limits``);
  - published ports without a host address bound to 127.0.0.1 (``loopback_ports``): a port is public only when the
    inventory says so with an address (``0.0.0.0:8080:80``);
  - on a host with user-namespace remapping (docker_engine_userns_remap), ``userns_mode: host`` for a service that
    needs the host's namespaces (:func:`with_userns`, applied whatever the options say: dockerd refuses such a
    service in a remapped namespace).

A service's own keys always win: ``read_only: false``, its own ``user``, ``cap_drop``, ``pids_limit``, ``mem_limit``
or ``deploy.resources.limits`` are kept as they are; ``security_opt``, ``cap_add`` and ``tmpfs`` are merged (its own
entries kept, a ``no-new-privileges`` entry of its own replaces the default one, its own ``tmpfs`` entry for a path
replaces the default one). The options turn each default off; :func:`check_options` validates them and names the
option in every error.

Pure functions, no I/O and no Ansible imports (the filter ``selfhosted.platform.hardened_service`` and
``compose_definition`` expose them to the roles).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping

from ansible_collections.selfhosted.platform.plugins.module_utils import data_tier
from ansible_collections.selfhosted.platform.plugins.module_utils import userns as userns_utils

# ---------------------------------------------------------------------------------------------
# Profiles: what each image family needs. "user" is the unprivileged user the image can be started as ("image": the
# uid:gid the data tier's contract gives the image, data_tier.server_owner; None: the image's own USER); "caps_root"
# the capabilities its entrypoint needs when it starts as root (non_root off), "caps_user" those it needs started as
# that user; "tmpfs" the paths it writes outside its volumes; "read_only" whether its root filesystem can be
# read-only at all; "public_ports" whether the ports it publishes are the platform's public entry.
# Measured on the stand-in images (tests/integration/test_container_hardening.py, docs/security.md):
#   postgres  root: its entrypoint reads POSTGRES_PASSWORD_FILE (0400, owned by the server's uid) as root
#             (DAC_OVERRIDE), chowns the socket directory (CHOWN) and drops to postgres (SETUID, SETGID).
#   mariadb   root: reads MARIADB_ROOT_PASSWORD_FILE as root (DAC_OVERRIDE), drops to mysql (SETUID, SETGID); the
#             data directory is already the server's (the role creates it so), so its chown finds nothing.
#   redis     root: finds the files under /data (0700, the server's) to chown (DAC_OVERRIDE), drops to redis
#             (SETUID, SETGID).
#   mongodb   not measured (no offline build): its entrypoint chowns /data/db and /data/configdb (CHOWN), reads
#             MONGO_INITDB_ROOT_PASSWORD_FILE as root (DAC_OVERRIDE) and drops to mongodb with gosu (SETUID, SETGID).
#   nginx     started as nginx (101) nothing; as root the master chowns its temp directories and, on a log reopen,
#             the log files to the worker user (CHOWN), then opens those 101-owned logs again after a restart
#             (DAC_OVERRIDE), starts the workers as nginx (SETUID, SETGID) and binds port 80 (NET_BIND_SERVICE on an
#             engine without the unprivileged-port sysctl; Docker 20.10+ sets net.ipv4.ip_unprivileged_port_start=0).
#   npm       not measured (no offline build; the stand-in needs none): its s6 init chowns /data, /etc/letsencrypt
#             and nginx's directories to PUID (CHOWN, FOWNER, DAC_OVERRIDE), s6-setuidgid starts node and nginx's
#             workers as PUID (SETUID, SETGID), s6 signals them (KILL), nginx binds 80/443 (NET_BIND_SERVICE). It
#             writes all over /etc/nginx, /run and /var: no read-only root filesystem, no start as a non-root user.
#   authelia  started as its user (no account in the image: the role gives 8091:8091 its files) nothing; as root
#             its entrypoint runs su-exec even for PUID 0, whose setgroups() needs SETGID (a PUID other than 0 also
#             CHOWN and SETUID). It rewrites /app/.healthcheck.env at every start and fails when it cannot (the role
#             mounts a writable file there), and writes nothing else outside /config and /data.
#   app       nothing: an application image gets no capability unless its service asks (cap_add).
# ---------------------------------------------------------------------------------------------
PROFILES = {
    "postgres": {"user": "image", "caps_root": ("CHOWN", "DAC_OVERRIDE", "SETGID", "SETUID"), "caps_user": (),
                 "tmpfs": ("/var/run/postgresql", "/tmp"), "read_only": True, "public_ports": False,
                 "pids_limit": 512, "memory": "", "cpus": ""},
    "mariadb": {"user": "image", "caps_root": ("DAC_OVERRIDE", "SETGID", "SETUID"), "caps_user": (),
                "tmpfs": ("/run/mysqld", "/tmp"), "read_only": True, "public_ports": False,
                "pids_limit": 512, "memory": "", "cpus": ""},
    "redis": {"user": "image", "caps_root": ("DAC_OVERRIDE", "SETGID", "SETUID"), "caps_user": (),
              "tmpfs": ("/tmp",), "read_only": True, "public_ports": False,
              "pids_limit": 256, "memory": "", "cpus": ""},
    "mongodb": {"user": "image", "caps_root": ("CHOWN", "DAC_OVERRIDE", "SETGID", "SETUID"), "caps_user": (),
                "tmpfs": ("/tmp",), "read_only": True, "public_ports": False,
                "pids_limit": 1024, "memory": "", "cpus": ""},
    "nginx": {"user": "101:101", "caps_root": ("CHOWN", "DAC_OVERRIDE", "NET_BIND_SERVICE", "SETGID", "SETUID"),
              "caps_user": (), "tmpfs": ("/run", "/var/cache/nginx", "/tmp"), "read_only": True,
              "public_ports": True, "pids_limit": 256, "memory": "256m", "cpus": "1.0"},
    "npm": {"user": None, "caps_root": ("CHOWN", "DAC_OVERRIDE", "FOWNER", "KILL", "NET_BIND_SERVICE", "SETGID",
                                        "SETUID"),
            "caps_user": (), "tmpfs": (), "read_only": False, "public_ports": True,
            "pids_limit": 512, "memory": "1g", "cpus": "1.0"},
    "authelia": {"user": "8091:8091", "caps_root": ("SETGID",), "caps_user": (), "tmpfs": ("/tmp",),
                 "read_only": True, "public_ports": False, "pids_limit": 256, "memory": "512m", "cpus": "1.0"},
    "app": {"user": None, "caps_root": (), "caps_user": (), "tmpfs": ("/tmp",), "read_only": True,
            "public_ports": False, "pids_limit": 1024, "memory": "1g", "cpus": "1.0"},
}

# The options (each turns one default off or sets its value); None = the profile's value.
BOOL_OPTIONS = ("enabled", "no_new_privileges", "drop_capabilities", "read_only", "non_root", "loopback_ports")
OPTIONS = BOOL_OPTIONS + ("pids_limit", "memory", "cpus", "user", "profile")
DEFAULTS = {"enabled": True, "no_new_privileges": True, "drop_capabilities": True, "read_only": True,
            "non_root": True, "loopback_ports": None, "pids_limit": None, "memory": None, "cpus": None,
            "user": None, "profile": None}
NNP = "no-new-privileges:true"
CAP_RE = re.compile(r"^(CAP_)?[A-Z][A-Z0-9_]*$")
MEMORY_RE = re.compile(r"^\d+(\.\d+)?\s*([bkmg]b?)?$", re.IGNORECASE)
USER_RE = re.compile(r"^(\d+)(:(\d+))?$")
LOOPBACK = "127.0.0.1"
# option -> (top-level compose key, deploy.resources.limits key), in the order they are added
LIMIT_KEYS = {"pids_limit": ("pids_limit", "pids"), "memory": ("mem_limit", "memory"), "cpus": ("cpus", "cpus")}


class HardeningError(ValueError):
    """Bad options or a service the defaults cannot be applied to; the message names the option."""


def plain_copy(value):
    """VALUE's dicts and lists copied (as plain dicts and lists), the leaves shared. Not copy.deepcopy: a service
    handed over by a role is Ansible's lazily templated container, whose deep copy re-wraps every level and was most
    of the controller's time in this filter (a py-spy profile of a converge), and copies the templar's plugin loaders:
    a value templated inside it with a filter plugin (``combine``) then fails to load that filter ("'dict' object is
    not callable", ansible-core 2.21). The other filters that copy a role's definitions use it too."""
    if isinstance(value, Mapping):
        return {key: plain_copy(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_copy(item) for item in value]
    return value


def _suggest(name, choices):
    close = difflib.get_close_matches(str(name), list(choices), n=1)
    return " (did you mean %s?)" % close[0] if close else ""


def check_options(options, where="service_defaults"):
    """Validate one dict of options (role, stack, instance or service level); returns it as a dict. WHERE names it
    in the errors, e.g. ``app_stack_service_defaults.pids_limit: expected a whole number >= 0, got 'many'``."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise HardeningError("%s: expected a dict of options (%s), got %s" % (
            where, ", ".join(OPTIONS), type(options).__name__))
    for key, value in options.items():
        at = "%s.%s" % (where, key)
        if key not in OPTIONS:
            raise HardeningError("%s: unknown option%s; the options are %s" % (
                at, _suggest(key, OPTIONS), ", ".join(OPTIONS)))
        if value is None:
            continue
        if key in BOOL_OPTIONS and not isinstance(value, bool):
            raise HardeningError("%s: expected true or false, got %r" % (at, value))
        if key == "pids_limit" and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise HardeningError("%s: expected a whole number >= 0 (0: no limit), got %r" % (at, value))
        if key == "memory" and value != "" and not (
                (isinstance(value, int) and not isinstance(value, bool) and value > 0)
                or (isinstance(value, str) and MEMORY_RE.match(value.strip()))):
            raise HardeningError("%s: expected a size such as 512m or 2g ('' : no limit), got %r" % (at, value))
        if key == "cpus" and value != "":
            try:
                ok = not isinstance(value, bool) and float(value) > 0
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise HardeningError("%s: expected a number of CPUs > 0 such as '1.0' ('' : no limit), got %r"
                                     % (at, value))
        if key == "user" and (isinstance(value, bool) or not isinstance(value, (str, int))):
            raise HardeningError("%s: expected a user such as '999:999' or a name, got %r" % (at, value))
        if key == "profile" and value not in PROFILES:
            raise HardeningError("%s: unknown profile %r%s; the profiles are %s" % (
                at, value, _suggest(value, PROFILES), ", ".join(PROFILES)))
    return dict(options)


def settle(profile, options=None, where="service_defaults"):
    """The complete options for PROFILE: DEFAULTS, then the profile's values, then OPTIONS (validated)."""
    opts = check_options(options, where)
    name = opts.get("profile") or profile
    if name not in PROFILES:
        raise HardeningError("%s.profile: unknown profile %r%s; the profiles are %s" % (
            where, name, _suggest(name, PROFILES), ", ".join(PROFILES)))
    prof = PROFILES[name]
    out = dict(DEFAULTS)
    out.update({"loopback_ports": not prof["public_ports"], "pids_limit": prof["pids_limit"],
                "memory": prof["memory"], "cpus": prof["cpus"]})
    out.update({k: v for k, v in opts.items() if v is not None})
    out["profile"] = name
    return out


# ---------------------------------------------------------------------------------------------
# Pieces
# ---------------------------------------------------------------------------------------------
def _as_list(value, where, what):
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return list(value)
    raise HardeningError("%s: expected %s (a list), got %r" % (where, what, value))


def _cap_name(cap, where):
    text = str(cap).strip().upper()
    if not CAP_RE.match(text):
        raise HardeningError("%s: %r is not a capability name (e.g. NET_BIND_SERVICE)" % (where, cap))
    return text[4:] if text.startswith("CAP_") else text


def _numeric_user(user):
    """(uid, gid) of a numeric USER ('999', '999:1000', 999), None for a name or root."""
    match = USER_RE.match(str(user).strip()) if user not in (None, "") else None
    if not match:
        return None
    uid = int(match.group(1))
    gid = int(match.group(3)) if match.group(3) is not None else uid
    return None if uid == 0 else (uid, gid)


def _tmpfs_path(entry):
    return str(entry).split(":", 1)[0].rstrip("/") or "/"


def _has_limit(service, key, deploy_key):
    limits = (((service.get("deploy") or {}).get("resources") or {}).get("limits") or {})
    return service.get(key) not in (None, "") or limits.get(deploy_key) not in (None, "")


def _set_limit(service, key, value):
    deploy = service.setdefault("deploy", {})
    resources = deploy.setdefault("resources", {})
    resources.setdefault("limits", {})[key] = value


def loopback_port(entry, where="ports"):
    """A ``ports`` entry bound to 127.0.0.1 unless it names a host address itself (short or long syntax)."""
    if isinstance(entry, dict):
        if entry.get("host_ip") not in (None, ""):
            return entry
        out = dict(entry)
        out["host_ip"] = LOOPBACK
        return out
    if isinstance(entry, bool) or not isinstance(entry, (str, int)):
        raise HardeningError("%s: expected a port mapping such as '8080:80' or a dict, got %r" % (where, entry))
    text = str(entry).strip()
    if text.startswith("["):  # an IPv6 address of its own
        return entry
    parts = text.split(":")
    if len(parts) == 1:  # container port only: a random host port, on loopback
        return "%s::%s" % (LOOPBACK, text)
    if len(parts) == 2:  # host:container
        return "%s:%s" % (LOOPBACK, text)
    return entry  # address:host:container - declared by the inventory


# ---------------------------------------------------------------------------------------------
# The service
# ---------------------------------------------------------------------------------------------
def harden(service, profile="app", options=None, where="service_defaults", user=None, name="service", userns=None):
    """SERVICE (a compose service dict) with the defaults of PROFILE that it does not set itself.

    OPTIONS (validated, named WHERE in errors) turn defaults off or set their values; USER is the caller's
    unprivileged user for the image (the data tier passes the uid:gid of its contract), used with ``non_root``
    unless OPTIONS name one. NAME names the service in errors about its own keys. USERNS is the engine's
    user-namespace mapping (the fact docker_engine__userns; :func:`with_userns`). The input is not changed."""
    if not isinstance(service, dict):
        raise HardeningError("%s: a service must be a dict, got %r" % (name, service))
    opts = settle(profile, options, where)
    svc = with_userns(service, userns, name)
    if not opts["enabled"]:
        return svc
    prof = PROFILES[opts["profile"]]

    # The user it runs as: its own, else (non_root) the options', the caller's or the profile's.
    if "user" not in svc and opts["non_root"]:
        chosen = opts["user"] if opts["user"] not in (None, "") else user
        if chosen in (None, ""):
            if prof["user"] == "image":
                uid, gid = data_tier.server_owner(svc.get("image") or "")
                chosen = "%d:%d" % (uid, gid)
            else:
                chosen = prof["user"]
        if chosen not in (None, ""):
            svc["user"] = str(chosen)
    effective_user = svc.get("user")
    numeric = _numeric_user(effective_user)
    # Without a user of its own the image starts as its USER, root for every image family with needs of its own.
    as_root = effective_user in (None, "") or _is_root(effective_user)

    if opts["no_new_privileges"]:
        secopts = _as_list(svc.get("security_opt"), "%s.security_opt" % name, "security options")
        if not any(str(o).replace("=", ":", 1).split(":", 1)[0].strip() == "no-new-privileges" for o in secopts):
            secopts.append(NNP)
        svc["security_opt"] = secopts

    if opts["drop_capabilities"] and "cap_drop" not in svc:
        svc["cap_drop"] = ["ALL"]
        own = [_cap_name(c, "%s.cap_add" % name)
               for c in _as_list(svc.get("cap_add"), "%s.cap_add" % name, "capability names")]
        needed = prof["caps_root"] if as_root else prof["caps_user"]
        caps = sorted(set(own) | set(needed))
        if caps:
            svc["cap_add"] = caps
        else:
            svc.pop("cap_add", None)

    if opts["read_only"] and prof["read_only"] and "read_only" not in svc:
        svc["read_only"] = True
    if svc.get("read_only") is True and prof["tmpfs"]:
        own = _as_list(svc.get("tmpfs"), "%s.tmpfs" % name, "tmpfs paths")
        taken = {_tmpfs_path(e) for e in own}
        extra = []
        for path in prof["tmpfs"]:
            if path in taken:
                continue
            if numeric and path != "/tmp":
                extra.append("%s:uid=%d,gid=%d,mode=0755" % (path, numeric[0], numeric[1]))
            else:
                extra.append(path)  # Docker's default: mode 1777, noexec, nosuid, nodev
        svc["tmpfs"] = extra + own

    # Limits go to deploy.resources.limits (Compose 2.20+ and Swarm read them there), unless the service sets its
    # limits with the top-level keys only: Compose refuses a top-level cpus or pids_limit beside a
    # deploy.resources.limits that lacks the same value, so they are added in the service's own style.
    top = not (((svc.get("deploy") or {}).get("resources") or {}).get("limits")) and any(
        svc.get(key) not in (None, "") for key, _deploy_key in LIMIT_KEYS.values())
    for option, (key, deploy_key) in LIMIT_KEYS.items():
        value = opts[option]
        if value in (None, "", 0) or _has_limit(svc, key, deploy_key):
            continue
        value = str(value) if option == "cpus" else value
        if top:
            svc[key] = value
        else:
            _set_limit(svc, deploy_key, value)

    if opts["loopback_ports"] and svc.get("ports") and svc.get("network_mode") != "host":
        ports = _as_list(svc["ports"], "%s.ports" % name, "port mappings")
        svc["ports"] = [loopback_port(p, "%s.ports[%d]" % (name, i)) for i, p in enumerate(ports)]
    return svc


# What makes dockerd refuse a container in a remapped user namespace ("cannot share the host's network namespace when
# user namespaces are enabled", "privileged mode is incompatible with user namespaces", the host's PID namespace), and
# the Docker socket: its group on the host is not mapped into the namespace, so a mounted socket cannot be used.
HOST_MODES = ("network_mode", "pid", "ipc", "uts")
SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")


def _volume_source(volume):
    if isinstance(volume, dict):
        return str(volume.get("source") or "") if volume.get("type", "bind") == "bind" else ""
    return str(volume).split(":", 1)[0] if ":" in str(volume) else ""


def host_namespaces(service):
    """Why SERVICE needs the host's user namespace (a list of reasons, [] when it does not): privileged, the host's
    network, PID, IPC or UTS namespace, or the Docker socket mounted."""
    svc = service or {}
    why = ["privileged"] if svc.get("privileged") is True else []
    why += ["%s: host" % key for key in HOST_MODES if str(svc.get(key) or "") == "host"]
    why += ["mounts %s" % src for src in (_volume_source(v) for v in svc.get("volumes") or [])
            if src in SOCKETS or src.endswith("/docker.sock")]
    return why


def with_userns(service, userns=None, name="service"):
    """SERVICE (copied) with ``userns_mode: host`` when the engine remaps user namespaces (USERNS, the fact
    docker_engine__userns) and the service needs the host's namespaces (:func:`host_namespaces`); a ``userns_mode`` of
    its own is kept. Remapping off: the service as it is."""
    svc = plain_copy(service)
    try:
        enabled = userns_utils.mapping(userns)[0]
    except userns_utils.UsernsError as exc:
        raise HardeningError("%s: %s" % (name, exc)) from exc
    if enabled and "userns_mode" not in svc and host_namespaces(svc):
        svc["userns_mode"] = "host"
    return svc


def with_userns_definition(definition, userns=None):
    """A Compose DEFINITION whose every service went through :func:`with_userns`."""
    doc = plain_copy(definition)
    services = doc.get("services") or {}
    doc["services"] = {n: with_userns(s, userns, n) if isinstance(s, dict) else s for n, s in services.items()}
    return doc


def _is_root(user):
    text = str(user).strip() if user not in (None, "") else ""
    return text in ("0", "root") or text.startswith(("0:", "root:"))


def service_user(service):
    """(uid, gid) a hardened SERVICE runs as when numeric and not root, else None (roles chown files to it)."""
    return _numeric_user((service or {}).get("user"))
