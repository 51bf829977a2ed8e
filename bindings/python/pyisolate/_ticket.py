"""The remote ticket: what a remote extension's process is started with
(``python -m pyisolate.remote TICKET``). It holds the host's endpoint and
CURVE key, the key pair the broker admits for that process, the token for
its service and the loader's config: a secret.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

TICKET_PREFIX = "pyi1."
_FIELDS = ("endpoint", "server_key", "public_key", "secret_key", "token", "service", "config")


def make_ticket(fields: dict[str, Any]) -> str:
    """A ticket string from its fields (the host's side)."""
    raw = json.dumps({k: fields[k] for k in _FIELDS}, separators=(",", ":")).encode()
    return TICKET_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def read_ticket(ticket: str) -> dict[str, Any]:
    """The fields of a ticket; ValueError saying what is wrong with it."""
    ticket = ticket.strip()
    if not ticket.startswith(TICKET_PREFIX):
        raise ValueError("not a pyisolate ticket (it starts with 'pyi1.')")
    body = ticket[len(TICKET_PREFIX) :]
    try:
        fields = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise ValueError("the ticket is damaged (copy it whole)") from None
    if not isinstance(fields, dict) or any(k not in fields for k in _FIELDS):
        raise ValueError("the ticket lacks fields: made by another pyisolate version?")
    if not str(fields["endpoint"]).startswith("tcp://"):
        raise ValueError("the ticket's endpoint is not tcp://")
    return fields
