# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Logic of npm_certificate: Let's Encrypt (HTTP or DNS challenge) and custom certificates in Nginx Proxy Manager.

NPM has no PUT for certificates. A Let's Encrypt certificate is identified by its exact set of domain names and
requested once (``POST /api/nginx/certificates`` answers when certbot is done, which can take minutes); NPM renews
it itself. NPM inserts the row before certbot runs and keeps it when certbot fails, so a failed request is
cleaned up here. A custom certificate is identified by its ``nice_name``; its PEM texts are compared with the ones
NPM stores (never shown) and uploaded again (``POST /{id}/upload``, multipart) when they differ. NPM only checks
that each file reads; a key that belongs to another certificate is accepted, and nginx then refuses every host
that uses it (BRIEF: ``meta.nginx_online: false``). So the pair is checked here before anything is sent: the
public key of the certificate must be the public key of the private key (with the ``cryptography`` package when
the Python running the module has it, else with ``openssl``, the key on stdin, never on the command line).
"""

from __future__ import annotations

import re

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    HAS_CRYPTOGRAPHY = True
except ImportError:
    HAS_CRYPTOGRAPHY = False

from ansible_collections.selfhosted.platform.plugins.module_utils.npm_api import NpmError, Outcome
from ansible_collections.selfhosted.platform.plugins.module_utils.npm_proxy_host import DOMAIN_RE, as_int, domain_key

PEM_FILES = ("certificate", "certificate_key", "intermediate_certificate")


def failed_letsencrypt(row):
    """A Let's Encrypt row certbot never filled: NPM leaves expires_on at its creation time."""
    return row.get("provider") == "letsencrypt" and (row.get("expires_on") or "") <= (row.get("created_on") or "")


def key_matches(cert_pem, key_pem, run_command=None):
    """Whether key_pem is the private key of cert_pem: True, False, or None when nothing here can tell (no
    cryptography and no run_command). run_command(args, data=text) -> (rc, stdout, stderr) runs openssl.
    Raises NpmError (naming the option) for a file that does not read."""
    if HAS_CRYPTOGRAPHY:
        try:
            cert = x509.load_pem_x509_certificate(cert_pem.encode("utf-8"))
        except ValueError as exc:
            raise NpmError("certificate: not a readable PEM certificate (%s)" % exc) from None
        try:
            key = serialization.load_pem_private_key(key_pem.encode("utf-8"), password=None)
        except (ValueError, TypeError) as exc:
            raise NpmError("certificate_key: not a readable, unencrypted PEM private key (%s)"
                           % str(exc).split("\n", maxsplit=1)[0]) from None
        fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return cert.public_key().public_bytes(*fmt) == key.public_key().public_bytes(*fmt)
    if run_command is None:
        return None
    public = []
    for option, args, text in (("certificate", ["openssl", "x509", "-noout", "-pubkey"], cert_pem),
                               ("certificate_key", ["openssl", "pkey", "-pubout", "-passin", "pass:"], key_pem)):
        rc, out, err = run_command(args, data=text)
        if rc != 0:
            raise NpmError("%s: openssl cannot read it (%s)" % (option, (err or "").strip().split("\n", maxsplit=1)[0]))
        public.append((out or "").strip())
    return public[0] == public[1]


def check_key_pair(p, module):
    """Fail before any request when the custom certificate's key is not its own (nginx would refuse the hosts)."""
    runner = None
    if not HAS_CRYPTOGRAPHY and hasattr(module, "get_bin_path") and module.get_bin_path("openssl"):
        runner = module.run_command
    matches = key_matches(p["certificate"], p["certificate_key"], runner)
    if matches is False:
        raise NpmError("certificate_key: the private key does not match the certificate of custom certificate %r "
                       "(their public keys differ); nothing was uploaded - nginx would refuse every host using it"
                       % p["nice_name"])
    return matches


def validate(p, client):
    if p["state"] == "present" and p["provider"] == "letsencrypt":
        names = []
        for index, raw in enumerate(p.get("domain_names") or []):
            name = raw.strip().lower() if isinstance(raw, str) else raw
            if not isinstance(name, str) or not name or not DOMAIN_RE.match(name):
                raise NpmError("domain_names[%d]: %r is not a domain name" % (index, raw))
            names.append(name)
        if not names:
            raise NpmError("domain_names: required for a Let's Encrypt certificate")
        if p.get("dns_provider") and not p.get("dns_credentials"):
            raise NpmError("dns_credentials: required with dns_provider")
        for opt in PEM_FILES:
            if p.get(opt):
                raise NpmError("%s: only used with provider=custom" % opt)
    if p["provider"] == "custom":
        if not p.get("nice_name"):
            raise NpmError("nice_name: required with provider=custom (it identifies the certificate)")
        if p["state"] == "present":
            if not p.get("certificate") or "-----BEGIN CERTIFICATE-----" not in p["certificate"]:
                raise NpmError("certificate: a PEM certificate (-----BEGIN CERTIFICATE-----) is required")
            if not p.get("certificate_key") or not re.search(r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
                                                             p["certificate_key"]):
                raise NpmError("certificate_key: a PEM private key (-----BEGIN ... PRIVATE KEY-----) is required")
            if p.get("intermediate_certificate") and \
                    "-----BEGIN CERTIFICATE-----" not in p["intermediate_certificate"]:
                raise NpmError("intermediate_certificate: not a PEM certificate")
    if p["provider"] == "letsencrypt" and p["state"] == "absent" and not p.get("domain_names"):
        raise NpmError("domain_names: required to find the Let's Encrypt certificate to remove")


def view(row):
    if not row:
        return None
    out = {"id": row.get("id"), "provider": row.get("provider"), "nice_name": row.get("nice_name"),
           "domain_names": list(row.get("domain_names") or []), "expires_on": row.get("expires_on")}
    meta = row.get("meta") or {}
    for name in PEM_FILES:
        if meta.get(name):
            out[name] = "(set)"
    if meta.get("dns_challenge"):
        out["dns_provider"] = meta.get("dns_provider")
    return out


def run_certificate(client, module):
    p = module.params
    validate(p, client)
    result = {"changed": False, "changes": [], "warnings": []}
    if p["provider"] == "custom" and p["state"] == "present" and check_key_pair(p, module) is None:
        result["warnings"].append("certificate_key: not checked against the certificate (neither the Python "
                                  "cryptography package nor openssl where the module runs)")
    client.health()
    rows = client.call("GET", "/api/nginx/certificates", query={"expand": "proxy_hosts"}) or []
    if p["provider"] == "letsencrypt":
        key = domain_key(p.get("domain_names"))
        matches = [r for r in rows if r.get("provider") == "letsencrypt" and domain_key(r.get("domain_names")) == key
                   and not failed_letsencrypt(r)]
    else:
        matches = [r for r in rows if r.get("provider") == "other" and r.get("nice_name") == p["nice_name"]]
        if len(matches) > 1:
            raise NpmError("nice_name: %d custom certificates are named %r (ids %s); rename or delete the extra ones"
                           % (len(matches), p["nice_name"], ", ".join(str(r["id"]) for r in matches)))
    if p["state"] == "absent":
        return remove(client, module, matches, result)
    if p["provider"] == "letsencrypt":
        return letsencrypt(client, module, matches, result)
    return custom(client, module, matches[0] if matches else None, result)


def remove(client, module, matches, result):
    p = module.params
    for row in matches:
        users = row.get("proxy_hosts") or []
        if users and not p.get("force"):
            raise NpmError("state: certificate #%s (%s) is used by proxy host(s) %s; point them elsewhere first, or "
                           "set force=true (they would keep a dangling certificate id)" % (
                               row["id"], row.get("nice_name"), ", ".join(
                                   "#%s (%s)" % (h.get("id"), ", ".join(h.get("domain_names") or [])) for h in users)))
        result["changes"].append("certificate #%s %s (delete)" % (row["id"], row.get("nice_name")))
    result["changed"] = bool(matches)
    if module._diff and matches:
        result["diff"] = {"before": view(matches[0]), "after": {}}
    if not module.check_mode:
        for row in matches:
            client.call("DELETE", "/api/nginx/certificates/%s" % row["id"])
    result["certificate"] = None
    return result


def letsencrypt(client, module, matches, result):
    p = module.params
    names = sorted(domain_key(p["domain_names"]))
    if matches:
        best = max(matches, key=lambda r: (r.get("expires_on") or "", as_int(r.get("id"))))
        result["certificate"] = view(best)
        return result
    meta = {"dns_challenge": bool(p.get("dns_provider"))}
    if p.get("dns_provider"):
        meta.update(dns_provider=p["dns_provider"], dns_provider_credentials=p["dns_credentials"])
        if p.get("propagation_seconds") is not None:
            meta["propagation_seconds"] = p["propagation_seconds"]
    if client.needs_letsencrypt_email:
        if not p.get("letsencrypt_email"):
            raise NpmError("letsencrypt_email: Nginx Proxy Manager %s needs the Let's Encrypt account email"
                           % client.version_text)
        meta.update(letsencrypt_email=p["letsencrypt_email"], letsencrypt_agree=True)
    elif p.get("letsencrypt_email"):
        result["warnings"].append("letsencrypt_email: not sent, Nginx Proxy Manager %s no longer takes it"
                                  % client.version_text)
    result["changed"] = True
    result["changes"].append("letsencrypt certificate %s (request%s)" % (
        ", ".join(names), ", dns challenge with %s" % p["dns_provider"] if p.get("dns_provider") else ""))
    if module._diff:
        result["diff"] = {"before": {}, "after": {"provider": "letsencrypt", "domain_names": names,
                                                  "dns_provider": p.get("dns_provider")}}
    if module.check_mode:
        result["certificate"] = None
        return result
    known = set(r.get("id") for r in client.certificates())
    try:
        row = client.call("POST", "/api/nginx/certificates", {"provider": "letsencrypt", "domain_names": names,
                                                              "meta": meta}) or {}
    except NpmError as exc:
        removed = []
        if exc.status is None or exc.status >= 500:
            for cert in client.certificates():
                if cert.get("id") not in known and domain_key(cert.get("domain_names")) == tuple(names):
                    client.call("DELETE", "/api/nginx/certificates/%s" % cert["id"])
                    removed.append("#%s" % cert["id"])
        extra = (" The failed certificate row %s that NPM keeps was removed." % ", ".join(removed)) if removed else ""
        raise Outcome("domain_names: Let's Encrypt did not issue a certificate for %s. %s%s" % (
            ", ".join(names), exc.msg, extra), dict(result, changed=False)) from None
    result["certificate"] = view(row)
    return result


def custom(client, module, row, result):
    p = module.params
    wanted = dict((name, p.get(name)) for name in PEM_FILES if p.get(name))
    meta = (row or {}).get("meta") or {}
    stale = []
    for name in PEM_FILES:
        stored = meta.get(name)
        if name not in wanted:
            continue
        if stored is True:  # a server that masks PEM texts: cannot compare, upload only on request
            if p.get("force"):
                stale.append(name)
            continue
        if (stored or "").strip() != wanted[name].strip():
            stale.append(name)
    if row is None:
        result["changes"].append("custom certificate %s (create)" % p["nice_name"])
    else:
        result["changes"] += ["%s (changed)" % name for name in stale]
    result["changed"] = bool(result["changes"])
    if module._diff and result["changed"]:
        before = view(row) if row else {}
        after = dict(before or {}, provider="other", nice_name=p["nice_name"])
        for name in wanted:
            after[name] = "(changed)" if name in stale or row is None else "(set)"
            if before:
                before.setdefault(name, "")
        for item in (before, after):
            item.pop("expires_on", None)
            item.pop("id", None)
        result["diff"] = {"before": before, "after": after}
    if not result["changed"] or module.check_mode:
        result["certificate"] = view(row)
        return result
    created = None
    if row is None:
        created = client.call("POST", "/api/nginx/certificates", {"provider": "other",
                                                                  "nice_name": p["nice_name"]}) or {}
        row = created
    try:
        client.upload("/api/nginx/certificates/%s/upload" % row["id"], wanted)
    except NpmError as exc:
        if created is not None:
            client.call("DELETE", "/api/nginx/certificates/%s" % created["id"])
        message = exc.api_message or exc.msg
        option = "certificate_key" if "Key" in message else "certificate"
        raise Outcome("%s: NPM refused the certificate files (%s)%s" % (
            option, message, "; the empty certificate row was removed" if created is not None else ""),
            dict(result, changed=False)) from None
    fresh = next((r for r in client.certificates() if r.get("id") == row["id"]), row)
    result["certificate"] = view(fresh)
    return result
