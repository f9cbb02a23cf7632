# Copyright: selfhosted.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters over the data tier's layer contracts (plugins/module_utils/data_tier.py): the one place where the
container name, the secrets layout, the superusers, the server uids, the dump file names and the restore commands
of a data tier instance are defined. The data tier role, the backup role, restore.yml and rotate_db_password.yml
call these instead of rebuilding the facts by hand."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.selfhosted.platform.plugins.module_utils import data_tier as contract


def _wrap(func):
    def call(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except contract.ContractError as exc:
            raise AnsibleFilterError(str(exc)) from exc
    call.__name__ = func.__name__
    call.__doc__ = func.__doc__
    return call


def data_tier_instance(inst, secrets_dir=None, images=None):
    """An instance declaration -> its record (name, engine, container, superuser, password_file, uid, gid, ...)."""
    return contract.instance_record(inst, secrets_dir, images)


def data_tier_instances(instances, secrets_dir=None, images=None):
    """A list of declarations -> their records."""
    return [contract.instance_record(i, secrets_dir, images) for i in instances or []]


def data_tier_swarm_container_argv(service):
    """``docker ps`` argv printing the running task container of an instance's Swarm service on this node."""
    return contract.swarm_container_argv(service)


def data_tier_secret_path(name, secrets_dir=None, kind="superuser"):
    """Path of a secret of instance NAME (kind superuser, redis.conf or db:<database>)."""
    return contract.secret_path(secrets_dir, name, kind)


def data_tier_connection(record, superuser_password, databases=None, networks=None):
    """One entry of the data_tier_connections fact."""
    return contract.connection(record, superuser_password, databases, networks)


def data_tier_secret_files(instances, secrets_dir=None):
    """Paths of every secret file the connections of the declared instances need."""
    return contract.secret_files(instances, secrets_dir)


def data_tier_connections(instances, secrets, secrets_dir=None, images=None, shared_network="data-shared"):
    """The whole data_tier_connections fact from the declared instances and {secret file path: value}."""
    return contract.connections(instances, secrets, secrets_dir, images, shared_network)


def data_tier_restore_job(record, database=None, container=None, scratch=False):
    """{argv, env_name, filename} that stream a dump into the instance (postgres, mariadb, mongodb)."""
    argv, env_name, filename = contract.restore_job(record, database, container, scratch)
    return {"argv": argv, "env_name": env_name, "filename": filename}


def data_tier_dump_file(record, database=None):
    """File name of the instance's dump (of DATABASE for postgres and mariadb) inside a snapshot."""
    per_database = record["engine"] in contract.PER_DATABASE
    return contract.dump_file(record["engine"], record["name"], (database or None) if per_database else None)


def data_tier_secret_env(password, engine):
    """{variable: value} that carries the password to the engine's client inside the container."""
    return contract.secret_env(engine, password)


def data_tier_restore_problems(request, record=None, known=()):
    """Every reason to refuse a restore request (restore.yml), each naming the variable; [] when it may go on."""
    return contract.restore_problems(request, record or None, list(known or ()))


class FilterModule:
    def filters(self):
        return {f.__name__: _wrap(f) for f in (data_tier_instance, data_tier_instances, data_tier_secret_path,
                                               data_tier_connection, data_tier_restore_job, data_tier_secret_env,
                                               data_tier_restore_problems, data_tier_dump_file,
                                               data_tier_secret_files, data_tier_connections,
                                               data_tier_swarm_container_argv)}
