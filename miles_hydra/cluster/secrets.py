"""What of the launcher's environment a Slurm job gets, and how its secrets travel.

Slurm copies the environment it exports into the job's record (the controller's spool, for the
job's lifetime): by default all of it, API keys included. We export an allowlist instead
(:func:`export_names`: the variables a run needs, plus ``cluster.export_env``) and hand the
secrets over out of band (:func:`write_secrets_file`): a file readable by the user alone
(0600), beside the job's submitit folder, whose path is the only thing exported. The job loads
it into its own environment at start (:func:`load_secrets`: Ray, wandb and miles read them from
there) and deletes it when it ends; a requeued job still finds it until then. Trials packed into
one job share its file: each takes the secrets at its start (:func:`take_secrets`) and the job
deletes the file when the last one ended (``miles_hydra.sweep.packing``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Optional

from miles_hydra.config.miles_rules import SECRET_ENV_KEYS

log = logging.getLogger(__name__)

SECRETS_FILE_ENV = "MILES_HYDRA_SECRETS_FILE"  # exported: where the job finds its secrets
# tracker and hub credentials the job uses when they are set here (sent through the file)
TRACKER_SECRETS = (
    *SECRET_ENV_KEYS,
    "WANDB_API_KEY",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "COMET_API_KEY",
    "NEPTUNE_API_TOKEN",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
)
SECRET_NAME = re.compile(r"TOKEN|SECRET|KEY|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
# exported when set: what Python, CUDA/NCCL, the hub, Ray and the trackers read (no secrets)
EXPORT_NAMES = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LC_ALL",
    "TZ",
    "TMPDIR",
    "PYTHONPATH",
    "PYTHONHASHSEED",
    "VIRTUAL_ENV",
    "CONDA_PREFIX",
    "LD_LIBRARY_PATH",
    "CUDA_HOME",
    "OMP_NUM_THREADS",
    "RAY_AUTH_MODE",
)
EXPORT_PREFIXES = ("WANDB_", "MLFLOW_", "HF_", "TRANSFORMERS_", "NCCL_", "TORCH", "MILES_HYDRA_")


def is_secret(name: str) -> bool:
    return name in TRACKER_SECRETS or bool(SECRET_NAME.search(name))


def export_names(env: Mapping[str, str], extra: Iterable[str] = ()) -> list[str]:
    """The variables of ``env`` the job gets through Slurm: the allowlist, those with a known
    prefix, and ``extra`` (``cluster.export_env``); never one whose name looks secret."""
    names = {n for n in env if n in EXPORT_NAMES or n.startswith(EXPORT_PREFIXES)}
    names |= {n for n in extra if n in env}
    return sorted(n for n in names if not is_secret(n) and "," not in env[n])


def secrets_of(env: Mapping[str, str], extra: Iterable[str] = ()) -> dict[str, str]:
    """The secrets of ``env`` the job needs: tracker credentials, and secret-looking names of
    ``extra`` (``cluster.export_env``)."""
    wanted = set(TRACKER_SECRETS) | {n for n in extra if is_secret(n)}
    return {n: env[n] for n in sorted(wanted) if env.get(n)}


def write_secrets_file(folder: Path, secrets: Mapping[str, str]) -> Optional[Path]:
    """Write ``secrets`` to a new user-only (0600) file under ``folder``; None when empty."""
    if not secrets:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"secrets_{uuid.uuid4().hex}.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(dict(secrets), fh)
    return path


def load_secrets(environ: Optional[dict] = None) -> list[str]:
    """In the job: put the secrets of ``$MILES_HYDRA_SECRETS_FILE`` into the environment (names
    already set win); return their names. The file stays until :func:`delete_secrets`."""
    environ = os.environ if environ is None else environ
    path = environ.get(SECRETS_FILE_ENV)
    if not path:
        return []
    try:
        secrets = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        log.warning("could not read the job's secrets file %s: %s", path, exc)
        return []
    for name, value in secrets.items():
        environ.setdefault(name, value)
    return sorted(secrets)


def take_secrets(environ: Optional[dict] = None) -> list[str]:
    """:func:`load_secrets`, then drop ``$MILES_HYDRA_SECRETS_FILE`` from ``environ``: for a
    process that shares its job's file with siblings (trials packed into one job), so that
    neither its own :func:`load_secrets` nor its :func:`delete_secrets` touches the file; the job
    deletes it once all of them ended. Returns the names loaded."""
    environ = os.environ if environ is None else environ
    names = load_secrets(environ)
    environ.pop(SECRETS_FILE_ENV, None)
    return names


def delete_secrets(environ: Optional[Mapping[str, str]] = None) -> None:
    """The job is over (not requeued): delete its secrets file."""
    path = (os.environ if environ is None else environ).get(SECRETS_FILE_ENV)
    if path:
        Path(path).unlink(missing_ok=True)
