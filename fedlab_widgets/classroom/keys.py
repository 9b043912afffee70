"""The classroom's keys: a CA and a server certificate for TLS, each seat's SuperNode key pair.

Made locally with ``cryptography`` (a Flower dependency): no internet, no ``openssl``
binary. The CA is pinned by its SHA-256 fingerprint, which the join card shows: a
learner who fetches a different CA (another machine answering at that address) is
refused before anything is sent.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import ipaddress
import socket
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["make_certificates", "fingerprint", "make_node_key", "public_key_bytes", "code_proof",
           "room_addresses"]


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedlab-widgets classroom"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write_key(key, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def make_certificates(folder, *, hosts, days: int = 2) -> dict:
    """A self-signed CA and a server certificate for ``hosts`` (IP addresses or names).

    Returns the paths ``{"ca", "cert", "key"}`` (PEM) and the CA's ``"fingerprint"``.
    The certificates last ``days`` days: a workshop, not a deployment.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    now = _dt.datetime.now(_dt.timezone.utc) - _dt.timedelta(minutes=5)
    until = now + _dt.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca = (x509.CertificateBuilder().subject_name(_name("fedlab classroom CA"))
          .issuer_name(_name("fedlab classroom CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(until)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    names = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    key = ec.generate_private_key(ec.SECP384R1())
    cert = (x509.CertificateBuilder().subject_name(_name(str(hosts[0])))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(until)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = {"ca": folder / "ca.pem", "cert": folder / "server.pem", "key": folder / "server.key"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, paths["key"])
    return {**paths, "fingerprint": fingerprint(paths["ca"].read_bytes())}


def fingerprint(pem: bytes) -> str:
    """The SHA-256 fingerprint of a PEM certificate, as colon-separated hex (as browsers show it).

    Raises ValueError if ``pem`` is not a certificate.
    """
    cert = x509.load_pem_x509_certificate(pem)
    digest = cert.fingerprint(hashes.SHA256()).hex().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def make_node_key(folder) -> dict:
    """A SuperNode's key pair (NIST P-384, OpenSSH format, as Flower's node auth reads it)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    private, public = folder / "node_key", folder / "node_key.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.OpenSSH,
                                          serialization.NoEncryption()))
    private.chmod(0o600)
    public.write_bytes(public_key_bytes(key.public_key()))
    return {"private": private, "public": public}


def public_key_bytes(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.OpenSSH,
                                   serialization.PublicFormat.OpenSSH)


def code_proof(code: str, public_key: bytes) -> str:
    """What a learner sends instead of the class code: HMAC-SHA256(code, public key).

    The code never crosses the room's network, and a proof made for one key is
    worthless for another.
    """
    return hmac.new(code.strip().upper().encode(), public_key, hashlib.sha256).hexdigest()


def room_addresses() -> list[str]:
    """This machine's IPv4 addresses a room could reach (loopback last)."""
    found = []
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))      # no packet is sent: picks the outgoing interface
            found.append(s.getsockname()[0])
    except OSError:
        pass
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            found.append(info[4][0])
    except OSError:
        pass
    out = [a for a in dict.fromkeys(found) if not a.startswith("127.")]
    return out + ["127.0.0.1"]
