from __future__ import annotations

import ipaddress
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key

from common.certs import write_certificates
from common.errors import InputError


def test_chain_sans_and_site_keys(tmp_path) -> None:
    out = tmp_path / "certs"
    write_certificates(out, ["north", "south"], ["localhost", "127.0.0.1", "fl.example.org"])
    ca = x509.load_pem_x509_certificate((out / "ca.crt").read_bytes())
    server = x509.load_pem_x509_certificate((out / "superlink.crt").read_bytes())
    server.verify_directly_issued_by(ca)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "fl.example.org"}
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for site in ("north", "south"):
        private = load_ssh_private_key((out / "sites" / site).read_bytes(), None)
        public = load_ssh_public_key((out / "sites" / f"{site}.pub").read_bytes())
        assert isinstance(public.curve, ec.SECP384R1)
        assert private.public_key().public_numbers() == public.public_numbers()
        assert stat.S_IMODE((out / "sites" / site).stat().st_mode) == 0o600
    assert stat.S_IMODE((out / "ca.key").stat().st_mode) == 0o600


def test_refuses_to_overwrite_and_bad_names(tmp_path) -> None:
    out = tmp_path / "certs"
    write_certificates(out, ["a"], ["localhost"])
    before = (out / "ca.crt").read_bytes()
    with pytest.raises(InputError, match="not empty"):
        write_certificates(out, ["a"], ["localhost"])
    assert (out / "ca.crt").read_bytes() == before
    with pytest.raises(InputError, match="site names"):
        write_certificates(tmp_path / "x", ["bad name"], ["localhost"])
    with pytest.raises(InputError, match="twice"):
        write_certificates(tmp_path / "y", ["a", "a"], ["localhost"])
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
