"""Ticket codes: signed with Ed25519, verifiable offline by anyone holding the public key.

A code is five parts joined by dots, all URL-safe:

    1.<kid>.<registration id>.<event id>.<signature>

- `1`: the format version.
- `kid`: the key id, 8 hex digits: the first 4 bytes of SHA-256 of the raw public key. It
  names the key that signed, so keys can be rotated: a retired public key keeps verifying
  the codes it signed until it is removed from the configuration.
- the ids in plain decimal (no sign, no leading zero), so a person can read them;
- the Ed25519 signature (64 bytes, base64url without padding: 86 characters) of
  `eventreg-ticket\\n` followed by the first four parts.

A typical code is about 105 characters. Ed25519 is deterministic: a registration's code is
the same every time it is asked for, so codes are computed, never stored. Nothing in this
module touches the database; `python -m eventreg ticket verify` uses it as it is.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

VERSION = "1"
CONTEXT = b"eventreg-ticket\n"  # signatures of tickets cannot pass for anything else's
MAX_LENGTH = 200  # longer than any code (ids up to 19 digits): refused unparsed
_ID = r"([1-9][0-9]{0,18})"
_CODE = re.compile(rf"^{VERSION}\.([0-9a-f]{{8}})\.{_ID}\.{_ID}\.([A-Za-z0-9_-]{{86}})$")
MAX_ID = 2**63 - 1

Reason = Literal["bad format", "unknown key", "bad signature"]


class InvalidCode(ValueError):
    """Why a code is refused: `reason` is one of the three, `detail` says more."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: Reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Ticket:
    """What a genuine code says."""

    registration_id: int
    event_id: int
    kid: str


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    """Strict base64url without padding: a text that is not the canonical encoding of its
    bytes (spare bits set in the last character) is refused, so one signature has exactly
    one spelling."""
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if b64url(raw) != text:
        raise binascii.Error("not the canonical base64url spelling")
    return raw


def public_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public: bytes) -> str:
    return hashlib.sha256(public).digest()[:4].hex()


def _signed_part(registration_id: int, event_id: int, kid: str) -> str:
    return f"{VERSION}.{kid}.{registration_id}.{event_id}"


def parse(code: str) -> tuple[str, int, int, bytes, bytes]:
    """(kid, registration id, event id, signed message, signature), or InvalidCode."""
    match = _CODE.fullmatch(code) if len(code) <= MAX_LENGTH else None
    if match is None:
        raise InvalidCode("bad format", _format_problem(code))
    kid, registration, event, signature = match.groups()
    if int(registration) > MAX_ID or int(event) > MAX_ID:
        raise InvalidCode("bad format", "an id is larger than 2^63-1")
    try:
        raw_signature = unb64url(signature)
    except (binascii.Error, ValueError):
        raise InvalidCode("bad format", "the signature is not canonical base64url") from None
    message = CONTEXT + code[: match.start(4) - 1].encode()
    return kid, int(registration), int(event), message, raw_signature


def _format_problem(code: str) -> str:
    """A readable reason for a code that does not match the format."""
    parts = code.split(".")
    if len(code) > MAX_LENGTH:
        return f"a code has at most {MAX_LENGTH} characters, this one {len(code)}"
    if len(parts) != 5:
        return f"a code has 5 parts separated by dots, this one {len(parts)}"
    if parts[0] != VERSION:
        return f"unknown format version {parts[0][:10]!r} (this server reads {VERSION!r})"
    if not re.fullmatch(r"[0-9a-f]{8}", parts[1]):
        return "the key id must be 8 lower-case hex digits"
    if not all(re.fullmatch(_ID, p) for p in parts[2:4]):
        return "the registration and event ids must be positive decimal integers"
    return "the signature must be 86 base64url characters"


@dataclass(frozen=True, slots=True)
class Keyring:
    """The signing key and every public key that still verifies (the signing key's own,
    and retired ones), by key id."""

    signing: Ed25519PrivateKey | None
    verifying: Mapping[str, Ed25519PublicKey] = field(default_factory=dict)

    @staticmethod
    def of(signing: Ed25519PrivateKey | None, retired: Iterable[bytes] = ()) -> Keyring:
        keys: dict[str, Ed25519PublicKey] = {}
        for raw in retired:
            keys[key_id(raw)] = Ed25519PublicKey.from_public_bytes(raw)
        if signing is not None:
            keys[key_id(public_bytes(signing.public_key()))] = signing.public_key()
        return Keyring(signing, keys)

    @property
    def current_kid(self) -> str | None:
        if self.signing is None:
            return None
        return key_id(public_bytes(self.signing.public_key()))

    def sign(self, registration_id: int, event_id: int) -> str:
        kid = self.current_kid
        if self.signing is None or kid is None:
            raise RuntimeError("this keyring has no signing key")
        signed = _signed_part(registration_id, event_id, kid)
        return f"{signed}.{b64url(self.signing.sign(CONTEXT + signed.encode()))}"

    def verify(self, code: str) -> Ticket:
        """The ticket a genuine code carries; InvalidCode says why another is refused."""
        kid, registration, event, message, signature = parse(code)
        key = self.verifying.get(kid)
        if key is None:
            raise InvalidCode("unknown key", f"no key with id {kid} verifies tickets here")
        try:
            key.verify(signature, message)
        except InvalidSignature:
            raise InvalidCode("bad signature", "the signature does not match") from None
        return Ticket(registration, event, kid)

    def jwks(self) -> dict[str, Any]:
        """The public keys as a JSON Web Key Set (RFC 7517, OKP keys of RFC 8037)."""
        current = self.current_kid
        return {
            "keys": [
                {"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": kid,
                 "x": b64url(public_bytes(key)),
                 "status": "current" if kid == current else "retired"}
                for kid, key in sorted(self.verifying.items(), key=lambda kv: kv[0] != current)
            ]
        }  # fmt: skip

    @staticmethod
    def from_jwks(document: Mapping[str, Any]) -> Keyring:
        """The verifying keys of a key set as `jwks` writes it (Ed25519 keys only)."""
        raw = []
        for jwk in document.get("keys", []):
            if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519":
                raw.append(unb64url(str(jwk["x"])))
        return Keyring.of(None, raw)


# -- keys on disk and in the environment -----------------------------------------------------
def new_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_private_pem(data: bytes, where: str) -> Ed25519PrivateKey:
    """An Ed25519 private key in PEM (PKCS#8, as `openssl genpkey -algorithm ed25519`)."""
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{where}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{where}: the key is not an Ed25519 key")
    return key


def private_from_seed(text: str, where: str) -> Ed25519PrivateKey:
    """An Ed25519 private key from its 32-byte seed in base64url (TICKET_SIGNING_KEY)."""
    try:
        seed = unb64url(text.strip())
    except (binascii.Error, ValueError):
        raise ValueError(f"{where}: not base64url") from None
    if len(seed) != 32:
        raise ValueError(f"{where}: an Ed25519 key is 32 bytes, this is {len(seed)}")
    return Ed25519PrivateKey.from_private_bytes(seed)


def seed_of(key: Ed25519PrivateKey) -> str:
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return b64url(raw)


def public_from_text(text: str, where: str) -> bytes:
    """A raw public key in base64url, as the key set's `x` shows it."""
    try:
        raw = unb64url(text.strip())
    except (binascii.Error, ValueError):
        raise ValueError(f"{where}: {text.strip()[:12]!r}… is not base64url") from None
    if len(raw) != 32:
        raise ValueError(f"{where}: an Ed25519 public key is 32 bytes, this is {len(raw)}")
    return raw


def create_key_file(path: Path) -> bool:
    """Write a new private key to `path` unless a file is there. Returns whether it did.

    The key is written to a temporary file beside it, then hard-linked into place: linking
    never replaces, so of several processes starting at once exactly one key wins and all
    of them read that one. The file is readable by its owner only.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        return False
    fd, temporary = tempfile.mkstemp(prefix=".ticket-key-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(private_pem(new_private_key()))
        try:
            os.link(temporary, path)
        except FileExistsError:
            return False
        return True
    finally:
        os.unlink(temporary)


def load_keyring(seed: str, key_file: str, create: bool, retired: Iterable[str]) -> Keyring:
    """The keyring a server signs and verifies with (see config.ticket_key_file): the key
    from its seed, else from its file (made first when `create`), else a new key of this
    process only. ValueError says what is wrong with the configuration."""
    if seed:
        signing = private_from_seed(seed, "TICKET_SIGNING_KEY")
    elif key_file:
        path = Path(key_file)
        if create:
            create_key_file(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ValueError(
                f"TICKET_KEY_FILE {key_file}: {exc.strerror}; make one with"
                f" `python -m eventreg ticket keygen {key_file}`"
            ) from None
        signing = load_private_pem(data, f"TICKET_KEY_FILE {key_file}")
    else:
        signing = new_private_key()
    return Keyring.of(signing, [public_from_text(k, "TICKET_RETIRED_KEYS") for k in retired])
