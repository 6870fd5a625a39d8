"""Experiment tracking (W&B): the one check for a login, closing runs whatever happens, and quiet logs."""

from __future__ import annotations

import configparser
import logging
import netrc
import os
import sys
import warnings
from pathlib import Path
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

OFFLINE_MODES = ("offline", "dryrun", "disabled")


def wandb_key_configured() -> bool:
    """Whether W&B can find an API key without asking: WANDB_API_KEY (or an identity token file), a netrc
    entry for the W&B host (what `wandb login` writes), or an api_key in W&B's settings file."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlsplit(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").netloc
    netrc_file = Path(os.environ.get("NETRC") or Path.home() / (".netrc" if os.name != "nt" else "_netrc"))
    try:
        if netrc.netrc(netrc_file).authenticators(host):
            return True
    except (OSError, netrc.NetrcParseError):
        pass
    settings = Path(os.environ.get("WANDB_CONFIG_DIR") or Path.home() / ".config" / "wandb") / "settings"
    parser = configparser.ConfigParser()
    try:
        parser.read(settings)
    except configparser.Error:
        return False
    return bool(parser.get("default", "api_key", fallback=""))


def wandb_online_possible() -> bool:
    """False when WANDB_MODE says offline, or when online logging would stop to prompt for a key."""
    if os.environ.get("WANDB_MODE", "").lower() in OFFLINE_MODES:
        return False
    return wandb_key_configured()


def offline_fallback(logger_cfg: dict) -> dict:
    """Overrides for a logger config: `{"offline": True}` when a W&B logger is asked to log online but no API
    key is configured (it would stop the run to prompt for one, or fail at the first upload), else {}."""
    if not str(logger_cfg.get("_target_", "")).endswith("WandbLogger") or logger_cfg.get("offline", False):
        return {}
    if os.environ.get("WANDB_MODE", "").lower() in OFFLINE_MODES or wandb_key_configured():
        return {}
    log.warning(
        "W&B online requested but no API key found; logging offline — run `wandb login` to log online"
    )
    return {"offline": True}


def finish_wandb() -> None:
    """Close the W&B run if one is open: after a crash in a multirun the next run would log into it."""
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()


class _DropTip(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith("💡 Tip:")


def quiet_third_party() -> None:
    """Silence messages that are noise for a specauf run (and say nothing about it), once per process:
    Lightning's litlogger advert, and torch's deprecation of `LeafSpec`, which Lightning's own pytree helper
    triggers on every fit (not our code, nothing a user can change)."""
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropTip) for f in rank_zero.filters):  # every run of a sweep calls this
        rank_zero.addFilter(_DropTip())
    warnings.filterwarnings(
        "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning
    )


def quiet_wandb_logger(logger: object) -> object:
    """Lightning's WandbLogger passes `anonymous=None` to wandb.init, which current wandb warns about even
    though the setting does nothing: leave it out."""
    init = getattr(logger, "_wandb_init", None)
    if isinstance(init, dict) and init.get("anonymous") is None:
        init.pop("anonymous", None)
    return logger
