# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Logic of npm_access_list: Nginx Proxy Manager access lists (htpasswd users and client allow/deny rules).

NPM never returns passwords: every read masks them (``password: ""``) and adds a ``hint``, the first character
followed by one ``*`` per further character. On ``PUT`` an item sent with an empty password keeps the stored one,
an item with a password replaces that user, and users left out are deleted. So users are tracked by name and a
password is only sent when ``update_password`` asks for it: ``on_create`` (new users only), ``on_change`` (also
when the hint shows the stored password differs: another first character or length), ``always``. NPM patches
``satisfy_any`` and ``pass_auth`` only together with ``name``, so every update sends all three; ``clients`` are
replaced as a whole, in order (nginx applies allow/deny rules in order).
"""

from __future__ import annotations

import ipaddress

from ansible_collections.selfhosted.platform.plugins.module_utils.npm_api import NpmError, Outcome
from ansible_collections.selfhosted.platform.plugins.module_utils.npm_proxy_host import DOMAIN_RE, as_bool, as_int

SET, ADDED, CHANGED = "(set)", "(added)", "(changed)"


def hint(password):
    """NPM's maskItems hint of a password."""
    return (password[0] + "*" * (len(password) - 1)) if password else "*" * 8


def valid_address(address):
    if address == "all":
        return True
    try:
        ipaddress.ip_network(address, strict=False)
        return True
    except ValueError:
        return bool(DOMAIN_RE.match(address)) and "." in address and "*" not in address


def validate(p):
    if not (p.get("name") or "").strip():
        raise NpmError("name: must not be empty")
    names = []
    for index, user in enumerate(p.get("users") or []):
        username = user.get("username")
        if not username or not username.strip() or ":" in username:
            raise NpmError("users[%d].username: %r is not an htpasswd user name" % (index, username))
        if username in names:
            raise NpmError("users[%d].username: %s is declared twice" % (index, username))
        names.append(username)
    for index, client in enumerate(p.get("clients") or []):
        if not valid_address(client.get("address") or ""):
            raise NpmError("clients[%d].address: %r is not an IP address, network, host name or 'all'"
                           % (index, client.get("address")))


def current_users(row):
    return dict((item.get("username"), item.get("hint") or "") for item in (row or {}).get("items") or [])


def current_clients(row):
    return [{"address": c.get("address"), "directive": c.get("directive")} for c in (row or {}).get("clients") or []]


def run_access_list(client, module):
    p = module.params
    validate(p)
    client.health()
    result = {"changed": False, "changes": [], "warnings": []}
    rows = [r for r in client.access_lists() if r.get("name") == p["name"]]
    if len(rows) > 1:
        raise NpmError("name: %d access lists are named %r (ids %s); delete or rename the extra ones"
                       % (len(rows), p["name"], ", ".join(str(r["id"]) for r in rows)))
    row = rows[0] if rows else None
    if p["state"] == "absent":
        if row:
            result.update(changed=True, changes=["access list %s (delete)" % p["name"]])
            if as_int(row.get("proxy_host_count")):
                result["warnings"].append("access list %r was used by %s proxy host(s); NPM leaves them without one"
                                          % (p["name"], row.get("proxy_host_count")))
            if module._diff:
                result["diff"] = {"before": view(row), "after": {}}
            if not module.check_mode:
                client.call("DELETE", "/api/nginx/access-lists/%s" % row["id"])
        result["access_list"] = None
        return result

    have_users = current_users(row)
    items, user_changes, after_users = [], [], {}
    if p.get("users") is not None:
        for index, user in enumerate(p["users"]):
            name, password = user["username"], user.get("password")
            if name not in have_users:
                if not password:
                    raise NpmError("users[%d].password: required for the new user %s" % (index, name))
                items.append({"username": name, "password": password})
                user_changes.append("users.%s (added)" % name)
                after_users[name] = ADDED
                continue
            mode = p["update_password"]
            resend = password and (mode == "always" or (mode == "on_change" and hint(password) != have_users[name]))
            items.append({"username": name, "password": password if resend else ""})
            after_users[name] = CHANGED if resend else SET
            if resend:
                user_changes.append("users.%s (password)" % name)
        user_changes += ["users.%s (removed)" % name for name in have_users if name not in after_users]
    clients = None
    if p.get("clients") is not None:
        clients = [{"address": c["address"], "directive": c["directive"]} for c in p["clients"]]
    satisfy_any = p["satisfy_any"] if p.get("satisfy_any") is not None else as_bool((row or {}).get("satisfy_any"))
    pass_auth = p["pass_auth"] if p.get("pass_auth") is not None else as_bool((row or {}).get("pass_auth"))

    if row is None:
        result["changes"].append("access list %s (create)" % p["name"])
        result["changes"] += user_changes
    else:
        if satisfy_any != as_bool(row.get("satisfy_any")):
            result["changes"].append("satisfy_any: %s -> %s" % (as_bool(row.get("satisfy_any")), satisfy_any))
        if pass_auth != as_bool(row.get("pass_auth")):
            result["changes"].append("pass_auth: %s -> %s" % (as_bool(row.get("pass_auth")), pass_auth))
        result["changes"] += user_changes
        if clients is not None and clients != current_clients(row):
            result["changes"].append("clients (%d -> %d rules)" % (len(current_clients(row)), len(clients)))
    result["changed"] = bool(result["changes"])
    if module._diff and result["changed"]:
        before = view(row) if row else {}
        after = {"name": p["name"], "satisfy_any": satisfy_any, "pass_auth": pass_auth,
                 "users": after_users if p.get("users") is not None else before.get("users", {}),
                 "clients": clients if clients is not None else before.get("clients", [])}
        before.pop("id", None)
        before.pop("proxy_host_count", None)
        result["diff"] = {"before": before, "after": after}
    if not result["changed"] or module.check_mode:
        result["access_list"] = view(row)
        return result
    payload = {"name": p["name"], "satisfy_any": satisfy_any, "pass_auth": pass_auth}
    try:
        if row is None:
            payload.update(items=items, clients=clients or [])
            row = client.call("POST", "/api/nginx/access-lists", payload) or {}
        else:
            if p.get("users") is not None and user_changes:
                payload["items"] = items
            if clients is not None and clients != current_clients(row):
                payload["clients"] = clients
            client.call("PUT", "/api/nginx/access-lists/%s" % row["id"], payload)
            # NPM answers a PUT with the list as it was before the update: read it back
            row = next((r for r in client.access_lists() if r.get("id") == row["id"]), row)
    except NpmError as exc:
        raise Outcome(exc.msg, dict(result, changed=False)) from None
    result["access_list"] = view(row)
    return result


def view(row):
    if not row:
        return None
    return {"id": row.get("id"), "name": row.get("name"), "satisfy_any": as_bool(row.get("satisfy_any")),
            "pass_auth": as_bool(row.get("pass_auth")),
            "users": dict((name, SET) for name in current_users(row)), "clients": current_clients(row),
            "proxy_host_count": as_int(row.get("proxy_host_count"))}
