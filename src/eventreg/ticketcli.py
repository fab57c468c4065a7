"""`python -m eventreg ticket verify CODE --keys FILE_OR_URL` and `… ticket keygen FILE`
(the arguments are parsed in eventreg.__main__).

`verify` needs no database and no server: the keys are a JSON Web Key Set, as
/.well-known/ticket-keys serves it, read from a file (saved once, e.g. with curl) or
fetched from a URL; the code is then checked here. Exit status 0: genuine; 1: refused,
with the reason (bad format, unknown key, bad signature); 2: the keys could not be read.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path
from typing import Any

from eventreg.ticketcodes import InvalidCode, Keyring, create_key_file, load_private_pem, seed_of


def read_keys(source: str) -> Keyring:
    if source.startswith(("http://", "https://")):
        with urllib.request.urlopen(source, timeout=10) as response:
            document: Any = json.load(response)
    else:
        document = json.loads(Path(source).read_text())
    keys = Keyring.from_jwks(document)
    if not keys.verifying:
        raise ValueError(f"{source} holds no Ed25519 key")
    return keys


def verify(code: str, source: str) -> int:
    try:
        keys = read_keys(source)
    except (OSError, ValueError) as exc:
        print(f"cannot read the keys: {exc}", file=sys.stderr)
        return 2
    try:
        ticket = keys.verify(code.strip())
    except InvalidCode as exc:
        print(f"rejected: {exc.reason}: {exc.detail}")
        return 1
    print(f"valid: registration {ticket.registration_id}, event {ticket.event_id}, "
          f"signed by key {ticket.kid}")  # fmt: skip
    return 0


def keygen(path: str, if_missing: bool, show_seed: bool) -> int:
    """A new signing key in a PEM file (never overwritten). Prints its key id and public
    key; with --seed also the TICKET_SIGNING_KEY value (a secret: keep it out of logs)."""
    if not create_key_file(Path(path)) and not if_missing:
        print(f"{path} exists; a signing key is never overwritten", file=sys.stderr)
        return 1
    key = load_private_pem(Path(path).read_bytes(), path)
    current = Keyring.of(key).jwks()["keys"][0]
    print(f"key {current['kid']} in {path}; public key (for TICKET_RETIRED_KEYS): {current['x']}")
    if show_seed:
        print(f"TICKET_SIGNING_KEY={seed_of(key)}")
    return 0
