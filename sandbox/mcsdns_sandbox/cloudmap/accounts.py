"""Which account a request comes from: one emulator serves several AWS accounts, told apart as AWS tells
them apart, by the access key id the request is signed with.

botocore signs every request with SigV4, whose Authorization header names the key:
``AWS4-HMAC-SHA256 Credential=<access key id>/<date>/<region>/servicediscovery/aws4_request, ...``. Each
account of the emulator has its own fake key; a request signed with a key the emulator did not hand out
(or not signed at all) belongs to the first account, so every client that worked before accounts existed
(any key, e.g. the tests' defaults) keeps seeing the same state. Signatures are not checked. Pure standard
library and thread-safe.
"""

from __future__ import annotations

import re
import secrets
import threading

# Fake, but shaped like real keys: botocore signs every request and the emulator does not check signatures.
FAKE_ACCESS_KEY_ID = "AKIAMCSDNSSANDBOX000"
FAKE_SECRET_ACCESS_KEY = "mcsdns-sandbox-not-a-secret"

_CREDENTIAL = re.compile(r"Credential=([A-Za-z0-9]+)/")
_ACCOUNT_ID = re.compile(r"\d{12}")


def new_account_id() -> str:
    return f"{secrets.randbelow(10**12):012d}"


def check_account_id(account_id: str) -> str:
    if not isinstance(account_id, str) or not _ACCOUNT_ID.fullmatch(account_id):
        raise ValueError(f"an AWS account id is 12 digits, not {account_id!r}")
    return account_id


def access_key_for(account_id: str) -> str:
    """The access key id of an added account: 20 characters like a real one, the account id inside."""
    return f"AKIA{account_id}MCSD"


class Accounts:
    """The accounts of one emulator, the first (``primary``) first, and their access key ids."""

    def __init__(self, primary: str) -> None:
        self.primary = check_account_id(primary)
        self._lock = threading.Lock()
        self._by_key = {FAKE_ACCESS_KEY_ID: primary, access_key_for(primary): primary}
        self._ids = [primary]

    def add(self, account_id: str) -> bool:
        """Add ``account_id``; False if it was there already."""
        check_account_id(account_id)
        with self._lock:
            if account_id in self._ids:
                return False
            self._ids.append(account_id)
            self._by_key[access_key_for(account_id)] = account_id
            return True

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._ids)

    def __contains__(self, account_id: object) -> bool:
        with self._lock:
            return account_id in self._ids

    def access_key(self, account_id: str) -> str:
        if account_id not in self:
            raise KeyError(f"no account {account_id} in this emulator")
        return FAKE_ACCESS_KEY_ID if account_id == self.primary else access_key_for(account_id)

    def of_request(self, authorization: str) -> str:
        """The account a request with this Authorization header is from."""
        match = _CREDENTIAL.search(authorization)
        if match is None:
            return self.primary
        with self._lock:
            return self._by_key.get(match.group(1), self.primary)
