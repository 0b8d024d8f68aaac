"""Defaults every process agrees on: socket paths, ports and the limits of the function contract."""

import os
from dataclasses import dataclass

DEFAULT_LB_SOCK = "/tmp/faas_lb.sock"
DEFAULT_SERVER_SOCK = "/tmp/faas_server.sock"
DEFAULT_PORT = 8080
DEFAULT_HOST = "127.0.0.1"
DEFAULT_FUNCTIONS_DIR = "functions"
DEFAULT_WORKERS = 4

KIB = 1024
MIB = 1024 * KIB


def lb_sock(value=None):
    return value or os.environ.get("FAAS_LB_SOCK") or DEFAULT_LB_SOCK


def server_sock(value=None):
    return value or os.environ.get("FAAS_SERVER_SOCK") or DEFAULT_SERVER_SOCK


@dataclass(frozen=True)
class Limits:
    """The function contract's limits: defaults, and the ceilings a deploy may ask up to."""

    timeout_ms: int = 5000
    memory_mb: int = 128
    output_bytes: int = 1 * MIB
    code_bytes: int = 1 * MIB
    payload_bytes: int = 6 * MIB
    max_timeout_ms: int = 60_000
    max_memory_mb: int = 1024


LIMITS = Limits()
