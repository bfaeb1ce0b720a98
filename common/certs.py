"""Certificates for a deployment: a CA, the SuperLink's TLS certificate, one key pair per site.

The SuperLink serves TLS with a certificate signed by the consortium's CA (SuperNodes trust it via
``--root-certificates``); each SuperNode proves who it is with an EC key (Flower's SuperNode
authentication reads OpenSSH-format keys on a NIST curve; the coordinator registers the public
half with ``flwr supernode register``).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.errors import InputError
from common.fileio import staged_dir

_SITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedsynth consortium"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for host in hosts:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            entries.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(entries)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write(path: Path, data: bytes, private: bool = False) -> Path:
    path.write_bytes(data)
    if private:
        path.chmod(0o600)
    return path


def check_site_names(sites: list[str]) -> None:
    bad = [s for s in sites if not _SITE_NAME.match(s)]
    if not sites or bad:
        raise InputError(f"--sites needs comma-separated site names of letters, digits, '_', '.' "
                         f"or '-' (got {bad or sites}); e.g. --sites north,south,east.")
    if len(set(sites)) != len(sites):
        raise InputError(f"--sites lists a name twice: {sites}.")


def write_certificates(out: Path, sites: list[str], hosts: list[str], days: int = 825,
                       force: bool = False) -> list[Path]:
    """Write ca.crt/ca.key, superlink.crt/superlink.key and sites/NAME(.pub); returns the paths."""
    check_site_names(sites)
    if not hosts:
        raise InputError("--hosts needs at least one host name or IP address of the SuperLink.")
    if out.exists() and any(out.iterdir()) and not force:
        raise InputError(f"{out}: the folder is not empty; certificates and keys are never "
                         f"overwritten silently. Choose a new folder or pass --force.")
    now = dt.datetime.now(dt.UTC)
    validity = (now - dt.timedelta(minutes=5), now + dt.timedelta(days=days))
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_cert = (x509.CertificateBuilder().subject_name(_name("fedsynth CA")).issuer_name(_name("fedsynth CA"))
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(validity[0]).not_valid_after(validity[1])
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                            content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False,
                                            encipher_only=False, decipher_only=False), critical=True)
               .sign(ca_key, hashes.SHA256()))
    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = (x509.CertificateBuilder().subject_name(_name(hosts[0])).issuer_name(ca_cert.subject)
                   .public_key(server_key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(validity[0]).not_valid_after(validity[1])
                   .add_extension(_san(hosts), critical=False)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                   .sign(ca_key, hashes.SHA256()))
    written: list[str] = []
    with staged_dir(out) as stage:
        pem = serialization.Encoding.PEM
        written += [_write(stage / "ca.crt", ca_cert.public_bytes(pem)).name,
                    _write(stage / "ca.key", _pem_key(ca_key), private=True).name,
                    _write(stage / "superlink.crt", server_cert.public_bytes(pem)).name,
                    _write(stage / "superlink.key", _pem_key(server_key), private=True).name]
        (stage / "sites").mkdir()
        for site in sites:
            key = ec.generate_private_key(ec.SECP384R1())
            private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                        serialization.NoEncryption())
            public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                   serialization.PublicFormat.OpenSSH)
            _write(stage / "sites" / site, private, private=True)
            _write(stage / "sites" / f"{site}.pub", public + b"\n")
            written += [f"sites/{site}", f"sites/{site}.pub"]
    return [out / name for name in written]
