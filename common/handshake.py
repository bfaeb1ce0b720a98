"""The first question of every run: does this site hold the same schema and fedsynth release?

Only public facts cross the wire here (a schema hash, a version string, a yes/no and a reason):
nothing derived from the site's records.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HandshakeResult:
    accepted: bool
    reason: str


def check_compatibility(site_schema_hash: str, site_version: str, server_schema_hash: str,
                        server_version: str) -> HandshakeResult:
    """Accept only an identical schema and the same fedsynth release (major.minor)."""
    if site_schema_hash != server_schema_hash:
        return HandshakeResult(False, (
            f"schema mismatch: the site's schema hash is {site_schema_hash[:12]}, the server's is "
            f"{server_schema_hash[:12]}; install the consortium's schema file at the site "
            f"(compare with 'sha256' shown by the coordinator) and restart the SuperNode"))
    if _release(site_version) != _release(server_version):
        return HandshakeResult(False, (
            f"version mismatch: site runs fedsynth {site_version}, server runs {server_version}; "
            f"install the same release on both sides"))
    return HandshakeResult(True, "ok")


def _release(version: str) -> tuple[str, ...]:
    return tuple(version.split(".")[:2])
